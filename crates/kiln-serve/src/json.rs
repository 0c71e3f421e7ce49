//! Feature values in JSON the way Feast's feature server writes them: integers as numbers,
//! float32 widened to double, non-finite floats as the strings "NaN", "Infinity" and
//! "-Infinity", bytes as base64, timestamps as integer epoch seconds, null as null.

use base64::Engine;
use kiln_core::Value;
use kiln_core::time::MICROS_PER_SECOND;
use serde::{Serialize, Serializer};

/// Serialises a [`Value`] in Feast's JSON form.
pub(crate) struct FeastJson<'a>(pub &'a Value);

fn float<S: Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v == f64::INFINITY {
        s.serialize_str("Infinity")
    } else if v == f64::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        s.serialize_f64(v)
    }
}

impl Serialize for FeastJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Int32(v) => s.serialize_i32(*v),
            Value::Int64(v) => s.serialize_i64(*v),
            Value::Float32(v) => float(f64::from(*v), s),
            Value::Float64(v) => float(*v, s),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(v) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
            }
            Value::Timestamp(v) => s.serialize_i64(v.div_euclid(MICROS_PER_SECOND)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(v: Value) -> String {
        serde_json::to_string(&FeastJson(&v)).expect("serialises")
    }

    #[test]
    fn matches_feast_encoding() {
        assert_eq!(j(Value::Int64(1001)), "1001");
        // float32 widened exactly as Python prints the double.
        assert_eq!(
            j(Value::Float32(0.879_963_636_398_315_4_f64 as f32)),
            "0.8799636363983154"
        );
        assert_eq!(j(Value::Float64(f64::NAN)), "\"NaN\"");
        assert_eq!(j(Value::Float32(f32::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(j(Value::Bytes(b"hi".to_vec())), "\"aGk=\"");
        assert_eq!(j(Value::Timestamp(1_500_000)), "1");
        assert_eq!(j(Value::Null), "null");
    }
}
