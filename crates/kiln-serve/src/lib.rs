//! Kiln's serving process: HTTP in front of the transport-agnostic feature core.
//!
//! Handlers are thin adapters: they parse the wire format into a core request, call the core
//! (`kiln_features::online`), and encode the answer. Errors are mapped to HTTP status codes in
//! one place ([`error`]). Model endpoints: the Open Inference Protocol under `/v2` (REST, JSON
//! tensors) and predict-by-entity under `/v1/models`, over the transport-agnostic
//! [`inference`] core.
//!
//! `GET /metrics` exports Prometheus metrics ([`metrics`]): inference outcomes and latency,
//! queue vs compute time, batch sizes, saturation, feature look-ups by status, monitoring and
//! process metrics. Every scored request is published on the server's event bus ([`monitor`]),
//! where the prediction log and the label-feedback index pick it up; `POST /v1/feedback` joins
//! labels to predictions and `GET /v1/models/{name}/performance` reports what they add up to;
//! live drift compares each version's recent traffic with its reference on a schedule
//! (`GET /v1/models/{name}/drift`).
//! Every request is traced ([`trace`]): spans for the request, inference, feature fetch, queue
//! and batch, exported over OTLP when the binary installs an exporter, free when it does not.
//!
//! The serving state holds the registry as a [`kiln_features::online::Catalog`] snapshot
//! behind an `RwLock<Arc<_>>`: requests clone the `Arc` and never hold the lock across an
//! `.await`; a background task replays new registry events and swaps the snapshot, so `kiln
//! apply` from another process is picked up without a restart.

mod alerts;
pub mod batching;
pub mod cache;
mod drift;
pub mod error;
mod feast;
mod feedback;
pub mod grpc;
pub mod inference;
mod json;
pub mod metrics;
pub mod monitor;
mod oip;
mod predict;
mod push;
mod remote;
pub mod resilience;
pub mod rollout;
mod state;
pub mod tensor;
pub mod trace;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use batching::BatchConfig;
pub use feast::encode_response;
pub use monitor::MonitorOptions;
pub use state::{ServeOptions, ServeState};

/// The HTTP routes. Install the process's tracing subscriber first: the tracing middleware is
/// only added when it records request spans ([`trace::enabled`]).
pub fn router(state: ServeState) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .route("/get-online-features", post(feast::get_online_features))
        // Open Inference Protocol (KServe V2), REST.
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{name}", get(oip::model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(oip::model_metadata),
        )
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(oip::model_ready),
        )
        .route("/v2/models/{name}/infer", post(oip::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(oip::infer),
        )
        .route("/v2/repository/index", post(oip::repository_index))
        .route(
            "/v2/repository/models/{name}/load",
            post(oip::repository_load),
        )
        .route(
            "/v2/repository/models/{name}/unload",
            post(oip::repository_unload),
        )
        // Predict by entity: features from the online store, then the model.
        .route("/v1/models/{name}/predict", post(predict::predict))
        // Labels for logged predictions, and the performance they add up to.
        .route("/v1/feedback", post(feedback::post_feedback))
        .route("/v1/models/{name}/performance", get(feedback::performance))
        // Live drift per model version.
        .route("/v1/models/{name}/drift", get(drift::get))
        .route("/v1/models/{name}/drift/pin", post(drift::pin))
        .route("/v1/alerts", get(alerts::list))
        // Events into a source's log, for the streaming aggregations.
        .route("/v1/push/{source}", post(push::push))
        .layer(DefaultBodyLimit::max(state.max_request_bytes()))
        .with_state(state.clone())
        // The same protocol over gRPC, on the same port (HTTP/2).
        .merge(grpc::router(state.clone()))
        // Per-key rate limits (a pass-through when none are configured).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            resilience::ratelimit::limit,
        ))
        // Every request, gRPC included, counted by route template and status.
        .layer(axum::middleware::from_fn_with_state(
            state,
            metrics::track_http,
        ));
    // ...and traced, when something records the spans: one server span per request, a child
    // of the caller's `traceparent`. Without it, requests do not pay for a middleware.
    if trace::enabled() {
        router.layer(axum::middleware::from_fn(trace::trace_http))
    } else {
        router
    }
}

/// Liveness: the process answers.
async fn health() -> &'static str {
    "ok"
}

/// Readiness: the registry is loaded, the online store answers, the models that answer by
/// default are loaded, and the server is not draining.
async fn ready(
    axum::extract::State(state): axum::extract::State<ServeState>,
) -> (axum::http::StatusCode, String) {
    match state.check_ready().await {
        Ok(msg) => (axum::http::StatusCode::OK, msg),
        Err(msg) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, msg),
    }
}

/// How often rate-limit buckets of idle keys are forgotten.
const RATE_LIMIT_GC: Duration = Duration::from_secs(60);

/// How long shutdown waits for queued alert notifications.
const ALERT_DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` completes, then drains: readiness answers 503 for the configured
/// delay while requests are still served (load balancers stop sending), the listener closes,
/// requests in flight finish (for at most the drain timeout), the prediction log is flushed, so
/// every answered prediction is on disk, and queued alert notifications are delivered.
/// Registry changes are picked up every `refresh`.
pub async fn serve(
    listener: TcpListener,
    state: ServeState,
    refresh: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refresher = state.spawn_refresher(refresh);
    let canaries = rollout::canary::spawn_judge(state.clone());
    let drift = monitor::drift::LiveDriftMonitor::spawn(state.clone());
    let forget = state.rate_limits().is_some().then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RATE_LIMIT_GC).await;
                if let Some(limits) = state.rate_limits() {
                    limits.forget_idle();
                }
            }
        })
    });
    let (delay, timeout) = state.drain_times();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = state.clone();
    let shutdown = async move {
        shutdown.await;
        draining.start_draining();
        if !delay.is_zero() {
            tracing::info!(
                delay_s = delay.as_secs(),
                "draining: readiness is 503, still serving"
            );
            tokio::time::sleep(delay).await;
        }
        let _ = closed_tx.send(());
    };
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(shutdown);
    let cut = async move {
        if closed_rx.await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(timeout).await;
    };
    let result = tokio::select! {
        r = server => r,
        () = cut => {
            tracing::warn!(timeout_s = timeout.as_secs(), "requests still in flight after the drain timeout were cut");
            Ok(())
        }
    };
    if let Some(f) = forget {
        f.abort();
    }
    refresher.abort();
    canaries.abort();
    if let Some(d) = drift {
        d.abort();
    }
    if let Some(stats) = state.monitor().close().await {
        tracing::info!(
            rows = stats.prediction_rows,
            files = stats.files,
            dropped = stats.dropped,
            "prediction log flushed"
        );
    }
    // Alert notifications already queued (a resolve, say) are delivered before exiting.
    if let Some(engine) = state.alerts() {
        engine.close(ALERT_DRAIN).await;
    }
    result
}
