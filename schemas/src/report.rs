//! Aggregate metrics kept per (month, branch) and the report rows derived from them.
//!
//! A bucket's metrics are amounts by (metric, key), raw and signed as posted (credits
//! negative); the store keeps each (month, branch) bucket as one rollup of them.
//! Every statement is a few checked additions over those, so a report never scans
//! the ledger.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::AccountClass;
use crate::amount::Amount;

/// Branch value under which the all-branches total of a month is kept.
pub const BRANCH_TOTAL: &str = "*";

/// Metric names as stored; the key says which class, category or flow.
pub mod metric {
    /// Sum of postings by account class; key = class.
    pub const CLASS: &str = "class";
    /// Sum of revenue postings by category; key = category ('' when none).
    pub const REVENUE: &str = "revenue";
    /// Sum of COGS postings by category.
    pub const COGS: &str = "cogs";
    /// Sum of expense postings by category.
    pub const EXPENSE: &str = "expense";
    /// Cash movements by section and direction; key = e.g. `operating_in`.
    pub const CASH_FLOW: &str = "cash_flow";
}

/// The expense category counted as labour (wages, payroll taxes, benefits).
pub const LABOUR: &str = "labour";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    Pnl,
    CashFlow,
    Cogs,
    Staff,
}

impl std::str::FromStr for ReportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pnl" => Ok(ReportKind::Pnl),
            "cash-flow" => Ok(ReportKind::CashFlow),
            "cogs" => Ok(ReportKind::Cogs),
            "staff" => Ok(ReportKind::Staff),
            other => Err(format!(
                "'{}' is not a report: use pnl, cash-flow, cogs or staff",
                crate::excerpt(other)
            )),
        }
    }
}

/// A report figure, or a sum behind one, beyond what an [`Amount`] holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{figure} adds up beyond the largest amount, {}", Amount::MAX)]
pub struct FigureOverflow {
    /// The figure in words (`gross profit`) or as stored (`revenue:food`).
    pub figure: String,
}

/// `Σ sign × amount` of `terms`, exact in 128 bits so that only the figure itself
/// must fit, not the order its terms are added in.
fn combined(figure: &str, terms: &[(i8, Amount)]) -> Result<Amount, FigureOverflow> {
    let exact: i128 = terms
        .iter()
        .map(|&(sign, amount)| i128::from(sign) * i128::from(amount.units()))
        .sum();
    i64::try_from(exact)
        .map(Amount::from_units)
        .map_err(|_| FigureOverflow {
            figure: figure.to_string(),
        })
}

/// Metrics of one bucket, or the sum of several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthMetrics(BTreeMap<(String, String), Amount>);

impl MonthMetrics {
    /// Adds `amount` to a metric; refused (and the metric left as it was) if the
    /// sum does not fit.
    pub fn add(&mut self, metric: &str, key: &str, amount: Amount) -> Result<(), FigureOverflow> {
        let sum = self
            .0
            .entry((metric.to_string(), key.to_string()))
            .or_default();
        *sum = sum.checked_add(amount).ok_or_else(|| FigureOverflow {
            figure: format!("{metric}:{key}"),
        })?;
        Ok(())
    }

    pub fn merge(&mut self, other: &MonthMetrics) -> Result<(), FigureOverflow> {
        for ((metric, key), amount) in &other.0 {
            self.add(metric, key, *amount)?;
        }
        Ok(())
    }

    pub fn get(&self, metric: &str, key: &str) -> Amount {
        self.0
            .get(&(metric.to_string(), key.to_string()))
            .copied()
            .unwrap_or_default()
    }

    fn class(&self, class: AccountClass) -> Amount {
        self.get(metric::CLASS, class.as_str())
    }

