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

/// A temporary source directory (Parquet) and stream directory, and the common view over them.
struct Dirs {
    _tmp: tempfile::TempDir,
    source: std::path::PathBuf,
    stream_dir: std::path::PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = tmp.path().join("transactions");
        std::fs::create_dir_all(&source).expect("mkdir");
        Dirs {
            stream_dir: tmp.path().join("stream"),
            source,
            _tmp: tmp,
        }
    }

    fn view(&self) -> kiln_core::spec::ViewVersion {
        common::view(&self.source.display().to_string())
    }

    fn open(
        &self,
        view: &kiln_core::spec::ViewVersion,
        opts: StreamOptions,
    ) -> Result<SourceStream, kiln_stream::StreamError> {
        SourceStream::open(
            &self.stream_dir,
            &self.source,
            &[view],
            &common::arrow_schema(),
            opts,
        )
    }
}

#[test]
fn dead_letters_do_not_stop_the_stream_and_a_reopened_stream_resumes() {
    let dirs = Dirs::new();
    let (source, stream_dir, view) = (&dirs.source, &dirs.stream_dir, dirs.view());
    let minute = 60_000_000;
    let t0 = 1_767_225_600_000_000;
    let ev = |card, m| Ev {
        card,
        ts: t0 + m * minute,
        amount: Some(1.5),
        merchant: 1,
    };
    {
        let mut w = LogWriter::open(stream_dir).expect("log");
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
    let mut s = dirs.open(&view, opts.clone()).expect("open");
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

    let mut again = dirs.open(&view, opts).expect("reopen");
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
    let hub = std::sync::Arc::new(
        PushHub::open(&stream_dir, vec![schema], &Default::default()).expect("hub"),
    );
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

/// An online store whose first `failures` writes fail as if it were unreachable; the write
/// after those stops the stream.
struct Unreachable {
    failures: std::sync::atomic::AtomicU32,
    attempts: std::sync::atomic::AtomicU32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    up: kiln_store::online::MemoryStore,
}

impl kiln_store::online::OnlineStore for Unreachable {
    fn write_batch<'a>(
        &'a self,
        table: &'a kiln_store::online::ViewTable,
        rows: Vec<(Vec<u8>, kiln_store::online::StoredRow)>,
    ) -> kiln_store::online::BoxFuture<
        'a,
        Result<kiln_store::online::WriteSummary, kiln_store::StoreError>,
    > {
        use std::sync::atomic::Ordering;
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let left = self.failures.load(Ordering::Relaxed);
        if left > 0 {
            self.failures.store(left - 1, Ordering::Relaxed);
            return Box::pin(async {
                Err(kiln_store::StoreError::Redis {
                    location: "redis://down".into(),
                    message: "connection refused".into(),
                    retryable: true,
                })
            });
        }
        self.stop.store(true, Ordering::Relaxed);
        self.up.write_batch(table, rows)
    }

    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> kiln_store::online::BoxFuture<
        'a,
        Result<Vec<Option<kiln_store::online::StoredRow>>, kiln_store::StoreError>,
    > {
        self.up.get_many(view, keys)
    }

    fn delete_view<'a>(
        &'a self,
        view: &'a str,
    ) -> kiln_store::online::BoxFuture<'a, Result<(), kiln_store::StoreError>> {
        self.up.delete_view(view)
    }

    fn count<'a>(
        &'a self,
        view: &'a str,
    ) -> kiln_store::online::BoxFuture<'a, Result<u64, kiln_store::StoreError>> {
        self.up.count(view)
    }

    fn keys<'a>(
        &'a self,
        view: &'a str,
    ) -> kiln_store::online::BoxFuture<'a, Result<Vec<Vec<u8>>, kiln_store::StoreError>> {
        self.up.keys(view)
    }

    fn describe(&self) -> String {
        "unreachable at first".into()
    }
}

