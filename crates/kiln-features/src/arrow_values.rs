//! Reading single values out of Arrow arrays of Kiln's value types.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use kiln_core::Value;
use kiln_core::value::ValueWriter;

/// Encodes row `i` of an array of one of Kiln's value types (as produced by normalisation).
pub(crate) fn encode_at(w: &mut ValueWriter<'_>, a: &ArrayRef, i: usize) {
    if a.is_null(i) {
        w.put_null();
        return;
    }
    match a.data_type() {
        DataType::Boolean => w.put_bool(a.as_boolean().value(i)),
        DataType::Int32 => w.put_i32(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => w.put_i64(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => w.put_f32(a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => w.put_f64(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => w.put_str(a.as_string::<i32>().value(i)),
        DataType::Binary => w.put_bytes(a.as_binary::<i32>().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            w.put_timestamp(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        // Normalisation casts every column to a declared type, so nothing else reaches here.
        _ => w.put_null(),
    }
}

/// Row `i` of an array of one of Kiln's value types as a [`Value`].
pub fn value_at(a: &ArrayRef, i: usize) -> Value {
    let mut buf = Vec::new();
    encode_at(&mut ValueWriter::new(&mut buf), a, i);
    // `encode_at` writes exactly one well-formed value.
    kiln_core::value::ValueReader::new(&buf)
        .next_value()
        .unwrap_or(Value::Null)
}
