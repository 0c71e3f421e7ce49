//! The crate's error type: what went wrong and where (which column, which side), so a drift
//! report that cannot be made says what to fix.

use std::fmt;

/// Which side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reference,
    Current,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Current => "current",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("column {column:?} is not in the {side} data")]
    MissingColumn { column: String, side: Side },
    #[error(
        "column {column:?} has no values in the {side} data (all {rows} rows are missing, NaN or \
         infinite); drift needs at least one value on each side"
    )]
    EmptyColumn {
        column: String,
        side: Side,
        rows: usize,
    },
    #[error(
        "column {column:?} is {reference} in the reference data but {current} in the current \
         data; both sides must hold the same kind of values"
    )]
    TypeMismatch {
        column: String,
        reference: String,
        current: String,
    },
    #[error("column {column:?} cannot be compared: {reason}")]
    Unsupported { column: String, reason: String },
    #[error(
        "method {method} does not apply to {column_type} column {column:?} (it takes {allowed} \
         columns)"
    )]
    MethodNotApplicable {
        method: &'static str,
        column: String,
        column_type: &'static str,
        allowed: &'static str,
    },
    #[error("column {0:?} appears twice")]
    DuplicateColumn(String),
    #[error("no column to compare: {0}")]
    NoColumns(String),
    #[error("invalid drift option: {0}")]
    InvalidOption(String),
    #[error("drift reference: {0}")]
    Reference(String),
}
