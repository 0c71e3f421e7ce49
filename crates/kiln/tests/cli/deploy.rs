//! Rollouts from a real `kiln serve`: `kiln deploy` splits a model's traffic between versions
//! (remote models served by a fake model server in this test, each version answering with its
//! own number), sticky callers keep their version, a header pins one, shadow copies reach their
//! version without changing or delaying the caller's answer, and every routing change is a
//! registry event that a running server picks up and `kiln deploy status` lists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// Calls per version, whether version 3 hangs and whether version 2 fails.
#[derive(Default)]
struct Fake {
    calls: [AtomicUsize; 4],
    hang: AtomicBool,
    fail: AtomicBool,
}

/// A model server whose model `N` answers every row with `N`.
struct FakeVersions {
    state: Arc<Fake>,
    addr: String,
    _runtime: tokio::runtime::Runtime,
}

impl FakeVersions {
    fn start() -> FakeVersions {
        async fn infer(
            State(fake): State<Arc<Fake>>,
            Path(n): Path<usize>,
            Json(body): Json<Value>,
        ) -> (StatusCode, Json<Value>) {
            fake.calls[n].fetch_add(1, Ordering::SeqCst);
            if n == 3 && fake.hang.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
            if n == 2 && fake.fail.load(Ordering::SeqCst) {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "boom"})),
                );
            }
            let rows = body["inputs"][0]["shape"][0].as_u64().expect("shape") as usize;
            (
                StatusCode::OK,
                Json(json!({"outputs": [{
                    "name": "y", "shape": [rows, 1], "datatype": "FP64", "data": vec![n as f64; rows]
                }]})),
            )
        }
        let state = Arc::new(Fake::default());
        let (addr, runtime) = serve_app(
            axum::Router::new()
                .route("/v2/models/{n}/infer", axum::routing::post(infer))
                .with_state(state.clone()),
        );
        FakeVersions {
            state,
            addr,
            _runtime: runtime,
        }
    }

    fn calls(&self, n: usize) -> usize {
        self.state.calls[n].load(Ordering::SeqCst)
    }
}

/// Predict-by-entity for driver 1001 with extra headers; (status, answering version).
fn predict(addr: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let body = json!({"entities": {"driver_id": [1001]}}).to_string();
    let (status, _, body) = http_raw(addr, "POST", "/v1/models/m/predict", &all, body.as_bytes());
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    (status, body)
}

