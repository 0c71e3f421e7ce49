//! `[stream]`: the embedded event log, the streaming aggregation it feeds, and whether
//! `kiln serve` runs that stream itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_core::time::parse_duration;
use kiln_stream::connector::BrokerSource;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Event logs, checkpoints and dead letters, one directory per source, relative to the
    /// project.
    #[serde(default = "default_dir")]
    pub dir: String,
    /// Events this far behind the stream's time are still applied; later ones are dead letters.
    #[serde(default = "default_lateness")]
    pub allowed_lateness: String,
    /// How often state is checkpointed and events are written to the offline store.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: String,
    /// ...or when this many events are waiting for the offline store.
    #[serde(default = "default_checkpoint_events")]
    pub checkpoint_events: usize,
    /// Events read and applied per batch (rows are written to the online store per batch).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The event log is cut into segment files of about this many bytes...
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// ...and segments a checkpoint has passed are deleted once last written this long ago
    /// (`"7d"`); unset, the log is kept whole. Changing a view rebuilds its state from the log,
    /// so keep at least its longest window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// When no event has come for this long (`"1s"`), the process holding the log logs the
    /// clock's time, and the stream's time moves on to it, so an idle source's windows still
    /// empty. Unset, the stream's time moves only with events. Suits sources whose events
    /// arrive as they happen: after a tick, events older than the clock less
    /// `allowed_lateness` are late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_tick: Option<String>,
    /// `kiln serve` runs the stream of every streamed source in-process (no separate
    /// `kiln stream run`).
    #[serde(default)]
    pub embedded: bool,
    /// Sources read from a broker as well as the push API, by source name:
    /// `[stream.sources.transactions.kafka]` or `[stream.sources.transactions.nats]`.
    #[serde(default)]
    pub sources: BTreeMap<String, BrokerSource>,
}

fn default_dir() -> String {
    ".kiln/stream".into()
}
fn default_lateness() -> String {
    "5m".into()
}
fn default_checkpoint_interval() -> String {
    "10s".into()
}
fn default_checkpoint_events() -> usize {
    1_000_000
}
fn default_batch() -> usize {
    4096
}
fn default_segment_bytes() -> u64 {
    kiln_stream::log::DEFAULT_SEGMENT_BYTES
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            dir: default_dir(),
            allowed_lateness: default_lateness(),
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_events: default_checkpoint_events(),
            batch: default_batch(),
            segment_bytes: default_segment_bytes(),
            retention: None,
            idle_tick: None,
            embedded: false,
            sources: BTreeMap::new(),
        }
    }
}

impl StreamConfig {
    pub fn validate(&self, errors: &mut Vec<String>) {
        for (key, value) in [
            ("allowed_lateness", self.allowed_lateness.as_str()),
            ("checkpoint_interval", &self.checkpoint_interval),
            ("retention", self.retention.as_deref().unwrap_or("0s")),
            ("idle_tick", self.idle_tick.as_deref().unwrap_or("1s")),
        ] {
            if let Err(e) = parse_duration(value) {
                errors.push(format!("stream.{key}: {e}"));
            }
        }
        if self
            .idle_tick
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            == Some(0)
        {
            errors.push("stream.idle_tick: must be at least 1s".into());
        }
        for (key, value) in [
            ("batch", self.batch),
            ("checkpoint_events", self.checkpoint_events),
            (
                "segment_bytes",
                usize::try_from(self.segment_bytes).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                errors.push(format!("stream.{key} must be at least 1"));
            }
        }
        for (name, source) in &self.sources {
            let required: &[(&str, &str)] = match source {
                BrokerSource::Kafka(k) => {
                    &[("kafka.brokers", &k.brokers), ("kafka.topic", &k.topic)]
                }
                BrokerSource::Nats(n) => &[("nats.url", &n.url), ("nats.stream", &n.stream)],
            };
            for (key, value) in required {
                if value.trim().is_empty() {
                    errors.push(format!("stream.sources.{name}.{key} must not be empty"));
                }
            }
        }
    }

    pub fn dir(&self, project: &Path) -> PathBuf {
        project.join(&self.dir)
    }

    /// How the process holding a source's log writes it.
    pub fn log_options(&self) -> kiln_stream::log::LogOptions {
        kiln_stream::log::LogOptions {
            segment_bytes: self.segment_bytes,
            tick_when_idle: self
                .idle_tick
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .map(Duration::from_secs),
        }
    }

    /// The options of a stream (the configuration was validated when loaded).
    pub fn options(&self) -> kiln_stream::pipeline::StreamOptions {
        let secs = |s: &str| parse_duration(s).unwrap_or(0);
        kiln_stream::pipeline::StreamOptions {
            allowed_lateness: i64::try_from(secs(&self.allowed_lateness))
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
            checkpoint_interval: Duration::from_secs(secs(&self.checkpoint_interval)),
            batch: self.batch,
            checkpoint_events: self.checkpoint_events,
            retention: self
                .retention
                .as_deref()
                .map(|r| Duration::from_secs(secs(r))),
            ..Default::default()
        }
    }
}
