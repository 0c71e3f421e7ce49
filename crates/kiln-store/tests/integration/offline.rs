//! Parquet discovery and scans with time pruning on real files.

use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use kiln_store::offline::{
    ParquetScan, ScanRequest, parquet_files, read_schema, timestamps_micros,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Writes `rows` rows with millisecond timestamps 0, 1000, 2000, ... in row groups of 10.
fn write_file(path: &std::path::Path, rows: i64, offset: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("x", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    (0..rows).map(|i| (i + offset) * 1_000),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
        ],
    )
    .expect("batch");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(10))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).expect("create"),
        schema,
        Some(props),
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

#[test]
fn directories_are_scanned_in_order_with_pruning() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("part=2")).expect("mkdir");
    write_file(&dir.path().join("part=2/b.parquet"), 30, 100);
    write_file(&dir.path().join("a.parquet"), 30, 0);
    std::fs::write(dir.path().join("_SUCCESS"), b"").expect("marker");
    let files = parquet_files(dir.path()).expect("files");
    assert_eq!(files.len(), 2);
    assert!(files[0].ends_with("a.parquet"));
    assert_eq!(read_schema(dir.path()).expect("schema").fields().len(), 3);

    // Seconds 12..=15 live in row group 1 of a.parquet only.
    let req = ScanRequest {
        columns: vec!["ts".into(), "id".into()],
        time_column: "ts".into(),
        time_range: Some((12_000_000, 15_000_000)),
        batch_size: 4,
    };
    let scan = ParquetScan::plan(dir.path(), &req).expect("plan");
    assert_eq!(scan.total_rows, 10);
    assert_eq!(scan.pruned_row_groups, 5);
    let mut ids = Vec::new();
    for item in scan {
        let (_, batch) = item.expect("batch");
        assert_eq!(batch.num_columns(), 2);
        let ts = timestamps_micros(batch.column_by_name("ts").expect("ts")).expect("micros");
        let id = batch.column_by_name("id").expect("id");
        let id = id.as_any().downcast_ref::<Int64Array>().expect("int64");
        for i in 0..batch.num_rows() {
            assert_eq!(ts.value(i), id.value(i) * 1_000_000);
            ids.push(id.value(i));
        }
    }
    assert_eq!(ids, (10..20).collect::<Vec<_>>());

    // Without a range everything is read, across both files.
    let req = ScanRequest {
        time_range: None,
        ..req
    };
    let rows: usize = ParquetScan::plan(dir.path(), &req)
        .expect("plan")
        .map(|b| b.expect("batch").1.num_rows())
        .sum();
    assert_eq!(rows, 60);
}

#[test]
fn unreadable_sources_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"not parquet").expect("write");
    let e = read_schema(&bad).expect_err("garbage");
    assert!(e.to_string().contains("bad.parquet"), "{e}");
    let e = read_schema(&dir.path().join("missing.parquet")).expect_err("missing");
    assert!(e.to_string().contains("missing.parquet"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    assert!(
        read_schema(&empty)
            .expect_err("empty")
            .to_string()
            .contains("no Parquet files")
    );
}
