//! Live drift over REST, thin adapters over [`crate::monitor::drift`]:
//! `GET /v1/models/{name}/drift[?version=V&format=json|html]` answers the latest evaluation of
//! a version (the default one unless named), as JSON or as the self-contained HTML report
//! `kiln drift -o html` writes; `POST /v1/models/{name}/drift/pin[?version=V]` makes the
//! version's current window its reference.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use kiln_monitor::live::ReferenceOrigin;
use serde::Deserialize;
use serde_json::json;

use crate::ServeState;
use crate::error::OipError;
use crate::inference::{InferError, ModelHub};
use crate::monitor::drift::{DriftStatus, LiveDriftMonitor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriftQuery {
    #[serde(default)]
    version: Option<u32>,
    /// `json` (default) or `html`.
    #[serde(default)]
    format: Option<String>,
}

fn live(state: &ServeState) -> Result<&LiveDriftMonitor, OipError> {
    state.monitor().drift().ok_or_else(|| {
        OipError::from(InferError::NotFound(
            "live drift is off on this server (monitor.drift = false)".into(),
        ))
    })
}

/// The version asked for, or the one that answers by default; it must be registered.
fn version_of(state: &ServeState, name: &str, version: Option<u32>) -> Result<u32, OipError> {
    let snapshot = state.snapshot();
    Ok(ModelHub::pick(&snapshot.models, name, version)?.version)
}

pub(crate) async fn get(
    State(state): State<ServeState>,
    Path(name): Path<String>,
    query: Result<Query<DriftQuery>, QueryRejection>,
) -> Result<Response, OipError> {
    let Query(q) = query.map_err(|e| OipError::bad_request(format!("invalid query: {e}")))?;
    let html = match q.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(other) => {
            return Err(OipError::bad_request(format!(
                "format {other:?}: use json or html"
            )));
        }
    };
    let drift = live(&state)?;
    let version = version_of(&state, &name, q.version)?;
    let evaluated = match drift.status(&name, version) {
        Some(DriftStatus::Evaluated(d)) => d,
        Some(DriftStatus::Pending(why)) => {
            return Err(InferError::NotFound(format!(
                "no drift evaluation of {name} v{version} yet: {why}"
            ))
            .into());
        }
        None => {
            return Err(InferError::NotFound(format!(
                "no drift evaluation of {name} v{version} yet: it has served no traffic since \
                 the server started (windows are compared every {}s, from {} rows)",
                drift.config().interval.as_secs(),
                drift.config().min_rows
            ))
            .into());
        }
    };
    if html {
        let reference = match &evaluated.reference.origin {
            ReferenceOrigin::Registered { source, .. } => {
                format!("training data recorded at registration ({source})")
            }
            ReferenceOrigin::Pinned { .. } => "a pinned window of its traffic".to_string(),
        };
        let page = kiln_monitor::drift::html::render(
            &evaluated.report,
            &format!("Live drift: {name} v{version}"),
            &reference,
            &format!("the last {} rows served", evaluated.window_rows),
        );
        return Ok(Html(page).into_response());
    }
    Ok(Json(&*evaluated).into_response())
}

pub(crate) async fn pin(
    State(state): State<ServeState>,
    Path(name): Path<String>,
    query: Result<Query<DriftQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, OipError> {
    let Query(q) = query.map_err(|e| OipError::bad_request(format!("invalid query: {e}")))?;
    let drift = live(&state)?;
    let version = version_of(&state, &name, q.version)?;
    let rows = drift
        .pin(&name, version)
        .map_err(|e| OipError::from(InferError::NotReady(e)))?;
    Ok(Json(json!({
        "model_name": name,
        "model_version": version.to_string(),
        "reference_rows": rows,
    })))
}
