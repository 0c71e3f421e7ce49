//! Streamed sources read from real brokers, as a user runs them: `kiln stream run` reading a
//! NATS JetStream stream, killed with SIGKILL at random moments and restarted, ends where an
//! uninterrupted run does (malformed messages as dead letters exactly once); `kiln serve`
//! reading a Kafka topic serves the aggregates and counts malformed messages in /metrics.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::streaming::{
    copy_dir, finish_like_the_reference, kill_at_random_moments, next, online, project,
};

/// 2026-01-01T00:00:00Z in seconds.
const T0: i64 = crate::aggregations::T0 / 1_000_000;

/// Message `i`: an array of 10 events of cards 0..40, or, every 37th, a message that is not
/// an event of the source.
fn message(i: u64, rng: &mut u64) -> Vec<u8> {
    match i % 37 {
        5 => b"garbage".to_vec(),
        17 => serde_json::to_vec(&serde_json::json!({"ts": T0, "amount": 1.0})).expect("json"),
        _ => {
            let events: Vec<serde_json::Value> = (0..10)
                .map(|j| {
                    let n = i as i64 * 10 + j;
                    serde_json::json!({
                        "card_id": next(rng) % 40,
                        "ts": T0 + n - (next(rng) % 90) as i64,
                        "amount": (next(rng) % 10_000) as f64 / 100.0,
                        "merchant": format!("m{}", next(rng) % 7),
                    })
                })
                .collect();
            serde_json::to_vec(&events).expect("json")
        }
    }
}

/// The dead letters of the transactions source.
fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(".kiln/stream/transactions/dead-letters.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// The broker position of the last position frame in a source's log.
fn logged_position(dir: &Path) -> Option<serde_json::Value> {
    let mut r =
        kiln_stream::log::LogReader::open(&dir.join(".kiln/stream/transactions"), 0).ok()?;
    let mut last = None;
    loop {
        let frames = r.read(10_000).expect("read log");
        if frames.is_empty() {
            return last;
        }
        for f in frames {
            if f.kind == kiln_stream::log::FrameKind::Position {
                last = serde_json::from_slice(&f.payload).ok();
            }
        }
    }
}

fn with_config(p: &Project, extra: &str) {
    p.write("kiln.toml", &format!("{}\n{extra}", p.read("kiln.toml")));
}

#[test]
fn a_stream_reading_nats_killed_at_random_moments_ends_where_an_uninterrupted_one_does() {
    let Ok(url) = std::env::var("KILN_TEST_NATS_URL") else {
        eprintln!("KILN_TEST_NATS_URL not set: skipping");
        return;
    };
    let name = unique("KILN_CLI");
    let subject = format!("{}.transactions", name.to_lowercase());
    let messages = 3000u64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let js = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .expect("create stream");
        let mut rng = 11u64;
        let mut acks = Vec::new();
        for i in 0..messages {
            acks.push(
                js.publish(subject.clone(), message(i, &mut rng).into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("stored");
        }
        js
    });

    let p = project();
    with_config(
        &p,
        &format!(
            "[stream]\ncheckpoint_interval = \"0\"\ncheckpoint_events = 500\nbatch = 7\n\n[stream.sources.transactions.nats]\nurl = \"{url}\"\nstream = \"{name}\"\ndurable = \"kiln-killed\"\n"
        ),
    );
    let reference = p.dir.with_file_name("reference");
    copy_dir(&p.dir, &reference);
    std::fs::write(
        reference.join("kiln.toml"),
        p.read("kiln.toml").replace("kiln-killed", "kiln-reference"),
    )
    .expect("write");
    let run = json(kiln(
        &reference,
        &["-o", "json", "stream", "run", "--until-idle"],
    ));
    assert_eq!(run[0]["broker"]["messages"], messages, "{run}");
    let malformed = run[0]["malformed"].as_u64().expect("malformed");
    assert_eq!(
        malformed,
        (0..messages).filter(|i| matches!(i % 37, 5 | 17)).count() as u64,
        "{run}"
    );

    let seed = kill_at_random_moments(&p.dir, "while reading NATS", || {
        logged_position(&p.dir).map_or(0, |p| p["seq"].as_u64().unwrap_or(0)) == messages
    });
    finish_like_the_reference(&p, &reference, seed);
    // The same dead letters, once each (their log offsets differ: the killed runs logged
    // their batches, and so their position frames, differently).
    let without_offsets = |dead: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        dead.into_iter()
            .map(|mut d| {
                d.as_object_mut().expect("object").remove("offset");
                d
            })
            .collect()
    };
    let dead = dead_letters(&p.dir);
    assert_eq!(
        without_offsets(dead.clone()),
        without_offsets(dead_letters(&reference)),
        "seed {seed}"
    );
    assert_eq!(dead.len() as u64, malformed);
    assert!(
        dead[1]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("malformed: event.card_id: missing or null"),
        "{}",
        dead[1]
    );
    // Status shows how far the broker was read.
    let status = json(p.run(&["-o", "json", "stream", "status"]));
    assert_eq!(status[0]["broker_position"]["seq"], messages, "{status}");
    rt.block_on(js.delete_stream(&name)).expect("delete stream");
}

#[test]
fn a_server_reading_kafka_serves_aggregates_and_counts_malformed_messages() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let Ok(brokers) = std::env::var("KILN_TEST_KAFKA_BROKERS") else {
        eprintln!("KILN_TEST_KAFKA_BROKERS not set: skipping");
        return;
    };
    let topic = unique("kiln-cli");
    let p = project();
    with_config(
        &p,
        &format!(
            "[stream]\nembedded = true\n\n[stream.sources.transactions.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n"
        ),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    let send = |payload: Vec<u8>| {
        rt.block_on(producer.send(
            FutureRecord::<(), _>::to(&topic).payload(&payload),
            Duration::from_secs(10),
        ))
        .expect("produce");
    };
    // One event before the server starts, the rest while it runs.
    let ev = |card: i64, minute: i64, amount: f64| {
        serde_json::to_vec(&crate::streaming::event(card, minute, amount, "m1")).expect("json")
    };
    send(ev(1, 0, 10.0));
    let server = Server::start(&p.dir, &[]);
    send(b"{\"card_id\": 1, \"ts\": \"not a time\"}".to_vec());
    send(ev(1, 5, 20.0));
    send(
        serde_json::to_vec(&serde_json::json!([
            crate::streaming::event(2, 1, 7.0, "m9"),
            crate::streaming::event(1, 6, 1.5, "m2")
        ]))
        .expect("json"),
    );

    // Card 1 at minutes 0, 5 and 6: three events in its last hour, 31.5 in all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = online(&p.dir, "1,2");
        if got["results"][1]["values"][0] == 3 && got["results"][1]["values"][1] == 1 {
            break got;
        }
        assert!(Instant::now() < deadline, "not served in 60 s: {got}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got["results"][3]["values"][0], 31.5, "{got}");
    let metrics = loop {
        let (_, metrics) = http(&server.addr, "GET", "/metrics", None);
        if metrics.contains("kiln_stream_broker_messages_total{source=\"transactions\"} 4") {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "no broker counts in /metrics: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains(
            "kiln_stream_dead_letters_total{source=\"transactions\",reason=\"malformed\"} 1"
        ),
        "{metrics}"
    );
    assert!(server.stop());
    let dead = dead_letters(&p.dir);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("malformed: event.ts: expected timestamp"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["origin"], format!("{topic}[0]@1"), "{dead:?}");
}
