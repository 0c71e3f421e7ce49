//! Kiln's model runtimes: one [`Model`] trait, a loader per format chosen by [`load`] (the
//! factory), and hand-written evaluators; ONNX graphs run through [`onnx`] (tract for the
//! standard operators, Kiln's own code for the ai.onnx.ml ones).
//!
//! Tree ensembles (XGBoost JSON, LightGBM text) are evaluated by code written here rather than
//! through a generic graph runtime: every tree of a model lives in one flat node array (no
//! per-node allocation), children of a node are found by index, and the batch path walks the
//! trees over blocks of rows so a block's nodes stay in cache. Each format's numeric rules are
//! reproduced exactly as its library applies them (XGBoost compares and accumulates in f32,
//! LightGBM in f64), so predictions match the reference library to well under 1e-5.

mod error;
mod lightgbm;
mod objective;
mod onnx;
pub mod pipeline;
pub mod remote;
mod xgboost;

use std::fmt;
use std::str::FromStr;

pub use error::ModelError;
pub use lightgbm::LightGbmModel;
pub use objective::Link;
pub use onnx::OnnxModel;
pub use pipeline::{PipelineModel, build_bundle};
pub use xgboost::XgboostModel;

/// A model file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// XGBoost's JSON model (`Booster.save_model("model.json")`).
    Xgboost,
    /// LightGBM's text model (`Booster.save_model("model.txt")`).
    Lightgbm,
    /// A Kiln pipeline bundle: preprocessing plus a model or ensemble ([`pipeline`]).
    Pipeline,
    /// An ONNX graph (`.onnx`) as skl2onnx / onnxmltools export tabular models.
    Onnx,
    /// A model served elsewhere over HTTP, described by a TOML file ([`remote`]).
    Remote,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Xgboost => "xgboost",
            Format::Lightgbm => "lightgbm",
            Format::Pipeline => "pipeline",
            Format::Onnx => "onnx",
            Format::Remote => "remote",
        })
    }
}

impl FromStr for Format {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "xgboost" | "xgb" => Ok(Format::Xgboost),
            "lightgbm" | "lgbm" | "lgb" => Ok(Format::Lightgbm),
            "pipeline" => Ok(Format::Pipeline),
            "onnx" => Ok(Format::Onnx),
            "remote" => Ok(Format::Remote),
            other => Err(ModelError::UnknownFormat(other.to_string())),
        }
    }
}

/// What a model takes and gives.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    pub format: Format,
    /// The library's objective, as written in the model file.
    pub objective: String,
    /// Input features, in the order rows must give them. Names are the ones stored in the
    /// model (`f0`, `f1`, ... when it has none).
    pub feature_names: Vec<String>,
    /// Values per output row: 1 for regression and binary classification (the positive
    /// probability), the number of classes for multiclass.
    pub n_outputs: usize,
    /// How scores become outputs.
    pub link: Link,
    pub n_trees: usize,
}

impl ModelInfo {
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }
}

/// A loaded model. Rows are row-major `f64` with `NaN` for a missing value.
pub trait Model: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Predicts `rows.len() / n_features` rows into `out` (`n_outputs` values per row).
    fn predict(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError>;

    /// The raw scores before the link function (margins), `n_outputs` per row (for
    /// `multi:softmax`-style outputs, one per class).
    fn predict_margin(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError>;

    /// Number of margin values per row (the class count for multiclass models, else 1).
    fn n_margins(&self) -> usize;
}

/// Checks the shapes of a prediction call; returns the number of rows.
pub(crate) fn check_shape(
    rows: &[f64],
    out: &[f64],
    n_features: usize,
    per_row: usize,
) -> Result<usize, ModelError> {
    if n_features == 0 {
        return Err(ModelError::Shape("the model has no input features".into()));
    }
    if !rows.len().is_multiple_of(n_features) {
        return Err(ModelError::Shape(format!(
            "{} input values is not a whole number of rows of {n_features} features",
            rows.len()
        )));
    }
    let n = rows.len() / n_features;
    if out.len() != n * per_row {
        return Err(ModelError::Shape(format!(
            "output buffer holds {} values; {n} rows need {}",
            out.len(),
            n * per_row
        )));
    }
    Ok(n)
}

/// Rows evaluated together: a block's rows share each tree's nodes while they are in cache.
pub(crate) const BLOCK: usize = 64;

/// The common shape of tree-ensemble prediction: rows go in blocks of [`BLOCK`]; `margins`
/// fills a block's margins (`groups` per row, in the model's arithmetic `M`); `finish` turns
/// one row's margins into its `per_row` outputs.
pub(crate) fn predict_blocks<M: Copy + Default>(
    rows: &[f64],
    out: &mut [f64],
    n_features: usize,
    groups: usize,
    per_row: usize,
    mut margins: impl FnMut(&[f64], &mut [M]),
    finish: impl Fn(&[M], &mut [f64]),
) -> Result<(), ModelError> {
    let n = check_shape(rows, out, n_features, per_row)?;
    let mut buf = vec![M::default(); BLOCK.min(n.max(1)) * groups];
    for (block, out) in rows
        .chunks(BLOCK * n_features)
        .zip(out.chunks_mut(BLOCK * per_row))
    {
        let m = &mut buf[..block.len() / n_features * groups];
        margins(block, m);
        for (mr, o) in m.chunks(groups).zip(out.chunks_mut(per_row)) {
            finish(mr, o);
        }
    }
    Ok(())
}

/// Loads a model from its file contents (the factory: the format picks the loader).
pub fn load(format: Format, bytes: &[u8]) -> Result<Box<dyn Model>, ModelError> {
    Ok(match format {
        Format::Xgboost => Box::new(XgboostModel::from_json(bytes)?),
        Format::Lightgbm => Box::new(LightGbmModel::from_text(bytes)?),
        Format::Pipeline => Box::new(PipelineModel::from_bundle(bytes)?),
        Format::Onnx => Box::new(OnnxModel::from_bytes(bytes)?),
        Format::Remote => Box::new(remote::RemoteSpec::parse(bytes)?),
    })
}
