//! Feature values on the online path and their compact, self-describing binary codec.
//!
//! The online store keeps, per entity and view, one encoded row: a tag byte per value followed
//! by its little-endian bytes. Tags make a row decodable without its schema, so a row written by
//! an older view version can still be read and mapped by feature name after the view changed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::{Micros, format_timestamp};
use crate::{CoreError, ValueType};

/// One feature or key value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Bytes(Vec<u8>),
    /// UTC microseconds since the epoch.
    Timestamp(Micros),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value's type, `None` for null.
    pub fn value_type(&self) -> Option<ValueType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => ValueType::Bool,
            Value::Int32(_) => ValueType::Int32,
            Value::Int64(_) => ValueType::Int64,
            Value::Float32(_) => ValueType::Float32,
            Value::Float64(_) => ValueType::Float64,
            Value::String(_) => ValueType::String,
            Value::Bytes(_) => ValueType::Bytes,
            Value::Timestamp(_) => ValueType::Timestamp,
        })
    }

    /// Converts a JSON value into a value of type `ty`, as entity keys arrive in HTTP requests
    /// and on the command line. Integers may come as numbers or numeric strings (Feast's JSON
    /// encodes int64 either way); anything that would lose information is refused.
    pub fn from_json(json: &serde_json::Value, ty: ValueType) -> Result<Value, CoreError> {
        use serde_json::Value as J;
        let fail = || CoreError::ValueConversion {
            expected: ty,
            got: json.to_string(),
        };
        if json.is_null() {
            return Ok(Value::Null);
        }
        let v = match ty {
            ValueType::Bool => Value::Bool(json.as_bool().ok_or_else(fail)?),
            ValueType::Int32 => {
                let n = json_i64(json).ok_or_else(fail)?;
                Value::Int32(i32::try_from(n).map_err(|_| fail())?)
            }
            ValueType::Int64 => Value::Int64(json_i64(json).ok_or_else(fail)?),
            ValueType::Float32 => Value::Float32(json_f64(json).ok_or_else(fail)? as f32),
            ValueType::Float64 => Value::Float64(json_f64(json).ok_or_else(fail)?),
            ValueType::String => match json {
                J::String(s) => Value::String(s.clone()),
                J::Number(n) => Value::String(n.to_string()),
                _ => return Err(fail()),
            },
            ValueType::Bytes => Value::Bytes(json.as_str().ok_or_else(fail)?.as_bytes().to_vec()),
            ValueType::Timestamp => match json {
                J::String(s) => {
                    Value::Timestamp(crate::time::parse_timestamp(s).map_err(|_| fail())?)
                }
                J::Number(_) => Value::Timestamp(
                    json_i64(json)
                        .and_then(|s| s.checked_mul(crate::time::MICROS_PER_SECOND))
                        .ok_or_else(fail)?,
                ),
                _ => return Err(fail()),
            },
        };
        Ok(v)
    }

    /// Parses a value of type `ty` from command-line text (`driver_id=1001`).
    pub fn parse(text: &str, ty: ValueType) -> Result<Value, CoreError> {
        let json = match ty {
            ValueType::String | ValueType::Bytes | ValueType::Timestamp => {
                serde_json::Value::String(text.to_string())
            }
            _ => serde_json::from_str(text).map_err(|_| CoreError::ValueConversion {
                expected: ty,
                got: text.to_string(),
            })?,
        };
        Value::from_json(&json, ty)
    }
}

