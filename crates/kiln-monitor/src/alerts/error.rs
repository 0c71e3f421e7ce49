//! What can go wrong with alerting: a configuration that does not hold together (every problem
//! listed at once), a signal provider that could not measure, or an HTTP client that could not
//! be built. Delivery failures are not errors here: they are retried, then counted.

/// An alerting error.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The `[alerts]` configuration is invalid; each entry names the rule or webhook and field.
    #[error("invalid alerts configuration:\n  - {}", .problems.join("\n  - "))]
    InvalidConfig { problems: Vec<String> },

    /// The signal provider failed; the evaluation was skipped and alert states are unchanged.
    #[error("could not measure alert signals: {0}")]
    Signals(String),

    /// The webhook HTTP client could not be built (TLS set-up).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}
