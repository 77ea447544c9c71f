//! `POST /v1/imports` (a CSV body through a stream, all rows or none) and
//! `GET /v1/loads` (what was loaded and refused).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledgersync_config::StreamDef;
use serde::Deserialize;

use super::auth::Caller;
use super::extract::{Params, Upload};
use super::problem::Problem;
use super::state::AppState;
use crate::import::{self, FileRejected, ImportOutcome};

/// Largest accepted upload; bigger files go through the CLI or a watched folder.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    stream: Option<String>,
    /// File name, for messages.
    name: Option<String>,
    /// Load the file again even if it was loaded under the same mapping.
    #[serde(default)]
    force: bool,
    /// Load a file whose content another stream already loaded, as a source of its own.
    #[serde(default)]
    as_new_source: bool,
}

pub(crate) async fn upload_import(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<ImportParams>,
    Upload(body): Upload,
) -> Result<Response, Problem> {
    let stream = match params.stream.as_deref().unwrap_or("journal") {
        "journal" => StreamDef::journal(),
        other => {
            return Err(Problem::bad(format!(
                "stream: '{other}' is not a stream; built in: journal"
            )))
        }
    };
    let name: String = params
        .name
        .unwrap_or_else(|| "upload.csv".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    // Removed when dropped, whatever happens below.
    let dir = tempfile::Builder::new()
        .prefix("ledgersync-upload-")
        .tempdir()
        .map_err(Problem::unavailable)?;
    let path = dir.path().join(if name.is_empty() {
        "upload.csv".to_string()
    } else {
        name
    });
    std::fs::write(&path, &body).map_err(Problem::unavailable)?;
    let repeat = import::Repeat {
        force: params.force,
        as_new_source: params.as_new_source,
    };
    let outcome = import::import_csv_repeating(
        state.store.clone(),
        &caller.tenant,
        stream,
        &path,
        &state.import,
        repeat,
    )
    .await;
    drop(dir);
    match outcome {
        Ok(ImportOutcome::Loaded(summary)) => {
            state
                .store
                .audit(
                    &caller.tenant.id,
                    &caller.actor(),
                    "import.loaded",
                    &format!("{} posting(s)", summary.postings),
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
        Err(error) => match error.downcast::<FileRejected>() {
            Ok(rejected) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rows-rejected",
                format!("{} bad row(s); nothing was imported.", rejected.total),
            )
            .with(serde_json::json!({ "errors": rejected.errors, "total": rejected.total }))),
            Err(other) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "import-failed",
                format!("{other:#}"),
            )),
        },
    }
}

pub(crate) async fn list_loads(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ledgersync_store::PastLoad>>, Problem> {
    Ok(Json(state.store.loads(&caller.tenant).await?))
}
