//! `POST /v1/imports` (a CSV body through a stream, all rows or none) and
//! `GET /v1/loads` (what was loaded and refused).

use std::path::Path;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledgersync_config::StreamDef;
use ledgersync_connectors::file::FileError;
use ledgersync_connectors::MappingError;
use ledgersync_connectors::SourceError;
use ledgersync_store::{Blame, StoreError};
use serde::Deserialize;

use super::auth::Caller;
use super::extract::{Params, Upload};
use super::problem::{rows_rejected, Problem};
use super::state::AppState;
use crate::import::{self, named_as, FileRejected, ImportOutcome};

/// Largest accepted upload; bigger files go through the CLI or a watched folder.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

/// Characters of a refused file's explanation in an answer.
const DETAIL_CHARS: usize = 1000;

/// The streams an upload can go through.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadStream {
    /// The general ledger journal: date, txn_id, account, amount and optional
    /// branch, memo, currency.
    #[default]
    Journal,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    stream: Option<UploadStream>,
    /// The file's name, as the load record and messages name it. Characters other
    /// than letters, digits, '.', '-' and '_' are dropped; the rest is cut to 100.
    name: Option<String>,
    /// Load the file again even if it was loaded under the same mapping.
    #[serde(default)]
    force: bool,
    /// Load a file whose content another stream already loaded, as a source of its own.
    #[serde(default)]
    as_new_source: bool,
}

/// Why an upload was not imported, decided once: the sender's file or the server.
#[derive(Debug, thiserror::Error)]
enum ImportFailure {
    /// Rows are wrong; each is listed with its line.
    #[error(transparent)]
    Rejected(#[from] FileRejected),
    /// The file cannot be read for the stream (not CSV, no header, missing columns);
    /// the message names the upload, never the server's copy.
    #[error("{0}")]
    Unreadable(String),
    /// The store is busy for now.
    #[error("{0:#}")]
    Busy(anyhow::Error),
    /// The server failed (the database, the mapping engine, a bug).
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl ImportFailure {
    /// Sorts an import error by the first of its causes that says whose it is.
    fn classify(error: anyhow::Error, path: &Path, origin: &str) -> ImportFailure {
        let error = match error.downcast::<FileRejected>() {
            Ok(rejected) => return ImportFailure::Rejected(rejected),
            Err(error) => error,
        };
        enum Whose {
            Sender(String),
            Busy,
            Server,
        }
        let whose = error.chain().find_map(|cause| {
            let file = cause
                .downcast_ref::<SourceError>()
                .and_then(|source| source.cause())
                .and_then(|cause| cause.downcast_ref::<FileError>());
            if let Some(file) = file {
                return Some(match file {
                    FileError::Csv { .. }
                    | FileError::NotUtf8 { .. }
                    | FileError::NoHeader { .. } => Whose::Sender(file.to_string()),
                    FileError::Open { .. } | FileError::Frame { .. } => Whose::Server,
                });
            }
            if let Some(mapping) = cause.downcast_ref::<MappingError>() {
                return Some(match mapping {
                    MappingError::MissingColumns { .. } => Whose::Sender(mapping.to_string()),
                    // The stream is one the server defines: a bad definition is its own.
                    _ => Whose::Server,
                });
            }
            let store = cause.downcast_ref::<StoreError>()?;
            Some(match store.blame() {
                Blame::Caller => Whose::Sender(store.to_string()),
                Blame::Busy => Whose::Busy,
                Blame::Server => Whose::Server,
            })
        });
        match whose {
            Some(Whose::Sender(message)) => ImportFailure::Unreadable(
                ledgersync_schemas::bounded(&named_as(&message, path, origin), DETAIL_CHARS)
                    .into_owned(),
            ),
            Some(Whose::Busy) => ImportFailure::Busy(error),
            Some(Whose::Server) | None => ImportFailure::Internal(error),
        }
    }
}

impl From<ImportFailure> for Problem {
    fn from(failure: ImportFailure) -> Problem {
        match failure {
            ImportFailure::Rejected(rejected) => rows_rejected(&rejected.errors, rejected.total),
            ImportFailure::Unreadable(detail) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unreadable-file", detail)
            }
            ImportFailure::Busy(error) => Problem::unavailable(format!("{error:#}")),
            ImportFailure::Internal(error) => {
                Problem::internal(error.context("importing an upload"))
            }
        }
    }
}

/// The upload's name as given, reduced to characters safe in a file name.
fn upload_name(given: Option<&str>) -> String {
    let name: String = given
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    // "." and ".." name directories, not files.
    if name.trim_matches('.').is_empty() {
        "upload.csv".into()
    } else {
        name
    }
}

pub(crate) async fn upload_import(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<ImportParams>,
    Upload(body): Upload,
) -> Result<Response, Problem> {
    let stream = match params.stream.unwrap_or_default() {
        UploadStream::Journal => StreamDef::journal(),
    };
    let stream_name = stream.name.clone();
    let name = upload_name(params.name.as_deref());
    // Removed when dropped, whatever happens below.
    let dir = tempfile::Builder::new()
        .prefix("ledgersync-upload-")
        .tempdir()
        .map_err(Problem::internal)?;
    let path = dir.path().join(&name);
    std::fs::write(&path, &body).map_err(Problem::internal)?;
    let repeat = import::Repeat {
        force: params.force,
        as_new_source: params.as_new_source,
    };
    let outcome = import::import_csv_repeating(
        state.store.clone(),
        &caller.tenant,
        stream,
        &path,
        &name,
        &state.import,
        repeat,
    )
    .await;
    match outcome {
        Ok(ImportOutcome::Loaded(summary)) => {
            state
                .store
                .audit(
                    &caller.tenant.id,
                    &caller.actor(),
                    "import.loaded",
                    &import::audit_detail(&name, &stream_name, &summary),
                )
                .await?;
            Ok((
                StatusCode::CREATED,
                Json(serde_json::json!({ "status": "loaded", "summary": summary })),
            )
                .into_response())
        }
        Ok(ImportOutcome::AlreadyLoaded(past)) => Ok(Json(
            serde_json::json!({ "status": "already-loaded", "load": past }),
        )
        .into_response()),
        Err(error) if error.is::<import::LoadedUnderAnotherStream>() => Err(Problem::new(
            StatusCode::CONFLICT,
            "loaded-under-another-stream",
            error.to_string(),
        )),
        Err(error) => Err(ImportFailure::classify(error, &path, &name).into()),
    }
}

pub(crate) async fn list_loads(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ledgersync_store::PastLoad>>, Problem> {
    Ok(Json(state.store.loads(&caller.tenant).await?))
}
