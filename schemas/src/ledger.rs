//! Transactions and postings of the canonical double-entry ledger.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::amount::Amount;

/// One posting as a source produces it, flat, before it is grouped into its
/// transaction: the shape every source (file, database, push) hands to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// Unique per source; postings sharing it form one transaction.
    pub source_key: String,
    /// Where the posting came from (a file line, a row number), for error reports.
    pub origin_line: u64,
    /// Calendar date in the tenant's timezone.
    pub date: NaiveDate,
    pub branch: String,
    pub memo: String,
    /// The source instant as RFC 3339 UTC, kept so dates can be rebuilt when the
    /// tenant's timezone changes.
    pub occurred_at: Option<String>,
    pub account: String,
    /// In the tenant's base currency.
    pub amount: Amount,
    /// ISO 4217 code and amount as the source recorded them.
    pub currency: String,
    pub original_amount: Amount,
}

/// A source row that could not become postings, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

/// A balanced group of postings sharing a source key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub source_key: String,
    pub date: NaiveDate,
    pub branch: String,
    pub memo: String,
    pub postings: Vec<Posting>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("transaction {source_key} does not balance: its postings sum to {sum}")]
    Unbalanced { source_key: String, sum: Amount },
    #[error("transaction {source_key} has no postings")]
    Empty { source_key: String },
    #[error("transaction {source_key} mixes dates or branches across its postings")]
    Inconsistent { source_key: String },
    #[error("transaction {source_key} does not balance: its postings add up beyond the largest amount, {}", Amount::MAX)]
    Overflow { source_key: String },
}

impl Transaction {
    /// Groups postings of one source key into a transaction, refusing one that does
    /// not sum to zero.
    pub fn from_postings(postings: Vec<Posting>) -> Result<Transaction, LedgerError> {
        let first = postings.first().ok_or_else(|| LedgerError::Empty {
            source_key: String::new(),
        })?;
        let source_key = first.source_key.clone();
        let (date, branch, memo) = (first.date, first.branch.clone(), first.memo.clone());
        if postings
            .iter()
            .any(|p| p.source_key != source_key || p.date != date || p.branch != branch)
        {
            return Err(LedgerError::Inconsistent { source_key });
        }
        let Some(sum) = Amount::checked_sum(postings.iter().map(|p| p.amount)) else {
            return Err(LedgerError::Overflow { source_key });
        };
        if !sum.is_zero() {
            return Err(LedgerError::Unbalanced { source_key, sum });
        }
        Ok(Transaction {
            source_key,
            date,
            branch,
            memo,
            postings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting(account: &str, amount: &str) -> Posting {
        Posting {
            source_key: "t1".into(),
            origin_line: 2,
            date: NaiveDate::from_ymd_opt(2025, 2, 1).unwrap(),
            branch: "Kemang".into(),
            memo: String::new(),
            occurred_at: None,
            account: account.into(),
            amount: amount.parse().unwrap(),
            currency: "IDR".into(),
            original_amount: amount.parse().unwrap(),
        }
    }

    #[test]
    fn balanced_postings_make_a_transaction() {
        let txn = Transaction::from_postings(vec![
            posting("1000", "45900.9"),
            posting("4010", "-41728.0909"),
            posting("2100", "-4172.8091"),
        ])
        .unwrap();
        assert_eq!(txn.postings.len(), 3);
    }

    #[test]
    fn unbalanced_postings_are_refused() {
        let err =
            Transaction::from_postings(vec![posting("1000", "100"), posting("4000", "-99.9999")])
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "transaction t1 does not balance: its postings sum to 0.0001"
        );
    }

    /// In two's complement these three sum to exactly zero.
    #[test]
    fn postings_beyond_the_range_are_refused_not_wrapped() {
        let largest = Amount::MAX.to_string();
        let err = Transaction::from_postings(vec![
            posting("1000", &largest),
            posting("1000", &largest),
            posting("4000", "0.0002"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            LedgerError::Overflow {
                source_key: "t1".into()
            }
        );
        assert!(err.to_string().contains("beyond the largest amount"));
    }
}
