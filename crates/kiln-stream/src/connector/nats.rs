//! NATS JetStream: a durable pull consumer, acknowledged cumulatively (`AckPolicy::All`) once
//! a batch is in the log.
//!
//! On start the consumer must deliver from just after the log's last position. A consumer
//! left with unacknowledged messages (a crash between append and ack) would redeliver them
//! only after its ack wait, out of order with newer ones; so unless its acknowledged floor is
//! exactly the log's position and nothing is pending, it is deleted and created again at the
//! right sequence. The log, not the consumer, is the record of what was read.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Batch, Connector, NatsSource, broker_error};
use crate::StreamError;

/// How far a stream was read, as written in the log.
#[derive(Serialize, Deserialize)]
struct Position {
    nats_stream: String,
    /// The last stream sequence logged.
    seq: u64,
}

pub(super) async fn session(c: &Connector, cfg: &NatsSource) -> Result<(), StreamError> {
    let name = format!("NATS {} (stream {:?})", cfg.url, cfg.stream);
    let fail = |doing: &str, e: &dyn std::fmt::Display| broker_error(&name, doing, e);
    let client = async_nats::connect(&cfg.url)
        .await
        .map_err(|e| fail("connecting", &e))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&cfg.stream)
        .await
        .map_err(|e| fail("opening the stream (create it with `nats stream add`)", &e))?;
    let last = c
        .resume::<Position>()
        .filter(|p| p.nats_stream == cfg.stream)
        .map_or(0, |p| p.seq);
    let durable = cfg
        .durable
        .clone()
        .unwrap_or_else(|| format!("kiln-{}", c.schema.source));
    let want = consumer::pull::Config {
        durable_name: Some(durable.clone()),
        deliver_policy: if last == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            }
        },
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(60),
        filter_subject: cfg.subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let reusable = match stream.consumer_info(&durable).await {
        Ok(info) => {
            let fits = info.ack_floor.stream_sequence == last
                && info.num_ack_pending == 0
                && info.config.ack_policy == consumer::AckPolicy::All
                && info.config.filter_subject == want.filter_subject;
            if !fits {
                stream.delete_consumer(&durable).await.map_err(|e| {
                    fail(
                        "deleting the durable consumer to restart it at the log's position",
                        &e,
                    )
                })?;
            }
            fits
        }
        Err(_) => false,
    };
    let consumer: consumer::PullConsumer = if reusable {
        stream
            .get_consumer(&durable)
            .await
            .map_err(|e| fail("opening the durable consumer", &e))?
    } else {
        stream
            .create_consumer(want)
            .await
            .map_err(|e| fail("creating the durable consumer", &e))?
    };
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(c.opts.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| fail("pulling messages", &e))?;
    let mut last = last;
    loop {
        if c.stopped() {
            return Ok(());
        }
        let first = match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
            Err(_) => {
                if c.opts.until_caught_up {
                    let mut consumer = consumer.clone();
                    let info = consumer
                        .info()
                        .await
                        .map_err(|e| fail("asking the consumer's progress", &e))?;
                    if info.num_pending == 0 {
                        return Ok(());
                    }
                }
                continue;
            }
            Ok(None) => return Err(fail("pulling messages", &"the server ended the pull")),
            // A heartbeat missed while this process or the server was busy: the client asks
            // again, and the durable consumer's position is unchanged, so nothing is lost.
            Ok(Some(Err(e))) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                tracing::warn!(stream = %cfg.stream, "missed a JetStream heartbeat; pulling again");
                continue;
            }
            Ok(Some(m)) => m.map_err(|e| fail("pulling messages", &e))?,
        };
        let mut got = vec![first];
        while got.len() < c.opts.batch {
            // A zero timeout polls once: take what has already arrived, never wait.
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(Err(e))) if e.kind() == MessagesErrorKind::MissingHeartbeat => break,
                Ok(Some(m)) => got.push(m.map_err(|e| fail("pulling messages", &e))?),
                _ => break,
            }
        }
        let mut batch = Batch::default();
        let mut pending = 1;
        for m in &got {
            let info = m
                .info()
                .map_err(|e| fail("reading a message's sequence", &e))?;
            pending = info.pending;
            if info.stream_sequence <= last {
                c.stats
                    .duplicates
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            last = info.stream_sequence;
            batch.message(
                &c.schema,
                &m.payload,
                &format!("{} {}#{}", cfg.stream, m.subject, info.stream_sequence),
            );
        }
        c.append(
            batch,
            &Position {
                nats_stream: cfg.stream.clone(),
                seq: last,
            },
        )
        .await?;
        // Acknowledges everything up to it (AckPolicy::All).
        if let Some(m) = got.last() {
            m.ack().await.map_err(|e| fail("acknowledging", &e))?;
        }
        if c.opts.until_caught_up && pending == 0 {
            return Ok(());
        }
    }
}
