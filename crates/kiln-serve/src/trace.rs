//! Distributed tracing of requests: one trace per request, with the W3C trace context accepted
//! from callers, returned to them, and handed on to anything Kiln calls.
//!
//! The spans are ordinary `tracing` spans. The binary decides whether they go anywhere: when
//! `kiln serve` exports traces it installs a `tracing-opentelemetry` layer that turns them into
//! OpenTelemetry spans (and an OTLP exporter behind a batch span processor); when it does not, no
//! layer wants them, every span macro here is disabled at its call site (one atomic load), the
//! router leaves the middleware out ([`enabled`]) and the batcher takes its fast path. Tracing
//! that is off costs close to nothing.
//!
//! The span tree of an inference request (names are the constants below):
//!
//! ```text
//! POST /v2/models/{name}/infer     server span (the middleware); a child of the caller's span
//! └── inference                     when the request carries `traceparent`
//!     ├── feature_fetch             predict-by-entity only: the online store read
//!     ├── queue                     from enqueueing to the start of the batch's compute
//!     └── batch                     the batch's compute, in the trace of the batch's first
//!                                   request only; links to the other requests' `inference`
//!                                   spans, whose `queue` spans link back to it
//! ```
//!
//! gRPC calls arrive on the same router, so they get the same server span (named
//! `inference.GRPCInferenceService/ModelInfer`, with `rpc.*` attributes); their `traceparent`
//! comes as gRPC metadata, which is an HTTP/2 header.
//!
//! "Propagated" means: an incoming `traceparent` (and `tracestate`) makes the server span a child
//! of the caller's span; the response carries a `traceparent` naming the server span, so a
//! caller can find its request's trace; and [`inject`] writes the current span's context into
//! the headers of an outgoing request (remote models, when they come), so the callee's spans
//! join the same trace.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{ModelLabels, Outcome, Protocol};

/// The `tracing` target of every request span; an exporting subscriber enables it (and the
/// binary's log output leaves spans out, so that with no exporter they are disabled).
pub const TARGET: &str = "kiln_serve::trace";

/// The server span's `tracing` name; exported under `otel.name` (route template or gRPC method).
pub const REQUEST: &str = "request";
/// Scoring one request, from picking the model version to its scores (the span of the
/// `kiln_inference_request_duration_seconds` metric).
pub const INFERENCE: &str = "inference";
/// Predict-by-entity's online store read.
pub const FEATURE_FETCH: &str = "feature_fetch";
/// Waiting in the model version's batching queue.
pub const QUEUE: &str = "queue";
/// One batch's model compute, which may score several requests.
pub const BATCH: &str = "batch";

/// Whether the current subscriber records request spans: an exporting layer is installed.
/// [`crate::router`] asks once, to leave the middleware out when nothing would record it.
pub fn enabled() -> bool {
    tracing::span_enabled!(target: TARGET, tracing::Level::INFO)
}

/// The gRPC service served next to REST.
const GRPC_SERVICE: &str = "inference.GRPCInferenceService";

/// Reads W3C trace-context headers (`traceparent`, `tracestate`) from an HTTP header map.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes W3C trace-context headers into an HTTP header map.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes `traceparent`/`tracestate` with values it formatted itself;
        // an empty `tracestate` is left out, and anything that would not be a valid header is
        // skipped rather than sent garbled.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's trace context from `traceparent`/`tracestate`; empty when absent or malformed
/// (the request then starts a new trace).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `span`'s trace context as `traceparent` (and `tracestate`) into `headers`, for an
/// outgoing call that should join this trace, or a response that names it. Does nothing when
/// tracing is off.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// [`inject`] for the current span: what an outgoing request made while handling a request
/// calls.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&Span::current(), headers);
}

/// Middleware: the server span of every request (gRPC included), named by route template,
/// a child of the caller's span when the request carries `traceparent`; the response carries
/// the server span's `traceparent`.
pub(crate) async fn trace_http(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        REQUEST,
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = Empty,
        http.route = Empty,
        http.response.status_code = Empty,
        rpc.system = Empty,
        rpc.service = Empty,
        rpc.method = Empty,
        rpc.grpc.status_code = Empty,
    );
    if span.is_disabled() {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    span.record("http.request.method", method.as_str());
    let grpc = grpc_method(&req);
    match (&grpc, req.extensions().get::<MatchedPath>()) {
        (Some(rpc), _) => {
            span.record("otel.name", format!("{GRPC_SERVICE}/{rpc}"));
            span.record("rpc.system", "grpc");
            span.record("rpc.service", GRPC_SERVICE);
            span.record("rpc.method", rpc.as_str());
        }
        (None, Some(route)) => {
            span.record("otel.name", format!("{method} {}", route.as_str()));
            span.record("http.route", route.as_str());
        }
        // No route: the method alone, as the HTTP conventions say (the raw path's cardinality
        // is the client's to choose).
        (None, None) => {
            span.record("otel.name", method.as_str());
        }
    }
    let parent = extract(req.headers());
    if parent.span().span_context().is_valid() {
        // Cannot fail here: the span is new (not started) and enabled by an OpenTelemetry
        // layer, the only subscriber that enables this target.
        let _ = span.set_parent(parent);
    }
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if grpc.is_some() {
        // A gRPC error comes as a trailers-only response (its status in the headers); a
        // success carries `grpc-status: 0` in trailers, after this span has ended.
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(if status.is_success() { 0 } else { 2 });
        span.record("rpc.grpc.status_code", code);
        if grpc_server_error(code) {
            span.record("otel.status_code", "ERROR");
        }
    } else if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    inject(&span, resp.headers_mut());
    resp
}

