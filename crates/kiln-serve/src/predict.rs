//! Predict by entity: `POST /v1/models/{name}/predict`. The model's feature service is read
//! from the online store for the given entity keys, merged with request-time features, and
//! scored; a missing or expired input follows the model version's policy (recorded at
//! registration), which the response states along with every value it applied to.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use kiln_core::Value as V;
use kiln_core::spec::MissingPolicy;
use kiln_core::time::now_micros;
use kiln_features::online::{FeatureSelection, FeatureStatus, OnlineRequest, get_online_features};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::ServeState;
use crate::error::OipError;
use crate::metrics::{ModelLabels, Outcome, Protocol};
use crate::trace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    /// Join key -> values, one per row (the Feast form).
    entities: Map<String, Value>,
    /// Request-time features: input name -> one value per row; they take precedence.
    #[serde(default)]
    features: Map<String, Value>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    return_features: bool,
}

fn number(v: &V) -> Option<f64> {
    match v {
        V::Int32(x) => Some(f64::from(*x)),
        V::Int64(x) => Some(*x as f64),
        V::Float32(x) => Some(f64::from(*x)),
        V::Float64(x) => Some(*x),
        V::Bool(b) => Some(f64::from(u8::from(*b))),
        V::Null | V::String(_) | V::Bytes(_) | V::Timestamp(_) => None,
    }
}

/// Each row's entity key in the canonical form labels are matched against
/// (`driver_id=1001`, several keys sorted and joined by `&`).
fn entity_keys(entities: &Map<String, Value>, n: usize) -> Vec<String> {
    (0..n)
        .map(|row| {
            kiln_monitor::feedback::entity_key(entities.iter().map(|(k, values)| {
                let v = values.get(row).unwrap_or(&Value::Null);
                (k.as_str(), scalar_text(v))
            }))
        })
        .collect()
}

/// A JSON scalar as entity-key text: strings without their quotes, so `1001` and `"1001"`
/// name the same entity.
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) async fn predict(
    State(state): State<ServeState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, OipError> {
    let started = Instant::now();
    let span = trace::inference_span(Protocol::Predict);
    let mut labels = ModelLabels::default();
    let mut rows = None;
    let result = predict_recorded(
        &state,
        &name,
        &headers,
        body,
        started,
        &mut labels,
        &mut rows,
    )
    .instrument(span.clone())
    .await;
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::of_status(e.status),
    };
    let elapsed = started.elapsed();
    state
        .metrics()
        .inference(Protocol::Predict, &labels, outcome, elapsed);
    state.monitor().answered(&labels.model, outcome, elapsed);
    if outcome != Outcome::ClientError {
        let answer = result.as_ref().ok().map(|j| &j.0);
        let failed = answer.is_none_or(|a| a.get("fallback").is_some());
        state
            .canaries()
            .observe(&labels.model, &labels.version, failed, elapsed, || {
                let rows = answer.and_then(|a| a["scores"].as_array());
                rows.into_iter()
                    .flatten()
                    .filter_map(|r| r.get(0)?.as_f64())
                    .collect()
            });
    }
    trace::end_inference(&span, &labels, rows, outcome);
    result
}

