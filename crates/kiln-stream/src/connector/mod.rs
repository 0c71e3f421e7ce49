//! Broker connectors: Kafka and NATS JetStream sources feed a source's embedded log, and the
//! stream reads that log as it reads pushed events.
//!
//! Why through the log: the log fixes one order of events, so a replay after a crash applies
//! them in the same order and decides lateness the same way — with several Kafka partitions
//! the arrival order is not reproducible otherwise. Exactly-once into the log comes from
//! writing, in the same durable append as a batch of messages, a position frame saying how far
//! the broker was read; only then is the broker told (Kafka offsets committed, JetStream
//! acknowledged). After a crash the connector resumes from the log's last position frame and
//! skips anything the broker redelivers from before it.
//!
//! A message is a JSON object (one event) or an array of objects. Anything that is not an
//! event of the source — not JSON, a missing join key, a wrong type — is logged as a
//! rejected frame with its reason and origin, which the stream writes to the dead-letter file
//! (`reason: "malformed: ..."`) and counts; it never stops the connector.

// Built without either connector, the shared parts have no user.
#![cfg_attr(not(any(feature = "kafka", feature = "nats")), allow(dead_code))]

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::StreamError;
use crate::appender::Appender;
use crate::event::{EventSchema, encode_row};
use crate::log::FrameKind;

/// Where a source's events come from besides the push API (`[stream.sources.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerSource {
    Kafka(KafkaSource),
    Nats(NatsSource),
}

/// A Kafka topic read by a consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    /// `host:port[,host:port...]`
    pub brokers: String,
    pub topic: String,
    /// The consumer group (default `kiln-{source}`); its committed offsets show Kiln's
    /// progress to Kafka's tools.
    #[serde(default)]
    pub group: Option<String>,
    /// Further librdkafka settings (e.g. `security.protocol`), passed as given.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// A JetStream stream read by a durable pull consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSource {
    /// `nats://host:port`
    pub url: String,
    /// The JetStream stream (it must exist).
    pub stream: String,
    /// Only messages on these subjects (a filter such as `transactions.>`); default all.
    #[serde(default)]
    pub subject: Option<String>,
    /// The durable consumer's name (default `kiln-{source}`).
    #[serde(default)]
    pub durable: Option<String>,
}

impl BrokerSource {
    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            BrokerSource::Kafka(k) => format!("Kafka topic {:?} at {}", k.topic, k.brokers),
            BrokerSource::Nats(n) => format!("JetStream stream {:?} at {}", n.stream, n.url),
        }
    }
}

/// What a connector has done since it started (for progress and /metrics).
#[derive(Debug, Default)]
pub struct ConnectorStats {
    /// Broker messages read (each may hold several events).
    pub messages: AtomicU64,
    pub events: AtomicU64,
    /// Messages or events that were not events of the source (dead letters).
    pub rejected: AtomicU64,
    /// Messages redelivered from before the log's last position, skipped.
    pub duplicates: AtomicU64,
}

/// How a connector runs.
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// Messages per append (at most).
    pub batch: usize,
    /// Return once everything the broker held when asked has been logged (a catch-up run),
    /// and return errors instead of retrying.
    pub until_caught_up: bool,
}

/// What a connector works with.
pub struct Connector {
    pub schema: EventSchema,
    pub log: Arc<Appender>,
    pub stats: Arc<ConnectorStats>,
    pub stop: Arc<AtomicBool>,
    pub opts: ConnectorOptions,
}

/// The largest part of a rejected message kept in its dead letter.
const KEEP_REJECTED: usize = 64 << 10;

