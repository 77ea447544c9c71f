//! Postings as columns: how a source hands a batch of postings to the store, and the
//! columns a stored segment keeps. Each row is one [`Posting`]; a mapped batch of a
//! million rows is a handful of column buffers instead of a million structs of
//! strings, and the store writes it as it is.

use chrono::NaiveDate;
use polars::prelude::*;

use crate::{Amount, Posting};

/// Column names of a [`PostingFrame`], in their order.
pub mod posting_column {
    /// The source's transaction key (text).
    pub const KEY: &str = "key";
    /// Calendar date in the tenant's timezone (`Date`: days since 1970-01-01). The
    /// month is derived from it where needed, not stored.
    pub const DATE: &str = "date";
    pub const BRANCH: &str = "branch";
    pub const MEMO: &str = "memo";
    /// The source instant as RFC 3339 UTC, or null when the source gave a plain date.
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const ACCOUNT: &str = "account";
    /// Ten-thousandths of the tenant's base currency (`Int64`).
    pub const AMOUNT: &str = "amount";
    pub const CURRENCY: &str = "currency";
    /// Ten-thousandths of `currency` (`Int64`), null when the same as [`AMOUNT`] (the
    /// source's currency is the tenant's): a column of nulls costs nothing to store.
    pub const ORIGINAL_AMOUNT: &str = "original_amount";
    /// The source line (or row) a posting came from, for error reports (`UInt64`).
    pub const LINE: &str = "line";

    pub const ALL: [&str; 10] = [
        KEY,
        DATE,
        BRANCH,
        MEMO,
        OCCURRED_AT,
        ACCOUNT,
        AMOUNT,
        CURRENCY,
        ORIGINAL_AMOUNT,
        LINE,
    ];
}

use posting_column::*;

/// A batch of postings as a polars frame of exactly the [`posting_column`] columns,
/// typed and without nulls (but in `occurred_at` and `original_amount`). Rows of one transaction are
/// expected together, as files and mapped batches keep them.
#[derive(Debug, Clone)]
pub struct PostingFrame(DataFrame);

fn dtype_of(column: &str) -> DataType {
    match column {
        DATE => DataType::Date,
        AMOUNT | ORIGINAL_AMOUNT => DataType::Int64,
        LINE => DataType::UInt64,
        _ => DataType::String,
    }
}

impl PostingFrame {
    /// Checks a frame's columns, their types and nulls, and puts them in order.
    pub fn from_frame(frame: DataFrame) -> PolarsResult<PostingFrame> {
        for name in ALL {
            let column = frame.column(name)?;
            let expected = dtype_of(name);
            polars_ensure!(
                column.dtype() == &expected,
                SchemaMismatch: "posting column '{name}' is {}, not {expected}", column.dtype()
            );
            polars_ensure!(
                matches!(name, OCCURRED_AT | ORIGINAL_AMOUNT) || column.null_count() == 0,
                ComputeError: "posting column '{name}' has empty values"
            );
        }
        Ok(PostingFrame(frame.select(ALL)?))
    }

    pub fn from_postings(postings: &[Posting]) -> PostingFrame {
        let days: Vec<i32> = postings.iter().map(|p| p.date.to_epoch_days()).collect();
        let texts = |name: &str, pick: fn(&Posting) -> &str| {
            Column::new(
                name.into(),
                postings.iter().map(pick).collect::<Vec<&str>>(),
            )
        };
        let units = |name: &str, pick: fn(&Posting) -> Amount| {
            Column::new(
                name.into(),
                postings
                    .iter()
                    .map(|p| pick(p).units())
                    .collect::<Vec<i64>>(),
            )
        };
        let frame = DataFrame::new(
            postings.len(),
            vec![
                texts(KEY, |p| &p.source_key),
                Int32Chunked::from_vec(DATE.into(), days)
                    .into_date()
                    .into_column(),
                texts(BRANCH, |p| &p.branch),
                texts(MEMO, |p| &p.memo),
                Column::new(
                    OCCURRED_AT.into(),
                    postings
                        .iter()
                        .map(|p| p.occurred_at.as_deref())
                        .collect::<Vec<_>>(),
                ),
                texts(ACCOUNT, |p| &p.account),
                units(AMOUNT, |p| p.amount),
                texts(CURRENCY, |p| &p.currency),
                Column::new(
                    ORIGINAL_AMOUNT.into(),
                    postings
                        .iter()
                        .map(|p| (p.original_amount != p.amount).then(|| p.original_amount.units()))
                        .collect::<Vec<Option<i64>>>(),
                ),
                Column::new(
                    LINE.into(),
                    postings.iter().map(|p| p.origin_line).collect::<Vec<u64>>(),
                ),
            ],
        )
        .expect("columns of one length");
        PostingFrame(frame)
    }

