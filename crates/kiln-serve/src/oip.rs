//! The Open Inference Protocol (KServe V2) over REST: health, server and model metadata, model
//! readiness, inference with JSON tensors and with the binary tensor extension
//! (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data_output`), and the
//! model repository extension (index, load, unload). Thin: bodies decode into the core's
//! [`tensor::InferRequest`]; answers encode its [`tensor::InferResponse`]. JSON `null` in
//! tensor data is a missing value.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::ServeState;
use crate::error::OipError;
use crate::inference::InferError;
use crate::tensor::{self, InferRequest, InputTensor, OUTPUT};

pub(crate) async fn live() -> StatusCode {
    StatusCode::OK
}

pub(crate) async fn ready(State(state): State<ServeState>) -> StatusCode {
    match state.check_ready().await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The protocol extensions this server implements.
pub(crate) const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "model_repository"];

pub(crate) async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "kiln", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }))
}

pub(crate) async fn model_metadata(
    State(state): State<ServeState>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, OipError> {
    let (name, version) = name_version(params);
    let m = tensor::model_metadata(&state, &name, version.as_deref())?;
    Ok(Json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": m.inputs,
        "outputs": m.outputs,
        "parameters": { "version": m.version, "feature_names": m.feature_names, "objective": m.objective },
    })))
}

pub(crate) async fn model_ready(
    State(state): State<ServeState>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<StatusCode, OipError> {
    let (name, version) = name_version(params);
    tensor::resolve(&state, &name, version.as_deref()).await?;
    Ok(StatusCode::OK)
}

fn name_version(params: Vec<(String, String)>) -> (String, Option<String>) {
    let mut name = String::new();
    let mut version = None;
    for (k, v) in params {
        match k.as_str() {
            "name" => name = v,
            "version" => version = Some(v),
            _ => {}
        }
    }
    (name, version)
}

/// The JSON part of an inference request (all of it, without the binary extension).
#[derive(Debug, Deserialize)]
struct JsonRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<JsonTensor>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct JsonTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Flattens nested JSON arrays of numbers (or booleans, or nulls for missing values).
fn flatten(input: &str, v: &Value, out: &mut Vec<f64>) -> Result<(), InferError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| flatten(input, x, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN));
            Ok(())
        }
        Value::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        Value::Null => {
            out.push(f64::NAN);
            Ok(())
        }
        other => Err(tensor::bad(format!(
            "input {input:?}: data holds {other}, not a number"
        ))),
    }
}

fn flag(parameters: &Map<String, Value>, key: &str) -> bool {
    parameters
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The binary tensor extension's header: how many leading bytes of the body are JSON.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a request body into its JSON header and the binary tensor data after it.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), InferError> {
    let Some(h) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n: usize = h
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            tensor::bad(format!(
                "header Inference-Header-Content-Length: {h:?} is not a byte count"
            ))
        })?;
    if n > body.len() {
        return Err(tensor::bad(format!(
            "header Inference-Header-Content-Length says {n} bytes of JSON but the body has {}",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// Decodes a REST request (JSON tensors, binary tensors, or both) into the core's form.
fn decode(
    name: String,
    version: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(InferRequest, bool), InferError> {
    let (json_part, mut binary) = split_body(headers, body)?;
    let req: JsonRequest = serde_json::from_slice(json_part)
        .map_err(|e| tensor::bad(format!("invalid inference request: {e}")))?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for t in req.inputs {
        let data = match (t.parameters.get("binary_data_size"), &t.data) {
            (Some(size), _) => {
                let size = size.as_u64().ok_or_else(|| {
                    tensor::bad(format!(
                        "input {:?}: parameters.binary_data_size {size} is not a byte count",
                        t.name
                    ))
                })? as usize;
                if size > binary.len() {
                    return Err(tensor::bad(format!(
                        "input {:?}: binary_data_size {size} but only {} bytes of binary data remain",
                        t.name,
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                tensor::decode_raw(&t.name, &t.datatype, &t.shape, mine)?
            }
            (None, Some(data)) => {
                tensor::check_header(&t.name, &t.datatype, &t.shape)?;
                let mut values = Vec::new();
                flatten(&t.name, data, &mut values)?;
                values
            }
            (None, None) => {
                return Err(tensor::bad(format!(
                    "input {:?} has neither data nor parameters.binary_data_size",
                    t.name
                )));
            }
        };
        inputs.push(InputTensor {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(tensor::bad(format!(
            "{} bytes of binary data are not claimed by any input's binary_data_size",
            binary.len()
        )));
    }
    // Binary output when asked for per output or for the whole request.
    let binary_out = flag(&req.parameters, "binary_data_output")
        || req
            .outputs
            .iter()
            .any(|o| flag(&o.parameters, "binary_data"));
    Ok((
        InferRequest {
            model: name,
            version,
            id: req.id,
            inputs,
            outputs: req.outputs.into_iter().map(|o| o.name).collect(),
        },
        binary_out,
    ))
}

/// The request body, or a 413 naming the limit.
pub(crate) fn body_or_413(
    state: &ServeState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, OipError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OipError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the request body is larger than this server's limit of {} bytes (serve.max_request_bytes)",
                    state.max_request_bytes()
                ),
                retry_after: None,
            }
        } else {
            OipError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

pub(crate) async fn infer(
    State(state): State<ServeState>,
    Path(params): Path<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OipError> {
    let body = body_or_413(&state, body)?;
    let (name, version) = name_version(params);
    let (req, binary_out) = decode(name, version, &headers, &body)?;
    let resp = tensor::infer(&state, req, crate::metrics::Protocol::Rest, &headers).await?;
    let [n, k] = resp.shape;
    let mut output = json!({ "name": OUTPUT, "datatype": "FP64", "shape": [n, k] });
    if binary_out {
        output["parameters"] = json!({ "binary_data_size": resp.data.len() * 8 });
    } else {
        output["data"] = json!(resp.data);
    }
    let mut head = json!({
        "model_name": resp.model_name,
        "model_version": resp.model_version,
        "outputs": [output],
    });
    if let Some(id) = resp.id {
        head["id"] = Value::String(id);
    }
    if let Some(f) = resp.fallback {
        head["parameters"] = json!({ "kiln_fallback": f.source, "kiln_fallback_reason": f.reason });
    }
    if !binary_out {
        return Ok(Json(head).into_response());
    }
    let head = head.to_string();
    let mut body = Vec::with_capacity(head.len() + resp.data.len() * 8);
    body.extend_from_slice(head.as_bytes());
    for x in &resp.data {
        body.extend_from_slice(&x.to_le_bytes());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                HeaderName::from_static(HEADER_LENGTH),
                head.len().to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

// ---- the model repository extension ----

#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

pub(crate) async fn repository_index(
    State(state): State<ServeState>,
    body: Bytes,
) -> Result<Json<Value>, OipError> {
    let req: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| OipError::bad_request(format!("invalid repository index request: {e}")))?
    };
    let snapshot = state.snapshot();
    let index: Vec<_> = state
        .models()
        .index(&snapshot.models)
        .into_iter()
        .filter(|e| !req.ready || e.state == "READY")
        .collect();
    Ok(Json(json!(index)))
}

pub(crate) async fn repository_load(
    State(state): State<ServeState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, OipError> {
    let snapshot = state.snapshot();
    state.models().load_model(&snapshot.models, &name).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn repository_unload(
    State(state): State<ServeState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, OipError> {
    let snapshot = state.snapshot();
    state.models().unload_model(&snapshot.models, &name)?;
    Ok(Json(json!({})))
}
