//! Errors of the shared vocabulary: parsing user-written durations, timestamps, type names and
//! feature references, and decoding stored bytes.

use crate::ValueType;

/// What went wrong while parsing or converting one of the core types.
///
/// Every variant carries the offending input so that the caller can show it next to the file,
/// line and field where it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error(
        "invalid duration {input:?}: {reason} (write e.g. \"0\", \"90s\", \"15m\", \"2h\", \"1d\", \"1w\" or \"1d12h\")"
    )]
    InvalidDuration { input: String, reason: String },

    #[error(
        "invalid timestamp {input:?} (write RFC 3339 like \"2026-01-31T12:00:00Z\", a date like \"2026-01-31\", or seconds since the epoch)"
    )]
    InvalidTimestamp { input: String },

    #[error(
        "unknown type {input:?} (expected one of: bool, int32, int64, float32, float64, string, bytes, timestamp)"
    )]
    UnknownType { input: String },

    #[error("invalid feature reference {input:?}: {reason} (write \"view:feature\")")]
    InvalidFeatureRef { input: String, reason: String },

    #[error("cannot use {got} as a {expected} value")]
    ValueConversion { expected: ValueType, got: String },

    #[error("corrupt stored value: {reason}")]
    Codec { reason: String },
}
