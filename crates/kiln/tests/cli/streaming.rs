//! Streaming aggregations end to end: events pushed over HTTP (and from a file), checked on
//! arrival, aggregated by `kiln stream run` into the online store, written to the offline
//! store, and compared with the batch recomputation by `kiln consistency`; late events go to
//! dead letters; and a stream killed with SIGKILL at random moments, restarted each time, ends
//! in exactly the state of an uninterrupted run.

use std::path::Path;
use std::time::Duration;

use crate::aggregations::{self, floats, ints, strings, times};
use crate::common::*;

/// 2026-01-01T00:00:00Z in seconds.
const T0: i64 = aggregations::T0 / 1_000_000;

/// A project whose transactions source is a directory seeded with one old event.
pub(crate) fn project() -> Project {
    let p = init(&[]);
    // The batch tests' view, over a directory instead of one file.
    p.write(
        "features/cards.toml",
        &aggregations::DEFS.replace("data/transactions.parquet", "data/transactions"),
    );
    let dir = p.dir.join("data/transactions");
    std::fs::create_dir_all(&dir).expect("mkdir");
    aggregations::write(
        &dir.join("seed.parquet"),
        vec![
            ("card_id", ints(&[9])),
            ("ts", times(&[-24 * 60])),
            ("amount", floats(&[1.0])),
            ("merchant", strings(&["m0"])),
        ],
    );
    ok(p.run(&["apply"]));
    p
}

pub(crate) fn event(card: i64, minute: i64, amount: f64, merchant: &str) -> serde_json::Value {
    serde_json::json!({
        "card_id": card,
        "ts": T0 + minute * 60,
        "amount": amount,
        "merchant": merchant,
    })
}

/// `kiln features get` for cards in the project at `dir`, as JSON (Feast's response shape).
pub(crate) fn online(dir: &Path, cards: &str) -> serde_json::Value {
    json(kiln(
        dir,
        &[
            "-o",
            "json",
            "features",
            "get",
            "--features",
            "card_activity:count_10m,card_activity:count_1h,card_activity:amount_sum_1h,card_activity:amount_max_1h,card_activity:merchant_count_distinct_1h",
            "--entity",
            &format!("card_id={cards}"),
        ],
    ))
}

