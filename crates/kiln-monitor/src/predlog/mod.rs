//! The prediction log: every prediction (or a configured sample of requests), with the feature
//! values the model saw, its outputs and latency, written behind the request into Parquet. Labels
//! joined to predictions (`feedback`) are logged the same way.
//!
//! Write-behind: the serving path publishes an event on the bus and returns; this module's task
//! buffers rows per model version and rolls a file when a buffer holds `roll_rows` rows or its
//! oldest row is `roll_interval` old. The task never slows a request: when its queue is full,
//! the bus drops the event for it and counts the drop. On graceful shutdown
//! ([`PredictionLog::close`]) everything queued and buffered is written before the process
//! exits, so every prediction whose response was sent is on disk. A failed write keeps the rows
//! and retries on the next tick, up to a bound.

pub mod writer;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::bus::{EventBus, Subscription};
use crate::events::Event;
use writer::{FeedbackBuffer, PredictionBuffer};

/// How the prediction log writes.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Root directory of the log files.
    pub dir: PathBuf,
    /// Share of requests logged, 0 to 1 (by a hash of the request id, so a request is logged
    /// whole or not at all, and the same ids are picked on every replica).
    pub sample_rate: f64,
    /// Events waiting for the writer at most; beyond it they are dropped and counted.
    pub queue_capacity: usize,
    /// A file is written when a model version's buffer holds this many rows...
    pub roll_rows: usize,
    /// ...or its oldest row is this old.
    pub roll_interval: Duration,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            sample_rate: 1.0,
            queue_capacity: 65_536,
            roll_rows: 100_000,
            roll_interval: Duration::from_secs(60),
        }
    }
}

/// The log's counters (rows, files, failures), shared with `/metrics`.
#[derive(Debug, Default)]
pub struct LogCounters {
    pub prediction_rows: AtomicU64,
    pub feedback_rows: AtomicU64,
    pub files: AtomicU64,
    pub write_errors: AtomicU64,
    /// Requests left out by sampling.
    pub sampled_out: AtomicU64,
    /// Rows given up after writes kept failing.
    pub rows_lost: AtomicU64,
}

/// A snapshot of [`LogCounters`] plus the bus drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    pub prediction_rows: u64,
    pub feedback_rows: u64,
    pub files: u64,
    pub write_errors: u64,
    pub sampled_out: u64,
    pub rows_lost: u64,
    /// Events the writer never saw because its queue was full.
    pub dropped: u64,
}

impl LogCounters {
    fn snapshot(&self, dropped: u64) -> LogStats {
        LogStats {
            prediction_rows: self.prediction_rows.load(Ordering::Relaxed),
            feedback_rows: self.feedback_rows.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            sampled_out: self.sampled_out.load(Ordering::Relaxed),
            rows_lost: self.rows_lost.load(Ordering::Relaxed),
            dropped,
        }
    }
}

/// The name the writer's subscription has on the bus (and in `/metrics`).
pub const SUBSCRIBER: &str = "prediction_log";

fn logged(e: &Event) -> bool {
    matches!(e, Event::Prediction(_) | Event::Feedback(_))
}

/// The running writer.
pub struct PredictionLog {
    shutdown: Arc<Notify>,
    task: JoinHandle<()>,
    counters: Arc<LogCounters>,
    dropped: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for PredictionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredictionLog")
            .field("stats", &self.stats())
            .finish()
    }
}

impl PredictionLog {
    /// Subscribes to `bus` and starts writing under `config.dir`.
    pub fn start(bus: &EventBus, config: LogConfig) -> PredictionLog {
        let sub = bus.subscribe(SUBSCRIBER, config.queue_capacity, logged);
        let counters = Arc::new(LogCounters::default());
        let shutdown = Arc::new(Notify::new());
        let dropped_counter = sub.dropped_counter();
        let task = tokio::spawn(run(sub, config, counters.clone(), shutdown.clone()));
        PredictionLog {
            shutdown,
            task,
            counters,
            dropped: Arc::new(move || dropped_counter.load(Ordering::Relaxed)),
        }
    }