/// The gRPC method of a call to Kiln's inference service (`None` for anything else); a method
/// name that is not an identifier is reported as `unknown` (clients choose the path).
fn grpc_method(req: &Request) -> Option<String> {
    let is_grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    if !is_grpc {
        return None;
    }
    let path = req.uri().path().strip_prefix('/')?;
    let method = path.strip_prefix(GRPC_SERVICE)?.strip_prefix('/')?;
    let ident = !method.is_empty()
        && method.len() <= 64
        && method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    Some(if ident { method } else { "unknown" }.to_string())
}

/// gRPC codes that are the server's fault (OpenTelemetry's RPC conventions): UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
fn grpc_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// A count as an attribute value: OpenTelemetry integers are `i64`, and
/// `tracing-opentelemetry` exports `u64`/`usize` fields as strings.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `inference` span of one request, over any protocol; model, version and rows are
/// recorded by [`end_inference`] once known.
pub(crate) fn inference_span(protocol: Protocol) -> Span {
    tracing::info_span!(
        target: TARGET,
        INFERENCE,
        kiln.protocol = protocol.label(),
        kiln.model.name = Empty,
        kiln.model.version = Empty,
        kiln.rows = Empty,
        kiln.outcome = Empty,
        otel.status_code = Empty,
    )
}

/// Records what an inference span scored and how it ended (`rows` when it got that far).
pub(crate) fn end_inference(
    span: &Span,
    labels: &ModelLabels,
    rows: Option<usize>,
    outcome: Outcome,
) {
    if span.is_disabled() {
        return;
    }
    if !labels.model.is_empty() {
        span.record("kiln.model.name", labels.model.as_str());
        span.record("kiln.model.version", labels.version.as_str());
    }
    if let Some(rows) = rows {
        span.record("kiln.rows", count(rows));
    }
    span.record("kiln.outcome", outcome.label());
    if outcome != Outcome::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// What a queued request carries for tracing: its own span (the parent of a batch it starts)
/// and its `queue` span, open until its batch's compute starts. Both are disabled (and cost
/// nothing) when tracing is off.
pub(crate) struct JobSpans {
    request: Span,
    queue: Span,
}

impl JobSpans {
    /// Opens the `queue` span under the current (inference) span.
    pub(crate) fn enqueued() -> JobSpans {
        let queue = tracing::info_span!(target: TARGET, QUEUE);
        let request = if queue.is_disabled() {
            Span::none()
        } else {
            Span::current()
        };
        JobSpans { request, queue }
    }

    /// Ends the `queue` span (its batch's compute starts) and lets go of the request's span,
    /// so that the request's spans end on its own task, not on the worker.
    pub(crate) fn end(&mut self) {
        self.queue = Span::none();
        self.request = Span::none();
    }

    /// The subscriber the request's spans belong to (none when tracing is off). A worker
    /// thread does its span work under it: spans record their parent's end through the
    /// thread's default subscriber, and worker threads have none of their own in tests.
    pub(crate) fn dispatch(&self) -> Option<tracing::Dispatch> {
        self.request.with_subscriber(|(_, d)| d.clone())
    }
}

/// Opens the `batch` span on a worker thread: a child of the first request's span, linked to
/// the other requests' spans, whose `queue` spans are linked back to it.
pub(crate) fn start_batch<'a>(
    first: &JobSpans,
    others: impl Iterator<Item = &'a JobSpans>,
    rows: usize,
    requests: usize,
) -> Span {
    if first.request.is_disabled() {
        return Span::none();
    }
    let batch = tracing::info_span!(
        target: TARGET,
        parent: &first.request,
        BATCH,
        kiln.batch.rows = count(rows),
        kiln.batch.requests = count(requests),
        otel.status_code = Empty,
    );
    for other in others {
        batch.follows_from(&other.request);
        other.queue.follows_from(&batch);
    }
    batch
}

#[cfg(test)]
pub(crate) mod tests;