#[test]
fn pushed_events_are_aggregated_online_and_agree_with_the_batch_side() {
    let p = project();
    let server = Server::start(&p.dir, &[]);

    // Card 1 at minutes 0, 5, 30, 60; card 2 at minute 1.
    let events = serde_json::json!([
        event(1, 0, 10.0, "m1"),
        event(1, 5, 20.0, "m2"),
        event(2, 1, 7.0, "m9"),
        event(1, 30, 5.0, "m1"),
        event(1, 60, 100.0, "m3"),
    ]);
    let (status, body) = post_to(&server.addr, "/v1/push/transactions", events);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 5, "{body}");

    // Bad events are refused with the event and field named, and nothing of the request lands.
    for (bad, named) in [
        (
            serde_json::json!([event(1, 61, 1.0, "m1"), {"ts": T0, "amount": 1.0}]),
            "events[1].card_id",
        ),
        (
            serde_json::json!([{"card_id": 1, "ts": T0, "amount": "abc"}]),
            "events[0].amount",
        ),
        (
            serde_json::json!([{"card_id": 1, "ts": "yesterday-ish"}]),
            "events[0].ts",
        ),
        (
            serde_json::json!({"card_id": 1, "ts": T0, "amout": 2.0}),
            "event.amout",
        ),
    ] {
        let (status, body) = post_to(&server.addr, "/v1/push/transactions", bad);
        assert_eq!(status, 400, "{body}");
        let msg = body["error"].as_str().expect("error message");
        assert!(msg.starts_with(named), "{msg} should name {named}");
    }
    let (status, body) = post_to(&server.addr, "/v1/push/payments", serde_json::json!({}));
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("transactions"),
        "{body}"
    );
    assert!(server.stop());

    let runs = json(p.run(&["-o", "json", "stream", "run", "--until-idle"]));
    assert_eq!(runs[0]["source"], "transactions", "{runs}");
    assert_eq!(runs[0]["events"], 5, "{runs}");
    assert_eq!(runs[0]["late"], 0, "{runs}");

    // Card 1 as of minute 60: the 10m window (50, 60] holds minute 60; the 1h window (0, 60]
    // minutes 5, 30 and 60. Card 2's event left its 10m window at minute 11 and its tumbling
    // hour [0, 60) at minute 60, the stream's time, so its row is as of then: nothing in 10m,
    // one event in the sliding 1h (0, 60], nothing in the tumbling hour. Card 3 has no events.
    let got = online(&p.dir, "1,2,3");
    let values = |i: usize| got["results"][i]["values"].clone();
    assert_eq!(values(1), serde_json::json!([1, 0, null]), "{got}");
    assert_eq!(values(2), serde_json::json!([3, 1, null]), "{got}");
    assert_eq!(values(3), serde_json::json!([125.0, 7.0, null]), "{got}");
    assert_eq!(values(4), serde_json::json!([100.0, 7.0, null]), "{got}");
    assert_eq!(values(5), serde_json::json!([3, 1, null]), "{got}");
    let times = got["results"][1]["event_timestamps"].clone();
    assert_eq!(times[0], "2026-01-01T01:00:00Z", "{got}");
    assert_eq!(times[1], "2026-01-01T01:00:00Z", "{got}");
    // The tumbling hour as of minute 60 is the bucket [60, 120): card 1's event at 60 only.
    let tumbling = json(p.run(&[
        "-o",
        "json",
        "features",
        "get",
        "--features",
        "card_activity:amount_sum_1h_tumbling",
        "--entity",
        "card_id=1,2",
    ]));
    assert_eq!(
        tumbling["results"][1]["values"],
        serde_json::json!([100.0, null]),
        "{tumbling}"
    );

    // The events reached the offline store, partitioned by date, and the batch side agrees.
    let part = std::fs::read_dir(p.dir.join("data/transactions/date=2026-01-01"))
        .expect("date partition")
        .count();
    assert_eq!(part, 1);
    let report = json(p.run(&["-o", "json", "consistency", "card_activity"]));
    assert_eq!(report["keys_online"], 2, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    assert!(
        report["values_compared"].as_u64().expect("count") >= 12,
        "{report}"
    );

    // An event older than the allowed lateness (5 minutes behind minute 60) is a dead letter,
    // not an update; from a file, as JSON lines.
    let file = p.dir.join("late.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            event(1, 20, 1000.0, "m7"),
            event(2, 58, 3.0, "m9")
        ),
    )
    .expect("write");
    ok(p.run(&[
        "stream",
        "push",
        "transactions",
        file.to_str().expect("utf-8"),
    ]));
    let runs = json(p.run(&["-o", "json", "stream", "run", "--until-idle"]));
    assert_eq!(runs[0]["events"], 2, "{runs}");
    assert_eq!(runs[0]["late"], 1, "{runs}");
    let dead = p.read(".kiln/stream/transactions/dead-letters.jsonl");
    assert!(
        dead.contains("\"reason\":\"late: event time 2026-01-01T00:20:00Z"),
        "{dead}"
    );
    let status = json(p.run(&["-o", "json", "stream", "status"]));
    assert_eq!(status[0]["dead_letters"], 1, "{status}");
    assert_eq!(status[0]["lag_bytes"], 0, "{status}");
    let got = online(&p.dir, "1,2");
    assert_eq!(
        got["results"][2]["values"],
        serde_json::json!([3, 2]),
        "{got}"
    );
    let report = json(p.run(&["-o", "json", "consistency", "card_activity"]));
    assert_eq!(report["mismatches"], 0, "{report}");
}

/// A small LCG: random enough for kill times, reproducible from the printed seed.
pub(crate) fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

/// Starts `kiln stream run` in `dir` and kills it (SIGKILL) after a random moment, up to 12
/// times or until `done()`; requires at least two kills before `done()`, said in `what`
/// ("mid-stream"). Returns the seed of the random moments, for messages.
pub(crate) fn kill_at_random_moments(dir: &Path, what: &str, done: impl Fn() -> bool) -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let mut rng = seed;
    let mut interrupted = 0;
    for _ in 0..12 {
        let mut child = kiln_cmd(dir, &["stream", "run"], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("stream starts");
        std::thread::sleep(Duration::from_millis(20 + next(&mut rng) % 200));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        if done() {
            break;
        }
        interrupted += 1;
    }
    eprintln!("{interrupted} kills landed {what} (seed {seed})");
    assert!(
        interrupted >= 2,
        "seed {seed}: only {interrupted} kills landed {what}"
    );
    seed
}

/// After the kills: one more run to the end, then the same online values (cards 0..40) and
/// offline rows as the uninterrupted `reference`, and consistency 0 on every card.
pub(crate) fn finish_like_the_reference(p: &Project, reference: &Path, seed: u64) {
    ok(p.run(&["stream", "run", "--until-idle"]));
    let cards: Vec<String> = (0..40).map(|c| c.to_string()).collect();
    let cards = cards.join(",");
    assert_eq!(
        online(&p.dir, &cards),
        online(reference, &cards),
        "seed {seed}"
    );
    // Every accepted event is in the offline store exactly once.
    assert_eq!(offline_rows(&p.dir), offline_rows(reference), "seed {seed}");
    let report = json(p.run(&[
        "-o",
        "json",
        "consistency",
        "card_activity",
        "--sample",
        "40",
    ]));
    assert_eq!(report["mismatches"], 0, "seed {seed}: {report}");
    assert_eq!(report["keys_online"], 40, "{report}");
}

