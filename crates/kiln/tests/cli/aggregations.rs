//! Windowed aggregations declared in TOML and backfilled by `kiln dataset build`, checked
//! against values computed by hand.

use std::fs::File;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::common::*;

pub(crate) const DEFS: &str = r#"
[[entity]]
name = "card"
join_keys = [{ name = "card_id", dtype = "int64" }]

[[source]]
name = "transactions"
path = "data/transactions.parquet"
timestamp_field = "ts"

[[feature_view]]
name = "card_activity"
entities = ["card"]
source = "transactions"

[[feature_view.aggregations]]
function = "count"
windows = ["10m", "1h"]

[[feature_view.aggregations]]
column = "amount"
function = "sum"
windows = ["10m", "1h"]

[[feature_view.aggregations]]
column = "amount"
function = "max"
windows = ["1h"]

[[feature_view.aggregations]]
column = "merchant"
function = "count_distinct"
windows = ["1h"]

[[feature_view.aggregations]]
column = "merchant"
function = "approx_count_distinct"
windows = ["1h"]

[[feature_view.aggregations]]
column = "amount"
function = "sum"
windows = ["1h"]
kind = "tumbling"

[[feature_view.aggregations]]
function = "count"
windows = ["20m"]
kind = "session"

[[feature_service]]
name = "card_fraud"
features = ["card_activity"]
"#;

/// 2026-01-01T00:00:00Z in microseconds, and a minute.
pub(crate) const T0: i64 = 1_767_225_600_000_000;
pub(crate) const MIN: i64 = 60_000_000;

/// A record batch of named columns.
pub(crate) fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, cols.into_iter().map(|(_, a)| a).collect()).expect("batch")
}

