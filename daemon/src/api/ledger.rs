//! `GET /v1/ledger/transactions`: the transactions behind a report figure, each with
//! all its postings, a page at a time, so a person can check any figure against the
//! entries it sums.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ledgersync_schemas::Month;
use ledgersync_store::{
    LedgerTransaction, TransactionCursor, TransactionQuery, MAX_TRANSACTIONS_PAGE,
};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::Params;
use super::problem::Problem;
use super::state::AppState;

/// Transactions on a page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// Longest branch, account or category name accepted.
const MAX_NAME: usize = 200;
/// Longest cursor accepted (a date, a source and a key, hex-encoded).
const MAX_CURSOR: usize = 4096;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionParams {
    /// First month, YYYY-MM.
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    from: String,
    /// Last month, YYYY-MM, not before `from`.
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    to: String,
    /// One branch (outlet); all when left out.
    #[schemars(length(max = 200))]
    branch: Option<String>,
    /// Only transactions with a posting to this account code.
    #[schemars(length(max = 200))]
    account: Option<String>,
    /// Only transactions with a posting to an account of this category.
    #[schemars(length(max = 200))]
    category: Option<String>,
    /// Transactions per page, 1 to 1000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[schemars(length(max = 4096))]
    cursor: Option<String>,
}

/// A page of transactions in (date, source, key) order.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TransactionsPage {
    transactions: Vec<LedgerTransaction>,
    /// Pass as `cursor` for the next page; null on the last.
    next: Option<String>,
}

fn month(name: &str, text: &str) -> Result<Month, Problem> {
    text.parse()
        .map_err(|e: ledgersync_schemas::MonthError| Problem::bad(format!("{name}: {e}")))
}

fn name(field: &str, value: Option<String>) -> Result<Option<String>, Problem> {
    match value {
        Some(value) if value.chars().count() > MAX_NAME => Err(Problem::bad(format!(
            "{field}: longer than {MAX_NAME} characters"
        ))),
        other => Ok(other),
    }
}

fn encode_cursor(cursor: &TransactionCursor) -> Result<String, Problem> {
    serde_json::to_vec(cursor)
        .map(hex::encode)
        .map_err(Problem::internal)
}

fn decode_cursor(text: &str) -> Result<TransactionCursor, Problem> {
    if text.len() > MAX_CURSOR {
        return Err(Problem::bad(format!(
            "cursor: longer than {MAX_CURSOR} characters"
        )));
    }
    // Well formed for the schema, but not a cursor this server gave.
    let invalid = || {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-cursor",
            "cursor: not one this server gave; start again without it",
        )
    };
    let bytes = hex::decode(text).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

pub(crate) async fn transactions(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<TransactionParams>,
) -> Result<Json<TransactionsPage>, Problem> {
    let (from, to) = (month("from", &params.from)?, month("to", &params.to)?);
    if from > to {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-range",
            format!("from: {from} comes after to: {to}"),
        ));
    }
    let limit = params.limit.map_or(DEFAULT_PAGE, |limit| limit as usize);
    if !(1..=MAX_TRANSACTIONS_PAGE).contains(&limit) {
        return Err(Problem::bad(format!(
            "limit: 1 to {MAX_TRANSACTIONS_PAGE} transactions a page, not {limit}"
        )));
    }
    let query = TransactionQuery {
        from,
        to,
        branch: name("branch", params.branch)?,
        account: name("account", params.account)?,
        category: name("category", params.category)?,
        limit,
        after: params.cursor.as_deref().map(decode_cursor).transpose()?,
    };
    let page = state
        .store
        .ledger_transactions(&caller.tenant, &query)
        .await?;
    Ok(Json(TransactionsPage {
        transactions: page.transactions,
        next: page.next.as_ref().map(encode_cursor).transpose()?,
    }))
}