/// The rows the stream wrote to the offline store on 2026-01-01.
pub(crate) fn offline_rows(dir: &Path) -> usize {
    let part = dir.join("data/transactions/date=2026-01-01");
    std::fs::read_dir(part)
        .expect("partition")
        .map(|e| e.expect("entry").path())
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .map(|f| read_parquet(&f).num_rows())
        .sum()
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The kill tests' project: 30,000 events over 40 cards and about eight hours pushed into the
/// source's log in ten pushes, some out of order within the lateness (enough that the first
/// kills land while the stream is still catching up), checkpoints every 500 events, and a log
/// in segments of 64 KiB (a push each) that checkpoints delete as they pass them.
pub(crate) fn project_with_many_events() -> Project {
    let p = project();
    p.write(
        "kiln.toml",
        &format!(
            "{}\n[stream]\ncheckpoint_interval = \"0\"\ncheckpoint_events = 500\nbatch = 97\n\
             segment_bytes = 65536\nretention = \"0s\"\n",
            p.read("kiln.toml")
        ),
    );
    let mut rng = 7u64;
    for push in 0..10i64 {
        let mut lines = String::new();
        for i in push * 3_000..(push + 1) * 3_000 {
            let jitter = (next(&mut rng) % 120) as i64;
            let second = i + 200 - jitter;
            lines.push_str(&format!(
                "{}\n",
                serde_json::json!({
                    "card_id": next(&mut rng) % 40,
                    "ts": T0 + second,
                    "amount": (next(&mut rng) % 10_000) as f64 / 100.0,
                    "merchant": format!("m{}", next(&mut rng) % 7),
                })
            ));
        }
        let file = p.dir.join("events.jsonl");
        std::fs::write(&file, lines).expect("write");
        ok(p.run(&[
            "stream",
            "push",
            "transactions",
            file.to_str().expect("utf-8"),
        ]));
    }
    p
}

#[test]
fn a_stream_killed_at_random_moments_ends_where_an_uninterrupted_one_does() {
    let p = project_with_many_events();
    let reference = p.dir.with_file_name("reference");
    copy_dir(&p.dir, &reference);
    ok(kiln(&reference, &["stream", "run", "--until-idle"]));

    let seed = kill_at_random_moments(&p.dir, "mid-stream", || {
        json(p.run(&["-o", "json", "stream", "status"]))[0]["lag_bytes"] == 0
    });
    finish_like_the_reference(&p, &reference, seed);
    // Retention deleted every segment but the last, which the stream no longer needed.
    let status = json(p.run(&["-o", "json", "stream", "status"]));
    assert_eq!(status[0]["log_segments"], 1, "{status}");
    assert!(status[0]["log_start"].as_u64() > Some(0), "{status}");
}

#[test]
fn a_server_with_an_embedded_stream_serves_values_as_events_arrive() {
    let p = project();
    // With the feature cache (an hour-long ttl): the stream writes through it, so its rows are
    // served as they land, for cards first read (and cached) as absent too.
    p.write(
        "kiln.toml",
        &format!(
            "{}\n[stream]\nembedded = true\n\n[online_store.cache]\nttl = \"1h\"\n",
            p.read("kiln.toml")
        ),
    );
    let server = Server::start(&p.dir, &[]);
    let request = serde_json::json!({
        "features": ["card_activity:count_10m", "card_activity:amount_sum_1h"],
        "entities": {"card_id": [1]},
    });
    let (status, body) = post(&server.addr, request.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["statuses"][0], "NOT_FOUND", "{body}");
    let events = serde_json::json!([event(1, 0, 10.0, "m1"), event(1, 5, 20.0, "m2")]);
    let (status, body) = post_to(&server.addr, "/v1/push/transactions", events);
    assert_eq!(status, 200, "{body}");

    // One more event as Arrow IPC, with the source's own column types.
    let batch = aggregations::batch(vec![
        ("card_id", ints(&[1])),
        ("ts", times(&[7])),
        ("amount", floats(&[3.0])),
        ("merchant", strings(&["m1"])),
    ]);
    let mut ipc = Vec::new();
    {
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }
    let (status, _, body) = http_raw(
        &server.addr,
        "POST",
        "/v1/push/transactions",
        &[("Content-Type", "application/vnd.apache.arrow.stream")],
        &ipc,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // The server's own stream updates the online store: no `kiln stream run`.
    let mut got = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, body) = post(&server.addr, request.clone());
        assert_eq!(status, 200, "{body}");
        got = body["results"].clone();
        if got[1]["values"][0] == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(got[1]["values"][0], 3, "{got}");
    assert_eq!(got[2]["values"][0], 33.0, "{got}");

    let (_, metrics) = http(&server.addr, "GET", "/metrics", None);
    assert!(
        metrics.contains("kiln_stream_events_pushed_total{source=\"transactions\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_stream_events_applied_total{source=\"transactions\"} 3"),
        "{metrics}"
    );
    // Stopping the server checkpoints the stream: nothing is left to replay.
    assert!(server.stop());
    let status = json(p.run(&["-o", "json", "stream", "status"]));
    assert_eq!(status[0]["lag_bytes"], 0, "{status}");
}