#[test]
fn a_running_stream_outlasts_an_unavailable_online_store_and_an_idle_run_fails_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use kiln_store::online::OnlineStore;
    use kiln_stream::pipeline;

    let dirs = Dirs::new();
    let (stream_dir, view) = (&dirs.stream_dir, dirs.view());
    let t0 = 1_767_225_600_000_000;
    LogWriter::open(stream_dir)
        .expect("log")
        .append(&[encoded(&Ev {
            card: 1,
            ts: t0,
            amount: Some(2.0),
            merchant: 1,
        })])
        .expect("append");
    let open = || dirs.open(&view, StreamOptions::default()).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let unreachable = |failures| {
        Arc::new(Unreachable {
            failures: AtomicU32::new(failures),
            attempts: AtomicU32::new(0),
            stop: stop.clone(),
            up: kiln_store::online::MemoryStore::new(),
        })
    };

    // Run to idleness: the store's error, and no checkpoint past the rows it did not take.
    let store = unreachable(1);
    let dyn_store: Arc<dyn OnlineStore> = store.clone();
    let e = pipeline::run(&mut open(), rt.handle(), &dyn_store, &stop, true, |_, _| {})
        .expect_err("the store is down");
    assert!(e.to_string().contains("redis://down"), "{e}");
    assert_eq!(open().position(), 0, "no checkpoint past unwritten rows");

    // Running: three failed writes, retried with backoff, then written.
    let store = unreachable(3);
    let dyn_store: Arc<dyn OnlineStore> = store.clone();
    let summary = pipeline::run(
        &mut open(),
        rt.handle(),
        &dyn_store,
        &stop,
        false,
        |_, _| {},
    )
    .expect("outlasted");
    assert_eq!((summary.events, summary.rows_written), (1, 1));
    assert_eq!(store.attempts.load(Ordering::Relaxed), 4);
    let card1 = kiln_core::key::entity_key(&[Value::Int64(1)]);
    let rows = rt
        .block_on(store.get_many(&view.name, &[card1]))
        .expect("read");
    assert!(rows[0].is_some(), "the row reached the store");
    assert!(open().position() > 0, "checkpointed after the write");
}