pub(crate) fn write(path: &std::path::Path, cols: Vec<(&str, ArrayRef)>) {
    let batch = batch(cols);
    let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

pub(crate) fn ints(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

pub(crate) fn floats(v: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

pub(crate) fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

pub(crate) fn times(minutes: &[i64]) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from(minutes.iter().map(|m| T0 + m * MIN).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

#[test]
fn dataset_build_backfills_windows_exactly() {
    let p = init(&[]);
    p.write("features/cards.toml", DEFS);
    // Card 1 at minutes 0, 5, 30, 60; card 2 at minute 1.
    write(
        &p.dir.join("data/transactions.parquet"),
        vec![
            ("card_id", ints(&[1, 1, 2, 1, 1])),
            ("ts", times(&[0, 5, 1, 30, 60])),
            ("amount", floats(&[10.0, 20.0, 7.0, 5.0, 100.0])),
            ("merchant", strings(&["m1", "m2", "m9", "m1", "m3"])),
        ],
    );
    let entities = p.dir.join("data/cards.parquet");
    write(
        &entities,
        vec![
            ("card_id", ints(&[1, 1, 2, 3, 1])),
            ("event_timestamp", times(&[10, 60, 0, 60, 10])),
        ],
    );
    ok(p.run(&["apply"]));
    let out = p.dir.join("train.parquet");
    let r = build_dataset(&p, &entities, &["--service", "card_fraud"], &out);
    assert_eq!(r["stats"]["entity_rows"], 5, "{r}");

    let b = read_parquet(&out);
    let names: Vec<&str> = b
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "card_id",
            "event_timestamp",
            "count_10m",
            "count_1h",
            "amount_sum_10m",
            "amount_sum_1h",
            "amount_max_1h",
            "merchant_count_distinct_1h",
            "merchant_approx_count_distinct_1h",
            "amount_sum_1h_tumbling",
            "count_20m_session"
        ]
    );
    let int_col = |c: &str| -> Vec<Option<i64>> {
        b.column_by_name(c)
            .expect("column")
            .as_primitive::<Int64Type>()
            .iter()
            .collect()
    };
    let float_col = |c: &str| -> Vec<Option<f64>> {
        b.column_by_name(c)
            .expect("column")
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    };
    // Rows: (1, 10m), (1, 60m), (2, 0m), (3, 60m), (1, 10m) again.
    // (1, 10m): 10m window (0, 10] has minute 5 only (minute 0 is exactly T - 10m, excluded);
    //           1h window (-50, 10] has minutes 0 and 5.
    // (1, 60m): 10m window (50, 60] has minute 60 (T itself is included); 1h window (0, 60]
    //           has 5, 30 and 60.
    // (2, 0m):  before card 2's only event. (3, 60m): a card with no events.
    assert_eq!(
        int_col("count_10m"),
        [Some(1), Some(1), Some(0), Some(0), Some(1)]
    );
    assert_eq!(
        int_col("count_1h"),
        [Some(2), Some(3), Some(0), Some(0), Some(2)]
    );
    assert_eq!(
        float_col("amount_sum_10m"),
        [Some(20.0), Some(100.0), None, None, Some(20.0)]
    );
    assert_eq!(
        float_col("amount_sum_1h"),
        [Some(30.0), Some(125.0), None, None, Some(30.0)]
    );
    assert_eq!(
        float_col("amount_max_1h"),
        [Some(20.0), Some(100.0), None, None, Some(20.0)]
    );
    assert_eq!(
        int_col("merchant_count_distinct_1h"),
        [Some(2), Some(3), Some(0), Some(0), Some(2)]
    );
    // HyperLogLog counts a handful of merchants exactly (linear counting, no shared register).
    assert_eq!(
        int_col("merchant_approx_count_distinct_1h"),
        int_col("merchant_count_distinct_1h")
    );
    // Tumbling hours: (1, 10m) is in [0, 60m), minutes 0 and 5; (1, 60m) starts the bucket
    // [60m, 120m), which holds minute 60 only.
    assert_eq!(
        float_col("amount_sum_1h_tumbling"),
        [Some(30.0), Some(100.0), None, None, Some(30.0)]
    );
    // Sessions ended by a 20-minute gap: card 1's are {0, 5}, {30} and {60}.
    assert_eq!(
        int_col("count_20m_session"),
        [Some(2), Some(1), Some(0), Some(0), Some(2)]
    );

    // `kiln materialize` leaves the aggregated view out: the stream keeps it online.
    let named = fails(p.run(&["materialize", "--incremental", "--views", "card_activity"]));
    assert!(named.contains("windowed aggregations"), "{named}");
}

#[test]
fn bad_aggregations_are_reported_with_file_line_and_field() {
    let p = init(&[]);
    write(
        &p.dir.join("data/transactions.parquet"),
        vec![
            ("card_id", ints(&[1])),
            ("ts", times(&[0])),
            ("amount", floats(&[1.0])),
            ("merchant", strings(&["m1"])),
        ],
    );
    let bad = DEFS
        .replace("function = \"max\"", "function = \"median\"")
        .replace(
            "column = \"merchant\"\nfunction = \"count_distinct\"",
            "column = \"merchant\"\nfunction = \"sum\"",
        )
        .replacen(
            "windows = [\"10m\", \"1h\"]\n\n[[feature_view.aggregations]]\ncolumn = \"amount\"",
            "windows = [\"10m\", \"1x\"]\n\n[[feature_view.aggregations]]\ncolumn = \"amont\"",
            1,
        )
        .replace("kind = \"tumbling\"", "kind = \"hopping\"");
    p.write("features/cards.toml", &bad);
    let err = fails(p.run(&["apply"]));
    for want in [
        "features/cards.toml:",
        "feature_view[card_activity].aggregations[2].function: unknown aggregation function \"median\"",
        "feature_view[card_activity].aggregations[3].column: sum needs a numeric",
        "feature_view[card_activity].aggregations[0].windows[1]",
        "feature_view[card_activity].aggregations[1].column: column \"amont\" is not in",
        "feature_view[card_activity].aggregations[5].kind: unknown window kind \"hopping\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
