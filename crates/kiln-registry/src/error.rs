//! Registry errors.

/// What can go wrong reading or appending to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot open the registry at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("registry database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error(
        "the registry changed while this change was being prepared (expected last event #{expected}, found #{found}); run the command again"
    )]
    Conflict { expected: i64, found: i64 },

    #[error("registry event #{seq} cannot be read: {reason}")]
    CorruptEvent { seq: i64, reason: String },

    #[error("{kind} {name:?} is not in the registry{hint}")]
    NotFound {
        kind: &'static str,
        name: String,
        hint: String,
    },
}

impl RegistryError {
    /// Whether running the same operation again may succeed (a concurrent writer or a passing
    /// database fault), as opposed to an error in the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Conflict { .. } => true,
            RegistryError::Database(e) => matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ),
            RegistryError::Open { .. }
            | RegistryError::CorruptEvent { .. }
            | RegistryError::NotFound { .. } => false,
        }
    }
}
