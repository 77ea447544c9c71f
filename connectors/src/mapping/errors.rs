//! Errors of a stream mapping that stop a whole load (bad definitions, missing
//! columns); problems of single rows are [`crate::RowError`]s instead.

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("stream '{stream}': {field}: cannot read expression '{expr}': {reason}")]
    Expression {
        stream: String,
        field: String,
        expr: String,
        reason: String,
    },
    #[error("stream '{stream}': {reason}")]
    Definition { stream: String, reason: String },
    #[error("stream '{stream}': missing column(s) {}; the source has {}", .missing.join(", "), listed(.present))]
    MissingColumns {
        stream: String,
        missing: Vec<String>,
        present: Vec<String>,
    },
    #[error("stream '{stream}': amount '{expr}' yields {dtype}, not an exact decimal; write decimal literals as CAST('0.11' AS DECIMAL(10,4))")]
    InexactAmount {
        stream: String,
        expr: String,
        dtype: String,
    },
    #[error("stream '{stream}': evaluating the mapping failed: {source}")]
    Polars {
        stream: String,
        source: polars::error::PolarsError,
    },
}

/// Column names as a message lists them: each quoted bounded, at most the first 50.
fn listed(columns: &[String]) -> String {
    const SHOWN: usize = 50;
    let mut text: Vec<String> = columns
        .iter()
        .take(SHOWN)
        .map(|column| ledgersync_schemas::excerpt(column).into_owned())
        .collect();
    if columns.len() > SHOWN {
        text.push(format!("… and {} more", columns.len() - SHOWN));
    }
    text.join(", ")
}