    /// Keys present for a metric, in order.
    pub fn keys(&self, metric: &str) -> Vec<String> {
        self.0
            .keys()
            .filter(|(m, _)| m == metric)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Revenue shown positive, as statements do.
    pub fn revenue(&self) -> Result<Amount, FigureOverflow> {
        combined("revenue", &[(-1, self.class(AccountClass::Revenue))])
    }

    pub fn cogs(&self) -> Amount {
        self.class(AccountClass::Cogs)
    }

    pub fn labour(&self) -> Amount {
        self.get(metric::EXPENSE, LABOUR)
    }

    /// Net change of cash accounts.
    pub fn cash_change(&self) -> Amount {
        self.class(AccountClass::Cash)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PnlRow {
    pub period: String,
    pub revenue: Amount,
    pub cogs: Amount,
    pub gross_profit: Amount,
    pub expenses: Amount,
    pub operating_profit: Amount,
    pub other_income: Amount,
    pub other_expense: Amount,
    pub net_profit: Amount,
}

impl PnlRow {
    pub fn derive(period: &str, m: &MonthMetrics) -> Result<PnlRow, FigureOverflow> {
        let revenue = m.revenue()?;
        let cogs = m.cogs();
        let gross_profit = combined("gross profit", &[(1, revenue), (-1, cogs)])?;
        let expenses = m.class(AccountClass::Expense);
        let operating_profit = combined("operating profit", &[(1, gross_profit), (-1, expenses)])?;
        let other_income = combined("other income", &[(-1, m.class(AccountClass::OtherIncome))])?;
        let other_expense = m.class(AccountClass::OtherExpense);
        let net_profit = combined(
            "net profit",
            &[
                (1, operating_profit),
                (1, other_income),
                (-1, other_expense),
            ],
        )?;
        Ok(PnlRow {
            period: period.to_string(),
            revenue,
            cogs,
            gross_profit,
            expenses,
            operating_profit,
            other_income,
            other_expense,
            net_profit,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CashFlowRow {
    pub period: String,
    pub opening_cash: Amount,
    pub operating_in: Amount,
    pub operating_out: Amount,
    pub investing_in: Amount,
    pub investing_out: Amount,
    pub financing_in: Amount,
    pub financing_out: Amount,
    pub net_change: Amount,
    pub closing_cash: Amount,
}

impl CashFlowRow {
    /// `opening_cash` is the cash balance before the period's first month.
    pub fn derive(
        period: &str,
        opening_cash: Amount,
        m: &MonthMetrics,
    ) -> Result<CashFlowRow, FigureOverflow> {
        let flow = |key: &str| m.get(metric::CASH_FLOW, key);
        let flows = [
            flow("operating_in"),
            flow("operating_out"),
            flow("investing_in"),
            flow("investing_out"),
            flow("financing_in"),
            flow("financing_out"),
        ];
        let net_change = combined("net change in cash", &flows.map(|flow| (1, flow)))?;
        let closing_cash = combined("closing cash", &[(1, opening_cash), (1, net_change)])?;
        Ok(CashFlowRow {
            period: period.to_string(),
            opening_cash,
            operating_in: flows[0],
            operating_out: flows[1],
            investing_in: flows[2],
            investing_out: flows[3],
            financing_in: flows[4],
            financing_out: flows[5],
            net_change,
            closing_cash,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CogsRow {
    pub period: String,
    pub category: String,
    pub cogs: Amount,
    /// Revenue of the same category (all revenue on the `total` row).
    pub revenue: Amount,
    /// COGS as a percentage of that revenue; empty when there is none.
    pub cogs_pct: Option<Decimal>,
}

impl CogsRow {
    /// One row per COGS category, then `total`.
    pub fn derive(period: &str, m: &MonthMetrics) -> Result<Vec<CogsRow>, FigureOverflow> {
        let row = |category: &str, cogs: Amount, revenue: Amount| CogsRow {
            period: period.to_string(),
            category: category.to_string(),
            cogs,
            revenue,
            cogs_pct: cogs.percent_of(revenue),
        };
        let mut rows = Vec::new();
        for category in m.keys(metric::COGS) {
            let label = if category.is_empty() {
                "uncategorised"
            } else {
                &category
            };
            let revenue = combined(
                &format!("revenue of {label}"),
                &[(-1, m.get(metric::REVENUE, &category))],
            )?;
            rows.push(row(label, m.get(metric::COGS, &category), revenue));
        }
        rows.push(row("total", m.cogs(), m.revenue()?));
        Ok(rows)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StaffRow {
    pub period: String,
    pub labour_cost: Amount,
    pub revenue: Amount,
    pub labour_pct: Option<Decimal>,
    pub cogs: Amount,
    pub prime_cost: Amount,
    pub prime_cost_pct: Option<Decimal>,
}

impl StaffRow {
    pub fn derive(period: &str, m: &MonthMetrics) -> Result<StaffRow, FigureOverflow> {
        let (labour, revenue, cogs) = (m.labour(), m.revenue()?, m.cogs());
        let prime_cost = combined("prime cost", &[(1, cogs), (1, labour)])?;
        Ok(StaffRow {
            period: period.to_string(),
            labour_cost: labour,
            revenue,
            labour_pct: labour.percent_of(revenue),
            cogs,
            prime_cost,
            prime_cost_pct: prime_cost.percent_of(revenue),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amt(s: &str) -> Amount {
        s.parse().unwrap()
    }

    impl MonthMetrics {
        fn add_ok(&mut self, metric: &str, key: &str, amount: Amount) {
            self.add(metric, key, amount).unwrap();
        }
    }

    #[test]
    fn pnl_reads_credits_as_positive_revenue() {
        let mut m = MonthMetrics::default();
        m.add_ok(metric::CLASS, "revenue", amt("-1000"));
        m.add_ok(metric::CLASS, "cogs", amt("300"));
        m.add_ok(metric::CLASS, "expense", amt("450.5"));
        m.add_ok(metric::CLASS, "other_income", amt("-10"));
        m.add_ok(metric::CLASS, "other_expense", amt("20"));
        let row = PnlRow::derive("2025-01", &m).unwrap();
        assert_eq!(row.revenue, amt("1000"));
        assert_eq!(row.gross_profit, amt("700"));
        assert_eq!(row.operating_profit, amt("249.5"));
        assert_eq!(row.net_profit, amt("239.5"));
    }

    #[test]
    fn cash_flow_closes_on_opening_plus_flows() {
        let mut m = MonthMetrics::default();
        m.add_ok(metric::CASH_FLOW, "operating_in", amt("500"));
        m.add_ok(metric::CASH_FLOW, "investing_out", amt("-200"));
        let row = CashFlowRow::derive("2025-01", amt("100"), &m).unwrap();
        assert_eq!(row.net_change, amt("300"));
        assert_eq!(row.closing_cash, amt("400"));
    }

    #[test]
    fn food_cost_is_category_cogs_over_category_sales() {
        let mut m = MonthMetrics::default();
        m.add_ok(metric::CLASS, "revenue", amt("-1000"));
        m.add_ok(metric::REVENUE, "food", amt("-400"));
        m.add_ok(metric::CLASS, "cogs", amt("150"));
        m.add_ok(metric::COGS, "food", amt("120"));
        m.add_ok(metric::COGS, "packaging", amt("30"));
        let rows = CogsRow::derive("2025-01", &m).unwrap();
        assert_eq!(rows[0].category, "food");
        assert_eq!(rows[0].cogs_pct, Some(Decimal::new(30, 0)));
        assert_eq!(rows[1].cogs_pct, None);
        assert_eq!(rows[2].category, "total");
        assert_eq!(rows[2].cogs_pct, Some(Decimal::new(15, 0)));
    }

    /// Figures near the bound: each derived figure is refused when it does not fit,
    /// whatever order its terms come in, and kept when it does.
    #[test]
    fn figures_beyond_the_range_are_refused() {
        let mut m = MonthMetrics::default();
        m.add_ok(metric::CLASS, "revenue", Amount::MIN);
        assert_eq!(m.revenue().unwrap_err().figure, "revenue");
        assert!(StaffRow::derive("2025-01", &m).is_err());

        let mut m = MonthMetrics::default();
        m.add_ok(metric::CLASS, "revenue", Amount::from_units(-i64::MAX));
        m.add_ok(metric::CLASS, "cogs", Amount::from_units(-1));
        let err = PnlRow::derive("2025-01", &m).unwrap_err();
        assert_eq!(err.figure, "gross profit");
        assert_eq!(
            err.to_string(),
            "gross profit adds up beyond the largest amount, 922337203685477.5807"
        );
        let err = m
            .add(metric::CLASS, "revenue", Amount::from_units(-2))
            .unwrap_err();
        assert_eq!(err.figure, "class:revenue");
        assert_eq!(m.get(metric::CLASS, "revenue").units(), -i64::MAX);

        // Other income and expense both at the bound cancel: net profit fits.
        let mut m = MonthMetrics::default();
        m.add_ok(metric::CLASS, "other_income", Amount::from_units(-i64::MAX));
        m.add_ok(metric::CLASS, "other_expense", Amount::MAX);
        assert_eq!(
            PnlRow::derive("2025-01", &m).unwrap().net_profit,
            Amount::ZERO
        );

        let mut m = MonthMetrics::default();
        m.add_ok(metric::CASH_FLOW, "operating_in", Amount::MAX);
        let err = CashFlowRow::derive("2025-01", amt("0.0001"), &m).unwrap_err();
        assert_eq!(err.figure, "closing cash");
        m.add_ok(metric::CASH_FLOW, "financing_in", Amount::MAX);
        let err = CashFlowRow::derive("2025-01", Amount::ZERO, &m).unwrap_err();
        assert_eq!(err.figure, "net change in cash");

        let mut m = MonthMetrics::default();
        m.add_ok(metric::CLASS, "cogs", Amount::MAX);
        m.add_ok(metric::EXPENSE, LABOUR, amt("1"));
        assert_eq!(
            StaffRow::derive("2025-01", &m).unwrap_err().figure,
            "prime cost"
        );
        m.add_ok(metric::COGS, "food", Amount::MAX);
        m.add_ok(metric::REVENUE, "food", Amount::MIN);
        assert_eq!(
            CogsRow::derive("2025-01", &m).unwrap_err().figure,
            "revenue of food"
        );
    }
}
