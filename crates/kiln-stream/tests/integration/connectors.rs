//! Broker connectors against the real servers (NATS JetStream when `KILN_TEST_NATS_URL` is set,
//! Kafka when `KILN_TEST_KAFKA_BROKERS` is): messages reach the log once each, in the broker's
//! order, across restarts and redeliveries; messages that are not events become rejected
//! frames, then dead letters naming the field, without stopping anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln_core::Value;
use kiln_stream::appender::Appender;
use kiln_stream::connector::{BrokerSource, Connector, ConnectorOptions, ConnectorStats};
use kiln_stream::event::{EventSchema, decode_row};
use kiln_stream::log::{FrameKind, LogReader};
use kiln_stream::pipeline::{SourceStream, StreamOptions};

use crate::common;

const T0: i64 = 1_767_225_600;

/// Event `i` (its amount is `i`, so the log shows which message each event came from).
fn event(i: usize) -> serde_json::Value {
    serde_json::json!({"card": (i % 7) as i64, "ts": T0 + i as i64, "amount": i as f64, "merchant": 1})
}

/// The messages a test sends: events 1..=n, one message with two events, and three that are
/// not events (each names a different fault).
fn messages(first: usize, n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (first..first + n)
        .map(|i| serde_json::to_vec(&event(i)).expect("json"))
        .collect();
    out.insert(
        n / 2,
        serde_json::to_vec(&serde_json::json!([event(first + n), event(first + n + 1)]))
            .expect("json"),
    );
    out.insert(1, b"{not json".to_vec());
    out.insert(
        3,
        serde_json::to_vec(&serde_json::json!({"ts": T0, "amount": 1.0})).expect("json"),
    );
    out.push(
        serde_json::to_vec(&serde_json::json!({"card": 1, "ts": T0, "amount": "abc"}))
            .expect("json"),
    );
    out
}

fn schema(dir: &Path) -> EventSchema {
    let view = common::view(&dir.display().to_string());
    EventSchema::new(&[&view], &common::arrow_schema()).expect("schema")
}

/// Runs a connector until it has logged everything the broker holds.
async fn catch_up(
    source: &BrokerSource,
    schema: &EventSchema,
    log: &Arc<Appender>,
) -> ConnectorStats {
    let stats = Arc::new(ConnectorStats::default());
    let c = Connector {
        schema: schema.clone(),
        log: log.clone(),
        stats: stats.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        opts: ConnectorOptions {
            batch: 5,
            until_caught_up: true,
        },
    };
    c.run(source).await.expect("connector");
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let s = ConnectorStats::default();
    s.messages.store(n(&stats.messages), Ordering::Relaxed);
    s.events.store(n(&stats.events), Ordering::Relaxed);
    s.rejected.store(n(&stats.rejected), Ordering::Relaxed);
    s.duplicates.store(n(&stats.duplicates), Ordering::Relaxed);
    s
}

/// The amounts of the logged events in log order, and the rejected frames' reasons.
fn logged(dir: &Path, schema: &EventSchema) -> (Vec<i64>, Vec<String>) {
    let mut r = LogReader::open(dir, 0).expect("reader");
    let (mut amounts, mut rejected) = (Vec::new(), Vec::new());
    loop {
        let frames = r.read(1000).expect("read");
        if frames.is_empty() {
            return (amounts, rejected);
        }
        for f in frames {
            match f.kind {
                FrameKind::Event => {
                    let row = decode_row(&f.payload, schema.columns.len()).expect("row");
                    match row[2] {
                        Value::Float64(a) => amounts.push(a as i64),
                        ref v => panic!("amount {v:?}"),
                    }
                }
                FrameKind::Rejected => {
                    let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("json");
                    rejected.push(v["reason"].as_str().expect("reason").to_string());
                }
                FrameKind::Position | FrameKind::Time => {}
            }
        }
    }
}