fn json_i64(json: &serde_json::Value) -> Option<i64> {
    match json {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn json_f64(json: &serde_json::Value) -> Option<f64> {
    match json {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Int32(v) => write!(f, "{v}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::Float32(v) => write!(f, "{v}"),
            Value::Float64(v) => write!(f, "{v}"),
            Value::String(v) => f.write_str(v),
            Value::Bytes(v) => write!(f, "<{} bytes>", v.len()),
            Value::Timestamp(v) => f.write_str(&format_timestamp(*v)),
        }
    }
}

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_I32: u8 = 3;
const TAG_I64: u8 = 4;
const TAG_F32: u8 = 5;
const TAG_F64: u8 = 6;
const TAG_STR: u8 = 7;
const TAG_BYTES: u8 = 8;
const TAG_TS: u8 = 9;

/// Appends encoded values to a buffer. The `put_*` methods let hot loops encode straight from
/// Arrow arrays without building [`Value`]s first.
#[derive(Debug)]
pub struct ValueWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> ValueWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        ValueWriter { out }
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        self.out
    }

    #[inline]
    pub fn put_null(&mut self) {
        self.buf().push(TAG_NULL);
    }
    #[inline]
    pub fn put_bool(&mut self, v: bool) {
        self.buf().push(if v { TAG_TRUE } else { TAG_FALSE });
    }
    #[inline]
    pub fn put_i32(&mut self, v: i32) {
        let b = self.buf();
        b.push(TAG_I32);
        b.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn put_i64(&mut self, v: i64) {
        let b = self.buf();
        b.push(TAG_I64);
        b.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn put_f32(&mut self, v: f32) {
        let b = self.buf();
        b.push(TAG_F32);
        b.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn put_f64(&mut self, v: f64) {
        let b = self.buf();
        b.push(TAG_F64);
        b.extend_from_slice(&v.to_le_bytes());
    }
    pub fn put_str(&mut self, v: &str) {
        self.put_var(TAG_STR, v.as_bytes());
    }
    pub fn put_bytes(&mut self, v: &[u8]) {
        self.put_var(TAG_BYTES, v);
    }
    #[inline]
    pub fn put_timestamp(&mut self, v: Micros) {
        let b = self.buf();
        b.push(TAG_TS);
        b.extend_from_slice(&v.to_le_bytes());
    }
    fn put_var(&mut self, tag: u8, v: &[u8]) {
        let b = self.buf();
        b.push(tag);
        // Lengths above u32::MAX cannot occur: a single feature value that large is refused
        // long before it reaches the codec (Arrow string offsets are i32 by default).
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        b.extend_from_slice(v);
    }

    #[inline]
    pub fn put(&mut self, v: &Value) {
        match v {
            Value::Null => self.put_null(),
            Value::Bool(x) => self.put_bool(*x),
            Value::Int32(x) => self.put_i32(*x),
            Value::Int64(x) => self.put_i64(*x),
            Value::Float32(x) => self.put_f32(*x),
            Value::Float64(x) => self.put_f64(*x),
            Value::String(x) => self.put_str(x),
            Value::Bytes(x) => self.put_bytes(x),
            Value::Timestamp(x) => self.put_timestamp(*x),
        }
    }
}

/// Encodes values one after another.
pub fn encode_values(values: &[Value], out: &mut Vec<u8>) {
    let mut w = ValueWriter::new(out);
    for v in values {
        w.put(v);
    }
}

/// Decodes every value in `bytes`.
pub fn decode_values(bytes: &[u8]) -> Result<Vec<Value>, CoreError> {
    let mut r = ValueReader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.next_value()?);
    }
    Ok(out)
}

/// Reads encoded values one at a time.
#[derive(Debug)]
pub struct ValueReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ValueReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ValueReader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], CoreError> {
        if self.bytes.len() < N {
            return Err(CoreError::Codec {
                reason: format!("expected {N} more bytes, found {}", self.bytes.len()),
            });
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        Ok(a)
    }

    fn take_var(&mut self) -> Result<&'a [u8], CoreError> {
        let len = u32::from_le_bytes(self.take::<4>()?) as usize;
        if self.bytes.len() < len {
            return Err(CoreError::Codec {
                reason: format!("value of {len} bytes is cut short at {}", self.bytes.len()),
            });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub fn next_value(&mut self) -> Result<Value, CoreError> {
        let [tag] = self.take::<1>()?;
        Ok(match tag {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_I32 => Value::Int32(i32::from_le_bytes(self.take()?)),
            TAG_I64 => Value::Int64(i64::from_le_bytes(self.take()?)),
            TAG_F32 => Value::Float32(f32::from_le_bytes(self.take()?)),
            TAG_F64 => Value::Float64(f64::from_le_bytes(self.take()?)),
            TAG_TS => Value::Timestamp(i64::from_le_bytes(self.take()?)),
            TAG_STR => {
                let b = self.take_var()?;
                Value::String(
                    std::str::from_utf8(b)
                        .map_err(|e| CoreError::Codec {
                            reason: format!("string is not UTF-8: {e}"),
                        })?
                        .to_string(),
                )
            }
            TAG_BYTES => Value::Bytes(self.take_var()?.to_vec()),
            other => {
                return Err(CoreError::Codec {
                    reason: format!("unknown value tag {other}"),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            any::<f32>()
                .prop_filter("NaN != NaN", |f| !f.is_nan())
                .prop_map(Value::Float32),
            any::<f64>()
                .prop_filter("NaN != NaN", |f| !f.is_nan())
                .prop_map(Value::Float64),
            ".*".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            any::<i64>().prop_map(Value::Timestamp),
        ]
    }

    proptest! {
        #[test]
        fn codec_round_trips(values in proptest::collection::vec(any_value(), 0..20)) {
            let mut buf = Vec::new();
            encode_values(&values, &mut buf);
            prop_assert_eq!(decode_values(&buf).expect("decodes"), values);
        }

        #[test]
        fn truncated_rows_are_errors_not_panics(values in proptest::collection::vec(any_value(), 1..8), cut in 1usize..64) {
            let mut buf = Vec::new();
            encode_values(&values, &mut buf);
            if cut < buf.len() {
                let _ = decode_values(&buf[..buf.len() - cut]);
            }
        }
    }

    #[test]
    fn json_conversion() {
        use serde_json::json;
        assert_eq!(
            Value::from_json(&json!(1001), ValueType::Int64),
            Ok(Value::Int64(1001))
        );
        assert_eq!(
            Value::from_json(&json!("1001"), ValueType::Int64),
            Ok(Value::Int64(1001))
        );
        assert!(Value::from_json(&json!(1.5), ValueType::Int64).is_err());
        assert!(Value::from_json(&json!(1i64 << 40), ValueType::Int32).is_err());
        assert_eq!(
            Value::parse("abc", ValueType::String),
            Ok(Value::String("abc".into()))
        );
        assert_eq!(Value::parse("7", ValueType::Int32), Ok(Value::Int32(7)));
        assert!(Value::parse("seven", ValueType::Int32).is_err());
    }
}
