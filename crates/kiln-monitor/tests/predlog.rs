//! The prediction log writes what it is given, whole, into partitioned Parquet; closing flushes
//! everything; a full queue drops and counts; a failing disk is retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, Float64Array, StringArray, UInt32Array};
use kiln_monitor::bus::EventBus;
use kiln_monitor::events::{Event, PredictionEvent};
use kiln_monitor::predlog::{LogConfig, PredictionLog};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn event(i: usize, rows: usize, inputs: &Arc<[String]>) -> Event {
    Event::Prediction(Arc::new(PredictionEvent {
        request_id: format!("req-{i}"),
        model: "ranker".into(),
        version: 2,
        protocol: "rest",
        ts_micros: 1_790_000_000_000_000 + i as i64,
        inputs: inputs.clone(),
        objective: Arc::from("binary:logistic"),
        features: (0..rows * inputs.len())
            .map(|j| {
                if j % 5 == 4 {
                    f64::NAN
                } else {
                    (i * 100 + j) as f64
                }
            })
            .collect(),
        outputs: (0..rows).map(|r| (i + r) as f64 / 1000.0).collect(),
        n_outputs: 1,
        entities: Some((0..rows).map(|r| format!("driver_id={}", i + r)).collect()),
        latency_us: 150,
    }))
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// (request id, row, first feature, prediction) of every logged row.
fn read_rows(dir: &Path) -> Vec<(String, u32, Option<f64>, f64)> {
    let mut rows = Vec::new();
    for path in parquet_files(dir) {
        let file = std::fs::File::open(&path).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let col = |name: &str| batch.column_by_name(name).expect(name).clone();
            let ids = col("request_id");
            let ids = ids.as_any().downcast_ref::<StringArray>().expect("ids");
            let row = col("row");
            let row = row.as_any().downcast_ref::<UInt32Array>().expect("row");
            let f = col("trips");
            let f = f.as_any().downcast_ref::<Float64Array>().expect("trips");
            let p = col("prediction");
            let p = p.as_any().downcast_ref::<Float64Array>().expect("p");
            for i in 0..batch.num_rows() {
                rows.push((
                    ids.value(i).to_string(),
                    row.value(i),
                    (!f.is_null(i)).then(|| f.value(i)),
                    p.value(i),
                ));
            }
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

fn inputs() -> Arc<[String]> {
    Arc::from(vec!["trips".to_string(), "rating".to_string()])
}

#[tokio::test]
async fn everything_published_is_on_disk_after_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = EventBus::new();
    let mut config = LogConfig::new(dir.path());
    config.roll_rows = 7; // several files
    let log = PredictionLog::start(&bus, config);
    let inputs = inputs();
    for i in 0..50 {
        bus.publish(event(i, 1 + i % 3, &inputs));
    }
    let stats = log.close().await;
    let expected_rows: usize = (0..50).map(|i| 1 + i % 3).sum();
    assert_eq!(stats.prediction_rows as usize, expected_rows);
    assert_eq!(stats.dropped, 0);
    assert!(stats.files > 1, "rolled by rows: {stats:?}");
    let rows = read_rows(dir.path());
    assert_eq!(rows.len(), expected_rows);
    let first = rows.iter().find(|r| r.0 == "req-1").expect("req-1");
    assert_eq!(first.1, 0);
    assert_eq!(first.2, Some(100.0));
    assert_eq!(first.3, 0.001);
    // Files are partitioned by model, version and date.
    let files = parquet_files(dir.path());
    let shown = files[0].strip_prefix(dir.path()).expect("under root");
    let parts: Vec<_> = shown
        .iter()
        .map(|p| p.to_string_lossy().to_string())
        .collect();
    assert_eq!(
        parts[..4],
        [
            "predictions",
            "model=ranker",
            "version=2",
            "date=2026-09-21"
        ]
    );
}

#[tokio::test]
async fn files_roll_by_time_without_a_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = EventBus::new();
    let mut config = LogConfig::new(dir.path());
    config.roll_interval = Duration::from_millis(50);
    let log = PredictionLog::start(&bus, config);
    bus.publish(event(1, 2, &inputs()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.stats().prediction_rows < 2 {
        assert!(std::time::Instant::now() < deadline, "not written by time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(read_rows(dir.path()).len(), 2);
    log.close().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_what_was_kept_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = EventBus::new();
    let mut config = LogConfig::new(dir.path());
    config.queue_capacity = 4;
    // Published from this (current-thread) runtime without yielding: the writer cannot run, so
    // all but 4 events find the queue full.
    let log = PredictionLog::start(&bus, config);
    for i in 0..20 {
        bus.publish(event(i, 1, &inputs()));
    }
    let stats = log.close().await;
    assert_eq!(stats.dropped, 16);
    assert_eq!(stats.prediction_rows, 4);
    assert_eq!(read_rows(dir.path()).len(), 4);
}

#[tokio::test]
async fn a_failing_write_is_counted_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The log's root is a file at first: directories cannot be made under it.
    let root = dir.path().join("logs");
    std::fs::write(&root, b"not a directory").expect("write");
    let bus = EventBus::new();
    let mut config = LogConfig::new(&root);
    config.roll_interval = Duration::from_millis(20);
    let log = PredictionLog::start(&bus, config);
    bus.publish(event(1, 3, &inputs()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.stats().write_errors == 0 {
        assert!(std::time::Instant::now() < deadline, "no write error");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The disk recovers: the kept rows are written on a retry.
    std::fs::remove_file(&root).expect("remove");
    while log.stats().prediction_rows < 3 {
        assert!(std::time::Instant::now() < deadline, "not retried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = log.close().await;
    assert_eq!(stats.rows_lost, 0);
    assert_eq!(read_rows(&root).len(), 3);
}

#[test]
fn sampling_is_stable_and_near_the_rate() {
    use kiln_monitor::predlog::sampled;
    let kept = (0..10_000)
        .filter(|i| sampled(&format!("req-{i}"), 0.25))
        .count();
    assert!((2_200..2_800).contains(&kept), "{kept}");
    assert_eq!(sampled("abc", 0.5), sampled("abc", 0.5));
    assert!(sampled("anything", 1.0));
}