/// The three faults of [`messages`], in the order they were sent.
fn assert_faults(rejected: &[String]) {
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected[0].starts_with("not JSON"), "{rejected:?}");
    assert!(
        rejected[1].starts_with("event.card: missing"),
        "{rejected:?}"
    );
    assert!(
        rejected[2].starts_with("event.amount: expected float64"),
        "{rejected:?}"
    );
}

/// Events 1..=n+1 of one [`messages`] batch, in the order they were sent.
fn sent_order(first: usize, n: usize) -> Vec<i64> {
    let mut ids: Vec<i64> = (first..first + n).map(|i| i as i64).collect();
    ids.splice(n / 2..n / 2, [(first + n) as i64, (first + n + 1) as i64]);
    ids
}

/// The stream turns rejected frames into dead letters and applies the rest.
fn run_pipeline(dir: &Path, source_dir: &Path, events: usize, malformed_sent: usize) {
    let view = common::view(&source_dir.display().to_string());
    let mut s = SourceStream::open(
        dir,
        source_dir,
        &[&view],
        &common::arrow_schema(),
        StreamOptions {
            allowed_lateness: i64::MAX / 4,
            ..StreamOptions::default()
        },
    )
    .expect("open stream");
    let (mut applied, mut malformed) = (0, 0);
    loop {
        let step = s.step().expect("step");
        if step.events == 0 {
            break;
        }
        applied += step.events - step.malformed - step.late;
        malformed += step.malformed;
    }
    s.checkpoint().expect("checkpoint");
    assert_eq!((applied, malformed), (events, malformed_sent));
    let dead = std::fs::read_to_string(dir.join("dead-letters.jsonl")).expect("dead letters");
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), malformed_sent, "{dead}");
    // (Kafka interleaves partitions, so in no fixed order.)
    assert!(
        lines.iter().any(|l| l["reason"]
            .as_str()
            .expect("reason")
            .starts_with("malformed: event.card: missing or null")
            && l["origin"].as_str().is_some()),
        "{dead}"
    );
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_messages_reach_the_log_once_each_across_restarts_and_redeliveries() {
    use async_nats::jetstream;
    use futures_util::StreamExt;

    let Ok(url) = std::env::var("KILN_TEST_NATS_URL") else {
        eprintln!("KILN_TEST_NATS_URL not set: skipping");
        return;
    };
    let client = async_nats::connect(&url).await.expect("connect");
    let js = jetstream::new(client);
    let name = unique("KILN_TEST");
    let subject = format!("{}.events", name.to_lowercase());
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    let publish = |batch: Vec<Vec<u8>>| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            for m in batch {
                js.publish(subject.clone(), m.into())
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
            }
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, source_dir) = (tmp.path().join("log"), tmp.path().join("source"));
    std::fs::create_dir_all(&source_dir).expect("mkdir");
    let schema = schema(&source_dir);
    let source = BrokerSource::Nats(kiln_stream::connector::NatsSource {
        url: url.clone(),
        stream: name.clone(),
        subject: None,
        durable: Some("kiln-test".into()),
    });

    publish(messages(1, 10)).await;
    let log = Appender::open(&dir).expect("log");
    let stats = catch_up(&source, &schema, &log).await;
    assert_eq!(stats.messages.load(Ordering::Relaxed), 14);
    assert_eq!(stats.events.load(Ordering::Relaxed), 12);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 3);

    // A crash after an append, before its acknowledgement: the consumer holds delivered,
    // unacknowledged messages (pulled here and never acked) and the log is ahead of it.
    publish(messages(101, 10)).await;
    let stream = js.get_stream(&name).await.expect("stream");
    let consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("kiln-test").await.expect("consumer");
    let mut pulled = consumer
        .fetch()
        .max_messages(6)
        .messages()
        .await
        .expect("fetch");
    let mut held = Vec::new();
    while let Some(m) = pulled.next().await {
        held.push(m.expect("message"));
    }
    assert_eq!(held.len(), 6);
    // The restarted connector neither waits for their redelivery nor logs anything twice.
    drop(log);
    let log = Appender::open(&dir).expect("reopen log");
    let stats = catch_up(&source, &schema, &log).await;
    assert_eq!(stats.messages.load(Ordering::Relaxed), 14);

    // And once more with the log ahead of the consumer's acknowledged floor (here: a consumer
    // of the same name made anew, delivering from the start): it is replaced at the log's
    // position.
    publish(messages(201, 10)).await;
    stream
        .delete_consumer("kiln-test")
        .await
        .expect("delete consumer");
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("kiln-test".into()),
            ack_policy: jetstream::consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    drop(log);
    let (amounts, rejected) = logged(&dir, &schema);
    let mut want = sent_order(1, 10);
    want.extend(sent_order(101, 10));
    want.extend(sent_order(201, 10));
    let log = Appender::open(&dir).expect("reopen log");
    catch_up(&source, &schema, &log).await;
    drop(log);
    let (all, rejected_all) = logged(&dir, &schema);
    assert_eq!(all, want, "every event once, in the order sent");
    assert_eq!(amounts.len(), 24);
    assert_eq!(rejected.len(), 6);
    assert_faults(&rejected_all[6..]);
    run_pipeline(&dir, &source_dir, 36, 9);
    js.delete_stream(&name).await.expect("delete stream");
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_messages_reach_the_log_once_each_and_a_rewound_group_is_deduplicated() {
    use std::time::Duration;

    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    let Ok(brokers) = std::env::var("KILN_TEST_KAFKA_BROKERS") else {
        eprintln!("KILN_TEST_KAFKA_BROKERS not set: skipping");
        return;
    };
    let topic = unique("kiln-test");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    // Messages go round the three partitions; the log keeps each partition's order.
    let produce = |batch: Vec<Vec<u8>>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            for (i, m) in batch.iter().enumerate() {
                producer
                    .send(
                        FutureRecord::<(), _>::to(&topic)
                            .payload(m)
                            .partition((i % 3) as i32),
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("produce");
            }
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, source_dir) = (tmp.path().join("log"), tmp.path().join("source"));
    std::fs::create_dir_all(&source_dir).expect("mkdir");
    let schema = schema(&source_dir);
    let group = format!("{topic}-group");
    let source = BrokerSource::Kafka(kiln_stream::connector::KafkaSource {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group: Some(group.clone()),
        options: BTreeMap::new(),
    });

    produce(messages(1, 10)).await;
    let log = Appender::open(&dir).expect("log");
    let stats = catch_up(&source, &schema, &log).await;
    assert_eq!(stats.messages.load(Ordering::Relaxed), 14);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 3);
    drop(log);
    let (first, _) = logged(&dir, &schema);

    // The group's offsets rewound to the start (a commit lost in a crash): the connector reads
    // everything again and logs none of it twice.
    let rewind: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    for p in 0..3 {
        offsets
            .add_partition_offset(&topic, p, Offset::Offset(0))
            .expect("offset");
    }
    rewind.commit(&offsets, CommitMode::Sync).expect("rewind");
    drop(rewind);
    produce(messages(101, 10)).await;
    let log = Appender::open(&dir).expect("reopen log");
    let stats = catch_up(&source, &schema, &log).await;
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 14);
    assert_eq!(stats.messages.load(Ordering::Relaxed), 14);
    drop(log);
    let (all, rejected) = logged(&dir, &schema);
    let mut sorted = all.clone();
    sorted.sort_unstable();
    let mut want = sent_order(1, 10);
    want.extend(sent_order(101, 10));
    want.sort_unstable();
    assert_eq!(sorted, want, "every event once");
    assert_eq!(&all[..first.len()], first.as_slice(), "the log only grew");
    assert_eq!(rejected.len(), 6);
    run_pipeline(&dir, &source_dir, 24, 6);
}
