//! Materialization into the redb online store: idempotence, incremental runs, and kill -9 at
//! random moments.

use std::time::Duration;

use crate::common::*;

/// `kiln features get` of the driver_activity service for drivers `ids` (comma-separated).
pub(crate) fn lookup(p: &Project, ids: &str) -> serde_json::Value {
    json(p.run(&[
        "features",
        "get",
        "--service",
        "driver_activity",
        "--entity",
        &format!("driver_id={ids}"),
        "--output",
        "json",
    ]))
}

#[test]
fn materialize_is_idempotent_and_incremental_continues() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let r = json(p.run(&["materialize", "--start", "2000-01-01", "--output", "json"]));
    assert_eq!(r[0]["written"], 100, "{r}");
    let first = lookup(&p, "1001,1002,1050,5000");
    // Statuses: present, present, expired (stopped reporting 30 h ago, ttl 1d), not found.
    let statuses = &first["results"][1]["statuses"];
    assert_eq!(
        statuses,
        &serde_json::json!(["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]),
        "{first}"
    );

    // Re-running the same window leaves identical state.
    let r = json(p.run(&["materialize", "--start", "2000-01-01", "--output", "json"]));
    assert_eq!(r[0]["written"], 100);
    assert_eq!(lookup(&p, "1001,1002,1050,5000"), first);

    // Incremental starts at the watermark: nothing new in the window.
    let r = json(p.run(&["materialize", "--incremental", "--output", "json"]));
    assert_eq!(r[0]["rows_in_window"], 0, "{r}");
    let table = ok(p.run(&[
        "features",
        "get",
        "--service",
        "driver_activity",
        "--entity",
        "driver_id=1001,1050",
    ]));
    assert!(table.contains("EXPIRED"), "{table}");
    let views = ok(p.run(&["list", "views"]));
    assert!(!views.contains("never"), "{views}");
}

#[test]
fn bad_windows_and_requests_are_named() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let e = fails(p.run(&["materialize", "--start", "yesterday"]));
    assert!(e.contains("invalid timestamp \"yesterday\""), "{e}");
    let e = fails(p.run(&[
        "materialize",
        "--start",
        "2030-01-01",
        "--end",
        "2029-01-01",
    ]));
    assert!(e.contains("after its end"), "{e}");
    let e = fails(p.run(&[
        "features",
        "get",
        "--features",
        "driver_hourly_stats:nope",
        "--entity",
        "driver_id=1",
    ]));
    assert!(e.contains("no feature \"nope\""), "{e}");
    let e = fails(p.run(&[
        "features",
        "get",
        "--service",
        "driver_activity",
        "--entity",
        "driver_id=abc",
    ]));
    assert!(e.contains("entities.driver_id[0]"), "{e}");
}

/// Kills `kiln materialize` at random moments, then runs it to completion: the store must end
/// exactly as after one clean run, and no killed run may have recorded its window.
#[test]
fn kill_minus_nine_leaves_a_consistent_store() {
    let anchor = kiln_core::time::format_timestamp(kiln_core::time::now_micros());
    let killed = init(&["--drivers", "20000", "--hours", "24", "--anchor", &anchor]);
    let clean = init(&["--drivers", "20000", "--hours", "24", "--anchor", &anchor]);
    for p in [&killed, &clean] {
        let cfg = p
            .read("kiln.toml")
            .replace("write_batch = 262144", "write_batch = 500");
        p.write("kiln.toml", &cfg);
        ok(p.run(&["apply"]));
    }
    let window = [
        "materialize",
        "--start",
        "2000-01-01",
        "--end",
        "2100-01-01",
    ];
    // Pseudo-random delays, different each run but reproducible per process.
    let mut seed = u64::from(std::process::id());
    let mut kills = 0;
    for _ in 0..6 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let delay = Duration::from_millis(20 + (seed >> 33) % 400);
        let mut child = kiln_cmd(&killed.dir, &window, &[]).spawn().expect("spawn");
        std::thread::sleep(delay);
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
        // The store opens and reads after every kill.
        lookup(&killed, "1001");
    }
    assert!(
        kills > 0,
        "materialize always finished before the kill; the test proved nothing"
    );
    let log = json(killed.run(&["registry", "log", "--output", "json"]));
    let recorded = log
        .as_array()
        .expect("log")
        .iter()
        .filter(|e| e["event"]["type"] == "materialized")
        .count();
    assert!(recorded <= 6 - kills, "a killed run recorded its window");

    ok(killed.run(&window));
    ok(clean.run(&window));
    let ids: Vec<String> = (0..20_000)
        .step_by(97)
        .map(|i| (1001 + i).to_string())
        .collect();
    let ids = ids.join(",");
    assert_eq!(
        lookup(&killed, &ids)["results"],
        lookup(&clean, &ids)["results"]
    );
}
