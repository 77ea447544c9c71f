//! Accounts of the chart and how each is read by the statements.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountClass {
    Revenue,
    Cogs,
    Expense,
    OtherIncome,
    OtherExpense,
    Cash,
    Receivable,
    Inventory,
    OtherAsset,
    FixedAsset,
    Payable,
    OtherLiability,
    Equity,
}

/// Where a cash movement lands in the direct cash-flow statement, decided by the
/// account on the other side of the cash posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CashFlowSection {
    Operating,
    Investing,
    Financing,
}

impl AccountClass {
    pub const ALL: [AccountClass; 13] = [
        AccountClass::Revenue,
        AccountClass::Cogs,
        AccountClass::Expense,
        AccountClass::OtherIncome,
        AccountClass::OtherExpense,
        AccountClass::Cash,
        AccountClass::Receivable,
        AccountClass::Inventory,
        AccountClass::OtherAsset,
        AccountClass::FixedAsset,
        AccountClass::Payable,
        AccountClass::OtherLiability,
        AccountClass::Equity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountClass::Revenue => "revenue",
            AccountClass::Cogs => "cogs",
            AccountClass::Expense => "expense",
            AccountClass::OtherIncome => "other_income",
            AccountClass::OtherExpense => "other_expense",
            AccountClass::Cash => "cash",
            AccountClass::Receivable => "receivable",
            AccountClass::Inventory => "inventory",
            AccountClass::OtherAsset => "other_asset",
            AccountClass::FixedAsset => "fixed_asset",
            AccountClass::Payable => "payable",
            AccountClass::OtherLiability => "other_liability",
            AccountClass::Equity => "equity",
        }
    }

    pub fn parse(text: &str) -> Option<AccountClass> {
        let wanted = text.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        Self::ALL.into_iter().find(|class| class.as_str() == wanted)
    }

    /// Working capital and the P&L are operating; long-lived assets are investing;
    /// loans and owners' money are financing.
    pub fn cash_flow_section(self) -> CashFlowSection {
        match self {
            AccountClass::FixedAsset | AccountClass::OtherAsset => CashFlowSection::Investing,
            AccountClass::OtherLiability | AccountClass::Equity => CashFlowSection::Financing,
            _ => CashFlowSection::Operating,
        }
    }
}

impl CashFlowSection {
    pub fn as_str(self) -> &'static str {
        match self {
            CashFlowSection::Operating => "operating",
            CashFlowSection::Investing => "investing",
            CashFlowSection::Financing => "financing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub code: String,
    pub name: String,
    pub class: AccountClass,
    /// e.g. food / beverage / packaging on COGS and sales, labour on expenses.
    pub category: Option<String>,
    /// Kept for the postings it already holds, but refused for new ones.
    #[serde(default)]
    pub retired: bool,
}

impl Account {
    pub fn new(code: &str, name: &str, class: AccountClass, category: Option<&str>) -> Self {
        Account {
            code: code.to_string(),
            name: name.to_string(),
            class,
            category: category.map(str::to_string),
            retired: false,
        }
    }
}
