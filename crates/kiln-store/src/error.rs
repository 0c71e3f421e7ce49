//! Storage errors, each naming the file or store involved.

use std::path::PathBuf;

/// What can go wrong reading or writing stored data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a readable Parquet file: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },

    #[error("{}: no Parquet files found (expected a .parquet file or a directory containing some)", path.display())]
    NoParquetFiles { path: PathBuf },

    #[error("online store {}: {message}", path.display())]
    Online { path: PathBuf, message: String },

    #[error(
        "online store {} is locked by another process that opened it without sharing; stop it or wait",
        path.display()
    )]
    Locked { path: PathBuf },

    #[error("online store {location}: {message}")]
    Redis {
        location: String,
        message: String,
        /// The server was unreachable, slow or restarting (not a refused command).
        retryable: bool,
    },

    /// A circuit breaker in front of the store is open: the store was not called.
    #[error("online store {store}: not called, {message}")]
    CircuitOpen { store: String, message: String },

    #[error("artifact store {location}: {message}")]
    Artifact { location: String, message: String },

    #[error("stored row for key {key} in view {view} is corrupt: {reason}")]
    CorruptRow {
        view: String,
        key: String,
        reason: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed (a lock held by another process, an I/O fault).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Locked { .. } | StoreError::Io { .. } => true,
            StoreError::Redis { retryable, .. } => *retryable,
            StoreError::CircuitOpen { .. } => true,
            StoreError::Parquet { .. }
            | StoreError::Data { .. }
            | StoreError::NoParquetFiles { .. }
            | StoreError::Online { .. }
            | StoreError::CorruptRow { .. }
            | StoreError::Artifact { .. } => false,
        }
    }
}
