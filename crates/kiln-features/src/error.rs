//! Errors of the feature engine.

use std::path::PathBuf;

use kiln_registry::RegistryError;
use kiln_store::StoreError;

use crate::definitions::Diagnostic;

/// What can go wrong defining, joining, materializing or reading features.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The definitions are invalid; every problem found is listed.
    #[error("{} error(s) in the definitions:\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),

    /// The request names something that does not exist or does not fit (an unknown feature,
    /// a missing entity column, a key of the wrong type).
    #[error("{0}")]
    BadRequest(String),

    /// A request names a view, service or feature that is not registered.
    #[error("{message}")]
    NotFound { kind: NotFoundKind, message: String },

    #[error(transparent)]
    Registry(#[from] RegistryError),

    #[error(transparent)]
    Store(#[from] StoreError),

    /// Data that cannot be used as declared (a column of the wrong type in a source file).
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An Arrow or Parquet operation failed where the inputs were already validated.
    #[error("{context}: {message}")]
    Internal { context: String, message: String },
}

/// What a request named that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFoundKind {
    View,
    Service,
    Feature,
}

impl FeatureError {
    pub(crate) fn internal(context: &str, e: impl std::fmt::Display) -> FeatureError {
        FeatureError::Internal {
            context: context.to_string(),
            message: e.to_string(),
        }
    }

    /// Whether retrying may help (the registry changed under us, a store was busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            FeatureError::Registry(e) => e.is_retryable(),
            FeatureError::Store(e) => e.is_retryable(),
            FeatureError::Invalid(_)
            | FeatureError::BadRequest(_)
            | FeatureError::NotFound { .. }
            | FeatureError::Data { .. }
            | FeatureError::Io { .. }
            | FeatureError::Internal { .. } => false,
        }
    }
}