/// The version that answered (the model answers with its own number).
fn answered_by(body: &Value) -> u32 {
    let v: u32 = body["model_version"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a version: {body}"));
    assert_eq!(body["scores"], json!([[f64::from(v)]]), "{body}");
    v
}

fn metric(addr: &str, series: &str) -> f64 {
    let (_, text) = http(addr, "GET", "/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the server routes every request to `version` (it reads the registry every
/// second here).
fn wait_for_version(addr: &str, version: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = (0..5).all(|_| answered_by(&predict(addr, &[]).1) == version);
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "still not routed to v{version}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A project with model `m` of three remote versions served by `fake`.
fn project(fake: &FakeVersions) -> Project {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    for n in 1..=3 {
        let file = format!("v{n}.toml");
        p.write(
            &file,
            &format!(
                "url = \"http://{}/v2/models/{n}/infer\"\nprotocol = \"oip\"\n",
                fake.addr
            ),
        );
        let path = p.dir.join(&file);
        ok(p.run(&[
            "models",
            "register",
            "m",
            "--path",
            path.to_str().expect("utf-8"),
            "--format",
            "remote",
            "--feature-service",
            "driver_activity",
        ]));
    }
    p
}

#[test]
fn deployments_split_pin_and_mirror_traffic_and_every_change_is_an_event() {
    let fake = FakeVersions::start();
    let p = project(&fake);

    // Bad deployments are refused, naming what is wrong.
    for (args, says) in [
        (&["--split", "1=90,2=5"][..], "add up to 95%"),
        (&["--split", "1=90,9=10"], "no version 9"),
        (&["--version", "1", "--shadow", "1"], "named twice"),
        (&["--split", "1=90;2=10"], "not a percentage"),
        (&["--version", "1", "--sticky", "cookie"], "entity"),
    ] {
        let mut all = vec!["deploy", "m"];
        all.extend_from_slice(args);
        let e = fails(p.run(&all));
        assert!(e.contains(says), "{args:?}: {e}");
    }

    ok(p.run(&[
        "deploy",
        "m",
        "--split",
        "1=80,2=20",
        "--sticky",
        "header:x-user",
        "--shadow",
        "3",
        "--reason",
        "try v2 on a fifth",
    ]));
    // A deployed version cannot be archived from under its traffic.
    let e = fails(p.run(&["models", "archive", "m", "--version", "2"]));
    assert!(e.contains("is deployed"), "{e}");

    let server = Server::start(&p.dir, &[("KILN__SERVE__REGISTRY_REFRESH", "1s")]);
    let addr = server.addr.clone();
    let mut routed = 0;

    // Sticky by header: each user keeps one version; the users split about 80/20.
    let mut by_user: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for u in 0..60 {
        let user = format!("user-{u}");
        for _ in 0..3 {
            let (status, body) = predict(&addr, &[("x-user", &user)]);
            assert_eq!(status, 200, "{body}");
            by_user
                .entry(user.clone())
                .or_default()
                .insert(answered_by(&body));
            routed += 1;
        }
    }
    assert!(by_user.values().all(|v| v.len() == 1), "{by_user:?}");
    let on_v2 = by_user.values().filter(|v| v.contains(&2)).count();
    assert!((4..=24).contains(&on_v2), "{on_v2} of 60 users on v2");

    // A header pins a version for testing, whoever the user is; pinned requests are not
    // mirrored.
    let v1_user = by_user
        .iter()
        .find(|(_, v)| v.contains(&1))
        .map(|(u, _)| u.clone())
        .expect("a v1 user");
    let (_, body) = predict(&addr, &[("x-user", &v1_user), ("x-kiln-version", "2")]);
    assert_eq!(answered_by(&body), 2);
    let (status, body) = predict(&addr, &[("x-kiln-version", "two")]);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("x-kiln-version"), "{body}");

    // Without the sticky header a request goes to a random version by weight.
    let mut counts = [0u32; 4];
    for _ in 0..200 {
        let (_, body) = predict(&addr, &[]);
        counts[answered_by(&body) as usize] += 1;
        routed += 1;
    }
    assert_eq!(counts[0] + counts[3], 0, "{counts:?}");
    assert!((10..=80).contains(&counts[2]), "{counts:?}");

    // Every routed request was mirrored to v3, whose answers nobody saw.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.calls(3) < routed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fake.calls(3), routed);
    let shadow_ok = "kiln_inference_requests_total{model=\"m\",version=\"3\",protocol=\"shadow\",outcome=\"ok\"}";
    assert_eq!(metric(&addr, shadow_ok), routed as f64);
    // A hanging shadow version does not hold the caller up.
    fake.state.hang.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (status, body) = predict(&addr, &[("x-user", &v1_user)]);
    assert_eq!((status, answered_by(&body)), (200, 1));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the shadow"
    );
    fake.state.hang.store(false, Ordering::SeqCst);

    // Sticky by entity, deployed while serving: driver 1001 keeps one version.
    ok(p.run(&["deploy", "m", "--sticky", "entity", "--shadow", "none"]));
    std::thread::sleep(Duration::from_millis(2_500));
    let seen: BTreeSet<u32> = (0..20)
        .map(|_| answered_by(&predict(&addr, &[]).1))
        .collect();
    assert_eq!(seen.len(), 1, "driver 1001 moved between {seen:?}");

    // All traffic to v2, live.
    ok(p.run(&["deploy", "m", "--version", "2"]));
    wait_for_version(&addr, 2);

    // Promoting v3 ends the deployment: v3 takes the traffic.
    let out = ok(p.run(&["models", "promote", "m", "--version", "3"]));
    assert!(out.contains("deployment ended"), "{out}");
    wait_for_version(&addr, 3);

    let status: Value =
        serde_json::from_str(&ok(p.run(&["deploy", "status", "m", "-o", "json"]))).expect("json");
    assert_eq!(status["deployment"], Value::Null, "{status}");
    assert_eq!(
        status["routes"],
        json!([{"version": 3, "percent": 100.0, "stage": "production"}])
    );
    let history: Vec<(String, String)> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["change"].as_str().expect("change").to_string(),
                h["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(
        history[0],
        (
            "v1=80%, v2=20%, sticky by header:x-user, shadow v3".into(),
            "try v2 on a fifth".into()
        )
    );
    assert_eq!(history[1].0, "v1=80%, v2=20%, sticky by entity");
    assert_eq!(
        history[2].0, "v2=100%, sticky by entity",
        "stickiness stays as deployed"
    );
    assert!(history[2].1.starts_with("kiln deploy by "), "{history:?}");
    assert_eq!(history[3].0, "v3 promoted to production");
    let text = ok(p.run(&["deploy", "status", "m"]));
    assert!(text.contains("v3 promoted to production"), "{text}");
    let e = fails(p.run(&["deploy", "clear", "m"]));
    assert!(e.contains("no deployment"), "{e}");
}

/// The routing changes of `m`, oldest first: (change, reason).
fn history(p: &Project) -> Vec<(String, String)> {
    let status: Value =
        serde_json::from_str(&ok(p.run(&["deploy", "status", "m", "-o", "json"]))).expect("json");
    status["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["change"].as_str().expect("change").to_string(),
                h["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect()
}

/// Sends requests until `n` in a row satisfy `done(status, answering version)`.
fn drive(addr: &str, what: &str, n: usize, done: impl Fn(u16, Option<u32>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut streak = 0;
    while streak < n {
        assert!(Instant::now() < deadline, "still waiting for {what}");
        let (status, body) = predict(addr, &[]);
        let by = body["model_version"].as_str().and_then(|v| v.parse().ok());
        streak = if done(status, by) { streak + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends requests until `m`'s latest routing change is `change` (a canary's verdict), then
/// until only `then` answers.
fn drive_until_change(p: &Project, addr: &str, change: &str, then: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while history(p).last().map(|h| h.0.as_str()) != Some(change) {
        assert!(
            Instant::now() < deadline,
            "no {change:?} in {:?}",
            history(p)
        );
        for _ in 0..10 {
            predict(addr, &[]);
        }
    }
    drive(addr, &format!("only v{then}"), 10, |status, by| {
        status == 200 && by == Some(then)
    });
}

#[test]
fn canaries_are_rolled_back_when_worse_and_promoted_step_by_step_when_not() {
    let fake = FakeVersions::start();
    let p = project(&fake);
    ok(p.run(&["models", "promote", "m", "--version", "1"]));
    let server = Server::start(&p.dir, &[("KILN__SERVE__REGISTRY_REFRESH", "1s")]);
    let addr = server.addr.clone();

    // v2 fails every call: as soon as both versions have 5 requests, it is rolled back.
    fake.state.fail.store(true, Ordering::SeqCst);
    let e = fails(p.run(&["deploy", "m", "--canary", "2", "--steps", "50,120"]));
    assert!(e.contains("steps"), "{e}");
    ok(p.run(&[
        "deploy",
        "m",
        "--canary",
        "2",
        "--steps",
        "50",
        "--bake",
        "1h",
        "--min-requests",
        "5",
    ]));
    let text = ok(p.run(&["deploy", "status", "m"]));
    assert!(
        text.contains("canary v2 vs v1: step 1 of 1 (50%), 1h bake each"),
        "{text}"
    );
    drive_until_change(&p, &addr, "v1=100%", 1);
    let h = history(&p);
    let last = h.last().expect("a verdict");
    assert_eq!(last.0, "v1=100%", "{h:?}");
    assert!(
        last.1
            .starts_with("canary v2 at 50% rolled back: error rate"),
        "{h:?}"
    );

    // v3 predicts something else than v1: rolled back on the prediction shift.
    // (Latency is not what is judged here: a loaded machine's p99 of 5 requests is noise.)
    ok(p.run(&[
        "deploy",
        "m",
        "--canary",
        "3",
        "--steps",
        "50",
        "--bake",
        "1h",
        "--min-requests",
        "5",
        "--max-latency-ratio",
        "100",
    ]));
    drive_until_change(&p, &addr, "v1=100%", 1);
    let h = history(&p);
    assert!(
        h.last()
            .expect("a verdict")
            .1
            .contains("Kolmogorov-Smirnov distance 1.000"),
        "{h:?}"
    );

    // Allowed to predict differently, v3 bakes through 20% and 50% and is promoted.
    ok(p.run(&[
        "deploy",
        "m",
        "--canary",
        "3",
        "--steps",
        "20,50",
        "--bake",
        "1s",
        "--min-requests",
        "5",
        "--max-prediction-shift",
        "1",
        "--max-latency-ratio",
        "100",
    ]));
    drive_until_change(&p, &addr, "v3 promoted to production", 3);
    let h = history(&p);
    let n = h.len();
    assert!(
        h[n - 3]
            .1
            .starts_with("canary v3 at 20% advanced to 50% after 1s baking"),
        "{h:?}"
    );
    assert!(
        h[n - 2]
            .1
            .starts_with("canary v3 at 50% passed its last step: promoted to production"),
        "{h:?}"
    );
    assert_eq!(h[n - 1].0, "v3 promoted to production");
    let status: Value =
        serde_json::from_str(&ok(p.run(&["deploy", "status", "m", "-o", "json"]))).expect("json");
    assert_eq!(
        status["routes"],
        json!([{"version": 3, "percent": 100.0, "stage": "production"}])
    );
}

#[test]
fn readiness_waits_for_every_deployed_version_to_load() {
    let fake = FakeVersions::start();
    let p = project(&fake);
    ok(p.run(&["deploy", "m", "--split", "1=80,2=20"]));
    // v2's stored descriptor no longer matches its recorded SHA-256: it cannot load.
    let artifact = p.dir.join(".kiln/artifacts/models/m/v2/model.remote.toml");
    let good = std::fs::read(&artifact).expect("artifact");
    std::fs::write(&artifact, b"url = \"http://127.0.0.1:9/\"\n").expect("tamper");
    let server = Server::start(&p.dir, &[("KILN__SERVE__REGISTRY_REFRESH", "1s")]);
    for path in ["/ready", "/v2/health/ready"] {
        let (status, text) = http(&server.addr, "GET", path, None);
        assert_eq!(status, 503, "{path}: {text}");
    }
    let (_, text) = http(&server.addr, "GET", "/ready", None);
    assert!(
        text.contains("models not loaded") && text.contains("m@v2"),
        "{text}"
    );
    // The artifact comes back: readiness loads it again by itself.
    std::fs::write(&artifact, good).expect("restore");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = http(&server.addr, "GET", "/ready", None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn labels_posted_during_a_step_roll_back_a_canary_that_is_further_off() {
    let fake = FakeVersions::start();
    let p = project(&fake);
    ok(p.run(&["models", "promote", "m", "--version", "1"]));
    // Only labels can judge this canary: far too few requests for the traffic gates, and an
    // hour's bake.
    ok(p.run(&[
        "deploy",
        "m",
        "--canary",
        "3",
        "--steps",
        "50",
        "--bake",
        "1h",
        "--min-requests",
        "100000",
        "--min-labels",
        "5",
    ]));
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();
    // Every answer gets its label, 1.0: v1 predicts it exactly, v3 (predicting 3.0) is off.
    let mut answered = [0usize; 4];
    while answered[1] < 6 || answered[3] < 6 {
        assert!(answered.iter().sum::<usize>() < 200, "{answered:?}");
        let (status, body) = predict(&addr, &[]);
        assert_eq!(status, 200, "{body}");
        answered[answered_by(&body) as usize] += 1;
        let id = body["request_id"].as_str().expect("a request id");
        let (status, label) = post_to(
            &addr,
            "/v1/feedback",
            json!({"model": "m", "request_id": id, "label": 1.0}),
        );
        assert_eq!(status, 200, "{label}");
    }
    drive_until_change(&p, &addr, "v1=100%", 1);
    let h = history(&p);
    let last = h.last().expect("a verdict");
    assert!(
        last.1
            .starts_with("canary v3 at 50% rolled back: RMSE 2.0000 vs 0.0000"),
        "{h:?}"
    );
}
