//! Prometheus metrics for `kiln serve`: every metric's name, type, labels, unit and help text in
//! one place (`defs.rs`, listed in [`ALL`]), the typed functions the request path calls to
//! record them, and the values read when `/metrics` is scraped (`collect.rs`: monitoring
//! counters, model performance, materialization lag; `process.rs`: the process's CPU, memory,
//! file descriptors and threads).
//!
//! Each [`ServeState`](crate::ServeState) owns its own recorder (no process-global one), so
//! several servers in one process (tests) never see each other's counts; `GET /metrics` renders
//! it in the Prometheus text format. Histograms have explicit buckets (no summaries, whose
//! quantiles cannot be aggregated across instances). Names follow Prometheus conventions: a
//! `kiln_` prefix, `_total` on counters, the base unit (`_seconds`) in the name.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use kiln_features::online::{FeatureStatus, OnlineResponse};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::ServeState;
use crate::batching::Scored;
use crate::inference::InferError;

mod collect;
mod defs;
mod process;

pub use defs::*;

/// Which transport an inference request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
    Predict,
    /// A copy of a routed request sent to a deployment's shadow version.
    Shadow,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::Predict => "predict",
            Protocol::Shadow => "shadow",
        }
    }
}

/// How an inference request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientError,
    Overloaded,
    Unavailable,
    Timeout,
    Error,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }

    pub fn of_error(e: &InferError) -> Outcome {
        match e {
            InferError::NotFound(_) | InferError::BadRequest(_) | InferError::NotReady(_) => {
                Outcome::ClientError
            }
            InferError::Overloaded { .. } => Outcome::Overloaded,
            InferError::Unavailable(_) | InferError::CircuitOpen(_) => Outcome::Unavailable,
            InferError::Timeout(_) => Outcome::Timeout,
            InferError::Internal(_) => Outcome::Error,
        }
    }

    /// From the HTTP status an error was answered with (predict-by-entity's errors also come
    /// from the feature store).
    pub fn of_status(status: axum::http::StatusCode) -> Outcome {
        match status.as_u16() {
            429 => Outcome::Overloaded,
            503 => Outcome::Unavailable,
            504 => Outcome::Timeout,
            400..=499 => Outcome::ClientError,
            500..=599 => Outcome::Error,
            _ => Outcome::Ok,
        }
    }
}

/// The model version a metric is about; empty labels when the request named no servable one
/// (the requested name is not used: clients would control the label's cardinality).
#[derive(Debug, Clone, Default)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

impl ModelLabels {
    pub fn new(model: &str, version: u32) -> ModelLabels {
        ModelLabels {
            model: model.to_string(),
            version: version.to_string(),
        }
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One server's metrics: a Prometheus recorder and its render handle.
pub struct ServeMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        ServeMetrics::new()
    }
}

impl ServeMetrics {
    pub fn new() -> ServeMetrics {
        let mut builder = PrometheusBuilder::new();
        for def in ALL.iter().filter(|d| d.kind == Kind::Histogram) {
            // Invariant: the bucket lists are non-empty constants (checked by a unit test),
            // the only thing this call refuses.
            builder = builder
                .set_buckets_for_metric(Matcher::Full(def.name.to_string()), def.buckets)
                .expect("histogram buckets are non-empty");
        }
        let recorder = builder.build_recorder();
        for def in ALL {
            let name = KeyName::from_const_str(def.name);
            let help = SharedString::const_str(def.help);
            let unit = if def.name.ends_with("_seconds") {
                Some(Unit::Seconds)
            } else if def.name.ends_with("_bytes") {
                Some(Unit::Bytes)
            } else {
                None
            };
            match def.kind {
                Kind::Counter => recorder.describe_counter(name, unit, help),
                Kind::Gauge => recorder.describe_gauge(name, unit, help),
                Kind::Histogram => recorder.describe_histogram(name, unit, help),
            }
        }
        let handle = recorder.handle();
        ServeMetrics { recorder, handle }
    }