    pub fn counters(&self) -> Arc<LogCounters> {
        self.counters.clone()
    }

    pub fn stats(&self) -> LogStats {
        self.counters.snapshot((self.dropped)())
    }

    /// Writes everything queued and buffered, then stops. Call it after the server stopped
    /// answering, so nothing is published afterwards.
    pub async fn close(self) -> LogStats {
        self.shutdown.notify_one();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the prediction log writer failed while closing");
        }
        self.counters.snapshot((self.dropped)())
    }
}

/// Whether a request is in the sample: a stable hash of its id against the rate.
pub fn sampled(request_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    // SipHash with fixed zero keys: the same id gives the same answer in every process.
    let mut h = std::hash::DefaultHasher::new();
    request_id.hash(&mut h);
    (h.finish() as f64 / u64::MAX as f64) < rate
}

type Key = (String, u32);

struct Buffers<B> {
    kind: &'static str,
    open: HashMap<Key, (B, Instant)>,
}

trait Rows: Send + 'static {
    fn rows(&self) -> usize;
    fn first_ts(&self) -> i64;
    fn finish(&mut self) -> arrow_array::RecordBatch;
}

impl Rows for PredictionBuffer {
    fn rows(&self) -> usize {
        PredictionBuffer::rows(self)
    }
    fn first_ts(&self) -> i64 {
        self.first_ts
    }
    fn finish(&mut self) -> arrow_array::RecordBatch {
        PredictionBuffer::finish(self)
    }
}

impl Rows for FeedbackBuffer {
    fn rows(&self) -> usize {
        FeedbackBuffer::rows(self)
    }
    fn first_ts(&self) -> i64 {
        self.first_ts
    }
    fn finish(&mut self) -> arrow_array::RecordBatch {
        FeedbackBuffer::finish(self)
    }
}

/// A file to write.
struct Job {
    kind: &'static str,
    dir: PathBuf,
    first_ts: i64,
    batch: arrow_array::RecordBatch,
}

/// Failed writes kept for a retry, at most this many rows (then the oldest are given up).
const MAX_RETRY_ROWS: usize = 1_000_000;

struct Writer {
    config: LogConfig,
    counters: Arc<LogCounters>,
    failed: std::collections::VecDeque<Job>,
}

impl Writer {
    /// Writes the buffers that `due` selects.
    async fn flush<B: Rows>(
        &mut self,
        buffers: &mut Buffers<B>,
        due: impl Fn(&B, Instant) -> bool,
    ) {
        let keys: Vec<Key> = buffers
            .open
            .iter()
            .filter(|(_, (b, opened))| b.rows() > 0 && due(b, *opened))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some((mut buffer, _)) = buffers.open.remove(&key) else {
                continue;
            };
            let first_ts = buffer.first_ts();
            let dir =
                writer::partition_dir(&self.config.dir, buffers.kind, &key.0, key.1, first_ts);
            let job = Job {
                kind: buffers.kind,
                dir,
                first_ts,
                batch: buffer.finish(),
            };
            self.write(job).await;
        }
    }

    /// Writes one file off the async workers; a failure keeps the rows for [`Writer::retry`].
    async fn write(&mut self, job: Job) {
        let written = tokio::task::spawn_blocking(move || {
            match writer::write_parquet(&job.dir, job.first_ts, &job.batch) {
                Ok(path) => Ok((path, job)),
                Err(e) => Err((e, job)),
            }
        })
        .await;
        match written {
            Ok(Ok((path, job))) => {
                let rows = job.batch.num_rows() as u64;
                self.counters.files.fetch_add(1, Ordering::Relaxed);
                let counter = if job.kind == "feedback" {
                    &self.counters.feedback_rows
                } else {
                    &self.counters.prediction_rows
                };
                counter.fetch_add(rows, Ordering::Relaxed);
                tracing::debug!(path = %path.display(), rows, "log file written");
            }
            Ok(Err((e, job))) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(dir = %job.dir.display(), rows = job.batch.num_rows(), error = %e, "cannot write a log file; will retry");
                self.failed.push_back(job);
                let mut kept: usize = self.failed.iter().map(|j| j.batch.num_rows()).sum();
                while kept > MAX_RETRY_ROWS {
                    let Some(oldest) = self.failed.pop_front() else {
                        break;
                    };
                    kept -= oldest.batch.num_rows();
                    self.counters
                        .rows_lost
                        .fetch_add(oldest.batch.num_rows() as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                // The job moved into the task that panicked: its rows are gone.
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "the log writer panicked");
            }
        }
    }

    /// Tries the failed writes again, once each.
    async fn retry(&mut self) {
        for _ in 0..self.failed.len() {
            if let Some(job) = self.failed.pop_front() {
                self.write(job).await;
            }
        }
    }
}

