//! `kiln bench stream`: the streaming side measured on the embedded log, in a temporary
//! directory, on synthetic card events (int64 key, event time, float amount) aggregated by
//! one view with count, sum and max of the amount over 10m, 1h and 24h (3 windows x 3
//! aggregations).
//!
//! - throughput: `--events` events over `--keys` keys (uniform), an hour of event time, are
//!   appended to the log first; then one thread reads, decodes and aggregates them
//!   (`aggregate_only`: every changed row is computed and encoded but not stored) and, on a
//!   fresh state, runs the whole pipeline into a redb online store with offline Parquet and
//!   checkpoints (`end_to_end`).
//! - `--freshness`: a writer appends `--rate` events per second in 1 ms batches while the
//!   pipeline runs; every 10 ms a probe event for a new key is appended, and a reader polls the
//!   online store until the probe's row is there. Latency = visible - append acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use kiln_core::spec::{AggFunction, AggregationSpec, Field, SourceSpec, ViewVersion};
use kiln_core::{Value, ValueType, key::entity_key};
use kiln_store::online::{OnlineStore, RedbStore};
use kiln_stream::event::{EventSchema, decode_row_into, encode_row};
use kiln_stream::log::{LogBatch, LogReader, LogWriter};
use kiln_stream::operator::ViewOperator;
use kiln_stream::pipeline::{SourceStream, StreamOptions, run as run_stream};
use kiln_stream::window::Plan;
use serde::Serialize;

#[derive(clap::Args)]
pub struct StreamBenchArgs {
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Measure append-to-visible latency under load instead of throughput.
    #[arg(long)]
    pub freshness: bool,
    /// Background events per second during --freshness.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// How long --freshness runs.
    #[arg(long, default_value = "10s")]
    pub duration: String,
}

const T0: i64 = 1_767_225_600_000_000;

fn view(dir: &Path) -> ViewVersion {
    let mut aggregations = Vec::new();
    let mut features = Vec::new();
    for (f, col) in [
        (AggFunction::Count, None),
        (AggFunction::Sum, Some("amount")),
        (AggFunction::Max, Some("amount")),
    ] {
        for (w, secs) in [("10m", 600u64), ("1h", 3_600), ("24h", 86_400)] {
            let column = col.map(|c| Field {
                name: c.into(),
                dtype: ValueType::Float64,
            });
            let name = match col {
                Some(c) => format!("{c}_{f}_{w}"),
                None => format!("{f}_{w}"),
            };
            features.push(Field {
                name: name.clone(),
                dtype: f.output_type(column.as_ref().map(|c| c.dtype)),
            });
            aggregations.push(AggregationSpec {
                name,
                function: f,
                column,
                window_seconds: secs,
                kind: kiln_core::spec::WindowKind::Sliding,
            });
        }
    }
    ViewVersion {
        name: "card_activity".into(),
        version: 1,
        entities: vec!["card".into()],
        join_keys: vec![Field {
            name: "card_id".into(),
            dtype: ValueType::Int64,
        }],
        source: SourceSpec {
            name: "transactions".into(),
            path: dir.display().to_string(),
            timestamp_field: "ts".into(),
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

fn arrow() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ArrowField::new("card_id", DataType::Int64, true),
        ArrowField::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        ArrowField::new("amount", DataType::Float64, true),
    ]))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn encoded(card: i64, ts: i64, amount: f64) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    encode_row(
        &vec![
            Value::Int64(card),
            Value::Timestamp(ts),
            Value::Float64(amount),
        ],
        &mut b,
    );
    b
}

#[derive(Serialize)]
struct Throughput {
    events: u64,
    keys: u64,
    windows_x_aggregations: &'static str,
    append_seconds: f64,
    aggregate_only_seconds: f64,
    aggregate_only_events_per_second: f64,
    end_to_end_seconds: f64,
    end_to_end_events_per_second: f64,
    online_rows_written: u64,
    keys_with_state: usize,
}