    /// The Prometheus text exposition of every metric recorded so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn key(def: &MetricDef, values: &[&str]) -> Key {
        debug_assert_eq!(def.labels.len(), values.len(), "{}", def.name);
        let labels: Vec<Label> = def
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect();
        Key::from_parts(def.name, labels)
    }

    fn counter(&self, def: &MetricDef, values: &[&str]) -> Counter {
        debug_assert_eq!(def.kind, Kind::Counter);
        self.recorder
            .register_counter(&Self::key(def, values), &METADATA)
    }

    fn gauge(&self, def: &MetricDef, values: &[&str]) -> Gauge {
        debug_assert_eq!(def.kind, Kind::Gauge);
        self.recorder
            .register_gauge(&Self::key(def, values), &METADATA)
    }

    fn histogram(&self, def: &MetricDef, values: &[&str]) -> Histogram {
        debug_assert_eq!(def.kind, Kind::Histogram);
        self.recorder
            .register_histogram(&Self::key(def, values), &METADATA)
    }

    /// An inference request ended.
    pub fn inference(
        &self,
        protocol: Protocol,
        m: &ModelLabels,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let (model, version) = (m.model.as_str(), m.version.as_str());
        self.counter(
            &INFERENCE_REQUESTS,
            &[model, version, protocol.label(), outcome.label()],
        )
        .increment(1);
        self.histogram(&INFERENCE_DURATION, &[model, version, protocol.label()])
            .record(elapsed.as_secs_f64());
    }

    /// A request was scored: where its time went.
    pub fn scored(&self, m: &ModelLabels, scored: &Scored) {
        if scored.fallback.is_some() || scored.cached {
            // Not the model's queue or compute: it did not answer.
            return;
        }
        let labels = [m.model.as_str(), m.version.as_str()];
        self.histogram(&INFERENCE_QUEUE_DURATION, &labels)
            .record(scored.queue_time.as_secs_f64());
        self.histogram(&INFERENCE_COMPUTE_DURATION, &labels)
            .record(scored.compute_time.as_secs_f64());
    }

    /// Counts a call answered by a model version's fallback chain.
    pub fn fallback(&self, m: &ModelLabels, source: &str) {
        self.counter(&FALLBACKS, &[m.model.as_str(), m.version.as_str(), source])
            .increment(1);
    }

    /// Counts a shadow copy not sent because too many were in flight.
    pub fn shadow_dropped(&self, model: &str) {
        self.counter(&SHADOW_DROPPED, &[model]).increment(1);
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn in_flight(&self, m: &ModelLabels) -> InFlight {
        let gauge = self.gauge(&INFERENCE_IN_FLIGHT, &[&m.model, &m.version]);
        gauge.increment(1.0);
        InFlight(gauge)
    }

    /// The handles a model version's batching actor records into.
    pub fn batch_handles(&self, m: &ModelLabels) -> BatchMetrics {
        let labels = [m.model.as_str(), m.version.as_str()];
        BatchMetrics {
            rows: self.histogram(&BATCH_ROWS, &labels),
            queue_depth: self.gauge(&QUEUE_DEPTH, &labels),
        }
    }

    /// A push request for `source` appended `events` (or was refused: `None`).
    pub fn pushed(&self, source: &str, events: Option<usize>) {
        match events {
            Some(n) => self.counter(&STREAM_PUSHED, &[source]).increment(n as u64),
            None => self.counter(&STREAM_PUSH_REJECTED, &[source]).increment(1),
        }
    }

    /// What the broker connector of `source` has read since the process started.
    pub fn broker_read(&self, source: &str, messages: u64, rejected: u64) {
        self.counter(&STREAM_BROKER_MESSAGES, &[source])
            .absolute(messages);
        self.counter(&STREAM_BROKER_REJECTED, &[source])
            .absolute(rejected);
    }

    /// One batch of the embedded stream of `source`.
    pub fn stream_step(&self, source: &str, step: &kiln_stream::pipeline::Step, stream_time: i64) {
        let applied = step.events - step.late - step.undecodable - step.malformed;
        self.counter(&STREAM_APPLIED, &[source])
            .increment(applied as u64);
        for (reason, n) in [
            ("late", step.late),
            ("undecodable", step.undecodable),
            ("malformed", step.malformed),
        ] {
            if n > 0 {
                self.counter(&STREAM_DEAD_LETTERS, &[source, reason])
                    .increment(n as u64);
            }
        }
        if stream_time > 0 {
            self.gauge(&STREAM_TIME, &[source])
                .set(stream_time as f64 / 1e6);
        }
    }

    /// Counts an online read's feature values by view and status (entity key columns are not
    /// look-ups and are skipped).
    pub fn feature_lookups(&self, resp: &OnlineResponse) {
        for c in &resp.columns {
            let Some(view) = &c.view else { continue };
            let mut counts = [0u64; 3];
            for s in &c.statuses {
                counts[match s {
                    FeatureStatus::Present => 0,
                    FeatureStatus::NotFound => 1,
                    FeatureStatus::Expired => 2,
                }] += 1;
            }
            for (status, n) in ["present", "not_found", "expired"].iter().zip(counts) {
                if n > 0 {
                    self.counter(&FEATURE_LOOKUPS, &[view, status]).increment(n);
                }
            }
        }
    }

    fn http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.counter(&HTTP_REQUESTS, &[route, method, &status.to_string()])
            .increment(1);
        self.histogram(&HTTP_DURATION, &[route, method])
            .record(elapsed.as_secs_f64());
    }
}

