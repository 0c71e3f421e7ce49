//! The streaming side's errors, each naming what was wrong and where.

use std::path::PathBuf;

/// What can go wrong receiving, logging or aggregating events.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A pushed event that cannot be accepted: `at` names the event and field
    /// (`events[3].amount`). Nothing of the request was appended.
    #[error("{at}: {message}")]
    BadEvent { at: String, message: String },

    /// No aggregated feature view reads this source, so there is nothing to stream into.
    #[error("{0}")]
    UnknownSource(String),

    /// The source or the views cannot be streamed as declared (e.g. a source that is one file).
    #[error("{0}")]
    Setup(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A stored file (log, checkpoint) that does not read back as written.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },

    #[error("event log {} is held by another process (its pid is in that LOCK file), e.g. a running kiln serve: push through its POST /v1/push/{{source}}, or stop it first", path.display())]
    Locked { path: PathBuf },

    /// A broker (Kafka, NATS) that could not be reached or refused what was asked; `broker`
    /// names it and what was being done.
    #[error("{broker}: {message}")]
    Broker { broker: String, message: String },

    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),

    #[error("writing Parquet to {}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
}

impl StreamError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StreamError {
        let path = path.into();
        move |source| StreamError::Io { path, source }
    }
}
