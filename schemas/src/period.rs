//! Calendar months, and the periods (quarters, years, fiscal years, YTD) that are
//! derived from month buckets.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1..=12
    pub month: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{}' is not a month: expected YYYY-MM, e.g. 2025-02", crate::excerpt(.0))]
pub struct MonthError(pub String);

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        (1..=12).contains(&month).then_some(Month { year, month })
    }

    pub fn of(date: NaiveDate) -> Month {
        Month {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Inclusive range of months.
    pub fn through(self, last: Month) -> impl Iterator<Item = Month> {
        std::iter::successors(Some(self), move |m| (*m < last).then(|| m.next()))
            .take_while(move |m| *m <= last)
    }

    pub fn quarter(self) -> u32 {
        (self.month - 1) / 3 + 1
    }

    /// The calendar year in which the fiscal year containing this month starts.
    pub fn fiscal_year_start(self, first_month: u32) -> i32 {
        if self.month >= first_month {
            self.year
        } else {
            self.year - 1
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = MonthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MonthError(s.to_string());
        let (year, month) = s.split_once('-').ok_or_else(err)?;
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return Err(err());
        }
        let year = year.parse().map_err(|_| err())?;
        let month = month.parse().map_err(|_| err())?;
        Month::new(year, month).ok_or_else(err)
    }
}

/// How report rows are bucketed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Grouping {
    #[default]
    Month,
    Quarter,
    Year,
    FiscalYear,
    /// One row per month, cumulative from the start of its fiscal year.
    Ytd,
}

impl FromStr for Grouping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "month" => Ok(Grouping::Month),
            "quarter" => Ok(Grouping::Quarter),
            "year" => Ok(Grouping::Year),
            "fiscal-year" => Ok(Grouping::FiscalYear),
            "ytd" => Ok(Grouping::Ytd),
            other => Err(format!(
                "'{}' is not a grouping: use month, quarter, year, fiscal-year or ytd",
                crate::excerpt(other)
            )),
        }
    }
}

/// A report row's span: a label and the months it adds up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub label: String,
    pub months: Vec<Month>,
}

impl Period {
    /// Buckets `from..=to` by `grouping`; `fiscal_first_month` is the tenant's
    /// fiscalYearStart (1 = January). Periods cut by the range keep only the months
    /// inside it.
    pub fn split(
        from: Month,
        to: Month,
        grouping: Grouping,
        fiscal_first_month: u32,
    ) -> Vec<Period> {
        let mut periods: Vec<Period> = Vec::new();
        for month in from.through(to) {
            let label = match grouping {
                Grouping::Month | Grouping::Ytd => month.to_string(),
                Grouping::Quarter => format!("{}-Q{}", month.year, month.quarter()),
                Grouping::Year => month.year.to_string(),
                Grouping::FiscalYear => fiscal_label(month, fiscal_first_month),
            };
            if grouping == Grouping::Ytd {
                let start_year = month.fiscal_year_start(fiscal_first_month);
                let start = Month::new(start_year, fiscal_first_month).expect("valid month");
                periods.push(Period {
                    label,
                    months: start.through(month).collect(),
                });
                continue;
            }
            match periods.last_mut() {
                Some(last) if last.label == label => last.months.push(month),
                _ => periods.push(Period {
                    label,
                    months: vec![month],
                }),
            }
        }
        periods
    }
}

fn fiscal_label(month: Month, first_month: u32) -> String {
    let start = month.fiscal_year_start(first_month);
    if first_month == 1 {
        format!("FY{start}")
    } else {
        format!("FY{start}-{:02}", (start + 1) % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Month {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses_months() {
        assert_eq!(
            m("2025-02"),
            Month {
                year: 2025,
                month: 2
            }
        );
        assert!("2025-13".parse::<Month>().is_err());
        assert!("2025-2".parse::<Month>().is_err());
    }

    #[test]
    fn quarters_and_fiscal_years() {
        let q = Period::split(m("2024-02"), m("2024-07"), Grouping::Quarter, 1);
        let labels: Vec<_> = q.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2024-Q1", "2024-Q2", "2024-Q3"]);
        assert_eq!(q[0].months.len(), 2);

        let fy = Period::split(m("2024-01"), m("2025-06"), Grouping::FiscalYear, 4);
        let labels: Vec<_> = fy.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["FY2023-24", "FY2024-25", "FY2025-26"]);
        assert_eq!(fy[1].months.len(), 12);
    }

    #[test]
    fn ytd_runs_from_the_fiscal_year_start() {
        let ytd = Period::split(m("2024-05"), m("2024-05"), Grouping::Ytd, 4);
        assert_eq!(ytd[0].months, vec![m("2024-04"), m("2024-05")]);
    }
}
