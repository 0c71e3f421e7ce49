//! Entity keys as bytes.
//!
//! An entity key is the tuple of a view's join-key values in the order the view's entities
//! declare them, each value converted to its declared type first. Encoding it with the value
//! codec gives bytes that are equal exactly when the typed tuples are equal, so materialization
//! (which encodes straight from Arrow arrays) and online reads (which encode from request JSON)
//! address the same stored row.

use crate::Value;
use crate::value::ValueWriter;

/// The storage key for one entity: the encoded join-key values.
pub fn entity_key(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    put_entity_key(&mut out, values);
    out
}

/// Appends the entity key of `values` to `out` (hot paths reuse one buffer).
pub fn put_entity_key<'a>(out: &mut Vec<u8>, values: impl IntoIterator<Item = &'a Value>) {
    let mut w = ValueWriter::new(out);
    for v in values {
        w.put(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_type_and_value() {
        let a = entity_key(&[Value::Int64(1)]);
        assert_eq!(a, entity_key(&[Value::Int64(1)]));
        assert_ne!(a, entity_key(&[Value::Int64(2)]));
        assert_ne!(a, entity_key(&[Value::Int32(1)]));
        assert_ne!(
            entity_key(&[Value::String("ab".into()), Value::String("c".into())]),
            entity_key(&[Value::String("a".into()), Value::String("bc".into())])
        );
    }
}
