//! One source's pipeline over a real log and directory: late and undecodable events become
//! dead letters without stopping it, accepted events reach the offline store at the
//! checkpoint, and a reopened stream resumes after what the checkpoint covered.

use kiln_core::Value;
use kiln_stream::event::encode_row;
use kiln_stream::log::LogWriter;
use kiln_stream::pipeline::{SourceStream, StreamOptions};

use crate::common::{self, Ev};

fn encoded(e: &Ev) -> Vec<u8> {
    let mut b = Vec::new();
    encode_row(
        &vec![
            Value::Int64(e.card),
            Value::Timestamp(e.ts),
            e.amount.map_or(Value::Null, Value::Float64),
            Value::Int64(e.merchant),
        ],
        &mut b,
    );
    b
}

#[test]
fn dead_letters_do_not_stop_the_stream_and_a_reopened_stream_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("transactions");
    std::fs::create_dir_all(&source).expect("mkdir");
    let stream_dir = tmp.path().join("stream");
    let view = common::view(&source.display().to_string());
    let minute = 60_000_000;
    let t0 = 1_767_225_600_000_000;
    let ev = |card, m| Ev {
        card,
        ts: t0 + m * minute,
        amount: Some(1.5),
        merchant: 1,
    };
    {
        let mut w = LogWriter::open(&stream_dir).expect("log");
        // A row of three values where the source has four columns.
        let mut short = Vec::new();
        encode_row(
            &vec![Value::Int64(1), Value::Timestamp(t0), Value::Null],
            &mut short,
        );
        w.append(&[
            encoded(&ev(1, 10)),
            short,
            // 9 minutes behind minute 10: later than the 5-minute lateness.
            encoded(&ev(2, 1)),
            encoded(&ev(1, 12)),
        ])
        .expect("append");
    }
    let opts = StreamOptions {
        allowed_lateness: 5 * minute,
        ..StreamOptions::default()
    };
    let mut s = SourceStream::open(
        &stream_dir,
        &source,
        &[&view],
        &common::arrow_schema(),
        opts.clone(),
    )
    .expect("open");
    let step = s.step().expect("step");
    assert_eq!((step.events, step.late, step.undecodable), (4, 1, 1));
    assert_eq!(step.rows.len(), 1, "one view changed");
    assert_eq!(step.rows[0].1.len(), 1, "card 1 only, once");
    s.checkpoint().expect("checkpoint");
    let end = s.position();

    let dead =
        std::fs::read_to_string(stream_dir.join("dead-letters.jsonl")).expect("dead letters");
    let reasons: Vec<String> = dead
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["reason"].to_string())
        .collect();
    assert_eq!(reasons.len(), 2, "{dead}");
    assert!(reasons[0].contains("undecodable"), "{dead}");
    assert!(reasons[1].contains("late"), "{dead}");
    let parts: Vec<_> = std::fs::read_dir(source.join("date=2026-01-01"))
        .expect("partition")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].starts_with("part-"), "{parts:?}");

    let mut again = SourceStream::open(
        &stream_dir,
        &source,
        &[&view],
        &common::arrow_schema(),
        opts,
    )
    .expect("reopen");
    assert_eq!(again.position(), end);
    assert_eq!(again.step().expect("step").events, 0);
    let card1 = kiln_core::key::entity_key(&[Value::Int64(1)]);
    let (as_of, values) = again.current(0, &card1).expect("restored");
    assert_eq!(as_of, t0 + 12 * minute);
    assert_eq!(values[0], Value::Int64(1), "count over 7 s");
}

#[test]
fn concurrent_pushes_share_flushes_and_every_event_is_logged_once() {
    use kiln_stream::event::EventSchema;
    use kiln_stream::log::LogReader;
    use kiln_stream::push::{Encoding, PushHub};

    let tmp = tempfile::tempdir().expect("tempdir");
    let stream_dir = tmp.path().join("stream");
    let view = common::view("unused");
    let schema = EventSchema::new(&[&view], &common::arrow_schema()).expect("schema");
    let hub = std::sync::Arc::new(PushHub::open(&stream_dir, vec![schema]).expect("hub"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let body = serde_json::json!({
                            "card": t, "ts": 1_767_225_600 + i, "merchant": i
                        })
                        .to_string();
                        hub.push("transactions", body.as_bytes(), Encoding::Json)
                            .expect("push")
                            .first_offset
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 200);
    let logged = LogReader::open(&stream_dir.join("transactions"), 0)
        .expect("reader")
        .read(1_000)
        .expect("read");
    assert_eq!(
        logged.iter().map(|l| l.offset).collect::<Vec<_>>(),
        offsets,
        "every acknowledged event is in the log, once"
    );
}
