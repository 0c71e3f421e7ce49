//! Model resilience from a real `kiln serve`, with a remote model served by a fake model server
//! in this test (a real HTTP server on a loopback port) that can be made to fail, hang or
//! recover: retries, timeouts, the breaker opening and closing through half-open, the fallback
//! chain (cached prediction, then another model), the bulkhead shedding with 429, and no
//! prediction-log record lost on the way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const OK: u8 = 0;
/// Answers 500 once, then behaves.
const FAIL_ONCE: u8 = 1;
/// Holds every request for 20 s.
const HANG: u8 = 2;

#[derive(Default)]
struct Fake {
    mode: AtomicU8,
    calls: AtomicUsize,
}

/// A model server speaking the Open Inference Protocol: the output of each row is the sum of
/// its inputs.
pub(crate) struct FakeModel {
    state: Arc<Fake>,
    pub(crate) addr: String,
    _runtime: tokio::runtime::Runtime,
}

impl FakeModel {
    pub(crate) fn start() -> FakeModel {
        async fn infer(
            State(fake): State<Arc<Fake>>,
            Json(body): Json<Value>,
        ) -> (StatusCode, Json<Value>) {
            fake.calls.fetch_add(1, Ordering::SeqCst);
            match fake.mode.load(Ordering::SeqCst) {
                FAIL_ONCE => {
                    fake.mode.store(OK, Ordering::SeqCst);
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": "boom"})),
                    );
                }
                HANG => tokio::time::sleep(Duration::from_secs(20)).await,
                _ => {}
            }
            let t = &body["inputs"][0];
            let width = t["shape"][1].as_u64().expect("shape") as usize;
            let data: Vec<f64> = t["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|v| v.as_f64().unwrap_or(0.0))
                .collect();
            let sums: Vec<f64> = data.chunks(width).map(|r| r.iter().sum()).collect();
            let n = sums.len();
            (
                StatusCode::OK,
                Json(
                    json!({"outputs": [{"name": "y", "shape": [n, 1], "datatype": "FP64", "data": sums}]}),
                ),
            )
        }
        let state = Arc::new(Fake::default());
        let (addr, runtime) = serve_app(
            axum::Router::new()
                .route("/v2/models/m/infer", axum::routing::post(infer))
                .with_state(state.clone()),
        );
        FakeModel {
            state,
            addr,
            _runtime: runtime,
        }
    }

    fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    pub(crate) fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

pub(crate) fn infer(addr: &str, model: &str, rows: &[[f64; 3]]) -> (u16, Value) {
    post_to(
        addr,
        &format!("/v2/models/{model}/infer"),
        json!({"inputs": [{"name": "x", "shape": [rows.len(), 3], "datatype": "FP64", "data": rows}]}),
    )
}

pub(crate) fn metric(addr: &str, series: &str) -> Option<f64> {
    let (_, text) = http(addr, "GET", "/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Keeps the id of an answered request.
fn note(answered: &mut Vec<String>, status: u16, body: &Value) {
    if status == 200 {
        answered.push(body["id"].as_str().expect("an id").to_string());
    }
}

/// Logged prediction rows by request id.
fn logged_requests(dir: &std::path::Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let batch = read_parquet(&p);
                let ids = batch.column_by_name("request_id").expect("request_id");
                let ids = ids
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .expect("utf8");
                for i in 0..arrow_array::Array::len(ids) {
                    *out.entry(ids.value(i).to_string()).or_default() += 1;
                }
            }
        }
    }
    out
}

