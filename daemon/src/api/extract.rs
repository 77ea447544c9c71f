//! Extractors whose rejections are problem documents, so a malformed body or query
//! gets the same kind of answer as every other error.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query};
use axum::http::header::ACCEPT;
use axum::http::request::Parts;
use axum::Json;

use super::problem::Problem;

/// Whether a request accepts CSV (`Accept: text/csv`), read without copying the
/// request's headers as the `HeaderMap` extractor would.
pub struct WantsCsv(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for WantsCsv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(WantsCsv(
            parts
                .headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/csv")),
        ))
    }
}

/// A JSON body whose rejection is a problem document.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| Body(value))
            .map_err(|rejection| {
                Problem::new(rejection.status(), "invalid-body", rejection.body_text())
            })
    }
}

/// A raw request body (an uploaded file) whose rejection, e.g. over the size limit,
/// is a problem document.
pub struct Upload(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = Problem;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Upload)
            .map_err(|rejection| {
                Problem::new(rejection.status(), "invalid-body", rejection.body_text())
            })
    }
}

/// Query parameters whose rejection is a problem document.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| {
                Problem::new(
                    rejection.status(),
                    "invalid-parameter",
                    rejection.body_text(),
                )
            })
    }
}
