//! The value types a feature or join key can have, with Feast's names and their Arrow forms.

use std::fmt;
use std::str::FromStr;

use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A feature's or join key's declared type.
///
/// The names follow Feast (`Int64`, `Float32`, `UnixTimestamp`, ...); parsing accepts them in
/// any case, plus the lower-case short forms used in Kiln's own examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    Timestamp,
}

impl ValueType {
    pub const ALL: [ValueType; 8] = [
        ValueType::Bool,
        ValueType::Int32,
        ValueType::Int64,
        ValueType::Float32,
        ValueType::Float64,
        ValueType::String,
        ValueType::Bytes,
        ValueType::Timestamp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int32 => "int32",
            ValueType::Int64 => "int64",
            ValueType::Float32 => "float32",
            ValueType::Float64 => "float64",
            ValueType::String => "string",
            ValueType::Bytes => "bytes",
            ValueType::Timestamp => "timestamp",
        }
    }

    /// The Arrow type Kiln produces for this value type (timestamps as UTC microseconds).
    pub fn arrow_type(self) -> DataType {
        match self {
            ValueType::Bool => DataType::Boolean,
            ValueType::Int32 => DataType::Int32,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float32 => DataType::Float32,
            ValueType::Float64 => DataType::Float64,
            ValueType::String => DataType::Utf8,
            ValueType::Bytes => DataType::Binary,
            ValueType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Whether a column stored as `found` can be read as this type without losing information.
    ///
    /// Integers widen (`int32` data satisfies an `int64` declaration, and so on), floats widen,
    /// strings may be large or views, timestamps may have any unit and time zone. Anything
    /// else is a type mismatch that `kiln apply` reports.
    pub fn accepts(self, found: &DataType) -> bool {
        use DataType as D;
        match self {
            ValueType::Bool => matches!(found, D::Boolean),
            ValueType::Int32 => {
                matches!(found, D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16)
            }
            ValueType::Int64 => matches!(
                found,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            ),
            ValueType::Float32 => matches!(found, D::Float16 | D::Float32),
            ValueType::Float64 => matches!(found, D::Float16 | D::Float32 | D::Float64),
            ValueType::String => matches!(found, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            ValueType::Bytes => matches!(found, D::Binary | D::LargeBinary | D::BinaryView),
            ValueType::Timestamp => matches!(found, D::Timestamp(_, _)),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = match s.to_ascii_lowercase().as_str() {
            "bool" | "boolean" => ValueType::Bool,
            "int32" => ValueType::Int32,
            "int64" => ValueType::Int64,
            "float32" | "float" => ValueType::Float32,
            "float64" | "double" => ValueType::Float64,
            "string" | "str" => ValueType::String,
            "bytes" => ValueType::Bytes,
            "timestamp" | "unixtimestamp" | "unix_timestamp" => ValueType::Timestamp,
            _ => {
                return Err(CoreError::UnknownType {
                    input: s.to_string(),
                });
            }
        };
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_feast_and_short_names() {
        assert_eq!("Int64".parse::<ValueType>(), Ok(ValueType::Int64));
        assert_eq!("float32".parse::<ValueType>(), Ok(ValueType::Float32));
        assert_eq!(
            "UnixTimestamp".parse::<ValueType>(),
            Ok(ValueType::Timestamp)
        );
        assert!("decimal".parse::<ValueType>().is_err());
        for t in ValueType::ALL {
            assert_eq!(t.name().parse::<ValueType>(), Ok(t));
        }
    }

    #[test]
    fn widening_is_accepted_narrowing_is_not() {
        assert!(ValueType::Int64.accepts(&DataType::Int32));
        assert!(!ValueType::Int32.accepts(&DataType::Int64));
        assert!(ValueType::Float64.accepts(&DataType::Float32));
        assert!(!ValueType::Float32.accepts(&DataType::Float64));
        assert!(!ValueType::Int64.accepts(&DataType::Float64));
        assert!(ValueType::Timestamp.accepts(&DataType::Timestamp(TimeUnit::Nanosecond, None)));
    }
}
