//! The alert engine against a real local webhook receiver (axum on 127.0.0.1:0) and a scripted
//! signal provider: fire after `for`, one notification per transition (generic and PagerDuty
//! bodies checked field by field), no re-notification for a flap inside the hysteresis band,
//! resolve; retries of a failing webhook, honouring `Retry-After`; a webhook that never answers
//! does not hold up evaluation; queued notifications are delivered at close; alert state
//! survives a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kiln_monitor::alerts::{
    AlertEngine, AlertState, AlertsConfig, Change, ProviderError, SignalKind, SignalQuery, Signals,
    Subject,
};
use kiln_monitor::{Event, EventBus, bus};
use serde_json::{Value, json};

/// 2026-01-31T12:00:00Z.
const T0: i64 = 1_769_860_800_000_000;
const SEC: i64 = 1_000_000;

/// What the receiver got: path, `Authorization` header, body.
type Received = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

#[derive(Clone, Default)]
struct Receiver {
    received: Received,
    /// `/flaky` answers 500 to its first request, `/busy` 429 with `Retry-After: 1`.
    flaky_calls: Arc<Mutex<u32>>,
    /// When each request arrived.
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
}

async fn hook(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    r.arrivals
        .lock()
        .expect("lock")
        .push((name.clone(), Instant::now()));
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_str(&body).expect("webhook bodies are JSON");
    r.received
        .lock()
        .expect("lock")
        .push((name.clone(), auth, body));
    let first = || {
        let mut calls = r.flaky_calls.lock().expect("lock");
        *calls += 1;
        *calls == 1
    };
    match name.as_str() {
        "hang" => std::future::pending().await,
        "flaky" if first() => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "busy" if first() => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            StatusCode::OK.into_response()
        }
        "pd" => StatusCode::ACCEPTED.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// Starts the receiver; returns its base URL.
async fn receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/{name}", post(hook))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), r)
}

fn bodies(r: &Receiver, path: &str) -> Vec<(Option<String>, Value)> {
    r.received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, a, b)| (a.clone(), b.clone()))
        .collect()
}

/// A provider whose measurements the test sets.
fn scripted() -> (
    Arc<Mutex<Signals>>,
    Arc<dyn kiln_monitor::alerts::SignalProvider>,
) {
    let current = Arc::new(Mutex::new(Signals::new()));
    let read = current.clone();
    let provider = move |_: &[SignalQuery], _: i64| -> Result<Signals, ProviderError> {
        Ok(read.lock().expect("lock").clone())
    };
    (current, Arc::new(provider))
}

fn p99() -> SignalQuery {
    SignalQuery::windowed(SignalKind::LatencyP99, Duration::from_secs(300))
}

fn error_rate() -> SignalQuery {
    SignalQuery::windowed(SignalKind::ErrorRate, Duration::from_secs(300))
}

fn config(text: &str) -> AlertsConfig {
    toml::from_str(text).expect("config parses")
}

