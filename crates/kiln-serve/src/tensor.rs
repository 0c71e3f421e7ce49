//! The Open Inference Protocol's core, with no transport in it: typed tensors in, the model's
//! rows out, scores back as a tensor. REST with JSON tensors, REST with the binary tensor
//! extension and gRPC (`contents` or `raw_input_contents`) all decode into [`InputTensor`]s
//! and call [`infer`]; they differ only in how bytes become numbers.
//!
//! A tabular model takes either one 2-D tensor `[N, F]` (any name; F the model's input count,
//! in its input order) or one tensor per input feature, named like the features, of shape `[N]`
//! or `[N, 1]`. The output is `predict`, `FP64 [N, K]` (K = the model's outputs: class
//! probabilities, or one value).

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use tracing::Instrument;

use crate::ServeState;
use crate::inference::{InferError, LoadedModel, ModelHub};
use crate::metrics::{ModelLabels, Outcome, Protocol};
use crate::trace;

/// The one output tensor of every model.
pub const OUTPUT: &str = "predict";

/// The numeric datatypes of the protocol (BYTES, strings, is not a model input here).
pub const DATATYPES: [&str; 12] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64",
];

/// An input tensor with its values as `f64` (NaN for a missing value).
#[derive(Debug, Clone)]
pub struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Vec<f64>,
}

/// An inference request, decoded from any transport.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub model: String,
    pub version: Option<String>,
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    /// Names of the requested outputs (empty: all).
    pub outputs: Vec<String>,
}

/// The answer: the model version that scored and its `predict` tensor.
#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    /// `[rows, outputs per row]`.
    pub shape: [usize; 2],
    pub data: Vec<f64>,
    /// Set when the model's fallback chain answered.
    pub fallback: Option<crate::resilience::FallbackUsed>,
}

/// A tensor's description in model metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// Model metadata, as every transport reports it.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    /// The served version, its input feature names and objective.
    pub version: String,
    pub feature_names: Vec<String>,
    pub objective: String,
}

pub fn bad(message: impl Into<String>) -> InferError {
    InferError::BadRequest(message.into())
}

/// Parses a protocol version string (`"2"`, or `"v2"`); empty means none.
pub fn version_arg(v: Option<&str>) -> Result<Option<u32>, InferError> {
    match v {
        None | Some("") => Ok(None),
        Some(v) => v
            .trim_start_matches('v')
            .parse::<u32>()
            .map(Some)
            .map_err(|_| bad(format!("model version {v:?} is not a number"))),
    }
}

