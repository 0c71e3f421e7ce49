//! Kafka: a consumer group subscribed to the topic, offsets committed once a batch is in the
//! log.
//!
//! The group's committed offsets are never ahead of the log (they are committed after the
//! append), so after a crash the group resumes at or before the log's position, and messages
//! at offsets the log already holds — per partition, where Kafka keeps order — are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{Batch, Connector, KafkaSource, broker_error};
use crate::StreamError;

/// How far a topic was read, as written in the log.
#[derive(Serialize, Deserialize)]
struct Position {
    kafka_topic: String,
    /// Per partition, the offset of the next message to read.
    next: BTreeMap<i32, i64>,
}

pub(super) async fn session(c: &Connector, cfg: &KafkaSource) -> Result<(), StreamError> {
    let name = format!("Kafka {} (topic {:?})", cfg.brokers, cfg.topic);
    let fail = |doing: &str, e: &dyn std::fmt::Display| broker_error(&name, doing, e);
    let group = cfg
        .group
        .clone()
        .unwrap_or_else(|| format!("kiln-{}", c.schema.source));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for (k, v) in &cfg.options {
        config.set(k, v);
    }
    let consumer: Arc<StreamConsumer> = Arc::new(
        config
            .create()
            .map_err(|e| fail("creating the consumer", &e))?,
    );
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(|e| fail("subscribing", &e))?;
    let mut next = c
        .resume::<Position>()
        .filter(|p| p.kafka_topic == cfg.topic)
        .map_or_else(BTreeMap::new, |p| p.next);
    loop {
        if c.stopped() {
            return Ok(());
        }
        let first = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Err(_) => {
                if c.opts.until_caught_up && caught_up(&consumer, &cfg.topic, &next).await? {
                    return Ok(());
                }
                continue;
            }
            Ok(m) => m.map_err(|e| fail("reading messages", &e))?.detach(),
        };
        let mut got = vec![first];
        while got.len() < c.opts.batch {
            // A zero timeout polls once: take what has already arrived, never wait.
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(m) => got.push(m.map_err(|e| fail("reading messages", &e))?.detach()),
                Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        for m in &got {
            let p = m.partition();
            if m.offset() < next.get(&p).copied().unwrap_or(0) {
                c.stats
                    .duplicates
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            next.insert(p, m.offset() + 1);
            batch.message(
                &c.schema,
                m.payload().unwrap_or_default(),
                &format!("{}[{p}]@{}", cfg.topic, m.offset()),
            );
        }
        c.append(
            batch,
            &Position {
                kafka_topic: cfg.topic.clone(),
                next: next.clone(),
            },
        )
        .await?;
        let mut offsets = TopicPartitionList::new();
        for (p, o) in &next {
            offsets
                .add_partition_offset(&cfg.topic, *p, Offset::Offset(*o))
                .map_err(|e| fail("committing offsets", &e))?;
        }
        // The log holds the truth; a commit lost here is made up by skipping on restart.
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(source = %c.schema.source, error = %e, "committing Kafka offsets failed");
        }
    }
}

/// Whether every partition of the topic has been read to its end.
async fn caught_up(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    next: &BTreeMap<i32, i64>,
) -> Result<bool, StreamError> {
    let (consumer, topic, next) = (consumer.clone(), topic.to_string(), next.clone());
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            broker_error(&format!("Kafka topic {topic:?}"), doing, e)
        };
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| fail("reading the topic's partitions", &e))?;
        for t in metadata.topics() {
            if let Some(e) = t.error() {
                return Err(fail("reading the topic's partitions", &format!("{e:?}")));
            }
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p.id(), timeout)
                    .map_err(|e| fail("reading a partition's end", &e))?;
                if next.get(&p.id()).copied().unwrap_or(low) < high {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
    .await
    .map_err(|e| StreamError::Setup(format!("Kafka progress task failed: {e}")))?
}