/// Polls `check` until it holds or `deadline` passes; returns whether it held.
async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn fires_after_for_notifies_once_per_transition_and_resolves() {
    let (base, r) = receiver().await;
    let plan = config(&format!(
        r#"
source = "kiln-test"
[webhooks.team]
kind = "generic"
url = "{base}/generic"
headers = {{ Authorization = "Bearer t0ken" }}
[webhooks.oncall]
kind = "pagerduty"
url = "{base}/pd"
routing_key_env = "PD_KEY"

[[rules]]
name = "ranker-latency"
kind = "latency_p99"
models = ["ranker"]
threshold = 0.25
resolve_threshold = 0.2
for = "60s"
severity = "critical"
runbook = "https://runbooks.example/latency-p99"
labels = {{ team = "ranking" }}
"#
    ))
    .validate(&|name| (name == "PD_KEY").then(|| "ROUTE-KEY".to_string()))
    .expect("valid");
    let bus = EventBus::new();
    let mut events = bus.subscribe("test", 16, bus::all);
    let (signals, provider) = scripted();
    let engine = AlertEngine::new(plan, provider, bus).expect("engine");

    let script = [
        (0, 0.30, None), // pending
        (30, 0.40, None),
        (60, 0.31, Some(Change::Firing)), // held for 60 s
        (90, 0.22, None),                 // inside the band: still firing, silent
        (120, 0.30, None),
        (150, 0.21, None),
        (180, 0.10, Some(Change::Resolved)),
        (210, 0.10, None),
    ];
    for (t, value, expect) in script {
        signals
            .lock()
            .expect("lock")
            .set(p99(), Subject::model("ranker"), value);
        // Another model is not selected by the rule.
        signals
            .lock()
            .expect("lock")
            .set(p99(), Subject::model("other"), 9.0);
        let got = engine.tick_at(T0 + t * SEC).await.expect("tick");
        let got: Vec<Change> = got.iter().map(|t| t.change).collect();
        assert_eq!(got, expect.into_iter().collect::<Vec<_>>(), "at {t} s");
    }

    let delivered = eventually(Duration::from_secs(10), || {
        engine.stats().notifiers.iter().all(|n| n.sent == 2)
    })
    .await;
    assert!(delivered, "{:?}", engine.stats());
    for n in engine.stats().notifiers {
        assert_eq!((n.failed, n.dropped, n.retried), (0, 0, 0), "{n:?}");
    }

    let generic = bodies(&r, "generic");
    assert_eq!(generic.len(), 2, "one per transition: {generic:?}");
    assert_eq!(generic[0].0.as_deref(), Some("Bearer t0ken"));
    let fire = &generic[0].1;
    assert_eq!(fire["version"], 1);
    assert_eq!(fire["source"], "kiln-test");
    assert_eq!(fire["rule"], "ranker-latency");
    assert_eq!(fire["kind"], "latency_p99");
    assert_eq!(fire["subject"], "model=ranker");
    assert_eq!(fire["state"], "firing");
    assert_eq!(fire["repeat"], false);
    assert_eq!(fire["value"], 0.31);
    assert_eq!(fire["threshold"], 0.25);
    assert_eq!(fire["resolve_threshold"], 0.2);
    assert_eq!(fire["severity"], "critical");
    assert_eq!(fire["runbook"], "https://runbooks.example/latency-p99");
    assert_eq!(fire["started_at"], "2026-01-31T12:01:00Z");
    assert_eq!(fire["resolved_at"], Value::Null);
    assert_eq!(fire["dedup_key"], "kiln/ranker-latency/model=ranker");
    assert_eq!(
        fire["labels"],
        json!({"model": "ranker", "team": "ranking"})
    );
    assert_eq!(
        fire["summary"],
        "[FIRING] ranker-latency: latency_p99 of model=ranker is 0.31 (above threshold 0.25)"
    );
    let resolve = &generic[1].1;
    assert_eq!(resolve["state"], "resolved");
    assert_eq!(resolve["value"], 0.1);
    assert_eq!(resolve["started_at"], "2026-01-31T12:01:00Z");
    assert_eq!(resolve["resolved_at"], "2026-01-31T12:03:00Z");

    let pd = bodies(&r, "pd");
    assert_eq!(pd.len(), 2, "{pd:?}");
    assert_eq!(pd[0].0, None, "generic headers are not sent to PagerDuty");
    let trigger = &pd[0].1;
    assert_eq!(trigger["routing_key"], "ROUTE-KEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "kiln/ranker-latency/model=ranker");
    let payload = &trigger["payload"];
    assert_eq!(payload["summary"], fire["summary"]);
    assert_eq!(payload["source"], "kiln-test");
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["timestamp"], "2026-01-31T12:01:00Z");
    assert_eq!(payload["component"], "ranker");
    assert_eq!(payload["custom_details"]["value"], 0.31);
    assert_eq!(payload["custom_details"]["threshold"], 0.25);
    assert_eq!(payload["custom_details"]["team"], "ranking");
    assert_eq!(
        trigger["links"],
        json!([{"href": "https://runbooks.example/latency-p99", "text": "Runbook: ranker-latency"}])
    );
    assert_eq!(
        pd[1].1,
        json!({"routing_key": "ROUTE-KEY", "event_action": "resolve", "dedup_key": "kiln/ranker-latency/model=ranker"})
    );

    let mut seen = Vec::new();
    while let Ok(Event::Alert(a)) = events.rx.try_recv() {
        seen.push((a.state, a.subject.clone(), a.severity, a.threshold));
    }
    assert_eq!(
        seen,
        vec![
            ("firing", "model=ranker".to_string(), "critical", 0.25),
            ("resolved", "model=ranker".to_string(), "critical", 0.2),
        ]
    );
    let states = engine.alerts();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state, AlertState::Resolved);
    assert_eq!(
        serde_json::to_value(&states[0]).expect("serializes")["resolved_at"],
        "2026-01-31T12:03:00Z"
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_the_same_body() {
    let (base, r) = receiver().await;
    let plan = config(&format!(
        r#"
[webhooks.flaky]
kind = "generic"
url = "{base}/flaky"
backoff = "10ms"
max_backoff = "50ms"
max_attempts = 3

[[rules]]
name = "errors"
kind = "error_rate"
threshold = 0.05
"#
    ))
    .validate(&|_| None)
    .expect("valid");
    let (signals, provider) = scripted();
    let engine = AlertEngine::new(plan, provider, EventBus::new()).expect("engine");
    signals
        .lock()
        .expect("lock")
        .set(error_rate(), Subject::model("fraud"), 0.5);
    assert_eq!(engine.tick_at(T0).await.expect("tick").len(), 1);

    let delivered = eventually(Duration::from_secs(10), || {
        engine.stats().notifiers[0].sent == 1
    })
    .await;
    let stats = engine.stats().notifiers[0].clone();
    assert!(delivered, "{stats:?}");
    assert_eq!((stats.retried, stats.failed, stats.dropped), (1, 0, 0));
    let got = bodies(&r, "flaky");
    assert_eq!(got.len(), 2, "the 500, then the 200");
    assert_eq!(got[0].1, got[1].1, "a retry resends the same body");
    assert_eq!(got[0].1["subject"], "model=fraud");
}

#[tokio::test]
async fn a_webhook_that_never_answers_does_not_hold_up_evaluation() {
    let (base, r) = receiver().await;
    let plan = config(&format!(
        r#"
interval = "20ms"
[webhooks.stuck]
kind = "generic"
url = "{base}/hang"
timeout = "100ms"
max_attempts = 2
backoff = "10ms"
queue_capacity = 1

[[rules]]
name = "errors"
kind = "error_rate"
threshold = 0.05
"#
    ))
    .validate(&|_| None)
    .expect("valid");
    let (signals, provider) = scripted();
    for m in ["a", "b", "c", "d", "e"] {
        signals
            .lock()
            .expect("lock")
            .set(error_rate(), Subject::model(m), 0.5);
    }
    let engine = AlertEngine::new(plan, provider, EventBus::new()).expect("engine");
    let running = engine.spawn();

    // Five alerts fire at once into a queue of one (one more may be in flight): the rest are
    // dropped, counted, and evaluation goes on while the webhook hangs.
    let evaluating = eventually(Duration::from_secs(10), || engine.stats().evaluations >= 10).await;
    assert!(evaluating, "{:?}", engine.stats());
    let stats = engine.stats();
    assert_eq!(stats.firing, 5);
    assert!(stats.notifiers[0].dropped >= 3, "{stats:?}");

    // The first notification times out on each attempt and is given up.
    let gave_up = eventually(Duration::from_secs(10), || {
        engine.stats().notifiers[0].failed >= 1
    })
    .await;
    let stats = engine.stats();
    assert!(gave_up, "{stats:?}");
    assert_eq!(stats.notifiers[0].sent, 0);
    assert!(stats.notifiers[0].retried >= 1, "{stats:?}");
    assert!(!bodies(&r, "hang").is_empty());

    // It still resolves on time.
    for m in ["a", "b", "c", "d", "e"] {
        signals
            .lock()
            .expect("lock")
            .set(error_rate(), Subject::model(m), 0.0);
    }
    let resolved = eventually(Duration::from_secs(10), || engine.stats().firing == 0).await;
    assert!(resolved, "{:?}", engine.stats());
    running.abort();
}

#[tokio::test]
async fn a_failing_provider_skips_the_evaluation_and_is_counted() {
    let plan = config(
        r#"
[[rules]]
name = "errors"
kind = "error_rate"
threshold = 0.05
"#,
    )
    .validate(&|_| None)
    .expect("valid");
    let provider = |_: &[SignalQuery], _: i64| -> Result<Signals, ProviderError> {
        Err("the prediction log is not open".into())
    };
    let engine = AlertEngine::new(plan, Arc::new(provider), EventBus::new()).expect("engine");
    let err = engine.tick_at(T0).await.expect_err("provider failed");
    assert!(
        err.to_string().contains("prediction log is not open"),
        "{err}"
    );
    let stats = engine.stats();
    assert_eq!((stats.evaluations, stats.provider_errors), (0, 1));
}

/// An engine with one error-rate rule ("errors", above 0.05) notifying `webhook` (TOML of one
/// `[webhooks.NAME]` table), its state kept in `state_file` if given.
fn error_rate_engine(
    webhook: &str,
    state_file: Option<&std::path::Path>,
    provider: Arc<dyn kiln_monitor::alerts::SignalProvider>,
) -> Arc<AlertEngine> {
    let mut c = config(&format!(
        "{webhook}\n[[rules]]\nname = \"errors\"\nkind = \"error_rate\"\nthreshold = 0.05\n"
    ));
    c.state_file = state_file.map(|f| f.display().to_string());
    let plan = c.validate(&|_| None).expect("valid");
    AlertEngine::new(plan, provider, EventBus::new()).expect("engine")
}

#[tokio::test]
async fn a_receivers_retry_after_is_waited_for() {
    let (base, r) = receiver().await;
    let (signals, provider) = scripted();
    let webhook = format!(
        "[webhooks.busy]\nkind = \"generic\"\nurl = \"{base}/busy\"\n\
         backoff = \"10ms\"\nmax_backoff = \"20ms\"\nmax_attempts = 3\n"
    );
    let engine = error_rate_engine(&webhook, None, provider);
    signals
        .lock()
        .expect("lock")
        .set(error_rate(), Subject::model("fraud"), 0.5);
    assert_eq!(engine.tick_at(T0).await.expect("tick").len(), 1);
    let delivered = eventually(Duration::from_secs(10), || {
        engine.stats().notifiers[0].sent == 1
    })
    .await;
    assert!(delivered, "{:?}", engine.stats());
    let at: Vec<Instant> = r
        .arrivals
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(at.len(), 2, "the 429, then the retry");
    // The back-off alone would have retried within 20 ms; the receiver asked for a second.
    assert!(
        at[1] - at[0] >= Duration::from_millis(990),
        "retried after {:?}",
        at[1] - at[0]
    );
}

#[tokio::test]
async fn closing_delivers_what_is_queued_and_refuses_the_rest() {
    let (base, r) = receiver().await;
    let (signals, provider) = scripted();
    let webhook = format!("[webhooks.slow]\nkind = \"generic\"\nurl = \"{base}/slow\"\n");
    let engine = error_rate_engine(&webhook, None, provider);
    for m in ["a", "b", "c"] {
        signals
            .lock()
            .expect("lock")
            .set(error_rate(), Subject::model(m), 0.5);
    }
    assert_eq!(engine.tick_at(T0).await.expect("tick").len(), 3);
    // Each takes 200 ms to deliver; closing waits for all three.
    assert_eq!(engine.close(Duration::from_secs(10)).await, 0);
    assert_eq!(bodies(&r, "slow").len(), 3);
    let stats = engine.stats().notifiers[0].clone();
    assert_eq!((stats.sent, stats.queued), (3, 0), "{stats:?}");
    // After closing, a new transition is dropped and counted, not sent.
    for m in ["a", "b", "c"] {
        signals
            .lock()
            .expect("lock")
            .set(error_rate(), Subject::model(m), 0.0);
    }
    assert_eq!(engine.tick_at(T0 + SEC).await.expect("tick").len(), 3);
    assert_eq!(engine.stats().notifiers[0].dropped, 3);
}

#[tokio::test]
async fn alert_state_survives_a_restart() {
    let (base, r) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("alerts").join("state.json");
    let webhook = format!("[webhooks.team]\nkind = \"generic\"\nurl = \"{base}/team\"\n");
    let (signals, provider) = scripted();
    let start = || error_rate_engine(&webhook, Some(&state), provider.clone());
    let set = |v: f64| {
        signals
            .lock()
            .expect("lock")
            .set(error_rate(), Subject::model("fraud"), v);
    };
    set(0.5);
    let first = start();
    assert_eq!(first.tick_at(T0).await.expect("tick").len(), 1);
    assert_eq!(first.close(Duration::from_secs(10)).await, 0);
    drop(first);
    assert!(state.exists(), "the state file is written");

    // Restarted: still firing, so nothing is announced again...
    let second = start();
    let alerts = second.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Firing);
    assert!(
        second
            .tick_at(T0 + 60 * SEC)
            .await
            .expect("tick")
            .is_empty()
    );
    // ...and when it recovers, the resolve goes out once.
    set(0.0);
    let t = second.tick_at(T0 + 120 * SEC).await.expect("tick");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].change, Change::Resolved);
    assert_eq!(
        t[0].started_at, T0,
        "the episode started before the restart"
    );
    assert_eq!(second.close(Duration::from_secs(10)).await, 0);
    let states: Vec<Value> = bodies(&r, "team")
        .into_iter()
        .map(|(_, b)| b["state"].clone())
        .collect();
    assert_eq!(states, [json!("firing"), json!("resolved")]);

    // A damaged state file is set aside and the engine starts afresh.
    std::fs::write(&state, "{ not json").expect("write");
    let third = start();
    assert!(third.alerts().is_empty());
    assert!(state.with_extension("unreadable").exists());
}
