//! Point-in-time join benchmarks on the driver-stats shape the Feast comparison uses:
//! 10,000 drivers x 24 hourly rows (240,000 feature rows) joined onto 100,000 entity rows,
//! in memory (no Parquet I/O), at several partition counts. Run with
//! `cargo bench -p kiln-features --bench pit`.

use std::sync::OnceLock;

use arrow_array::RecordBatch;
use kiln_core::ValueType;
use kiln_core::spec::{Field, SourceSpec, ViewVersion};
use kiln_features::example::{DriverStats, write_driver_stats, write_entity_rows};
use kiln_features::pit::{DatasetOptions, FeatureInput, ViewRequest, join_batches};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn main() {
    divan::main();
}

struct Data {
    features: Vec<RecordBatch>,
    entities: Vec<RecordBatch>,
    view: ViewVersion,
}

fn read(path: &std::path::Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).expect("open");
    ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .with_batch_size(65_536)
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = DriverStats {
            drivers: 10_000,
            hours: 24,
            anchor: 1_767_225_600_000_000,
            first_id: 1001,
            seed: 42,
            stale_every: 0,
            stale_hours: 0,
        };
        write_driver_stats(&dir.path().join("s.parquet"), &spec, |_| {}).expect("stats");
        write_entity_rows(&dir.path().join("e.parquet"), 100_000, &spec, |_| {}).expect("entities");
        let field = |n: &str, t| Field {
            name: n.into(),
            dtype: t,
        };
        Data {
            features: read(&dir.path().join("s.parquet")),
            entities: read(&dir.path().join("e.parquet")),
            view: ViewVersion {
                name: "driver_hourly_stats".into(),
                version: 1,
                entities: vec!["driver".into()],
                join_keys: vec![field("driver_id", ValueType::Int64)],
                source: SourceSpec {
                    name: "s".into(),
                    path: String::new(),
                    timestamp_field: "event_timestamp".into(),
                    created_timestamp_column: Some("created".into()),
                    description: String::new(),
                    tags: Default::default(),
                },
                ttl_seconds: 2 * 86_400,
                features: vec![
                    field("conv_rate", ValueType::Float32),
                    field("acc_rate", ValueType::Float32),
                    field("avg_daily_trips", ValueType::Int64),
                    field("avg_rating", ValueType::Float64),
                ],
                aggregations: Vec::new(),
                created_at: 0,
            },
        }
    })
}

#[divan::bench(args = [1, 2, 8, 32], sample_count = 20)]
fn join_100k_entities_240k_rows(bencher: divan::Bencher, partitions: usize) {
    let d = data();
    let opts = DatasetOptions {
        partitions: Some(partitions),
        ..DatasetOptions::default()
    };
    bencher.bench(|| {
        let req = ViewRequest {
            view: d.view.clone(),
            features: d.view.features.iter().map(|f| f.name.clone()).collect(),
        };
        join_batches(
            &d.entities,
            vec![(req, FeatureInput::Batches(d.features.clone()))],
            &opts,
        )
        .expect("join")
    });
}
