//! The pipeline definition as the user writes it (TOML) and as it is registered (a JSON bundle).
//!
//! Both are the same serde structure: a bundle is the definition with every member's file
//! contents embedded (`data`), so the registered artifact is one self-contained file whose
//! SHA-256 covers the definition and every member model. Loading a bundle validates it again
//! with the same code that validated the TOML, so a bundle that loads is a pipeline that is
//! checked.

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::invalid;
use crate::{Format, ModelError};

/// The bundle's format version, written as `kiln_pipeline` in every bundle.
pub const BUNDLE_VERSION: u32 = 1;

/// A pipeline: input columns, preprocessing steps, then one model or an ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Present (and [`BUNDLE_VERSION`]) in bundles only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiln_pipeline: Option<u32>,
    /// The pipeline's own input columns, in the order rows give them.
    pub inputs: Vec<String>,
    /// Steps, each a one-key table (`{ clip = { ... } }`); parsed by
    /// [`super::preprocess::Step::parse`] so that errors can name the step's index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preprocess: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<MemberDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleDef>,
}

/// One model file: the single `[model]`, or one of `[[ensemble.members]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDef {
    /// The model file, relative to the definition's directory. In a bundle: kept as written,
    /// for messages; the contents are in `data`.
    pub path: String,
    pub format: String,
    /// The member's input columns (after preprocessing), in the model's order, when the model
    /// file does not name its features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Weight in a `combine = "weighted"` ensemble.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The file's contents; only in bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Embedded>,
}

/// Member file contents inside a bundle: text as is (XGBoost JSON and LightGBM text stay
/// readable and diffable), anything else as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "encoding", content = "bytes", rename_all = "lowercase")]
pub enum Embedded {
    Utf8(String),
    Base64(String),
}

impl Embedded {
    pub fn new(bytes: Vec<u8>) -> Embedded {
        match String::from_utf8(bytes) {
            Ok(s) => Embedded::Utf8(s),
            Err(e) => {
                Embedded::Base64(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()))
            }
        }
    }

    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            Embedded::Utf8(s) => Ok(s.as_bytes().to_vec()),
            Embedded::Base64(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("embedded base64 is corrupt: {e}")),
        }
    }
}

/// `[ensemble]`: members whose outputs are combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleDef {
    pub combine: Combine,
    pub members: Vec<MemberDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackDef>,
}

/// How an ensemble's member outputs become its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// The plain mean of the members' outputs, output by output.
    Mean,
    /// `sum(w_i * y_i) / sum(w_i)` with each member's `weight`.
    Weighted,
    /// A linear meta-model over the members' (single) outputs: `link(bias + sum(w_i * y_i))`.
    Stack,
}

/// `[ensemble.stack]`: the meta-model of `combine = "stack"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackDef {
    pub weights: Vec<f64>,
    #[serde(default)]
    pub bias: f64,
    #[serde(default)]
    pub link: StackLink,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackLink {
    #[default]
    Identity,
    /// `1 / (1 + exp(-z))`.
    Logistic,
}

impl Definition {
    /// Parses a TOML definition; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Definition, ModelError> {
        toml::from_str(text).map_err(|e| invalid(format!("{file}: {e}")))
    }

    /// The members, in order (one for a single model).
    pub fn members(&self) -> Vec<&MemberDef> {
        match (&self.model, &self.ensemble) {
            (Some(m), _) => vec![m],
            (None, Some(e)) => e.members.iter().collect(),
            (None, None) => Vec::new(),
        }
    }

    fn members_mut(&mut self) -> Vec<&mut MemberDef> {
        match (&mut self.model, &mut self.ensemble) {
            (Some(m), _) => vec![m],
            (None, Some(e)) => e.members.iter_mut().collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// How a member is named in messages: `model (driver.json)` or `ensemble.members[1] (b.txt)`.
pub fn member_label(def: &Definition, i: usize) -> String {
    let path = def
        .members()
        .get(i)
        .map(|m| m.path.clone())
        .unwrap_or_default();
    if def.model.is_some() {
        format!("[model] ({path})")
    } else {
        format!("ensemble.members[{i}] ({path})")
    }
}

/// Parses the member's format; pipelines do not nest.
pub fn member_format(def: &Definition, i: usize, m: &MemberDef) -> Result<Format, String> {
    let f: Format = m.format.parse().map_err(|_| {
        format!(
            "{}: format {:?} is not a model format (expected xgboost, lightgbm or onnx)",
            member_label(def, i),
            m.format
        )
    })?;
    if f == Format::Pipeline {
        return Err(format!(
            "{}: format \"pipeline\": a pipeline cannot be a member of another pipeline",
            member_label(def, i)
        ));
    }
    Ok(f)
}

/// Reads a definition file and its member model files (paths relative to the definition's
/// directory) into a bundle: one JSON document, checked by loading it.
pub fn build_bundle(path: &Path) -> Result<Vec<u8>, ModelError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("{file}: cannot read the definition: {e}")))?;
    let mut def = Definition::from_toml(&text, &file)?;
    if def.kiln_pipeline.is_some() {
        return Err(invalid(format!(
            "{file}: kiln_pipeline is written by Kiln into bundles; remove it from the definition"
        )));
    }
    def.kiln_pipeline = Some(BUNDLE_VERSION);
    let dir = path.parent().unwrap_or(Path::new("."));
    let labels: Vec<String> = (0..def.members().len())
        .map(|i| member_label(&def, i))
        .collect();
    for (m, label) in def.members_mut().into_iter().zip(labels) {
        if m.data.is_some() {
            return Err(invalid(format!(
                "{file}: {label}: data is written by Kiln into bundles; give the model file as path"
            )));
        }
        let member_path = dir.join(&m.path);
        let bytes = std::fs::read(&member_path).map_err(|e| {
            invalid(format!(
                "{file}: {label}: cannot read model file {}: {e}",
                member_path.display()
            ))
        })?;
        m.data = Some(Embedded::new(bytes));
    }
    let bytes = serde_json::to_vec_pretty(&def)
        .map_err(|e| invalid(format!("{file}: cannot write the bundle: {e}")))?;
    // Validate now, with the code that loads the bundle for serving; name the TOML file.
    super::PipelineModel::from_definition(def, &file)?;
    Ok(bytes)
}