/// Every part file under the source's directory, by name.
fn offline_parts(source: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(source).expect("source dir") {
        let d = d.expect("entry").path();
        for f in std::fs::read_dir(&d).expect("partition") {
            out.push(f.expect("entry").file_name().to_string_lossy().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn retention_deletes_checkpointed_segments_and_a_changed_view_is_rebuilt_from_the_log() {
    let dirs = Dirs::new();
    let (source, stream_dir, v1) = (&dirs.source, &dirs.stream_dir, dirs.view());
    let mut v2 = v1.clone();
    v2.version = 2;
    let second = 1_000_000;
    let t0 = 1_767_225_600_000_000;
    let ev = |card, s| Ev {
        card,
        ts: t0 + s * second,
        amount: Some(card as f64),
        merchant: s % 3,
    };
    // Small segments: a few events each.
    let mut w = LogWriter::open_with(stream_dir, 300).expect("log");
    for s in 0..40 {
        w.append(&[encoded(&ev(s % 4, s))]).expect("append");
    }
    let open = |view: &kiln_core::spec::ViewVersion, retention| {
        dirs.open(
            view,
            StreamOptions {
                retention,
                ..StreamOptions::default()
            },
        )
    };
    let drain = |s: &mut SourceStream| {
        let mut rows = Vec::new();
        loop {
            let step = s.step().expect("step");
            rows.extend(step.rows.into_iter().flat_map(|(_, r)| r));
            if step.events == 0 {
                return rows;
            }
        }
    };
    let card = |c: i64| kiln_core::key::entity_key(&[Value::Int64(c)]);

    // Kept whole: a changed view is built from the log again, without touching what the
    // offline store and the dead letters already hold.
    let mut s = open(&v1, None).expect("open");
    drain(&mut s);
    s.checkpoint().expect("checkpoint");
    let before: Vec<_> = (0..4).map(|c| s.current(0, &card(c))).collect();
    let parts = offline_parts(source);
    drop(s);
    let mut s = open(&v2, None).expect("rebuild");
    let rows = drain(&mut s);
    let after: Vec<_> = (0..4).map(|c| s.current(0, &card(c))).collect();
    assert_eq!(after, before);
    let mut keys: Vec<_> = rows.iter().map(|r| r.0.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        4,
        "every key's row is written for the new version"
    );
    s.checkpoint().expect("checkpoint");
    assert_eq!(
        offline_parts(source),
        parts,
        "no event is written offline twice"
    );
    drop(s);

    // Retention: segments the checkpoint passed go, the one being written stays.
    let segments = kiln_stream::log::segments(stream_dir)
        .expect("segments")
        .len();
    assert!(segments > 5, "{segments}");
    for s in 40..44 {
        w.append(&[encoded(&ev(s % 4, s))]).expect("append");
    }
    let mut s = open(&v2, Some(std::time::Duration::ZERO)).expect("open");
    drain(&mut s);
    s.checkpoint().expect("checkpoint");
    let start = kiln_stream::log::start(stream_dir).expect("start");
    assert!(start > 0);
    assert_eq!(
        kiln_stream::log::segments(stream_dir)
            .expect("segments")
            .len(),
        1
    );
    drop(s);
    // Resuming needs nothing that was deleted.
    let mut s = open(&v2, None).expect("resume");
    assert_eq!(s.step().expect("step").events, 0);
    drop(s);
    // A view changed after trimming is built from what the log still holds.
    let mut v3 = v2.clone();
    v3.version = 3;
    let mut s = open(&v3, None).expect("rebuild from the kept log");
    drain(&mut s);
    assert!(
        s.current(0, &card(3)).is_some(),
        "the last event is in the kept segment"
    );
    drop(s);
    // Without a checkpoint, a trimmed log cannot be replayed: said so, nothing deleted.
    let parts = offline_parts(source);
    std::fs::remove_file(stream_dir.join("checkpoint")).expect("remove checkpoint");
    let err = open(&v3, None).err().expect("refused");
    assert!(err.to_string().contains("retention"), "{err}");
    assert_eq!(offline_parts(source), parts);
}

#[test]
fn an_idle_source_logs_the_clock_so_its_windows_empty_and_a_replay_sees_the_same() {
    let dirs = Dirs::new();
    let (stream_dir, view) = (&dirs.stream_dir, dirs.view());
    let log = kiln_stream::appender::Appender::open_with(
        stream_dir,
        &kiln_stream::log::LogOptions {
            tick_when_idle: Some(std::time::Duration::from_millis(50)),
            ..Default::default()
        },
    )
    .expect("log");
    // An event 6 s old: it leaves the 7 s window a second from now, with no other event.
    let ts = kiln_core::time::now_micros() - 6_000_000;
    let ev = Ev {
        card: 1,
        ts,
        amount: Some(2.0),
        merchant: 1,
    };
    log.append(&[encoded(&ev)]).expect("append");
    let open = || dirs.open(&view, StreamOptions::default()).expect("open");
    let card = kiln_core::key::entity_key(&[Value::Int64(1)]);
    let mut s = open();
    s.step().expect("step");
    let (as_of, values) = s.current(0, &card).expect("state");
    assert_eq!(
        (as_of, &values[0]),
        (ts, &Value::Int64(1)),
        "count over 7 s"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let emptied = loop {
        s.step().expect("step");
        let (as_of, values) = s.current(0, &card).expect("state");
        if values[0] == Value::Int64(0) {
            break as_of;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the window never emptied"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        emptied,
        ts + 7_000_000,
        "as of the moment the event left the window"
    );
    assert!(s.stream_time() >= ts + 7_000_000);
    // The ticks are in the log: a stream replayed from it (no checkpoint) ends the same way.
    let end = s.position();
    drop(s);
    drop(log);
    let mut again = open();
    while again.position() < end {
        again.step().expect("step");
    }
    assert_eq!(again.current(0, &card).expect("state").0, emptied);
}
