//! One source's stream: read the log from the checkpoint, check lateness, apply each event to
//! every aggregated view of the source, write changed rows to the online store after every
//! batch, and at each checkpoint write the accepted events to the offline store and save the
//! state.
//!
//! The order at a checkpoint is offline parts, dead letters, then the checkpoint file: a crash
//! anywhere before the rename leaves the previous checkpoint in force, and opening the stream
//! again removes the parts and dead letters written after it before replaying.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;
use kiln_core::spec::ViewVersion;
use kiln_core::time::{Micros, format_duration, format_timestamp};
use kiln_store::online::{OnlineStore, WriteSummary};

use crate::StreamError;
use crate::checkpoint::{Checkpoint, SavedKey, SavedView};
use crate::event::{EventSchema, Row, decode_row_into};
use crate::log::{FrameKind, LogBatch, LogReader};
use crate::operator::ViewOperator;
use crate::sink::{DeadLetters, OfflineSink};
use crate::window::Plan;

/// How a stream runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// How far behind the stream's time (the greatest event time seen) an event may be and
    /// still be applied; later ones go to the dead-letter file.
    pub allowed_lateness: Micros,
    /// Save a checkpoint (and write the offline store) this often...
    pub checkpoint_interval: Duration,
    /// ...or when this many events are waiting for the offline store.
    pub checkpoint_events: usize,
    /// Events read per batch.
    pub batch: usize,
    /// How long to wait for new events when the log has none.
    pub idle_poll: Duration,
    /// Log segments a checkpoint has passed are deleted once last written this long ago;
    /// `None` keeps the whole log.
    pub retention: Option<Duration>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            allowed_lateness: 5 * 60 * 1_000_000,
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_events: 1_000_000,
            batch: 4096,
            idle_poll: Duration::from_millis(2),
            retention: None,
        }
    }
}

/// Where a source's stream keeps its files (`.kiln/stream/{source}/` by default).
pub fn source_dir(stream_dir: &Path, source: &str) -> PathBuf {
    stream_dir.join(source)
}

/// Online rows keyed by entity key, as the store writes them.
pub type Rows = Vec<(Vec<u8>, kiln_store::online::StoredRow)>;

/// What one batch did.
#[derive(Debug, Default)]
pub struct Step {
    /// Events read, and the messages a connector rejected (each of those is a dead letter).
    pub events: usize,
    pub late: usize,
    /// Events that no longer decode as rows of the source (dead letters too).
    pub undecodable: usize,
    /// Broker messages that were not events of the source (dead letters).
    pub malformed: usize,
    /// Per view (index into the operators), its changed rows.
    pub rows: Vec<(usize, Rows)>,
}

/// The stream of one source.
pub struct SourceStream {
    pub schema: EventSchema,
    operators: Vec<ViewOperator>,
    reader: LogReader,
    offline: OfflineSink,
    dead: DeadLetters,
    stream_time: Micros,
    opts: StreamOptions,
    checkpoint_path: PathBuf,
    last_checkpoint: Instant,
    /// Events applied since this process started.
    pub applied: u64,
    /// Whether the last read filled its batch (the stream is behind: read more at once).
    behind: bool,
    /// The last broker position frame read (saved in checkpoints, shown by status).
    broker_position: Vec<u8>,
    /// Reused per batch and per event.
    batch: LogBatch,
    row: Row,
    /// Rows of views whose state was rebuilt on opening, written by the first step.
    pending: Vec<(usize, Rows)>,
    dir: PathBuf,
}