#[derive(Serialize)]
struct Freshness {
    /// The rate asked for...
    rate: u64,
    seconds: f64,
    events: u64,
    /// ...and the rate the writer reached (each append waits for its fsync).
    events_per_second: f64,
    probes: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub async fn run(a: StreamBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = tmp.path().join("transactions");
    std::fs::create_dir_all(&source)?;
    let log_dir = tmp.path().join("stream");
    let v = view(&source);
    let rt = tokio::runtime::Handle::current();
    let report = if a.freshness {
        let secs = kiln_core::time::parse_duration(&a.duration)?;
        serde_json::to_value(
            tokio::task::spawn_blocking(move || freshness(&log_dir, &source, &v, &a, secs, &rt))
                .await??,
        )?
    } else {
        serde_json::to_value(
            tokio::task::spawn_blocking(move || throughput(&log_dir, &source, &v, &a, &rt))
                .await??,
        )?
    };
    crate::output::json(&report)
}

fn throughput(
    log_dir: &Path,
    source: &Path,
    v: &ViewVersion,
    a: &StreamBenchArgs,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<Throughput> {
    let started = Instant::now();
    {
        let mut w = LogWriter::open(log_dir)?;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let step = 3_600_000_000 / a.events.max(1) as i64;
        let mut chunk = Vec::with_capacity(65_536);
        for i in 0..a.events {
            let card = (rng.next() % a.keys) as i64;
            let amount = (rng.next() % 100_000) as f64 / 100.0;
            chunk.push(encoded(card, T0 + i as i64 * step, amount));
            if chunk.len() == 65_536 {
                w.append(&chunk)?;
                chunk.clear();
            }
        }
        w.append(&chunk)?;
    }
    let append_seconds = started.elapsed().as_secs_f64();
    eprintln!("appended {} events in {append_seconds:.1}s", a.events);

    // Read, decode and aggregate on one thread; rows computed but not stored.
    let schema = EventSchema::new(&[v], &arrow())?;
    let mut op = ViewOperator::new(Plan::new(v, &schema)?);
    let started = Instant::now();
    let mut reader = LogReader::open(log_dir, 0)?;
    let mut now = i64::MIN;
    let mut batch = LogBatch::default();
    let mut row = Vec::new();
    loop {
        reader.read_batch(4096, &mut batch)?;
        if batch.is_empty() {
            break;
        }
        for l in batch.iter() {
            decode_row_into(l.payload, 3, &mut row).map_err(anyhow::Error::msg)?;
            now = now.max(schema.event_ts(&row));
            op.apply(&schema, &row, l.offset);
        }
        op.advance(now);
        std::hint::black_box(op.drain());
    }
    let aggregate_only_seconds = started.elapsed().as_secs_f64();
    let keys_with_state = op.key_count();
    drop(op);
    eprintln!(
        "aggregated in {aggregate_only_seconds:.2}s ({:.0} events/s)",
        a.events as f64 / aggregate_only_seconds
    );

    // The whole pipeline into redb, with offline Parquet and checkpoints.
    let store: Arc<dyn OnlineStore> = Arc::new(RedbStore::open(&log_dir.join("online.redb"))?);
    let mut stream = SourceStream::open(log_dir, source, &[v], &arrow(), StreamOptions::default())?;
    let started = Instant::now();
    let summary = run_stream(
        &mut stream,
        rt,
        &store,
        &AtomicBool::new(false),
        true,
        |_, _| {},
    )?;
    let end_to_end_seconds = started.elapsed().as_secs_f64();
    Ok(Throughput {
        events: a.events,
        keys: a.keys,
        windows_x_aggregations: "3 x 3 (count, sum, max over 10m, 1h, 24h)",
        append_seconds,
        aggregate_only_seconds,
        aggregate_only_events_per_second: a.events as f64 / aggregate_only_seconds,
        end_to_end_seconds,
        end_to_end_events_per_second: a.events as f64 / end_to_end_seconds,
        online_rows_written: summary.rows_written,
        keys_with_state,
    })
}

fn freshness(
    log_dir: &Path,
    source: &Path,
    v: &ViewVersion,
    a: &StreamBenchArgs,
    secs: u64,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<Freshness> {
    let store: Arc<dyn OnlineStore> = Arc::new(RedbStore::open(&log_dir.join("online.redb"))?);
    let mut writer = LogWriter::open(log_dir)?;
    let mut stream = SourceStream::open(log_dir, source, &[v], &arrow(), StreamOptions::default())?;
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let (store, stop, rt) = (store.clone(), stop.clone(), rt.clone());
        std::thread::spawn(move || run_stream(&mut stream, &rt, &store, &stop, false, |_, _| {}))
    };
    let per_ms = (a.rate / 1000).max(1);
    let mut rng = Rng(42);
    let started = Instant::now();
    let mut events = 0u64;
    let mut pending: Vec<(Vec<u8>, Instant)> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let mut next_probe = Instant::now();
    let mut probe = 0i64;
    let table = v.name.clone();
    while started.elapsed() < Duration::from_secs(secs) {
        let ts = T0 + started.elapsed().as_micros() as i64;
        let mut chunk: Vec<Vec<u8>> = (0..per_ms)
            .map(|_| encoded((rng.next() % a.keys) as i64, ts, 1.0))
            .collect();
        let probe_now = Instant::now() >= next_probe;
        if probe_now {
            probe += 1;
            // Probe keys are negative: never among the background keys.
            chunk.push(encoded(-probe, ts, 1.0));
        }
        writer.append(&chunk)?;
        events += chunk.len() as u64;
        if probe_now {
            pending.push((entity_key(&[Value::Int64(-probe)]), Instant::now()));
            next_probe += Duration::from_millis(10);
        }
        // Poll the store for the probes not yet visible, until the next 1 ms tick.
        let tick = Instant::now() + Duration::from_millis(1);
        while !pending.is_empty() && Instant::now() < tick {
            let keys: Vec<Vec<u8>> = pending.iter().map(|p| p.0.clone()).collect();
            let rows = rt.block_on(store.get_many(&table, &keys))?;
            let seen = Instant::now();
            let mut i = 0;
            pending.retain(|p| {
                let visible = rows[i].is_some();
                i += 1;
                if visible {
                    latencies.push(seen.duration_since(p.1).as_secs_f64() * 1e3);
                }
                !visible
            });
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some(rest) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(Freshness {
        rate: a.rate,
        seconds,
        events,
        events_per_second: events as f64 / seconds,
        probes: latencies.len(),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    })
}
