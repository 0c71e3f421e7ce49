//! The online-feature cache in `kiln serve` (`[online_store.cache]`): cached answers equal the
//! store's, a materialization from another process is served once the registry says so (not
//! after the cache's hour-long ttl), rows streamed in the server are served as they are
//! written, and unknown entities are answered by the filter of known entities without a store
//! read; every lookup is counted in `/metrics`.

use std::time::Duration;

use kiln_core::time::{MICROS_PER_SECOND, format_timestamp, now_micros};

use crate::common::*;
use crate::materialize::lookup;
use crate::metrics::{scrape, value};

const HOUR: i64 = 3_600 * MICROS_PER_SECOND;
const VIEW: &str = "driver_hourly_stats";

fn with_cache(p: &Project) {
    p.write(
        "kiln.toml",
        &format!(
            "{}\n[online_store.cache]\nttl = \"1h\"\n",
            p.read("kiln.toml")
        ),
    );
}

fn served(addr: &str, ids: &[i64]) -> serde_json::Value {
    let (status, body) = post(
        addr,
        serde_json::json!({"feature_service": "driver_activity", "entities": {"driver_id": ids}}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn cache_count(addr: &str, result: &str) -> f64 {
    let (_, samples) = scrape(addr);
    value(
        &samples,
        "kiln_feature_cache_total",
        &[("view", VIEW), ("result", result)],
    )
}

#[test]
fn cached_features_follow_materializations_and_unknown_entities_skip_the_store() {
    let now = now_micros();
    let anchor = now - now.rem_euclid(HOUR);
    let p = init(&["--anchor", &format_timestamp(anchor)]);
    with_cache(&p);
    ok(p.run(&["apply"]));
    // All but the last hour: every driver gets a newer row later.
    ok(p.run(&[
        "materialize",
        "--start",
        "2000-01-01",
        "--end",
        &format_timestamp(anchor - HOUR / 2),
    ]));
    let server = Server::start(&p.dir, &[("KILN__SERVE__REGISTRY_REFRESH", "1s")]);
    let ids = [1001, 1002, 1003];
    let before = lookup(&p, "1001,1002,1003");
    assert_eq!(served(&server.addr, &ids)["results"], before["results"]);
    assert_eq!(served(&server.addr, &ids)["results"], before["results"]);
    assert!(cache_count(&server.addr, "miss") >= 3.0);
    assert!(cache_count(&server.addr, "hit") >= 3.0);

    // Another process writes newer rows; its registry event drops the cached ones.
    ok(p.run(&["materialize", "--incremental"]));
    let after = lookup(&p, "1001,1002,1003");
    assert_ne!(after["results"], before["results"]);
    let mut got = serde_json::Value::Null;
    for _ in 0..100 {
        got = served(&server.addr, &ids);
        if got["results"] == after["results"] {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got["results"], after["results"]);

    // Unknown drivers: absent, and once the filter is built, without store reads.
    let unknown: Vec<i64> = (900_000..900_200).collect();
    let mut negative = 0.0;
    for _ in 0..100 {
        let body = served(&server.addr, &unknown);
        assert!(
            body["results"][1]["statuses"]
                .as_array()
                .expect("statuses")
                .iter()
                .all(|s| s == "NOT_FOUND"),
            "{body}"
        );
        negative = cache_count(&server.addr, "negative");
        if negative > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // 1% false positives: a few of 200 may still be read.
    assert!(
        negative >= 150.0,
        "{negative} of 200 answered by the filter"
    );
    // Known drivers are still found.
    assert_eq!(served(&server.addr, &ids)["results"], after["results"]);
    assert!(server.stop());
}

#[test]
fn a_bad_cache_setting_is_named() {
    let p = init(&[]);
    p.write(
        "kiln.toml",
        &format!(
            "{}\n[online_store.cache]\nttl = \"5s\"\nrefresh_after = \"10s\"\n",
            p.read("kiln.toml")
        ),
    );
    let e = fails(p.run(&["apply"]));
    assert!(
        e.contains("online_store.cache.refresh_after") && e.contains("not shorter than ttl"),
        "{e}"
    );
}
