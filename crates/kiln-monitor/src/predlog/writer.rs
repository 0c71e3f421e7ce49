//! Row buffers for the prediction and feedback logs and the one way they reach disk: a Parquet
//! file written beside its final name, synced, then renamed into place, so a reader (or a crash)
//! never sees half a file. Files are laid out Hive-style,
//! `KIND/model=M/version=V/date=YYYY-MM-DD/part-...parquet`, so any engine that reads
//! partitioned Parquet (DuckDB, Spark, pandas, Kiln's own offline store) can query them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::builder::{
    Float64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::events::{FeedbackEvent, PredictionEvent};

/// Columns every prediction-log file starts with.
pub const META_COLUMNS: [&str; 6] = [
    "request_id",
    "row",
    "ts",
    "protocol",
    "entity",
    "latency_us",
];

/// The name of output `i` of `n` in the log files.
pub fn output_column(i: usize, n: usize) -> String {
    if n == 1 {
        "prediction".to_string()
    } else {
        format!("prediction_{i}")
    }
}

/// A feature's column name: its own, unless it collides with a metadata or output column.
pub fn feature_column(name: &str) -> String {
    if META_COLUMNS.contains(&name) || name.starts_with("prediction") {
        format!("feature.{name}")
    } else {
        name.to_string()
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Logged predictions of one model version, not yet written.
pub struct PredictionBuffer {
    pub inputs: Arc<[String]>,
    pub n_outputs: usize,
    request_id: StringBuilder,
    row: UInt32Builder,
    ts: TimestampMicrosecondBuilder,
    protocol: StringBuilder,
    entity: StringBuilder,
    latency: UInt64Builder,
    features: Vec<Float64Builder>,
    outputs: Vec<Float64Builder>,
    rows: usize,
    pub first_ts: i64,
}

impl PredictionBuffer {
    pub fn new(inputs: Arc<[String]>, n_outputs: usize) -> PredictionBuffer {
        PredictionBuffer {
            features: inputs.iter().map(|_| Float64Builder::new()).collect(),
            outputs: (0..n_outputs).map(|_| Float64Builder::new()).collect(),
            inputs,
            n_outputs,
            request_id: StringBuilder::new(),
            row: UInt32Builder::new(),
            ts: TimestampMicrosecondBuilder::new(),
            protocol: StringBuilder::new(),
            entity: StringBuilder::new(),
            latency: UInt64Builder::new(),
            rows: 0,
            first_ts: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends every row of `event` (missing feature values become nulls).
    pub fn push(&mut self, event: &PredictionEvent) {
        if self.rows == 0 {
            self.first_ts = event.ts_micros;
        }
        let f = self.inputs.len();
        let k = self.n_outputs.max(1);
        for r in 0..event.rows() {
            self.request_id.append_value(&event.request_id);
            self.row.append_value(r as u32);
            self.ts.append_value(event.ts_micros);
            self.protocol.append_value(event.protocol);
            self.entity
                .append_option(event.entities.as_ref().and_then(|e| e.get(r)));
            self.latency.append_value(event.latency_us);
            for (i, b) in self.features.iter_mut().enumerate() {
                let v = event.features.get(r * f + i).copied().unwrap_or(f64::NAN);
                b.append_option((!v.is_nan()).then_some(v));
            }
            for (i, b) in self.outputs.iter_mut().enumerate() {
                b.append_option(event.outputs.get(r * k + i).copied());
            }
            self.rows += 1;
        }
    }

    /// The buffered rows as one batch; the buffer is empty afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let mut fields = vec![
            Field::new("request_id", DataType::Utf8, false),
            Field::new("row", DataType::UInt32, false),
            Field::new("ts", timestamp_type(), false),
            Field::new("protocol", DataType::Utf8, false),
            Field::new("entity", DataType::Utf8, true),
            Field::new("latency_us", DataType::UInt64, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.request_id.finish()),
            Arc::new(self.row.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.protocol.finish()),
            Arc::new(self.entity.finish()),
            Arc::new(self.latency.finish()),
        ];
        for (name, b) in self.inputs.iter().zip(&mut self.features) {
            fields.push(Field::new(feature_column(name), DataType::Float64, true));
            columns.push(Arc::new(b.finish()));
        }
        let n = self.outputs.len();
        for (i, b) in self.outputs.iter_mut().enumerate() {
            fields.push(Field::new(output_column(i, n), DataType::Float64, true));
            columns.push(Arc::new(b.finish()));
        }
        self.rows = 0;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            // Invariant: every builder received exactly one value per row above.
            .expect("prediction log columns have equal lengths")
    }
}

/// Labels joined to predictions, not yet written.
#[derive(Default)]
pub struct FeedbackBuffer {
    request_id: StringBuilder,
    row: UInt32Builder,
    predicted_at: TimestampMicrosecondBuilder,
    ts: TimestampMicrosecondBuilder,
    label: Float64Builder,
    prediction: Float64Builder,
    rows: usize,
    pub first_ts: i64,
}

impl FeedbackBuffer {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push(&mut self, event: &FeedbackEvent) {
        if self.rows == 0 {
            self.first_ts = event.ts_micros;
        }
        self.request_id.append_value(&event.request_id);
        self.row.append_value(event.row as u32);
        self.predicted_at.append_value(event.predicted_at_micros);
        self.ts.append_value(event.ts_micros);
        self.label.append_value(event.label);
        self.prediction.append_value(event.prediction);
        self.rows += 1;
    }

    pub fn finish(&mut self) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("request_id", DataType::Utf8, false),
            Field::new("row", DataType::UInt32, false),
            Field::new("predicted_at", timestamp_type(), false),
            Field::new("ts", timestamp_type(), false),
            Field::new("label", DataType::Float64, false),
            Field::new("prediction", DataType::Float64, false),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.request_id.finish()),
            Arc::new(self.row.finish()),
            Arc::new(self.predicted_at.finish().with_timezone("UTC")),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.label.finish()),
            Arc::new(self.prediction.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(Arc::new(schema), columns)
            // Invariant: every builder received exactly one value per row above.
            .expect("feedback log columns have equal lengths")
    }
}

/// Where a batch of `kind` (`predictions` or `feedback`) rows of a model version goes.
pub fn partition_dir(root: &Path, kind: &str, model: &str, version: u32, first_ts: i64) -> PathBuf {
    let date = kiln_core::time::format_timestamp(first_ts);
    root.join(kind)
        .join(format!("model={model}"))
        .join(format!("version={version}"))
        .join(format!("date={}", date.get(..10).unwrap_or("unknown")))
}

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `batch` as a new Parquet file in `dir`: to a hidden temporary name, synced, then
/// renamed, so the file appears whole or not at all. Returns its path.
pub fn write_parquet(dir: &Path, first_ts: i64, batch: &RecordBatch) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!("part-{first_ts}-{}-{seq:06}.parquet", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(&name);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(std::io::Error::other)?;
        writer.write(batch).map_err(std::io::Error::other)?;
        let file = writer.into_inner().map_err(std::io::Error::other)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}
