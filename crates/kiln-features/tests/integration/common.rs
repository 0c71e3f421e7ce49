//! Builders shared by the integration tests.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{Field, Schema};
use kiln_core::ValueType;
use kiln_core::spec::{Field as KField, SourceSpec, ViewVersion};

pub fn view(
    name: &str,
    keys: &[(&str, ValueType)],
    ttl_seconds: u64,
    created: bool,
    features: &[(&str, ValueType)],
) -> ViewVersion {
    ViewVersion {
        name: name.into(),
        version: 1,
        entities: vec!["e".into()],
        join_keys: keys
            .iter()
            .map(|(n, t)| KField {
                name: (*n).into(),
                dtype: *t,
            })
            .collect(),
        source: SourceSpec {
            name: format!("{name}_source"),
            path: String::new(),
            timestamp_field: "ts".into(),
            created_timestamp_column: created.then(|| "created".into()),
            description: String::new(),
            tags: Default::default(),
        },
        ttl_seconds,
        features: features
            .iter()
            .map(|(n, t)| KField {
                name: (*n).into(),
                dtype: *t,
            })
            .collect(),
        aggregations: Vec::new(),
        created_at: 0,
    }
}

pub fn i64s(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

pub fn f64s(v: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

pub fn strs(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

pub fn times(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC"))
}

pub fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, cols.into_iter().map(|(_, a)| a).collect())
        .expect("valid test batch")
}