/// The loaded model version that answers `name` (and `version`).
pub async fn resolve(
    state: &ServeState,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<LoadedModel>, InferError> {
    let version = version_arg(version)?;
    let snapshot = state.snapshot();
    let spec = ModelHub::pick(&snapshot.models, name, version)?.clone();
    state.models().get(&spec).await
}

pub fn model_metadata(
    state: &ServeState,
    name: &str,
    version: Option<&str>,
) -> Result<ModelMetadata, InferError> {
    let snapshot = state.snapshot();
    let spec = ModelHub::pick(&snapshot.models, name, version_arg(version)?)?;
    let versions = snapshot.models[name]
        .versions
        .iter()
        .map(|v| v.spec.version.to_string())
        .collect();
    Ok(ModelMetadata {
        name: name.to_string(),
        versions,
        platform: format!("kiln_{}", spec.format),
        inputs: vec![TensorMeta {
            name: "input".into(),
            datatype: "FP64",
            shape: vec![-1, spec.inputs.len() as i64],
        }],
        outputs: vec![TensorMeta {
            name: OUTPUT.into(),
            datatype: "FP64",
            shape: vec![-1, spec.n_outputs as i64],
        }],
        version: spec.version.to_string(),
        feature_names: spec.inputs.clone(),
        objective: spec.objective.clone(),
    })
}

/// Checks a tensor's datatype and shape before its data is decoded; returns its element count.
pub fn check_header(name: &str, datatype: &str, shape: &[i64]) -> Result<usize, InferError> {
    if !DATATYPES.contains(&datatype) {
        return Err(bad(format!(
            "input {name:?}: datatype {datatype:?} is not numeric (expected one of {})",
            DATATYPES.join(", ")
        )));
    }
    if shape.iter().any(|d| *d < 0) {
        return Err(bad(format!(
            "input {name:?}: shape {shape:?} has a negative dimension"
        )));
    }
    usize::try_from(shape.iter().product::<i64>())
        .map_err(|_| bad(format!("input {name:?}: shape {shape:?} is too large")))
}

/// Checks that a decoded tensor holds as many values as its shape says.
pub fn check_count(t: &InputTensor) -> Result<(), InferError> {
    let expected = check_header(&t.name, &t.datatype, &t.shape)?;
    if t.data.len() != expected {
        return Err(bad(format!(
            "input {:?}: shape {:?} has {expected} elements but data has {}",
            t.name,
            t.shape,
            t.data.len()
        )));
    }
    Ok(())
}

/// Bytes per element of a datatype in raw (binary) form.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Decodes a raw little-endian tensor (the binary extension and gRPC `raw_input_contents`).
pub fn decode_raw(
    name: &str,
    datatype: &str,
    shape: &[i64],
    bytes: &[u8],
) -> Result<Vec<f64>, InferError> {
    let count = check_header(name, datatype, shape)?;
    let size = element_size(datatype).ok_or_else(|| {
        bad(format!(
            "input {name:?}: datatype {datatype:?} has no raw form"
        ))
    })?;
    if bytes.len() != count * size {
        return Err(bad(format!(
            "input {name:?}: shape {shape:?} of {datatype} needs {} bytes but {} were sent",
            count * size,
            bytes.len()
        )));
    }
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    Ok(match datatype {
        "BOOL" | "UINT8" => bytes.iter().map(|b| f64::from(*b)).collect(),
        "INT8" => bytes.iter().map(|b| f64::from(*b as i8)).collect(),
        "UINT16" => each(bytes, |b| f64::from(u16::from_le_bytes(b))),
        "INT16" => each(bytes, |b| f64::from(i16::from_le_bytes(b))),
        "FP16" => each(bytes, |b| f16_to_f64(u16::from_le_bytes(b))),
        "UINT32" => each(bytes, |b| f64::from(u32::from_le_bytes(b))),
        "INT32" => each(bytes, |b| f64::from(i32::from_le_bytes(b))),
        "FP32" => each(bytes, |b| f64::from(f32::from_le_bytes(b))),
        "UINT64" => each(bytes, |b| u64::from_le_bytes(b) as f64),
        "INT64" => each(bytes, |b| i64::from_le_bytes(b) as f64),
        _ => each(bytes, f64::from_le_bytes),
    })
}

/// IEEE 754 half precision to f64.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The request's tensors as row-major rows in the model's input order; returns (rows, n).
fn rows(model: &LoadedModel, inputs: Vec<InputTensor>) -> Result<(Vec<f64>, usize), InferError> {
    let names = &model.spec.inputs;
    let f = names.len();
    let expected = || {
        format!(
            "model {} takes one tensor of shape [N, {f}] or one tensor per input ({}) of shape [N]",
            model.spec.name,
            names.join(", ")
        )
    };
    for t in &inputs {
        check_count(t)?;
    }
    if inputs.len() == 1 {
        let t = inputs.into_iter().next().expect("one input");
        let n = match t.shape.as_slice() {
            [n, w] if *w as usize == f => *n as usize,
            [w] if *w as usize == f => 1,
            [n] | [n, 1] if f == 1 => *n as usize,
            other => {
                return Err(bad(format!(
                    "input {:?}: shape {other:?} does not fit: {}",
                    t.name,
                    expected()
                )));
            }
        };
        return Ok((t.data, n));
    }
    if let Some(extra) = inputs.iter().find(|t| !names.contains(&t.name)) {
        return Err(bad(format!(
            "unknown input {:?}: {}",
            extra.name,
            expected()
        )));
    }
    let mut columns = Vec::with_capacity(f);
    for name in names {
        let t = inputs
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| bad(format!("no input {name:?}: {}", expected())))?;
        if !matches!(t.shape.as_slice(), [_] | [_, 1]) {
            return Err(bad(format!(
                "input {name:?}: shape {:?} should be [N] or [N, 1]",
                t.shape
            )));
        }
        columns.push(&t.data);
    }
    let n = columns.first().map_or(0, |c| c.len());
    if let Some((i, c)) = columns.iter().enumerate().find(|(_, c)| c.len() != n) {
        return Err(bad(format!(
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

/// Scores a decoded request, recording its outcome and timings under `protocol`. The request's
/// `headers` take part in routing (`rollout`).
pub async fn infer(
    state: &ServeState,
    req: InferRequest,
    protocol: Protocol,
    headers: &HeaderMap,
) -> Result<InferResponse, InferError> {
    let started = Instant::now();
    let span = trace::inference_span(protocol);
    let mut labels = ModelLabels::default();
    let result = infer_recorded(state, req, protocol, headers, started, &mut labels)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::of_error(e),
    };
    let elapsed = started.elapsed();
    state
        .metrics()
        .inference(protocol, &labels, outcome, elapsed);
    state.monitor().answered(&labels.model, outcome, elapsed);
    if outcome != Outcome::ClientError {
        let failed = result.as_ref().map_or(true, |r| r.fallback.is_some());
        state
            .canaries()
            .observe(&labels.model, &labels.version, failed, elapsed, || {
                result.as_ref().map_or(Vec::new(), |r| {
                    r.data.iter().step_by(r.shape[1].max(1)).copied().collect()
                })
            });
    }
    let rows = result.as_ref().ok().map(|r| r.shape[0]);
    trace::end_inference(&span, &labels, rows, outcome);
    result
}

async fn infer_recorded(
    state: &ServeState,
    req: InferRequest,
    protocol: Protocol,
    headers: &HeaderMap,
    started: Instant,
    labels: &mut ModelLabels,
) -> Result<InferResponse, InferError> {
    let snapshot = state.snapshot();
    let routed = crate::rollout::route(
        &snapshot.models,
        &snapshot.routers,
        &req.model,
        version_arg(req.version.as_deref())?,
        headers,
        None,
    )?;
    let model = state.models().get(&routed.spec).await?;
    *labels = ModelLabels::new(&model.spec.name, model.spec.version);
    let _in_flight = state.metrics().in_flight(labels);
    if let Some(o) = req.outputs.iter().find(|o| *o != OUTPUT) {
        return Err(bad(format!(
            "unknown output {o:?} (the model has {OUTPUT:?})"
        )));
    }
    let (rows, n) = rows(&model, req.inputs)?;
    let monitor = state.monitor();
    let mut id = req.id;
    let logged = monitor.wants_predictions().then(|| rows.clone());
    if logged.is_some() {
        // Every logged request has an id, so a label can be posted for it later.
        id.get_or_insert_with(|| monitor.new_request_id());
    }
    crate::rollout::shadow::mirror(state, &routed.shadow, &rows, id.as_deref(), None);
    let scored = state.models().score(&snapshot.models, &model, rows).await?;
    state.metrics().scored(labels, &scored);
    if let (Some(features), Some(request_id)) = (logged, id.clone()) {
        monitor.predicted(
            &model,
            protocol,
            request_id,
            features,
            scored.values.clone(),
            None,
            started,
        );
    }
    Ok(InferResponse {
        model_name: model.spec.name.clone(),
        model_version: model.spec.version.to_string(),
        id,
        shape: [n, model.spec.n_outputs],
        data: scored.values,
        fallback: scored.fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_tensors_decode_little_endian() {
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            decode_raw("x", "FP32", &[1, 2], &f32s).expect("ok"),
            vec![1.5, -2.0]
        );
        let i64s: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            decode_raw("x", "INT64", &[2], &i64s).expect("ok"),
            vec![-3.0, 7.0]
        );
        assert_eq!(
            decode_raw("x", "BOOL", &[2], &[1, 0]).expect("ok"),
            vec![1.0, 0.0]
        );
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x7c00 = inf in half precision.
        let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x7c00]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            decode_raw("x", "FP16", &[3], &halves).expect("ok"),
            vec![1.0, -2.0, f64::INFINITY]
        );
    }

    #[test]
    fn raw_tensors_of_the_wrong_size_or_type_are_refused_by_name() {
        let e = decode_raw("amount", "FP32", &[2, 2], &[0; 12]).expect_err("an error");
        assert!(
            e.to_string().contains("\"amount\"") && e.to_string().contains("16 bytes"),
            "{e}"
        );
        let e = decode_raw("city", "BYTES", &[1], &[0; 4]).expect_err("an error");
        assert!(e.to_string().contains("not numeric"), "{e}");
        let e = decode_raw("x", "FP64", &[-1, 2], &[]).expect_err("an error");
        assert!(e.to_string().contains("negative"), "{e}");
    }
}
