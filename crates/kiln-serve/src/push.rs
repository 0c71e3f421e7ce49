//! `POST /v1/push/{source}`: events into a source's log, answered once they are durable. A thin
//! adapter over `kiln_stream::push` (JSON, or Arrow IPC with
//! `Content-Type: application/vnd.apache.arrow.stream`); the append waits for the disk on a
//! blocking thread.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use kiln_stream::push::{Encoding, Receipt};

use crate::ServeState;
use crate::error::OipError;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub(crate) async fn push(
    State(state): State<ServeState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Receipt>, OipError> {
    let body = body.map_err(|e| OipError {
        status: e.status(),
        message: e.body_text(),
        retry_after: None,
    })?;
    let Some(hub) = state.push_hub().cloned() else {
        return Err(OipError {
            status: axum::http::StatusCode::NOT_FOUND,
            message: format!(
                "this server takes no events: no online feature view has windowed aggregations (source {source:?})"
            ),
            retry_after: None,
        });
    };
    let encoding = match headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(t) if t.starts_with(ARROW_STREAM) => Encoding::ArrowIpc,
        _ => Encoding::Json,
    };
    let name = source.clone();
    let result = tokio::task::spawn_blocking(move || hub.push(&source, &body, encoding))
        .await
        .map_err(|e| OipError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("push task failed: {e}"),
            retry_after: None,
        })?;
    match result {
        Ok(receipt) => {
            state.metrics().pushed(&name, Some(receipt.accepted));
            Ok(Json(receipt))
        }
        Err(e) => {
            let e = OipError::from(e);
            // Unknown sources are not counted: a typo in a URL must not add series.
            if e.status == axum::http::StatusCode::BAD_REQUEST {
                state.metrics().pushed(&name, None);
            }
            Err(e)
        }
    }
}
