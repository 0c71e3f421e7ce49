//! The middleware and the span helpers under a real `tracing-opentelemetry` layer, with an
//! exporter that keeps the finished spans in memory.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use axum::routing::post;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

use super::*;

/// Taken by every test in this crate that hits the request-path span callsites (these and the
/// batcher's). A callsite caches its interest the first time it is hit; when that happens on one
/// thread while another test is installing its subscriber, tracing-core can cache "never" for
/// the new subscriber (the callsite is not yet listed when the subscriber's rebuild runs), and a
/// span goes missing about one run in four. One at a time, the race cannot happen.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
pub(crate) struct Collector(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collector {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("not poisoned").extend(batch);
        Ok(())
    }
}

impl Collector {
    /// A subscriber that exports every span synchronously, when it ends, into a new collector.
    pub(crate) fn subscriber() -> (Collector, tracing::Dispatch, SdkTracerProvider) {
        let collector = Collector::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collector.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        (collector, dispatch, provider)
    }

    pub(crate) fn spans(&self) -> Vec<SpanData> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// The one span named `name`.
    #[track_caller]
    pub(crate) fn one(&self, name: &str) -> SpanData {
        let spans = self.spans();
        let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} span in {:#?}", names(&spans));
        found[0].clone()
    }
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_ref()).collect()
}

pub(crate) fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_string()))
        .map(|kv| kv.value.clone())
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A router like the real one: a templated route whose handler scores inside an inference
/// span, behind the tracing middleware.
fn app() -> Router {
    async fn handler() -> &'static str {
        let span = inference_span(Protocol::Rest);
        async {}.instrument(span.clone()).await;
        end_inference(&span, &ModelLabels::new("fraud", 3), Some(2), Outcome::Ok);
        "scored"
    }
    Router::new()
        .route("/v2/models/{name}/infer", post(handler))
        .layer(axum::middleware::from_fn(trace_http))
}

fn request(traceparent: Option<&str>) -> HttpRequest<Body> {
    let mut req = HttpRequest::post("/v2/models/fraud/infer");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    req.body(Body::empty()).expect("a request")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn the_server_span_continues_the_callers_trace_and_names_itself_in_the_response() {
    let _serial = SERIAL.blocking_lock();
    let (collector, dispatch, provider) = Collector::subscriber();
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let resp = tracing::dispatcher::with_default(&dispatch, || {
        runtime().block_on(app().oneshot(request(Some(&traceparent))))
    })
    .expect("answered");
    assert_eq!(resp.status(), 200);
    provider.force_flush().expect("flushed");

    let server = collector.one("POST /v2/models/{name}/infer");
    let trace_id = TraceId::from_hex(CALLER_TRACE).expect("hex");
    assert_eq!(server.span_context.trace_id(), trace_id);
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex(CALLER_SPAN).expect("hex")
    );
    assert!(server.parent_span_is_remote);
    assert_eq!(server.span_kind, opentelemetry::trace::SpanKind::Server);
    assert_eq!(
        attr(&server, "http.route"),
        Some(Value::from("/v2/models/{name}/infer"))
    );
    assert_eq!(
        attr(&server, "http.request.method"),
        Some(Value::from("POST"))
    );
    assert_eq!(
        attr(&server, "http.response.status_code"),
        Some(Value::I64(200))
    );

    let inference = collector.one(INFERENCE);
    assert_eq!(inference.span_context.trace_id(), trace_id);
    assert_eq!(inference.parent_span_id, server.span_context.span_id());
    assert_eq!(
        attr(&inference, "kiln.model.name"),
        Some(Value::from("fraud"))
    );
    assert_eq!(
        attr(&inference, "kiln.model.version"),
        Some(Value::from("3"))
    );
    assert_eq!(attr(&inference, "kiln.rows"), Some(Value::I64(2)));

    // The response names the server span, in the caller's trace.
    let returned = resp
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("a traceparent in the response");
    assert_eq!(
        returned,
        format!("00-{CALLER_TRACE}-{}-01", server.span_context.span_id())
    );
    // The caller sent no tracestate: none comes back (not even an empty one).
    assert!(resp.headers().get("tracestate").is_none());
}

#[test]
fn without_a_traceparent_the_request_starts_a_trace() {
    let _serial = SERIAL.blocking_lock();
    let (collector, dispatch, provider) = Collector::subscriber();
    let resp = tracing::dispatcher::with_default(&dispatch, || {
        runtime().block_on(app().oneshot(request(None)))
    })
    .expect("answered");
    provider.force_flush().expect("flushed");
    let server = collector.one("POST /v2/models/{name}/infer");
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    let returned = resp.headers().get("traceparent").expect("a traceparent");
    let trace = server.span_context.trace_id().to_string();
    assert!(
        returned.to_str().expect("ascii").contains(&trace),
        "{returned:?} names trace {trace}"
    );
}

#[test]
fn with_tracing_off_requests_work_and_no_traceparent_is_returned() {
    let _serial = SERIAL.blocking_lock();
    // No subscriber enables the spans: the middleware's fast path.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let resp = runtime()
        .block_on(app().oneshot(request(Some(&traceparent))))
        .expect("answered");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("traceparent").is_none());
}

#[test]
fn the_middleware_is_wanted_only_when_a_subscriber_records_request_spans() {
    let _serial = SERIAL.blocking_lock();
    assert!(!enabled(), "no subscriber");
    let (_collector, dispatch, _provider) = Collector::subscriber();
    assert!(tracing::dispatcher::with_default(&dispatch, enabled));
}

#[test]
fn inject_writes_the_current_context_for_outgoing_calls() {
    let _serial = SERIAL.blocking_lock();
    let (_collector, dispatch, _provider) = Collector::subscriber();
    tracing::dispatcher::with_default(&dispatch, || {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_str(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")).expect("ok"),
        );
        let span = tracing::info_span!(target: TARGET, "outgoing");
        span.set_parent(extract(&incoming)).expect("a new span");
        let mut outgoing = HeaderMap::new();
        span.in_scope(|| inject_current(&mut outgoing));
        let tp = outgoing
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("a traceparent");
        assert!(tp.starts_with(&format!("00-{CALLER_TRACE}-")), "{tp}");
        assert!(!tp.contains(CALLER_SPAN), "names the new span: {tp}");
    });
    // Off: nothing is written.
    let mut headers = HeaderMap::new();
    inject_current(&mut headers);
    assert!(headers.is_empty());
}

#[test]
fn grpc_methods_are_named_and_client_paths_are_not_trusted() {
    let _serial = SERIAL.blocking_lock();
    let call = |path: &str, content_type: &str| {
        let req = HttpRequest::post(path)
            .header("content-type", content_type)
            .body(Body::empty())
            .expect("a request");
        grpc_method(&req)
    };
    assert_eq!(
        call(
            "/inference.GRPCInferenceService/ModelInfer",
            "application/grpc"
        ),
        Some("ModelInfer".to_string())
    );
    assert_eq!(
        call(
            "/inference.GRPCInferenceService/x%20y",
            "application/grpc+proto"
        ),
        Some("unknown".to_string())
    );
    assert_eq!(
        call(
            "/inference.GRPCInferenceService/ModelInfer",
            "application/json"
        ),
        None
    );
    assert_eq!(call("/other.Service/Method", "application/grpc"), None);
    assert!(grpc_server_error(13) && !grpc_server_error(3) && !grpc_server_error(0));
}