async fn predict_recorded(
    state: &ServeState,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
    labels: &mut ModelLabels,
    rows_scored: &mut Option<usize>,
) -> Result<Json<Value>, OipError> {
    let body = crate::oip::body_or_413(state, body)?;
    let req: PredictRequest = serde_json::from_slice(&body)
        .map_err(|e| OipError::bad_request(format!("invalid predict request: {e}")))?;
    let snapshot = state.snapshot();
    // Under a deployment, the request's entity keys are its caller key (sticky by entity)
    // and go with its shadow copies to the prediction log.
    let keys = snapshot.routers.contains_key(name).then(|| {
        let n = req
            .entities
            .values()
            .filter_map(Value::as_array)
            .map(Vec::len)
            .max();
        entity_keys(&req.entities, n.unwrap_or(0))
    });
    let routed = crate::rollout::route(
        &snapshot.models,
        &snapshot.routers,
        name,
        req.version,
        headers,
        keys.as_ref().map(|k| k.join("\n")).as_deref(),
    )?;
    let spec = routed.spec;
    *labels = ModelLabels::new(&spec.name, spec.version);
    let _in_flight = state.metrics().in_flight(labels);
    let service = spec.feature_service.clone().ok_or_else(|| {
        OipError::bad_request(format!(
            "{}@v{} has no feature service to read features from; register it with --feature-service, or send the features to /v2/models/{name}/infer",
            spec.name, spec.version
        ))
    })?;
    let entities = req
        .entities
        .iter()
        .map(|(k, v)| match v {
            Value::Array(values) => Ok((k.clone(), values.clone())),
            other => Err(OipError::bad_request(format!(
                "entities.{k} must be a list of values, not {other}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fetch = tracing::info_span!(
        target: trace::TARGET,
        trace::FEATURE_FETCH,
        kiln.feature_service = service.as_str(),
        kiln.entity_rows = tracing::field::Empty,
    );
    let online = OnlineRequest {
        features: FeatureSelection::Service(service),
        entities,
        full_feature_names: false,
    };
    let resp = get_online_features(&snapshot.catalog, state.store(), &online, now_micros())
        .instrument(fetch.clone())
        .await?;
    state.metrics().feature_lookups(&resp);
    let n = resp.columns.first().map_or(0, |c| c.values.len());
    fetch.record("kiln.entity_rows", trace::count(n));
    drop(fetch);

    for (k, v) in &req.features {
        if !spec.inputs.contains(k) {
            return Err(OipError::bad_request(format!(
                "features.{k}: the model has no input {k:?} (inputs: {})",
                spec.inputs.join(", ")
            )));
        }
        if v.as_array().map(Vec::len) != Some(n) {
            return Err(OipError::bad_request(format!(
                "features.{k} must be a list of {n} values, one per entity row"
            )));
        }
    }

    let mut rows = vec![f64::NAN; n * spec.inputs.len()];
    let mut missing = Vec::new();
    let mut used: Map<String, Value> = Map::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let column = resp.columns.iter().find(|c| &c.name == input);
        let given = req.features.get(input).and_then(Value::as_array);
        let mut values = Vec::with_capacity(n);
        for row in 0..n {
            let value = match (given.map(|g| &g[row]), column) {
                (Some(Value::Null), _) | (None, None) => None,
                (Some(g), _) => Some(g.as_f64().ok_or_else(|| {
                    OipError::bad_request(format!("features.{input}[{row}]: {g} is not a number"))
                })?),
                (None, Some(c)) => match c.statuses[row] {
                    FeatureStatus::Present => match &c.values[row] {
                        V::Null => None,
                        v => Some(number(v).ok_or_else(|| {
                            OipError::bad_request(format!(
                                "feature {input} of row {row} is {v}, not a number"
                            ))
                        })?),
                    },
                    status => {
                        missing.push(
                            json!({ "row": row, "feature": input, "status": status.label() }),
                        );
                        None
                    }
                },
            };
            let value = match (value, spec.on_missing) {
                (Some(v), _) => v,
                (None, MissingPolicy::Missing) => f64::NAN,
                (None, MissingPolicy::Default { value }) => value,
                (None, MissingPolicy::Reject) => {
                    return Err(OipError::bad_request(format!(
                        "row {row}: input {input} is missing and {}@v{} rejects missing inputs (on_missing = reject)",
                        spec.name, spec.version
                    )));
                }
            };
            rows[row * spec.inputs.len() + i] = value;
            values.push(if value.is_nan() {
                Value::Null
            } else {
                json!(value)
            });
        }
        used.insert(input.clone(), Value::Array(values));
    }

    let model = state.models().get(&spec).await?;
    let k = spec.n_outputs;
    let monitor = state.monitor();
    let logged = monitor.wants_predictions().then(|| rows.clone());
    let request_id = monitor.new_request_id();
    crate::rollout::shadow::mirror(
        state,
        &routed.shadow,
        &rows,
        Some(&request_id),
        keys.as_deref(),
    );
    *rows_scored = Some(n);
    let scored = state.models().score(&snapshot.models, &model, rows).await?;
    state.metrics().scored(labels, &scored);
    if let Some(features) = logged {
        monitor.predicted(
            &model,
            Protocol::Predict,
            request_id.clone(),
            features,
            scored.values.clone(),
            Some(entity_keys(&req.entities, n)),
            started,
        );
    }
    let (scores, fallback) = (scored.values, scored.fallback);
    let scores: Vec<&[f64]> = scores.chunks(k.max(1)).collect();
    let mut out = json!({
        "request_id": request_id,
        "model_name": spec.name,
        "model_version": spec.version.to_string(),
        "scores": scores,
        "on_missing": spec.on_missing.to_string(),
        "missing": missing,
    });
    if req.return_features {
        out["features"] = Value::Object(used);
    }
    if let Some(f) = fallback {
        out["fallback"] = json!(f);
    }
    Ok(Json(out))
}
