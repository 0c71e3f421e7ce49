//! The Open Inference Protocol (KServe V2) over REST: health, server and model metadata, model
//! readiness and inference, with JSON tensors. Thin: requests become rows for
//! `inference::score`, results become tensors.
//!
//! A tabular model takes either one 2-D tensor `[N, F]` (any name; F the model's input count,
//! in its input order) or one tensor per input feature, named like the features, of shape `[N]`
//! or `[N, 1]`. JSON `null` in the data is a missing value. The output is `predict`,
//! `FP64 [N, K]` (K = the model's outputs: class probabilities, or one value).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ServeState;
use crate::error::OipError;
use crate::inference::{LoadedModel, ModelHub, score};

pub(crate) const OUTPUT: &str = "predict";

pub(crate) async fn live() -> StatusCode {
    StatusCode::OK
}

pub(crate) async fn ready(State(state): State<ServeState>) -> StatusCode {
    match state.check_ready().await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub(crate) async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "kiln", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }))
}

fn version_arg(v: Option<String>) -> Result<Option<u32>, OipError> {
    v.map(|v| {
        v.trim_start_matches('v')
            .parse::<u32>()
            .map_err(|_| OipError::bad_request(format!("model version {v:?} is not a number")))
    })
    .transpose()
}

async fn resolve(
    state: &ServeState,
    name: &str,
    version: Option<String>,
) -> Result<std::sync::Arc<LoadedModel>, OipError> {
    let version = version_arg(version)?;
    let snapshot = state.snapshot();
    let spec = ModelHub::pick(&snapshot.models, name, version)?.clone();
    Ok(state.models().get(&spec).await?)
}

pub(crate) async fn model_metadata(
    State(state): State<ServeState>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, OipError> {
    let (name, version) = name_version(params);
    let snapshot = state.snapshot();
    let spec = ModelHub::pick(&snapshot.models, &name, version_arg(version)?)?;
    let versions: Vec<String> = snapshot.models[&name]
        .versions
        .iter()
        .map(|v| v.spec.version.to_string())
        .collect();
    let f = spec.inputs.len() as i64;
    Ok(Json(json!({
        "name": name,
        "versions": versions,
        "platform": format!("kiln_{}", spec.format),
        "inputs": [{ "name": "input", "datatype": "FP64", "shape": [-1, f] }],
        "outputs": [{ "name": OUTPUT, "datatype": "FP64", "shape": [-1, spec.n_outputs] }],
        "parameters": { "version": spec.version.to_string(), "feature_names": spec.inputs, "objective": spec.objective },
    })))
}

pub(crate) async fn model_ready(
    State(state): State<ServeState>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<StatusCode, OipError> {
    let (name, version) = name_version(params);
    resolve(&state, &name, version).await?;
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

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<Tensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Debug, Deserialize)]
struct Tensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
}

/// Flattens nested JSON arrays of numbers (or booleans, or nulls for missing values).
fn flatten(input: &str, v: &Value, out: &mut Vec<f64>) -> Result<(), OipError> {
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
        other => Err(OipError::bad_request(format!(
            "input {input:?}: data holds {other}, not a number"
        ))),
    }
}

const DATATYPES: [&str; 11] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32",
    "FP64",
];

/// Checks one tensor's datatype, shape and element count; returns its values.
fn tensor_values(t: &Tensor) -> Result<Vec<f64>, OipError> {
    if !DATATYPES.contains(&t.datatype.as_str()) {
        return Err(OipError::bad_request(format!(
            "input {:?}: datatype {:?} is not numeric (expected one of {})",
            t.name,
            t.datatype,
            DATATYPES.join(", ")
        )));
    }
    if t.shape.iter().any(|d| *d < 0) {
        return Err(OipError::bad_request(format!(
            "input {:?}: shape {:?} has a negative dimension",
            t.name, t.shape
        )));
    }
    let mut values = Vec::new();
    flatten(&t.name, &t.data, &mut values)?;
    let expected: i64 = t.shape.iter().product();
    if values.len() as i64 != expected {
        return Err(OipError::bad_request(format!(
            "input {:?}: shape {:?} has {expected} elements but data has {}",
            t.name,
            t.shape,
            values.len()
        )));
    }
    Ok(values)
}

/// The request's tensors as row-major rows in the model's input order.
fn rows(model: &LoadedModel, inputs: &[Tensor]) -> Result<(Vec<f64>, usize), OipError> {
    let names = &model.spec.inputs;
    let f = names.len();
    let expected = || {
        format!(
            "model {} takes one tensor of shape [N, {f}] or one tensor per input ({}) of shape [N]",
            model.spec.name,
            names.join(", ")
        )
    };
    if let [t] = inputs {
        let values = tensor_values(t)?;
        let n = match t.shape.as_slice() {
            [n, w] if *w as usize == f => *n as usize,
            [w] if *w as usize == f => 1,
            [n] | [n, 1] if f == 1 => *n as usize,
            other => {
                return Err(OipError::bad_request(format!(
                    "input {:?}: shape {other:?} does not fit: {}",
                    t.name,
                    expected()
                )));
            }
        };
        return Ok((values, n));
    }
    let mut columns = Vec::with_capacity(f);
    for name in names {
        let t = inputs
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| OipError::bad_request(format!("no input {name:?}: {}", expected())))?;
        if !matches!(t.shape.as_slice(), [_] | [_, 1]) {
            return Err(OipError::bad_request(format!(
                "input {name:?}: shape {:?} should be [N] or [N, 1]",
                t.shape
            )));
        }
        columns.push(tensor_values(t)?);
    }
    if let Some(extra) = inputs.iter().find(|t| !names.contains(&t.name)) {
        return Err(OipError::bad_request(format!(
            "unknown input {:?}: {}",
            extra.name,
            expected()
        )));
    }
    let n = columns.first().map_or(0, Vec::len);
    if let Some((i, c)) = columns.iter().enumerate().find(|(_, c)| c.len() != n) {
        return Err(OipError::bad_request(format!(
            "input {:?} has {} rows, input {:?} has {n}",
            names[i],
            c.len(),
            names[0]
        )));
    }
    let rows = (0..n)
        .flat_map(|r| columns.iter().map(move |c| c[r]))
        .collect();
    Ok((rows, n))
}

pub(crate) async fn infer(
    State(state): State<ServeState>,
    Path(params): Path<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Json<Value>, OipError> {
    let (name, version) = name_version(params);
    let req: InferRequest = serde_json::from_slice(&body)
        .map_err(|e| OipError::bad_request(format!("invalid inference request: {e}")))?;
    let model = resolve(&state, &name, version).await?;
    if let Some(o) = req.outputs.iter().find(|o| o.name != OUTPUT) {
        return Err(OipError::bad_request(format!(
            "unknown output {:?} (the model has {OUTPUT:?})",
            o.name
        )));
    }
    let (rows, n) = rows(&model, &req.inputs)?;
    let k = model.spec.n_outputs;
    let out = score(model.clone(), rows).await?;
    let mut resp = json!({
        "model_name": model.spec.name,
        "model_version": model.spec.version.to_string(),
        "outputs": [{ "name": OUTPUT, "datatype": "FP64", "shape": [n, k], "data": out }],
    });
    if let Some(id) = req.id {
        resp["id"] = Value::String(id);
    }
    Ok(Json(resp))
}
