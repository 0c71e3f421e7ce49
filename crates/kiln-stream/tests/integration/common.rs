//! A small aggregated view over a card-transactions source, and its events as Arrow.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use kiln_core::ValueType;
use kiln_core::spec::{AggFunction, AggregationSpec, Field, SourceSpec, ViewVersion, WindowKind};

pub const CARD: &str = "card";
pub const TS: &str = "ts";
pub const AMOUNT: &str = "amount";
pub const MERCHANT: &str = "merchant";

/// One event: card, event time (µs), amount (may be null or NaN), merchant.
#[derive(Debug, Clone)]
pub struct Ev {
    pub card: i64,
    pub ts: i64,
    pub amount: Option<f64>,
    pub merchant: i64,
}

pub fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ArrowField::new(CARD, DataType::Int64, true),
        ArrowField::new(
            TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        ArrowField::new(AMOUNT, DataType::Float64, true),
        ArrowField::new(MERCHANT, DataType::Int64, true),
    ]))
}

pub fn batch(events: &[Ev]) -> RecordBatch {
    let mut card = Int64Builder::new();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut amount = Float64Builder::new();
    let mut merchant = Int64Builder::new();
    for e in events {
        card.append_value(e.card);
        ts.append_value(e.ts);
        amount.append_option(e.amount);
        merchant.append_value(e.merchant);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(card.finish()),
        Arc::new(ts.finish()),
        Arc::new(amount.finish()),
        Arc::new(merchant.finish()),
    ];
    RecordBatch::try_new(arrow_schema(), cols).expect("batch")
}

/// Sliding windows of 7 s (untiled), 1 min and 1 h (tiled), tumbling windows of 1 min and 1 h,
/// and sessions ended by a 30 s gap, over every function.
pub fn view(path: &str) -> ViewVersion {
    let windows = [7u64, 60, 3600];
    let mut aggregations = Vec::new();
    let specs: [(AggFunction, Option<(&str, ValueType)>); 10] = [
        (AggFunction::Count, None),
        (AggFunction::Sum, Some((AMOUNT, ValueType::Float64))),
        (AggFunction::Mean, Some((AMOUNT, ValueType::Float64))),
        (AggFunction::Min, Some((AMOUNT, ValueType::Float64))),
        (AggFunction::Max, Some((MERCHANT, ValueType::Int64))),
        (AggFunction::Stddev, Some((AMOUNT, ValueType::Float64))),
        (AggFunction::Last, Some((AMOUNT, ValueType::Float64))),
        (
            AggFunction::CountDistinct,
            Some((MERCHANT, ValueType::Int64)),
        ),
        (AggFunction::Sum, Some((MERCHANT, ValueType::Int64))),
        (
            AggFunction::ApproxCountDistinct,
            Some((MERCHANT, ValueType::Int64)),
        ),
    ];
    let mut features = Vec::new();
    let windows = windows.iter().map(|w| (*w, WindowKind::Sliding)).chain([
        (60, WindowKind::Tumbling),
        (3600, WindowKind::Tumbling),
        (30, WindowKind::Session),
    ]);
    for (f, col) in specs {
        for (w, kind) in windows.clone() {
            let column = col.map(|(n, t)| Field {
                name: n.into(),
                dtype: t,
            });
            let suffix = match kind {
                WindowKind::Sliding => String::new(),
                k => format!("_{k}"),
            };
            let name = match &column {
                Some(c) => format!("{}_{f}_{w}s{suffix}", c.name),
                None => format!("{f}_{w}s{suffix}"),
            };
            features.push(Field {
                name: name.clone(),
                dtype: f.output_type(column.as_ref().map(|c| c.dtype)),
            });
            aggregations.push(AggregationSpec {
                name,
                function: f,
                column,
                window_seconds: w,
                kind,
            });
        }
    }
    ViewVersion {
        name: "card_activity".into(),
        version: 1,
        entities: vec!["card".into()],
        join_keys: vec![Field {
            name: CARD.into(),
            dtype: ValueType::Int64,
        }],
        source: SourceSpec {
            name: "transactions".into(),
            path: path.into(),
            timestamp_field: TS.into(),
            created_timestamp_column: None,
            description: String::new(),
            tags: Default::default(),
        },
        ttl_seconds: 0,
        features,
        aggregations,
        created_at: 0,
    }
}
