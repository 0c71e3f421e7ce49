//! A deterministic generator of driver-statistics data, Feast's canonical example shape:
//! hourly rows per driver with four features. `kiln init` writes a small one, `kiln demo` uses
//! it, and the benchmarks (Kiln's and the Feast harness in `bench/feast`) read the same files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float32Array, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use kiln_core::time::{MICROS_PER_SECOND, Micros};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::FeatureError;

const HOUR: i64 = 3_600 * MICROS_PER_SECOND;

/// The shape of a generated data set.
#[derive(Debug, Clone, Copy)]
pub struct DriverStats {
    pub drivers: u64,
    pub hours: u64,
    /// The last hour's timestamp; rows run from `anchor - (hours - 1)h` to `anchor`.
    pub anchor: Micros,
    pub first_id: i64,
    pub seed: u64,
    /// Every n-th driver (0 = none) stopped reporting `stale_hours` before the anchor, so its
    /// latest values are old: online reads past the view's ttl show them as expired.
    pub stale_every: u64,
    pub stale_hours: u64,
}

impl DriverStats {
    /// Rows written, before leaving out the stale drivers' recent hours.
    pub fn rows(&self) -> u64 {
        self.drivers * self.hours
    }

    /// Whether `driver` (0-based) has a row at `hour` (0-based from the first hour).
    fn reports(&self, driver: u64, hour: u64) -> bool {
        let stale = self.stale_every > 0 && driver % self.stale_every == self.stale_every - 1;
        !stale || hour + self.stale_hours < self.hours
    }

    pub fn first_hour(&self) -> Micros {
        self.anchor - (self.hours as i64 - 1) * HOUR
    }
}

/// splitmix64: tiny, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

pub fn driver_stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
        Field::new("avg_rating", DataType::Float64, true),
    ]))
}

fn writer(
    path: &Path,
    schema: SchemaRef,
    row_group: usize,
) -> Result<ArrowWriter<File>, FeatureError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| FeatureError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let f = File::create(path).map_err(|source| FeatureError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group))
        .build();
    ArrowWriter::try_new(f, schema, Some(props))
        .map_err(|e| FeatureError::internal("writing example data", e))
}

/// Writes the hourly statistics, hour by hour (so row groups are time ranges and prune well),
/// in batches so that memory stays flat however many rows are asked for. Calls `progress` with
/// the rows written so far.
pub fn write_driver_stats(
    path: &Path,
    spec: &DriverStats,
    mut progress: impl FnMut(u64),
) -> Result<u64, FeatureError> {
    let schema = driver_stats_schema();
    let mut w = writer(path, schema.clone(), 1 << 20)?;
    let mut rng = Rng::new(spec.seed);
    let batch_rows = 1 << 16;
    let mut written = 0u64;
    let total = spec.rows();
    let mut row = 0u64;
    while row < total {
        let n = batch_rows.min(total - row) as usize;
        let mut ids = Vec::with_capacity(n);
        let mut ev = Vec::with_capacity(n);
        let mut cr = Vec::with_capacity(n);
        let (mut conv, mut acc, mut trips, mut rating) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in row..row + n as u64 {
            let hour = r / spec.drivers;
            let driver = r % spec.drivers;
            if !spec.reports(driver, hour) {
                continue;
            }
            let t = spec.first_hour() + hour as i64 * HOUR;
            ids.push(spec.first_id + driver as i64);
            ev.push(t);
            cr.push(t + (rng.below(60) as i64) * MICROS_PER_SECOND);
            conv.push(rng.unit() as f32);
            acc.push(rng.unit() as f32);
            trips.push(rng.below(1_000) as i64);
            rating.push(1.0 + 4.0 * rng.unit());
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMicrosecondArray::from(ev).with_timezone("UTC")),
                Arc::new(TimestampMicrosecondArray::from(cr).with_timezone("UTC")),
                Arc::new(Float32Array::from(conv)),
                Arc::new(Float32Array::from(acc)),
                Arc::new(Int64Array::from(trips)),
                Arc::new(Float64Array::from(rating)),
            ],
        )
        .map_err(|e| FeatureError::internal("writing example data", e))?;
        w.write(&batch)
            .map_err(|e| FeatureError::internal("writing example data", e))?;
        row += n as u64;
        written += batch.num_rows() as u64;
        progress(row);
    }
    w.close()
        .map_err(|e| FeatureError::internal("writing example data", e))?;
    Ok(written)
}

/// Writes `n` entity rows for training sets: random drivers (about 5% unknown ids) at random
/// times from two hours before the data to six hours after it (about 1% exactly on an hour).
pub fn write_entity_rows(
    path: &Path,
    n: u64,
    spec: &DriverStats,
    mut progress: impl FnMut(u64),
) -> Result<u64, FeatureError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        ts_field("event_timestamp"),
    ]));
    let mut w = writer(path, schema.clone(), 1 << 20)?;
    let mut rng = Rng::new(spec.seed ^ 0xE17_1717);
    let lo = spec.first_hour() - 2 * HOUR;
    let span = (spec.hours as i64 + 8) * HOUR;
    let mut row = 0u64;
    while row < n {
        let m = (1u64 << 16).min(n - row) as usize;
        let mut ids = Vec::with_capacity(m);
        let mut ts = Vec::with_capacity(m);
        for _ in 0..m {
            let unknown = rng.below(100) < 5;
            let d = if unknown {
                spec.drivers + rng.below(spec.drivers.max(1))
            } else {
                rng.below(spec.drivers)
            };
            ids.push(spec.first_id + d as i64);
            let t = lo + (rng.unit() * span as f64) as i64;
            ts.push(if rng.below(100) == 0 {
                t - t.rem_euclid(HOUR)
            } else {
                t
            });
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            ],
        )
        .map_err(|e| FeatureError::internal("writing entity rows", e))?;
        w.write(&batch)
            .map_err(|e| FeatureError::internal("writing entity rows", e))?;
        row += m as u64;
        progress(row);
    }
    w.close()
        .map_err(|e| FeatureError::internal("writing entity rows", e))?;
    Ok(row)
}