#[test]
fn a_failing_remote_model_is_retried_timed_out_broken_and_answered_by_its_fallbacks() {
    let fake = FakeModel::start();
    let p = init(&[]);
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    register_ranker(&p);
    p.write(
        "remote.toml",
        &format!(
            "url = \"http://{}/v2/models/m/infer\"\nprotocol = \"oip\"\n",
            fake.addr
        ),
    );
    // A bad descriptor is refused at registration, naming the field.
    p.write("bad.toml", "url = \"ftp://models/m\"\n");
    let (bad, remote) = (p.dir.join("bad.toml"), p.dir.join("remote.toml"));
    let (bad, remote) = (
        bad.to_str().expect("utf-8"),
        remote.to_str().expect("utf-8"),
    );
    let e = fails(p.run(&[
        "models",
        "register",
        "scorer",
        "--path",
        bad,
        "--format",
        "remote",
        "--feature-service",
        "driver_activity",
    ]));
    assert!(e.contains("url \"ftp://models/m\""), "{e}");
    for name in ["scorer", "bare"] {
        ok(p.run(&[
            "models",
            "register",
            name,
            "--path",
            remote,
            "--format",
            "remote",
            "--feature-service",
            "driver_activity",
        ]));
    }
    let config = p.read("kiln.toml");
    p.write(
        "kiln.toml",
        &format!(
            "{config}
[serve.resilience]
timeout_ms = 400
retries = 1
retry_backoff_ms = 5

[serve.models.scorer.resilience]
fallback = [\"cache\", \"model:ranker\"]
breaker = {{ window = \"30s\", min_calls = 4, failure_rate = 0.5, open_for = \"3s\", probes = 1 }}

[serve.models.bare.resilience]
timeout_ms = 3000
retries = 0
max_concurrency = 1
max_queue = 0
breaker = {{ enabled = false }}
"
        ),
    );
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();
    let mut answered = Vec::new();
    // The remote model answers through Kiln: each row's output is the sum of its inputs.
    let seen = [[0.5, 0.25, 10.0], [0.25, 0.25, 3.0]];
    let (status, body) = infer(&addr, "scorer", &seen);
    note(&mut answered, status, &body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([10.75, 3.5]));
    assert!(
        body.get("parameters").is_none(),
        "answered by the model: {body}"
    );

    // A 500 is retried once: the caller never sees it.
    let before = fake.calls();
    fake.set(FAIL_ONCE);
    let (status, body) = infer(&addr, "scorer", &[[1.0, 1.0, 1.0]]);
    note(&mut answered, status, &body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.calls() - before, 2, "one failure, one retry");
    assert_eq!(
        metric(&addr, "kiln_retries_total{model=\"scorer\",version=\"1\"}"),
        Some(1.0)
    );

    // The model hangs. Rows it scored before come from the cache, the others from the fallback
    // model, each after the timeout, not after the hang.
    fake.set(HANG);
    let started = Instant::now();
    let (status, body) = infer(&addr, "scorer", &seen);
    note(&mut answered, status, &body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited out the hang"
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["parameters"]["kiln_fallback"],
        json!("cache"),
        "{body}"
    );
    assert!(
        body["parameters"]["kiln_fallback_reason"]
            .as_str()
            .expect("a reason")
            .contains("no answer within 400 ms"),
        "{body}"
    );
    assert_eq!(body["outputs"][0]["data"], json!([10.75, 3.5]));
    let unseen = [[0.9, 0.1, 7.0]];
    let (_, direct) = infer(&addr, "ranker", &unseen);
    let (status, body) = infer(&addr, "scorer", &unseen);
    note(&mut answered, status, &body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["parameters"]["kiln_fallback"],
        json!("model:ranker@v1"),
        "{body}"
    );
    assert_eq!(body["outputs"][0]["data"], direct["outputs"][0]["data"]);

    // Enough failures open the breaker: the model is no longer called, answers come at once.
    for _ in 0..2 {
        let (status, body) = infer(&addr, "scorer", &unseen);
        note(&mut answered, status, &body);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        metric(&addr, "kiln_circuit_state{dependency=\"model:scorer@v1\"}"),
        Some(2.0),
        "open"
    );
    let calls_when_open = fake.calls();
    let (status, body) = post_to(
        &addr,
        "/v1/models/scorer/predict",
        json!({"entities": {"driver_id": [1001]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["fallback"]["source"],
        json!("model:ranker@v1"),
        "{body}"
    );
    assert!(
        body["fallback"]["reason"]
            .as_str()
            .expect("reason")
            .contains("not called, circuit open"),
        "{body}"
    );
    answered.push(body["request_id"].as_str().expect("id").to_string());
    assert_eq!(fake.calls(), calls_when_open, "not called while open");
    assert!(
        metric(
            &addr,
            "kiln_fallback_total{model=\"scorer\",version=\"1\",source=\"cache\"}"
        ) == Some(1.0)
    );

    // A model without fallbacks answers 504 naming its timeout; its bulkhead sheds a second
    // concurrent call with 429.
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || infer(&addr, "bare", &[[1.0, 2.0, 3.0]]))
        })
        .collect();
    let mut results: Vec<(u16, Value)> =
        calls.into_iter().map(|c| c.join().expect("call")).collect();
    results.sort_by_key(|r| r.0);
    assert_eq!(results[0].0, 429, "{:?}", results[0].1);
    assert!(
        results[0].1["error"]
            .as_str()
            .expect("error")
            .contains("bulkhead is full")
    );
    assert_eq!(results[1].0, 504, "{:?}", results[1].1);
    assert!(
        results[1].1["error"]
            .as_str()
            .expect("error")
            .contains("bare@v1: no answer within 3000 ms"),
        "{:?}",
        results[1].1
    );

    // The model recovers: after open_for (3 s, spent mostly waiting on `bare` above) a probe
    // goes through and closes the breaker.
    fake.set(OK);
    std::thread::sleep(Duration::from_millis(3100));
    let (status, body) = infer(&addr, "scorer", &unseen);
    note(&mut answered, status, &body);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("parameters").is_none(),
        "answered by the model again: {body}"
    );
    assert_eq!(body["outputs"][0]["data"], json!([8.0]));
    assert_eq!(
        metric(&addr, "kiln_circuit_state{dependency=\"model:scorer@v1\"}"),
        Some(0.0),
        "closed"
    );

    // Every answered request, fallbacks included, is in the prediction log.
    assert!(server.stop(), "kiln serve exits cleanly on SIGTERM");
    let logged = logged_requests(&p.dir.join(".kiln/logs/predictions"));
    for id in &answered {
        assert!(logged.contains_key(id), "{id} answered but not logged");
    }
}

/// POST an OIP request with an API key.
fn infer_as(addr: &str, key: &str, model: &str, rows: &[[f64; 3]]) -> (u16, String, Value) {
    let body = json!({"inputs": [{"name": "x", "shape": [rows.len(), 3], "datatype": "FP64", "data": rows}]});
    let (status, head, body) = http_raw(
        addr,
        "POST",
        &format!("/v2/models/{model}/infer"),
        &[("Content-Type", "application/json"), ("x-api-key", key)],
        body.to_string().as_bytes(),
    );
    let body = serde_json::from_slice(&body).expect("a JSON answer");
    (status, head, body)
}

/// Registers `name` as a remote model served by `fake`, with inputs a, b and c.
pub(crate) fn register_fake(p: &Project, fake: &FakeModel, name: &str) {
    p.write(
        "remote.toml",
        &format!("url = \"http://{}/v2/models/m/infer\"\n", fake.addr),
    );
    let remote = p.dir.join("remote.toml");
    ok(p.run(&[
        "models",
        "register",
        name,
        "--path",
        remote.to_str().expect("utf-8"),
        "--format",
        "remote",
        "--features",
        "a,b,c",
    ]));
}

#[test]
fn keys_are_rate_limited_apart_and_a_draining_server_finishes_what_it_started() {
    let fake = FakeModel::start();
    let p = init(&[]);
    ok(p.run(&["apply"]));
    register_fake(&p, &fake, "slow");
    let config = p.read("kiln.toml");
    p.write(
        "kiln.toml",
        &format!(
            "{config}
[serve.rate_limit]
per_second = 1
burst = 2
keys.gold = {{ per_second = 100, burst = 100 }}

[serve.models.slow.resilience]
timeout_ms = 1500
retries = 0
fallback = [\"value:0.5\"]
"
        ),
    );
    let mut server = Server::start(&p.dir, &[("KILN__SERVE__DRAIN_DELAY", "2s")]);
    let addr = server.addr.clone();
    let row = [[1.0, 2.0, 3.0]];

    // Each key has its own bucket: alice's third request in a row is refused, bob and the
    // key with its own rate are not; health and metrics are never limited.
    let statuses: Vec<u16> = (0..3)
        .map(|_| infer_as(&addr, "alice-key", "slow", &row).0)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    let (_, head, body) = infer_as(&addr, "alice-key", "slow", &row);
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let message = body["error"].as_str().expect("error");
    assert!(
        message.contains("x-api-key alic…: 1 requests/s (burst 2)"),
        "{message}"
    );
    assert_eq!(infer_as(&addr, "bob", "slow", &row).0, 200);
    for _ in 0..5 {
        let (status, _, body) = infer_as(&addr, "gold", "slow", &row);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["data"], json!([6.0]));
    }
    assert_eq!(metric(&addr, "kiln_rate_limited_total"), Some(2.0));

    // Shutdown while a request is in flight (the model hangs; its timeout and fallback answer
    // it after 1.5 s): readiness turns 503 at once, the server keeps serving through the drain
    // delay, and the request in flight is answered before the process exits.
    fake.set(HANG);
    let in_flight = {
        let addr = addr.clone();
        std::thread::spawn(move || infer_as(&addr, "gold", "slow", &[[1.0, 2.0, 3.0]]))
    };
    std::thread::sleep(Duration::from_millis(200));
    terminate(&server.child);
    std::thread::sleep(Duration::from_millis(300));
    let (status, text) = http(&addr, "GET", "/ready", None);
    assert_eq!(
        (status, text.as_str()),
        (503, "draining: the server is shutting down")
    );
    let (status, _) = http(&addr, "GET", "/v2", None);
    assert_eq!(status, 200, "still serving while draining");
    let (status, _, body) = in_flight.join().expect("the request in flight");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["parameters"]["kiln_fallback"],
        json!("value"),
        "{body}"
    );
    assert_eq!(body["outputs"][0]["data"], json!([0.5]));
    let exit = server.child.wait().expect("kiln serve exits");
    assert!(exit.success(), "{exit}");
    let logged = logged_requests(&p.dir.join(".kiln/logs/predictions"));
    let id = body["id"].as_str().expect("an id");
    assert!(logged.contains_key(id), "the drained request was logged");
}

#[test]
fn a_prediction_cache_answers_repeated_rows_without_calling_the_model() {
    let fake = FakeModel::start();
    let p = init(&[]);
    register_fake(&p, &fake, "cached");
    let config = p.read("kiln.toml");
    p.write(
        "kiln.toml",
        &format!("{config}\n[serve.models.cached.resilience]\nprediction_cache = {{ values = 1000, ttl = \"1m\" }}\n"),
    );
    let server = Server::start(&p.dir, &[]);
    let rows = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]];
    for _ in 0..3 {
        let (status, body) = infer(&server.addr, "cached", &rows);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["data"], json!([6.0, 1.5]));
    }
    assert_eq!(fake.calls(), 1, "answered from the cache twice");
    let (_, body) = infer(&server.addr, "cached", &[[1.0, 2.0, 4.0]]);
    assert_eq!(body["outputs"][0]["data"], json!([7.0]));
    assert_eq!(fake.calls(), 2, "other rows call the model");
    let series = |result: &str| {
        metric(
            &server.addr,
            &format!(
                "kiln_prediction_cache_total{{model=\"cached\",version=\"1\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!((series("hit"), series("miss")), (Some(2.0), Some(2.0)));
}