/// Decrements the in-flight gauge when dropped (whatever way the request ends).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What a batching actor records: rows per batch and its queue depth.
#[derive(Clone)]
pub struct BatchMetrics {
    pub rows: Histogram,
    pub queue_depth: Gauge,
}

impl BatchMetrics {
    /// Handles that record nowhere (unit tests of the batcher).
    pub fn noop() -> BatchMetrics {
        BatchMetrics {
            rows: Histogram::noop(),
            queue_depth: Gauge::noop(),
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn render(State(state): State<ServeState>) -> Response {
    state.metrics().collect(&state);
    let mut body = state.metrics().render();
    body.push_str(&process::render());
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Middleware: counts every request by its route template (never the raw path, whose
/// cardinality clients control) and status.
pub(crate) async fn track_http(
    State(state): State<ServeState>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    state
        .metrics()
        .http(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_conventional_and_histograms_have_explicit_buckets() {
        let mut seen = BTreeSet::new();
        for def in ALL {
            assert!(seen.insert(def.name), "{} is defined twice", def.name);
            // Kiln's own, or the process metrics every Prometheus client exports by these names.
            assert!(
                def.name.starts_with("kiln_") || def.name.starts_with("process_"),
                "{}",
                def.name
            );
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                def.name
            );
            assert!(!def.help.is_empty(), "{}", def.name);
            let labels: BTreeSet<_> = def.labels.iter().collect();
            assert_eq!(labels.len(), def.labels.len(), "{}", def.name);
            if def.kind == Kind::Histogram {
                assert!(!def.buckets.is_empty(), "{} has no buckets", def.name);
                assert!(
                    def.buckets.windows(2).all(|w| w[0] < w[1]),
                    "{}: buckets must increase",
                    def.name
                );
            } else {
                assert!(def.buckets.is_empty(), "{}", def.name);
            }
        }
    }

    #[test]
    fn histograms_render_with_their_buckets_and_recorders_are_separate() {
        let a = ServeMetrics::new();
        let b = ServeMetrics::new();
        let m = ModelLabels::new("fraud", 2);
        a.inference(
            Protocol::Rest,
            &m,
            Outcome::ClientError,
            Duration::from_millis(3),
        );
        let text = a.render();
        assert!(
            text.contains(
                r#"kiln_inference_requests_total{model="fraud",version="2",protocol="rest",outcome="client_error"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kiln_inference_request_duration_seconds_bucket{model="fraud",version="2",protocol="rest",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kiln_inference_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(!b.render().contains("kiln_inference_requests_total{"));
    }

    #[test]
    fn the_in_flight_gauge_falls_back_when_the_guard_drops() {
        let metrics = ServeMetrics::new();
        let m = ModelLabels::new("fraud", 1);
        let guard = metrics.in_flight(&m);
        assert!(
            metrics
                .render()
                .contains(r#"kiln_inference_requests_in_flight{model="fraud",version="1"} 1"#)
        );
        drop(guard);
        assert!(
            metrics
                .render()
                .contains(r#"kiln_inference_requests_in_flight{model="fraud",version="1"} 0"#)
        );
    }
}