    /// The postings as structs, for tests and small batches.
    pub fn to_postings(&self) -> PolarsResult<Vec<Posting>> {
        let text = |name: &str| self.0.column(name).and_then(|c| c.str().cloned());
        let dates = self.0.column(DATE)?.date()?.physical();
        let (keys, branches, memos, occurred, accounts, currencies) = (
            text(KEY)?,
            text(BRANCH)?,
            text(MEMO)?,
            text(OCCURRED_AT)?,
            text(ACCOUNT)?,
            text(CURRENCY)?,
        );
        let amounts = self.0.column(AMOUNT)?.i64()?;
        let originals = self.0.column(ORIGINAL_AMOUNT)?.i64()?;
        let lines = self.0.column(LINE)?.u64()?;
        (0..self.0.height())
            .map(|row| {
                let days = dates.get(row).unwrap_or_default();
                let amount = Amount::from_units(amounts.get(row).unwrap_or_default());
                Ok(Posting {
                    source_key: keys.get(row).unwrap_or_default().to_string(),
                    origin_line: lines.get(row).unwrap_or_default(),
                    date: NaiveDate::from_epoch_days(days).ok_or_else(
                        || polars_err!(ComputeError: "posting date {days} is out of range"),
                    )?,
                    branch: branches.get(row).unwrap_or_default().to_string(),
                    memo: memos.get(row).unwrap_or_default().to_string(),
                    occurred_at: occurred.get(row).map(str::to_string),
                    account: accounts.get(row).unwrap_or_default().to_string(),
                    amount,
                    currency: currencies.get(row).unwrap_or_default().to_string(),
                    original_amount: originals.get(row).map_or(amount, Amount::from_units),
                })
            })
            .collect()
    }

    pub fn height(&self) -> usize {
        self.0.height()
    }

    pub fn is_empty(&self) -> bool {
        self.0.height() == 0
    }

    pub fn frame(&self) -> &DataFrame {
        &self.0
    }

    pub fn into_frame(self) -> DataFrame {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting(key: &str, account: &str, amount: &str, line: u64) -> Posting {
        Posting {
            source_key: key.into(),
            origin_line: line,
            date: NaiveDate::from_ymd_opt(2025, 2, 1).unwrap(),
            branch: "Kemang".into(),
            memo: "memo".into(),
            occurred_at: (line == 2).then(|| "2025-01-31T17:30:00+00:00".into()),
            account: account.into(),
            amount: amount.parse().unwrap(),
            currency: "IDR".into(),
            original_amount: amount.parse().unwrap(),
        }
    }

    #[test]
    fn postings_survive_the_round_trip() {
        let postings = vec![
            posting("t1", "1000", "45900.9", 2),
            posting("t1", "4010", "-45900.9", 3),
        ];
        let frame = PostingFrame::from_postings(&postings);
        assert_eq!(frame.height(), 2);
        assert_eq!(frame.frame().column(DATE).unwrap().dtype(), &DataType::Date);
        assert_eq!(frame.to_postings().unwrap(), postings);
    }

    #[test]
    fn a_frame_of_the_wrong_shape_is_refused() {
        let good = PostingFrame::from_postings(&[posting("t1", "1000", "1", 2)]).into_frame();
        let mut wrong_type = good.clone();
        wrong_type
            .with_column(Column::new(AMOUNT.into(), ["1"]))
            .unwrap();
        assert!(PostingFrame::from_frame(wrong_type)
            .unwrap_err()
            .to_string()
            .contains("'amount' is str"));
        let mut missing = good.clone();
        missing.drop_in_place(ACCOUNT).unwrap();
        assert!(PostingFrame::from_frame(missing).is_err());
        let mut empty_key = good.clone();
        empty_key
            .with_column(Column::new(KEY.into(), [None::<&str>]))
            .unwrap();
        assert!(PostingFrame::from_frame(empty_key)
            .unwrap_err()
            .to_string()
            .contains("'key' has empty values"));
        assert_eq!(PostingFrame::from_frame(good).unwrap().height(), 1);
    }
}