async fn run(
    mut sub: Subscription,
    config: LogConfig,
    counters: Arc<LogCounters>,
    shutdown: Arc<Notify>,
) {
    let roll_rows = config.roll_rows.max(1);
    let roll_interval = config.roll_interval;
    let sample_rate = config.sample_rate;
    let mut writer = Writer {
        config,
        counters: counters.clone(),
        failed: Default::default(),
    };
    let mut predictions: Buffers<PredictionBuffer> = Buffers {
        kind: "predictions",
        open: HashMap::new(),
    };
    let mut feedback: Buffers<FeedbackBuffer> = Buffers {
        kind: "feedback",
        open: HashMap::new(),
    };
    let mut tick = tokio::time::interval(
        roll_interval.clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let accept = |event: Event,
                  predictions: &mut Buffers<PredictionBuffer>,
                  feedback: &mut Buffers<FeedbackBuffer>|
     -> bool {
        match event {
            Event::Prediction(p) => {
                if !sampled(&p.request_id, sample_rate) {
                    counters.sampled_out.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let (buffer, _) = predictions
                    .open
                    .entry((p.model.clone(), p.version))
                    .or_insert_with(|| {
                        (
                            PredictionBuffer::new(p.inputs.clone(), p.n_outputs),
                            Instant::now(),
                        )
                    });
                buffer.push(&p);
                buffer.rows() >= roll_rows
            }
            Event::Feedback(f) => {
                let (buffer, _) = feedback
                    .open
                    .entry((f.model.clone(), f.version))
                    .or_insert_with(|| (FeedbackBuffer::default(), Instant::now()));
                buffer.push(&f);
                buffer.rows() >= roll_rows
            }
            _ => false,
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.notified() => break,
            event = sub.rx.recv() => {
                let Some(event) = event else { break };
                if accept(event, &mut predictions, &mut feedback) {
                    writer.flush(&mut predictions, |b, _| b.rows() >= roll_rows).await;
                    writer.flush(&mut feedback, |b, _| b.rows() >= roll_rows).await;
                }
            }
            _ = tick.tick() => {
                writer.flush(&mut predictions, |_, opened| opened.elapsed() >= roll_interval).await;
                writer.flush(&mut feedback, |_, opened| opened.elapsed() >= roll_interval).await;
                writer.retry().await;
            }
        }
    }
    // Closing: what is queued, then every buffer.
    while let Ok(event) = sub.rx.try_recv() {
        if accept(event, &mut predictions, &mut feedback) {
            writer
                .flush(&mut predictions, |b, _| b.rows() >= roll_rows)
                .await;
            writer
                .flush(&mut feedback, |b, _| b.rows() >= roll_rows)
                .await;
        }
    }
    writer.flush(&mut predictions, |_, _| true).await;
    writer.flush(&mut feedback, |_, _| true).await;
    writer.retry().await;
    let lost: usize = writer.failed.iter().map(|j| j.batch.num_rows()).sum();
    if lost > 0 {
        writer
            .counters
            .rows_lost
            .fetch_add(lost as u64, Ordering::Relaxed);
        tracing::error!(rows = lost, "log rows could not be written before shutdown");
    }
}
