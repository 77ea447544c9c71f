//! Reports derived from the precomputed month buckets: P&L, cash flow, COGS, staff.
//! The same rows serve the CLI (table, csv, json) and the API.

use std::fmt::Write as _;

use ledgersync_schemas::{
    CashFlowRow, CogsRow, FigureOverflow, Grouping, Month, MonthMetrics, Period, PnlRow,
    ReportKind, StaffRow, BRANCH_TOTAL,
};
use ledgersync_store::{Store, Tenant};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub kind: ReportKind,
    pub from: Month,
    pub to: Month,
    /// A branch, or all branches together.
    pub branch: Option<String>,
    pub by: Grouping,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the range is reversed: --from {from} is after --to {to}")]
    ReversedRange { from: Month, to: Month },
    #[error("the range {from}..{to} spans more than 240 months")]
    RangeTooLong { from: Month, to: Month },
    #[error(transparent)]
    Settings(#[from] ledgersync_config::SettingsError),
    /// Stored figures whose total or derived figure does not fit in an amount.
    #[error("the {period} report of {branch} cannot be given exactly: {source}")]
    Overflow {
        period: String,
        branch: String,
        source: FigureOverflow,
    },
    #[error(transparent)]
    Store(#[from] ledgersync_store::StoreError),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Rows {
    Pnl(Vec<PnlRow>),
    CashFlow(Vec<CashFlowRow>),
    Cogs(Vec<CogsRow>),
    Staff(Vec<StaffRow>),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub kind: ReportKind,
    pub tenant: String,
    pub currency: String,
    pub branch: Option<String>,
    pub from: String,
    pub to: String,
    pub rows: Rows,
}

pub async fn build(
    store: &dyn Store,
    tenant: &Tenant,
    query: &ReportQuery,
) -> Result<Report, ReportError> {
    let (from, to) = (query.from, query.to);
    if from > to {
        return Err(ReportError::ReversedRange { from, to });
    }
    if from.through(to).count() > 240 {
        return Err(ReportError::RangeTooLong { from, to });
    }
    let fiscal_first_month = tenant.settings.fiscal_first_month()?;
    let periods = Period::split(from, to, query.by, fiscal_first_month);
    // YTD rows reach back to the fiscal year start, before `from`.
    let earliest = periods
        .iter()
        .filter_map(|p| p.months.first())
        .min()
        .copied()
        .unwrap_or(from);
    let branch = query.branch.as_deref().unwrap_or(BRANCH_TOTAL);
    let months = store.month_metrics(tenant, branch, earliest, to).await?;
    let branch_name = match branch {
        BRANCH_TOTAL => "all branches",
        named => named,
    };
    let overflow = |period: &str, source| ReportError::Overflow {
        period: period.to_string(),
        branch: branch_name.to_string(),
        source,
    };
    let summed = |period: &Period| {
        let mut total = MonthMetrics::default();
        for month in &period.months {
            if let Some(metrics) = months.get(month) {
                total
                    .merge(metrics)
                    .map_err(|e| overflow(&period.label, e))?;
            }
        }
        Ok::<_, ReportError>(total)
    };
    let rows = match query.kind {
        ReportKind::Pnl => Rows::Pnl(
            periods
                .iter()
                .map(|p| PnlRow::derive(&p.label, &summed(p)?).map_err(|e| overflow(&p.label, e)))
                .collect::<Result<_, _>>()?,
        ),
        ReportKind::Cogs => {
            let mut rows = Vec::new();
            for p in &periods {
                rows.extend(
                    CogsRow::derive(&p.label, &summed(p)?).map_err(|e| overflow(&p.label, e))?,
                );
            }
            Rows::Cogs(rows)
        }
        ReportKind::Staff => Rows::Staff(
            periods
                .iter()
                .map(|p| StaffRow::derive(&p.label, &summed(p)?).map_err(|e| overflow(&p.label, e)))
                .collect::<Result<_, _>>()?,
        ),
        ReportKind::CashFlow => {
            let mut rows = Vec::with_capacity(periods.len());
            let first_label = periods.first().map_or("", |p| p.label.as_str());
            // The store refuses a balance beyond an amount's range as invalid; that is
            // the data's limit, said like any other figure's.
            let mut opening_before_first = store
                .cash_before(tenant, branch, earliest)
                .await
                .map_err(|e| match e {
                    ledgersync_store::StoreError::Invalid(_) => {
                        let figure = "opening cash".to_string();
                        overflow(first_label, FigureOverflow { figure })
                    }
                    other => ReportError::Store(other),
                })?;
            // Opening cash of a period is the cash before its first month: the running
            // balance from `earliest`, plus the months between.
            let mut cursor = earliest;
            for period in &periods {
                let first = *period.months.first().expect("periods have months");
                while cursor < first {
                    if let Some(m) = months.get(&cursor) {
                        opening_before_first = opening_before_first
                            .checked_add(m.cash_change())
                            .ok_or_else(|| {
                                let figure = "opening cash".to_string();
                                overflow(&period.label, FigureOverflow { figure })
                            })?;
                    }
                    cursor = cursor.next();
                }
                rows.push(
                    CashFlowRow::derive(&period.label, opening_before_first, &summed(period)?)
                        .map_err(|e| overflow(&period.label, e))?,
                );
            }
            Rows::CashFlow(rows)
        }
    };
    Ok(Report {
        kind: query.kind,
        tenant: tenant.slug.clone(),
        currency: tenant.settings.currency.clone(),
        branch: query.branch.clone(),
        from: from.to_string(),
        to: to.to_string(),
        rows,
    })
}

impl Report {
    /// The stable CSV contract: a header, then one row per period (and per category
    /// for COGS); amounts as plain decimals.
    pub fn to_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let result = match &self.rows {
            Rows::Pnl(rows) => rows.iter().try_for_each(|r| writer.serialize(r)),
            Rows::CashFlow(rows) => rows.iter().try_for_each(|r| writer.serialize(r)),
            Rows::Cogs(rows) => rows.iter().try_for_each(|r| writer.serialize(r)),
            Rows::Staff(rows) => rows.iter().try_for_each(|r| writer.serialize(r)),
        };
        result.expect("writing CSV to memory cannot fail");
        if self.is_empty() {
            writer
                .write_record(self.header())
                .expect("writing CSV to memory cannot fail");
        }
        String::from_utf8(writer.into_inner().expect("flushing to memory")).expect("CSV is UTF-8")
    }

    fn is_empty(&self) -> bool {
        match &self.rows {
            Rows::Pnl(r) => r.is_empty(),
            Rows::CashFlow(r) => r.is_empty(),
            Rows::Cogs(r) => r.is_empty(),
            Rows::Staff(r) => r.is_empty(),
        }
    }

    fn header(&self) -> &'static [&'static str] {
        match self.kind {
            ReportKind::Pnl => &[
                "period",
                "revenue",
                "cogs",
                "gross_profit",
                "expenses",
                "operating_profit",
                "other_income",
                "other_expense",
                "net_profit",
            ],
            ReportKind::CashFlow => &[
                "period",
                "opening_cash",
                "operating_in",
                "operating_out",
                "investing_in",
                "investing_out",
                "financing_in",
                "financing_out",
                "net_change",
                "closing_cash",
            ],
            ReportKind::Cogs => &["period", "category", "cogs", "revenue", "cogs_pct"],
            ReportKind::Staff => &[
                "period",
                "labour_cost",
                "revenue",
                "labour_pct",
                "cogs",
                "prime_cost",
                "prime_cost_pct",
            ],
        }
    }

    /// Aligned columns for people, amounts as `Rp 1.234.567` style for IDR.
    pub fn to_table(&self) -> String {
        let csv = self.to_csv();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(csv.as_bytes());
        let header = self.header();
        let rows: Vec<Vec<String>> = reader
            .records()
            .filter_map(Result::ok)
            .enumerate()
            .map(|(i, record)| {
                record
                    .iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        let is_amount = i > 0
                            && c > 0
                            && !header[c].ends_with("_pct")
                            && header[c] != "category";
                        if is_amount {
                            display_amount(cell)
                        } else {
                            cell.to_string()
                        }
                    })
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
            .map(|c| {
                rows.iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &rows {
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c == 0 || header[c] == "category" {
                    let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(out, "{}{cell}  ", " ".repeat(pad));
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        }
        out
    }
}

/// Thousands with dots, decimals with a comma, rounded to whole units for reading
/// (the CSV and JSON keep every digit).
fn display_amount(cell: &str) -> String {
    let Ok(value) = cell.parse::<rust_decimal::Decimal>() else {
        return cell.to_string();
    };
    let rounded = value.round_dp(0);
    let digits = rounded.abs().trunc().to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    if rounded.is_sign_negative() && !rounded.is_zero() {
        format!("-{grouped}")
    } else {
        grouped
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_read_the_indonesian_way() {
        assert_eq!(super::display_amount("1234567.5"), "1.234.568");
        assert_eq!(super::display_amount("-755.0125"), "-755");
        assert_eq!(super::display_amount("0"), "0");
    }
}
