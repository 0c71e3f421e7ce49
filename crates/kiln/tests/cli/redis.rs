//! The Redis online store end to end: materialized features and streamed aggregates read back
//! from Redis (standalone, and a 3-primary Cluster started from `redis-server` processes)
//! exactly as from the embedded store, by `kiln features get` and `kiln serve`; and a stream
//! writing to the Cluster, killed with SIGKILL at random moments, ends where an uninterrupted
//! run writing to redb does. Runs when `KILN_TEST_REDIS_URL` is set.

use crate::common::*;
use crate::streaming::{
    copy_dir, finish_like_the_reference, kill_at_random_moments, project_with_many_events,
};

#[path = "../../../kiln-store/tests/integration/redis_cluster.rs"]
mod redis_cluster;
use redis_cluster::Cluster;

fn redis_url() -> Option<String> {
    let url = std::env::var("KILN_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("KILN_TEST_REDIS_URL is not set: skipping the Redis online store test");
    }
    url
}

/// Replaces the project's `[online_store]` section with `settings`.
fn use_online_store(p: &Project, settings: &str) {
    let text = p.read("kiln.toml");
    let start = text
        .find("[online_store]")
        .expect("an [online_store] section");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 2 + i);
    p.write(
        "kiln.toml",
        &format!(
            "{}[online_store]\n{settings}\n\n{}",
            &text[..start],
            &text[end..]
        ),
    );
}

fn standalone(url: &str) -> String {
    format!(
        "type = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{}\"",
        unique("kiln-cli")
    )
}

fn cluster(c: &Cluster) -> String {
    format!("type = \"redis-cluster\"\nnodes = {:?}", c.nodes())
}

fn start_cluster() -> Cluster {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(Cluster::start())
}

fn lookup(p: &Project, ids: &str) -> serde_json::Value {
    json(p.run(&[
        "-o",
        "json",
        "features",
        "get",
        "--service",
        "driver_activity",
        "--entity",
        &format!("driver_id={ids}"),
    ]))
}

#[test]
fn materialized_features_read_from_redis_as_from_redb() {
    let Some(url) = redis_url() else { return };
    let ids = "1001,1002,1050,5000";
    let reference = init(&[]);
    ok(reference.run(&["apply"]));
    ok(reference.run(&["materialize", "--start", "2000-01-01"]));
    let want = lookup(&reference, ids);
    assert_eq!(
        want["results"][1]["statuses"],
        serde_json::json!(["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]),
        "{want}"
    );

    let the_cluster = start_cluster();
    for settings in [standalone(&url), cluster(&the_cluster)] {
        let p = init(&[]);
        use_online_store(&p, &settings);
        ok(p.run(&["apply"]));
        let r = json(p.run(&["materialize", "--start", "2000-01-01", "--output", "json"]));
        assert_eq!(r[0]["written"], 100, "{settings}: {r}");
        assert_eq!(lookup(&p, ids), want, "{settings}");
        // Re-running the window rewrites the same rows: nothing changes.
        let r = json(p.run(&["materialize", "--start", "2000-01-01", "--output", "json"]));
        assert_eq!(r[0]["written"], 100, "{settings}: {r}");
        assert_eq!(lookup(&p, ids), want, "{settings}");

        let server = Server::start(&p.dir, &[]);
        let (status, body) = post(
            &server.addr,
            serde_json::json!({
                "feature_service": "driver_activity",
                "entities": {"driver_id": [1001, 1002, 1050, 5000]},
            }),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"], want["results"], "{settings}");
        assert!(server.stop());
    }
}

#[test]
fn an_unreachable_redis_is_named_in_the_error() {
    let p = init(&[]);
    use_online_store(
        &p,
        "type = \"redis\"\nurl = \"redis://kiln:secret@127.0.0.1:1/0\"\nconnect_timeout_ms = 500",
    );
    ok(p.run(&["apply"]));
    let e = fails(p.run(&["materialize", "--start", "2000-01-01"]));
    assert!(
        e.contains("online store redis://kiln:***@127.0.0.1:1/0") && !e.contains("secret"),
        "{e}"
    );
}

#[test]
fn a_stream_writing_to_a_redis_cluster_killed_at_random_moments_ends_like_redb() {
    if redis_url().is_none() {
        return;
    }
    let p = project_with_many_events();
    // The reference: the same events, uninterrupted, into the embedded store.
    let reference = p.dir.with_file_name("reference");
    copy_dir(&p.dir, &reference);
    ok(kiln(&reference, &["stream", "run", "--until-idle"]));

    let the_cluster = start_cluster();
    use_online_store(&p, &cluster(&the_cluster));
    let seed = kill_at_random_moments(&p.dir, "writing to the Redis Cluster", || {
        json(p.run(&["-o", "json", "stream", "status"]))[0]["lag_bytes"] == 0
    });
    finish_like_the_reference(&p, &reference, seed);
}
