//! The chart of accounts a new food-and-beverage tenant starts with.

use crate::account::{Account, AccountClass::*};

/// Codes follow the common 1xxx assets … 8xxx other expense layout so that imported
/// general-ledger exports map with few changes.
pub fn default_chart() -> Vec<Account> {
    [
        ("1000", "Cash on hand", Cash, None),
        ("1010", "Bank", Cash, None),
        (
            "1020",
            "QRIS and e-wallet clearing",
            Receivable,
            Some("clearing"),
        ),
        ("1030", "Card (EDC) clearing", Receivable, Some("clearing")),
        (
            "1040",
            "Delivery platform clearing",
            Receivable,
            Some("clearing"),
        ),
        ("1100", "Trade receivables", Receivable, None),
        ("1200", "Inventory", Inventory, None),
        ("1300", "Deposits and prepayments", OtherAsset, None),
        ("1500", "Equipment", FixedAsset, None),
        ("1510", "Accumulated depreciation", FixedAsset, None),
        ("2000", "Trade payables", Payable, None),
        (
            "2100",
            "Restaurant tax (PBJT/PB1) payable",
            Payable,
            Some("tax"),
        ),
        ("2200", "Accrued wages", Payable, Some("labour")),
        ("2500", "Bank loan", OtherLiability, Some("loan")),
        ("3000", "Owner capital", Equity, None),
        ("3100", "Retained earnings", Equity, None),
        ("4000", "Food sales", Revenue, Some("food")),
        ("4010", "Beverage sales", Revenue, Some("beverage")),
        ("4020", "Delivery platform sales", Revenue, Some("delivery")),
        ("4090", "Sales discounts", Revenue, Some("discount")),
        ("5000", "COGS food", Cogs, Some("food")),
        ("5010", "COGS beverage", Cogs, Some("beverage")),
        ("5020", "COGS packaging", Cogs, Some("packaging")),
        ("6000", "Wages and salaries", Expense, Some("labour")),
        (
            "6010",
            "Payroll taxes and benefits",
            Expense,
            Some("labour"),
        ),
        ("6100", "Rent", Expense, Some("occupancy")),
        ("6200", "Utilities", Expense, Some("utilities")),
        ("6300", "Marketing", Expense, Some("marketing")),
        (
            "6400",
            "Delivery platform commission",
            Expense,
            Some("commission"),
        ),
        ("6500", "Payment processing fees", Expense, Some("fees")),
        ("6600", "Depreciation", Expense, Some("depreciation")),
        ("7000", "Interest income", OtherIncome, None),
        ("8000", "Interest expense", OtherExpense, None),
    ]
    .into_iter()
    .map(|(code, name, class, category)| Account::new(code, name, class, category))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_every_statement_has_accounts() {
        let chart = default_chart();
        let codes: HashSet<_> = chart.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes.len(), chart.len());
        for class in [
            Revenue,
            Cogs,
            Expense,
            Cash,
            FixedAsset,
            OtherLiability,
            Equity,
        ] {
            assert!(chart.iter().any(|a| a.class == class), "{class:?} missing");
        }
        assert!(chart
            .iter()
            .any(|a| a.class == Expense && a.category.as_deref() == Some("labour")));
    }
}
