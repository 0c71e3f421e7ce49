//! Model loading and prediction errors.

/// What can go wrong loading or running a model. Messages name the place in the model file
/// (a JSON path, a LightGBM line) and what was expected there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model format {0:?} (expected xgboost, lightgbm, onnx, pipeline or remote)")]
    UnknownFormat(String),

    /// The file is not a model of the format, or a field is malformed.
    #[error("invalid {format} model: {message}")]
    Invalid {
        format: &'static str,
        message: String,
    },

    /// A valid model that uses something Kiln does not evaluate.
    #[error("unsupported {format} model: {message}")]
    Unsupported {
        format: &'static str,
        message: String,
    },

    /// Input or output buffers of the wrong size.
    #[error("{0}")]
    Shape(String),
}