impl Connector {
    /// Reads `source` into the log until `stop` is set (or caught up). Lost connections and
    /// broker errors are retried with backoff (up to 30 s apart) and logged.
    pub async fn run(&self, source: &BrokerSource) -> Result<(), StreamError> {
        const FIRST_BACKOFF: Duration = Duration::from_millis(100);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = std::time::Instant::now();
            let result = match source {
                #[cfg(feature = "kafka")]
                BrokerSource::Kafka(k) => kafka::session(self, k).await,
                #[cfg(feature = "nats")]
                BrokerSource::Nats(n) => nats::session(self, n).await,
                #[allow(unreachable_patterns)]
                other => Err(StreamError::Setup(format!(
                    "source {:?} reads {}, but this kiln was built without that connector (cargo features `kafka`, `nats`)",
                    self.schema.source,
                    other.describe()
                ))),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if self.opts.until_caught_up || matches!(e, StreamError::Setup(_)) => {
                    return Err(e);
                }
                Err(e) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    // A session that ran a while failed afresh: start the backoff over.
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = FIRST_BACKOFF;
                    }
                    tracing::warn!(source = %self.schema.source, error = %e, "connector failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The last position frame in the log, decoded as a connector's position type.
    fn resume<P: serde::de::DeserializeOwned>(&self) -> Option<P> {
        serde_json::from_slice(&self.log.last_position()?).ok()
    }

    /// Appends a batch's frames and the position they reach, durably, all or none (nothing
    /// when every message was a redelivery: the position has not moved).
    async fn append(&self, batch: Batch, position: &impl Serialize) -> Result<(), StreamError> {
        if batch.messages == 0 {
            return Ok(());
        }
        let mut frames = batch.frames;
        frames.push((
            FrameKind::Position,
            serde_json::to_vec(position).unwrap_or_default(),
        ));
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            log.append_frames(frames.iter().map(|(k, b)| (*k, b.as_slice())))
        })
        .await
        .map_err(|e| StreamError::Setup(format!("log append task failed: {e}")))??;
        self.stats
            .messages
            .fetch_add(batch.messages, Ordering::Relaxed);
        self.stats.events.fetch_add(batch.events, Ordering::Relaxed);
        self.stats
            .rejected
            .fetch_add(batch.rejected, Ordering::Relaxed);
        Ok(())
    }
}

/// The frames of a batch of broker messages.
#[derive(Default)]
pub(crate) struct Batch {
    frames: Vec<(FrameKind, Vec<u8>)>,
    messages: u64,
    events: u64,
    rejected: u64,
}

impl Batch {
    /// Adds one message: its events, or a rejected frame for each part that is not one.
    /// `origin` says where it came from (`transactions[2]@118`).
    pub(crate) fn message(&mut self, schema: &EventSchema, payload: &[u8], origin: &str) {
        self.messages += 1;
        let rows: Vec<Result<crate::event::Row, String>> =
            match serde_json::from_slice::<serde_json::Value>(payload) {
                Err(e) if payload.is_empty() => vec![Err(format!(
                    "an empty message ({e}); an event is a JSON object of column values"
                ))],
                Err(e) => vec![Err(format!("not JSON: {e}"))],
                Ok(serde_json::Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        schema
                            .row_from_json(e, &format!("events[{i}]"))
                            .map_err(|e| e.to_string())
                    })
                    .collect(),
                Ok(v) => vec![schema.row_from_json(&v, "event").map_err(|e| e.to_string())],
            };
        for row in rows {
            match row {
                Ok(row) => {
                    let mut b = Vec::with_capacity(16 * row.len());
                    encode_row(&row, &mut b);
                    self.frames.push((FrameKind::Event, b));
                    self.events += 1;
                }
                Err(reason) => {
                    let kept = &payload[..payload.len().min(KEEP_REJECTED)];
                    let record = serde_json::json!({
                        "origin": origin,
                        "reason": reason,
                        "message": String::from_utf8_lossy(kept),
                        "truncated": kept.len() < payload.len(),
                    });
                    self.frames.push((
                        FrameKind::Rejected,
                        serde_json::to_vec(&record).unwrap_or_default(),
                    ));
                    self.rejected += 1;
                }
            }
        }
    }
}

/// A broker's error, saying what was being done.
fn broker_error(broker: &str, doing: &str, e: impl std::fmt::Display) -> StreamError {
    StreamError::Broker {
        broker: broker.to_string(),
        message: format!("{doing}: {e}"),
    }
}
