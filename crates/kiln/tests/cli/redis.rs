//! The Redis online store end to end: materialized features and streamed aggregates read back
//! from Redis (standalone, and a 3-primary Cluster started from `redis-server` processes)
//! exactly as from the embedded store, by `kiln features get` and `kiln serve`; and a stream
//! writing to the Cluster, killed with SIGKILL at random moments, ends where an uninterrupted
//! run writing to redb does; a server whose Redis is killed answers 503 naming it, opens its
//! circuit breaker, and recovers through a probe when Redis returns; a server whose Redis turns
//! slow (a latency proxy) fails requests at its timeout, not Redis's delay, and recovers; and
//! two servers share predictions through the prediction cache's level in Redis. Runs when
//! `KILN_TEST_REDIS_URL` is set.

use crate::common::*;
use crate::materialize::lookup;
use crate::resilience::{FakeModel, infer, metric, register_fake};
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

#[test]
fn servers_sharing_a_redis_share_their_predictions() {
    let Some(url) = redis_url() else { return };
    let fake = FakeModel::start();
    let p = init(&[]);
    let prefix = unique("kiln-shared");
    use_online_store(
        &p,
        &format!("type = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\""),
    );
    register_fake(&p, &fake, "shared");
    p.write(
        "kiln.toml",
        &format!(
            "{}\n[serve.models.shared.resilience]\nprediction_cache = {{ values = 1000, ttl = \"1m\", shared = true }}\n",
            p.read("kiln.toml")
        ),
    );
    let a = Server::start(&p.dir, &[]);
    let b = Server::start(&p.dir, &[]);
    let rows = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]];
    let (status, first) = infer(&a.addr, "shared", &rows);
    assert_eq!(status, 200, "{first}");
    assert_eq!(fake.calls(), 1);

    // A writes the answer to Redis behind its reply; once it is there, B answers from it.
    let mut redis = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let pattern = format!("{prefix}#cache:shared@v1:*");
    for _ in 0..100 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut redis)
            .expect("KEYS");
        if keys.len() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, second) = infer(&b.addr, "shared", &rows);
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["outputs"], first["outputs"]);
    assert_eq!(fake.calls(), 1, "B did not call the model");
    let series = |addr: &str, result: &str| {
        metric(
            addr,
            &format!(
                "kiln_prediction_cache_total{{model=\"shared\",version=\"1\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(series(&a.addr, "miss"), Some(1.0));
    assert_eq!(series(&b.addr, "shared_hit"), Some(1.0));
    assert!(a.stop() && b.stop());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut redis)
        .expect("KEYS");
    let _: () = redis::cmd("DEL").arg(keys).query(&mut redis).unwrap_or(());
}

#[test]
fn a_shared_prediction_cache_needs_redis() {
    let p = init(&[]);
    p.write(
        "kiln.toml",
        &format!(
            "{}\n[serve.resilience]\nprediction_cache = {{ shared = true }}\n",
            p.read("kiln.toml")
        ),
    );
    let e = fails(p.run(&["apply"]));
    assert!(
        e.contains("prediction_cache.shared") && e.contains("online_store.type is \"redb\""),
        "{e}"
    );
}

/// Waits (30 s at most) until `server` answers `request` with a present value again, then
/// checks that its store breaker is closed.
fn answers_again(server: &Server, request: &serde_json::Value, after: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = post(&server.addr, request.clone());
        if status == 200 {
            assert_eq!(body["results"][1]["statuses"][0], "PRESENT", "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} after {after}: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_, metrics) = http(&server.addr, "GET", "/metrics", None);
    assert!(
        metrics.contains("kiln_circuit_state{dependency=\"online_store\"} 0"),
        "{metrics}"
    );
}

/// A `redis-server` of the test's own on a free port, without persistence.
struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        OwnRedis { child }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_whose_redis_dies_answers_503_opens_its_breaker_and_recovers_when_it_returns() {
    if redis_url().is_none() {
        return;
    }
    let port = redis_cluster::free_ports(1)[0];
    let redis = OwnRedis::start(port);
    let p = init(&[]);
    use_online_store(
        &p,
        &format!(
            "type = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\ntimeout_ms = 300\n\
             [online_store.breaker]\nmin_calls = 3\nopen_for = \"1s\"\nprobes = 1"
        ),
    );
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    let server = Server::start(&p.dir, &[]);
    let request = serde_json::json!({
        "feature_service": "driver_activity",
        "entities": {"driver_id": [1001]},
    });
    let (status, body) = post(&server.addr, request.clone());
    assert_eq!(status, 200, "{body}");

    redis.kill();
    let (status, body) = post(&server.addr, request.clone());
    assert_eq!(status, 503, "{body}");
    // Feast's error shape: a JSON string holding the detail.
    assert!(
        body.to_string()
            .contains(&format!("online store redis://127.0.0.1:{port}/0")),
        "{body}"
    );
    // Within a few more failures (min_calls 3, half of them failed) the breaker opens: Redis
    // is no longer called, and the answer still names the store and says why.
    let mut refused = None;
    for _ in 0..5 {
        let (status, body) = post(&server.addr, request.clone());
        assert_eq!(status, 503, "{body}");
        if body.to_string().contains("not called, circuit open (") {
            refused = Some(body.to_string());
            break;
        }
    }
    let text = refused.expect("the breaker opened");
    assert!(text.contains("calls failed in the last 10s"), "{text}");
    let (status, text) = http(&server.addr, "GET", "/ready", None);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("online store"), "{text}");
    let (_, metrics) = http(&server.addr, "GET", "/metrics", None);
    assert!(
        metrics.contains("kiln_circuit_state{dependency=\"online_store\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_circuit_opened_total{dependency=\"online_store\"} 1"),
        "{metrics}"
    );

    // Redis comes back (empty: it kept nothing); after the breaker's pause a probe finds it,
    // the breaker closes and the server, reconnected by itself, answers again.
    let _redis = OwnRedis::start(port);
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    answers_again(&server, &request, "Redis returned");
    let (status, text) = http(&server.addr, "GET", "/ready", None);
    assert_eq!(status, 200, "{text}");
    assert!(server.stop());
}

/// A TCP proxy in front of a server that holds back each chunk of its answers for a delay
/// that can be changed while it runs: a slow Redis, without touching Redis.
struct LatencyProxy {
    port: u16,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LatencyProxy {
    fn start(upstream: String) -> LatencyProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || std::io::copy(&mut c_in, &mut s_out));
                let (mut s_in, mut c_out, delay) = (server, client, delay.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = s_in.read(&mut buf) {
                        let ms = delay.load(Ordering::Relaxed);
                        if ms > 0 {
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        LatencyProxy { port, delay_ms }
    }

    fn set_delay(&self, ms: u64) {
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_slow_redis_costs_requests_its_timeout_not_its_delay_and_the_breaker_recovers() {
    let Some(url) = redis_url() else { return };
    let upstream = url
        .trim_start_matches("redis://")
        .split(['/', '@'])
        .find(|part| part.contains(':'))
        .expect("host:port in KILN_TEST_REDIS_URL")
        .to_string();
    let proxy = LatencyProxy::start(upstream);
    let p = init(&[]);
    use_online_store(
        &p,
        &format!(
            "type = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"{}\"\n\
             timeout_ms = 250\n[online_store.breaker]\nmin_calls = 5\nopen_for = \"1s\"\nprobes = 1",
            proxy.port,
            unique("kiln-slow")
        ),
    );
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    let server = Server::start(&p.dir, &[]);
    let request = serde_json::json!({
        "feature_service": "driver_activity",
        "entities": {"driver_id": [1001]},
    });
    assert_eq!(post(&server.addr, request.clone()).0, 200);

    // Redis answers 3 s late: every request fails at the 250 ms timeout, then at once while
    // the breaker is open; none waits for Redis.
    proxy.set_delay(3_000);
    let mut took = Vec::new();
    for _ in 0..30 {
        let started = std::time::Instant::now();
        let (status, body) = post(&server.addr, request.clone());
        took.push(started.elapsed());
        assert_eq!(status, 503, "{body}");
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    eprintln!(
        "slow Redis: p50 {:?}, p99 {:?} (timeout 250 ms, delay 3 s)",
        took[took.len() / 2],
        p99
    );
    // The timeout is honoured: a request ends well before the delay, not a speed figure (the
    // margin is a second on a shared machine).
    assert!(
        p99 < std::time::Duration::from_millis(1_250),
        "p99 {p99:?} with a 250 ms timeout"
    );
    let (_, metrics) = http(&server.addr, "GET", "/metrics", None);
    assert!(
        metrics.contains("kiln_circuit_opened_total{dependency=\"online_store\"}"),
        "{metrics}"
    );

    // Redis is fast again: a probe after the breaker's pause closes it.
    proxy.set_delay(0);
    answers_again(&server, &request, "Redis was fast again");
    assert!(server.stop());
}