impl SourceStream {
    /// Opens the stream of the source that `views` (aggregated views of one source) read,
    /// whose Parquet data is the directory `source_path` with columns `arrow`; `dir` is its
    /// stream directory.
    pub fn open(
        dir: &Path,
        source_path: &Path,
        views: &[&ViewVersion],
        arrow: &SchemaRef,
        opts: StreamOptions,
    ) -> Result<SourceStream, StreamError> {
        let schema = EventSchema::new(views, arrow)?;
        let mut operators = views
            .iter()
            .map(|v| {
                Plan::new(v, &schema).map(|mut plan| {
                    plan.lateness = opts.allowed_lateness;
                    ViewOperator::new(plan)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint_path = dir.join("checkpoint");
        let loaded = Checkpoint::load(&checkpoint_path)?;
        let log_start = crate::log::start(dir)?;
        if loaded.is_none() && log_start > 0 {
            return Err(StreamError::Setup(format!(
                "the event log in {} starts at offset {log_start} (retention deleted the segments before it) and there is no checkpoint to resume from: the stream cannot be rebuilt from the log; restore the checkpoint file",
                dir.display()
            )));
        }
        let mut checkpoint = loaded.unwrap_or_default();
        let mut pending = Vec::new();
        let same_views = checkpoint.views.len() == operators.len()
            && checkpoint
                .views
                .iter()
                .zip(&operators)
                .all(|(s, o)| s.name == o.view().name && s.version == o.view().version);
        if same_views {
            for (saved, op) in checkpoint.views.drain(..).zip(operators.iter_mut()) {
                for k in saved.keys {
                    op.restore(k.key, k.as_of, k.seq, k.events);
                }
                op.advance(checkpoint.stream_time);
            }
        } else if checkpoint.offset > 0 {
            pending = rebuild(dir, &schema, &mut operators, log_start, &checkpoint, &opts)?;
        }
        Ok(SourceStream {
            reader: LogReader::open(dir, checkpoint.offset)?,
            offline: OfflineSink::open(source_path, checkpoint.offset)?,
            dead: DeadLetters::open(
                &dir.join("dead-letters.jsonl"),
                checkpoint.dead_letter_bytes,
            )?,
            // Before any event, nothing is late.
            stream_time: if checkpoint.offset == 0 {
                Micros::MIN
            } else {
                checkpoint.stream_time
            },
            schema,
            operators,
            opts,
            checkpoint_path,
            last_checkpoint: Instant::now(),
            applied: 0,
            behind: false,
            broker_position: std::mem::take(&mut checkpoint.broker_position),
            batch: LogBatch::default(),
            row: Row::new(),
            pending,
            dir: dir.to_path_buf(),
        })
    }

    pub fn operators(&self) -> &[ViewOperator] {
        &self.operators
    }

    /// The current values of `key` in the `view`-th view, as of the key's time.
    pub fn current(&mut self, view: usize, key: &[u8]) -> Option<(Micros, Vec<kiln_core::Value>)> {
        self.operators.get_mut(view)?.current(key)
    }

    /// The offset of the next event to read.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// The greatest event time applied.
    pub fn stream_time(&self) -> Micros {
        self.stream_time
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead
    }

    /// Reads and applies one batch; returns the online rows that changed.
    pub fn step(&mut self) -> Result<Step, StreamError> {
        // Caught up, batches stay small for freshness; behind, larger ones catch up faster.
        let max = if self.behind {
            self.opts.batch.saturating_mul(16)
        } else {
            self.opts.batch
        };
        let mut batch = std::mem::take(&mut self.batch);
        self.reader.read_batch(max, &mut batch)?;
        self.behind = batch.len() == max;
        let mut step = Step {
            rows: std::mem::take(&mut self.pending),
            ..Step::default()
        };
        let mut row = std::mem::take(&mut self.row);
        for l in batch.iter() {
            match l.kind {
                FrameKind::Event => step.events += 1,
                // Where a connector had read its broker to: nothing to apply.
                FrameKind::Position => {
                    self.broker_position = l.payload.to_vec();
                    continue;
                }
                FrameKind::Time => {
                    self.stream_time = self.stream_time.max(clock_time(l.payload));
                    continue;
                }
                FrameKind::Rejected => {
                    step.events += 1;
                    step.malformed += 1;
                    self.dead
                        .write_malformed(&self.schema.source, l.offset, l.payload)?;
                    continue;
                }
            }
            // Logged events were checked on arrival; one that no longer decodes (the source's
            // columns changed since) is set aside, not allowed to stop the stream.
            if let Err(message) = decode_row_into(l.payload, self.schema.columns.len(), &mut row) {
                self.dead
                    .write_undecodable(&self.schema.source, l.offset, &message)?;
                step.undecodable += 1;
                continue;
            }
            let ts = self.schema.event_ts(&row);
            if is_late(self.stream_time, ts, &self.opts) {
                let reason = format!(
                    "late: event time {} is more than the allowed lateness ({}) before the stream's time {}",
                    format_timestamp(ts),
                    format_duration((self.opts.allowed_lateness / 1_000_000) as u64),
                    format_timestamp(self.stream_time)
                );
                self.dead.write(&self.schema, &row, l.offset, &reason)?;
                step.late += 1;
                continue;
            }
            self.stream_time = self.stream_time.max(ts);
            for op in &mut self.operators {
                op.apply(&self.schema, &row, l.offset);
            }
            self.offline.push(row.clone(), l.offset);
            self.applied += 1;
        }
        self.batch = batch;
        self.row = row;
        for (i, op) in self.operators.iter_mut().enumerate() {
            op.advance(self.stream_time);
            let rows = op.drain();
            if !rows.is_empty() {
                match step.rows.iter_mut().find(|(v, _)| *v == i) {
                    Some((_, pending)) => pending.extend(rows),
                    None => step.rows.push((i, rows)),
                }
            }
        }
        Ok(step)
    }

    pub fn checkpoint_due(&self) -> bool {
        self.offline.buffered() >= self.opts.checkpoint_events
            || (self.offline.buffered() > 0
                && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval)
    }

    /// Writes the buffered events to the offline store and saves the state.
    pub fn checkpoint(&mut self) -> Result<(), StreamError> {
        let offset = self.reader.position();
        self.offline.flush(&self.schema, offset)?;
        let dead_letter_bytes = self.dead.sync()?;
        let views = self
            .operators
            .iter()
            .map(|op| SavedView {
                name: op.view().name.clone(),
                version: op.view().version,
                keys: op
                    .states()
                    .filter(|(_, k)| !k.is_empty() || k.as_of != Micros::MIN)
                    .map(|(key, k)| SavedKey {
                        key: key.to_vec(),
                        as_of: k.as_of,
                        seq: k.seq,
                        events: k.events(op.plan()).collect(),
                    })
                    .collect(),
            })
            .collect();
        Checkpoint {
            offset,
            stream_time: self.stream_time,
            dead_letter_bytes,
            views,
            broker_position: self.broker_position.clone(),
        }
        .save(&self.checkpoint_path)?;
        self.last_checkpoint = Instant::now();
        if let Some(keep) = self.opts.retention {
            let older_than = std::time::SystemTime::now()
                .checked_sub(keep)
                .unwrap_or(std::time::UNIX_EPOCH);
            for path in crate::log::trim(&self.dir, offset, older_than)? {
                tracing::info!(source = %self.schema.source, segment = %path.display(), "deleted a log segment past its retention");
            }
        }
        Ok(())
    }
}

/// The time a [`FrameKind::Time`] frame holds (the earliest time if it is malformed).
fn clock_time(payload: &[u8]) -> Micros {
    payload
        .try_into()
        .map_or(Micros::MIN, |b: [u8; 8]| i64::from_le_bytes(b))
}

/// Whether an event at `ts` comes too late for a stream whose time is `stream_time`.
fn is_late(stream_time: Micros, ts: Micros, opts: &StreamOptions) -> bool {
    ts < stream_time.saturating_sub(opts.allowed_lateness)
}

/// Builds the state of views that changed since the checkpoint by applying the logged events
/// it covers again (from the log's start), as the stream did: the offline store and the dead
/// letters already hold those events, so only the views' state is built. Returns every changed
/// key's latest row per view, to be written by the first step.
fn rebuild(
    dir: &Path,
    schema: &EventSchema,
    operators: &mut [ViewOperator],
    log_start: u64,
    checkpoint: &Checkpoint,
    opts: &StreamOptions,
) -> Result<Vec<(usize, Rows)>, StreamError> {
    let names: Vec<String> = operators.iter().map(|o| o.view().name.clone()).collect();
    if log_start > 0 {
        tracing::warn!(
            source = %schema.source,
            views = ?names,
            "the source's aggregated views changed since the last checkpoint and retention deleted the log before offset {log_start}: their windows miss the events before it until those would have left them"
        );
    } else {
        tracing::info!(
            source = %schema.source,
            views = ?names,
            "the source's aggregated views changed since the last checkpoint: building their state from the log"
        );
    }
    let mut reader = LogReader::open(dir, log_start)?;
    let mut batch = LogBatch::default();
    let mut row = Row::new();
    let mut stream_time = Micros::MIN;
    let mut latest: Vec<std::collections::HashMap<Vec<u8>, kiln_store::online::StoredRow>> =
        operators.iter().map(|_| Default::default()).collect();
    'read: loop {
        reader.read_batch(opts.batch, &mut batch)?;
        if batch.is_empty() {
            break;
        }
        for l in batch.iter() {
            if l.offset >= checkpoint.offset {
                break 'read;
            }
            if l.kind == FrameKind::Time {
                stream_time = stream_time.max(clock_time(l.payload));
            }
            if l.kind != FrameKind::Event
                || decode_row_into(l.payload, schema.columns.len(), &mut row).is_err()
            {
                continue;
            }
            let ts = schema.event_ts(&row);
            if is_late(stream_time, ts, opts) {
                continue;
            }
            stream_time = stream_time.max(ts);
            for op in operators.iter_mut() {
                op.apply(schema, &row, l.offset);
            }
        }
        for (op, latest) in operators.iter_mut().zip(&mut latest) {
            op.advance(stream_time);
            latest.extend(op.drain());
        }
    }
    for (op, latest) in operators.iter_mut().zip(&mut latest) {
        op.advance(checkpoint.stream_time);
        latest.extend(op.drain());
    }
    Ok(latest
        .into_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(i, rows)| (i, rows.into_iter().collect()))
        .collect())
}

/// What [`run`] did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunSummary {
    pub source: String,
    pub events: u64,
    pub late: u64,
    pub undecodable: u64,
    pub malformed: u64,
    pub rows_written: u64,
    pub position: u64,
    pub stream_time: Option<String>,
    pub dead_letters: String,
}

/// How long a long-running stream waits before writing again to an unavailable online store:
/// doubling from the first to the last.
const STORE_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Writes a step's rows. A long-running stream outlasts an unavailable online store (a Redis
/// restarting, a breaker open): it retries the same rows, which are idempotent, with backoff
/// until they are written or it is stopped; no checkpoint is taken past rows not written. A
/// stream run to idleness (`kiln stream run --until-idle`) fails at once with the store's error.
fn write_rows(
    rt: &tokio::runtime::Handle,
    store: &Arc<dyn OnlineStore>,
    table: &kiln_store::online::ViewTable,
    rows: Vec<(Vec<u8>, kiln_store::online::StoredRow)>,
    stop: &AtomicBool,
    until_idle: bool,
) -> Result<(), StreamError> {
    if until_idle {
        let _: WriteSummary = rt.block_on(store.write_batch(table, rows))?;
        return Ok(());
    }
    let mut wait = STORE_RETRY.0;
    loop {
        match rt.block_on(store.write_batch(table, rows.clone())) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() && !stop.load(Ordering::Relaxed) => {
                tracing::warn!(view = %table.name, error = %e, retry_in = ?wait, "online store write failed; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(STORE_RETRY.1);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs a stream on the current thread until `stop` is set (or, with `until_idle`, until the
/// log has nothing more), writing rows through `rt`; checkpoints at the end.
pub fn run(
    stream: &mut SourceStream,
    rt: &tokio::runtime::Handle,
    store: &Arc<dyn OnlineStore>,
    stop: &AtomicBool,
    until_idle: bool,
    mut progress: impl FnMut(&SourceStream, &Step),
) -> Result<RunSummary, StreamError> {
    let mut summary = RunSummary {
        source: stream.schema.source.clone(),
        ..RunSummary::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let mut step = stream.step()?;
        summary.events += step.events as u64;
        summary.late += step.late as u64;
        summary.undecodable += step.undecodable as u64;
        summary.malformed += step.malformed as u64;
        for (i, rows) in std::mem::take(&mut step.rows) {
            let table = stream.operators[i].table();
            summary.rows_written += rows.len() as u64;
            write_rows(rt, store, table, rows, stop, until_idle)?;
        }
        progress(stream, &step);
        if stream.checkpoint_due() {
            stream.checkpoint()?;
        }
        if step.events == 0 {
            if until_idle {
                break;
            }
            std::thread::sleep(stream.opts.idle_poll);
        }
    }
    stream.checkpoint()?;
    summary.position = stream.position();
    summary.stream_time =
        (stream.stream_time != Micros::MIN).then(|| format_timestamp(stream.stream_time));
    summary.dead_letters = stream.dead.path().display().to_string();
    Ok(summary)
}
