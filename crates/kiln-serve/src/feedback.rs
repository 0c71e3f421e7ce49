//! Label feedback over REST: `POST /v1/feedback` joins labels to logged predictions, and
//! `GET /v1/models/{name}/performance` reports the windowed performance they add up to. Thin
//! adapters over `kiln_monitor::feedback`.
//!
//! A label names its prediction by `request_id` (and `row`, default 0; the id is the request's
//! OIP `id`, or the `request_id` predict-by-entity answered with), or by `entity` (join key ->
//! value) and `timestamp` (when the outcome happened: the entity's latest prediction at or
//! before it is the one judged; without it, the latest). One label gets 200 with the join or
//! 404 saying why it matched nothing; `{"labels": [...]}` gets 200 with a result per label.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use kiln_core::time::{now_micros, parse_duration, parse_timestamp};
use kiln_monitor::feedback::{Feedback, Label, LabelKey, entity_key};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::ServeState;
use crate::error::OipError;
use crate::inference::InferError;
use crate::predict::scalar_text;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    model: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    row: Option<usize>,
    #[serde(default)]
    entity: Option<Map<String, Value>>,
    #[serde(default)]
    timestamp: Option<String>,
    label: Value,
}

fn feedback(state: &ServeState) -> Result<&Arc<Feedback>, OipError> {
    state.monitor().feedback().ok_or_else(|| {
        OipError::from(InferError::NotFound(
            "label feedback is off on this server (monitor.feedback = false)".into(),
        ))
    })
}

/// The label, validated; `at` names it in errors (`labels[3]` or `request`).
fn parse_label(body: LabelBody, at: &str) -> Result<Label, String> {
    let label = match &body.label {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::Bool(b) => f64::from(u8::from(*b)),
        other => return Err(format!("{at}.label: {other} is not a number or a boolean")),
    };
    let key = match (body.request_id, body.entity) {
        (Some(request_id), None) => {
            if body.timestamp.is_some() {
                return Err(format!(
                    "{at}.timestamp: only a label by entity takes a timestamp"
                ));
            }
            LabelKey::Request {
                request_id,
                row: body.row.unwrap_or(0),
            }
        }
        (None, Some(entity)) => {
            if entity.is_empty() {
                return Err(format!("{at}.entity: name at least one join key"));
            }
            if body.row.is_some() {
                return Err(format!("{at}.row: only a label by request_id takes a row"));
            }
            let mut pairs = Vec::new();
            for (k, v) in &entity {
                if v.is_array() || v.is_object() || v.is_null() {
                    return Err(format!("{at}.entity.{k}: {v} is not a single key value"));
                }
                pairs.push((k.as_str(), scalar_text(v)));
            }
            let at_time = body
                .timestamp
                .as_deref()
                .map(parse_timestamp)
                .transpose()
                .map_err(|e| format!("{at}.timestamp: {e}"))?;
            LabelKey::Entity {
                entity: entity_key(pairs),
                at: at_time,
            }
        }
        (Some(_), Some(_)) => {
            return Err(format!("{at}: give request_id or entity, not both"));
        }
        (None, None) => {
            return Err(format!(
                "{at}: name the prediction with request_id (and row) or with entity (and timestamp)"
            ));
        }
    };
    Ok(Label {
        model: body.model,
        key,
        label,
    })
}

fn joined_json(j: &kiln_monitor::events::FeedbackEvent) -> Value {
    json!({
        "model_name": j.model,
        "model_version": j.version.to_string(),
        "request_id": j.request_id,
        "row": j.row,
        "prediction": j.prediction,
        "label": j.label,
    })
}

pub(crate) async fn post_feedback(
    State(state): State<ServeState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, OipError> {
    let body = crate::oip::body_or_413(&state, body)?;
    let feedback = feedback(&state)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| OipError::bad_request(format!("invalid feedback: {e}")))?;
    let now = now_micros();
    if let Some(items) = value.get("labels") {
        let items = items
            .as_array()
            .ok_or_else(|| OipError::bad_request("labels must be a list of labels"))?;
        let mut labels = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("labels[{i}]");
            let body: LabelBody = serde_json::from_value(item.clone())
                .map_err(|e| OipError::bad_request(format!("{at}: {e}")))?;
            labels.push(parse_label(body, &at).map_err(OipError::bad_request)?);
        }
        let mut results = Vec::with_capacity(labels.len());
        let mut matched = 0;
        for label in &labels {
            results.push(match feedback.label(label, now).await {
                Ok(j) => {
                    matched += 1;
                    joined_json(&j)
                }
                Err(e) => json!({ "error": e }),
            });
        }
        return Ok(Json(json!({
            "matched": matched,
            "unmatched": labels.len() - matched,
            "results": results,
        })));
    }
    let body: LabelBody = serde_json::from_value(value)
        .map_err(|e| OipError::bad_request(format!("invalid feedback: {e}")))?;
    let label = parse_label(body, "request").map_err(OipError::bad_request)?;
    let joined = feedback
        .label(&label, now)
        .await
        .map_err(|e| OipError::from(InferError::NotFound(e)))?;
    Ok(Json(joined_json(&joined)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerformanceQuery {
    #[serde(default)]
    version: Option<u32>,
    /// A duration like `15m` or `1h`; the server's performance window by default.
    #[serde(default)]
    window: Option<String>,
}

pub(crate) async fn performance(
    State(state): State<ServeState>,
    Path(name): Path<String>,
    query: Result<Query<PerformanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, OipError> {
    let Query(q) = query.map_err(|e| OipError::bad_request(format!("invalid query: {e}")))?;
    let feedback = feedback(&state)?;
    if !state.snapshot().models.contains_key(&name) {
        return Err(InferError::NotFound(format!("model {name:?} is not registered")).into());
    }
    let window = match q.window.as_deref() {
        None => state.monitor().performance_window(),
        Some(w) => Duration::from_secs(
            parse_duration(w).map_err(|e| OipError::bad_request(format!("window {w:?}: {e}")))?,
        ),
    };
    let versions = feedback.performance(&name, q.version, window, now_micros());
    Ok(Json(json!({
        "model_name": name,
        "window_seconds": window.as_secs(),
        "versions": versions,
    })))
}
