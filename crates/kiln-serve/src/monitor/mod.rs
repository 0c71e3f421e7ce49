//! The serving side of monitoring: the server's event bus, what the request path publishes on
//! it (one prediction event per scored request, with the features the model saw), and the
//! observers started with the server (the prediction log, the label-feedback index). The
//! request path only builds an event when someone listens, and publishing never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_core::time::now_micros;
use kiln_monitor::EventBus;
use kiln_monitor::events::{DeploymentEvent, Event, PredictionEvent};
use kiln_monitor::feedback::{Feedback, FeedbackConfig};
use kiln_monitor::predlog::{LogConfig, LogCounters, LogStats, PredictionLog};

use crate::inference::LoadedModel;
use crate::metrics::{Outcome, Protocol};

pub mod drift;
pub mod signals;

use drift::{DriftConfig, LiveDriftMonitor};
use signals::RequestHistory;

/// What the server observes about itself.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Where and how predictions are logged; `None`: they are not.
    pub prediction_log: Option<LogConfig>,
    /// Label feedback (`POST /v1/feedback`) and performance; `None`: off.
    pub feedback: Option<FeedbackConfig>,
    /// The window of the performance gauges in `/metrics`.
    pub performance_window: Duration,
    /// Keep a short history of request latencies and outcomes (for alert rules).
    pub track_requests: bool,
    /// Live drift per served model version; `None`: off.
    pub drift: Option<DriftConfig>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            prediction_log: None,
            feedback: Some(FeedbackConfig::default()),
            performance_window: Duration::from_secs(3600),
            track_requests: false,
            drift: Some(DriftConfig::default()),
        }
    }
}

pub struct Monitoring {
    bus: EventBus,
    log: Mutex<Option<PredictionLog>>,
    log_counters: Option<Arc<LogCounters>>,
    feedback: Option<Arc<Feedback>>,
    performance_window: Duration,
    /// Whether anything consumes prediction events (else the request path skips them).
    wants_predictions: bool,
    id_prefix: String,
    next_id: AtomicU64,
    requests: Option<RequestHistory>,
    drift: Option<LiveDriftMonitor>,
}

impl Monitoring {
    /// Starts the configured observers (needs a tokio runtime).
    pub fn start(options: MonitorOptions) -> Monitoring {
        let bus = EventBus::new();
        let log = options
            .prediction_log
            .map(|config| PredictionLog::start(&bus, config));
        let feedback = options.feedback.map(|config| Feedback::start(&bus, config));
        let drift = options
            .drift
            .map(|config| LiveDriftMonitor::start(&bus, config));
        Monitoring {
            log_counters: log.as_ref().map(PredictionLog::counters),
            wants_predictions: log.is_some() || feedback.is_some() || drift.is_some(),
            drift,
            log: Mutex::new(log),
            feedback,
            bus,
            performance_window: options.performance_window,
            // Ids unique across restarts: the start time, then a counter.
            id_prefix: format!("{:x}", now_micros()),
            next_id: AtomicU64::new(1),
            requests: options.track_requests.then(RequestHistory::default),
        }
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn feedback(&self) -> Option<&Arc<Feedback>> {
        self.feedback.as_ref()
    }

    /// Live drift, when on.
    pub fn drift(&self) -> Option<&LiveDriftMonitor> {
        self.drift.as_ref()
    }

    pub fn log_counters(&self) -> Option<&Arc<LogCounters>> {
        self.log_counters.as_ref()
    }

    pub fn performance_window(&self) -> Duration {
        self.performance_window
    }

    /// Recent requests' latency and outcome (empty unless tracked).
    pub fn requests(&self) -> &RequestHistory {
        static NONE: std::sync::OnceLock<RequestHistory> = std::sync::OnceLock::new();
        self.requests
            .as_ref()
            .unwrap_or_else(|| NONE.get_or_init(RequestHistory::default))
    }

    /// Notes an answered inference request (for alert rules on latency and errors).
    pub fn answered(&self, model: &str, outcome: Outcome, elapsed: Duration) {
        if let Some(h) = &self.requests {
            let failed = matches!(
                outcome,
                Outcome::Unavailable | Outcome::Timeout | Outcome::Error
            );
            h.record(model, now_micros(), elapsed, failed);
        }
    }

    /// Whether scored requests should be published (so their features are kept for it).
    pub fn wants_predictions(&self) -> bool {
        self.wants_predictions
    }

    /// A new request id, for requests that came without one.
    pub fn new_request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }

    /// Publishes a scored request.
    #[allow(clippy::too_many_arguments)]
    pub fn predicted(
        &self,
        model: &LoadedModel,
        protocol: Protocol,
        request_id: String,
        features: Vec<f64>,
        outputs: Vec<f64>,
        entities: Option<Vec<String>>,
        started: Instant,
    ) {
        self.bus
            .publish(Event::Prediction(Arc::new(PredictionEvent {
                request_id,
                model: model.spec.name.clone(),
                version: model.spec.version,
                protocol: protocol.label(),
                ts_micros: now_micros(),
                inputs: model.inputs.clone(),
                objective: model.objective.clone(),
                features,
                outputs,
                n_outputs: model.spec.n_outputs,
                entities,
                latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            })));
    }

    /// Publishes a deployment event for each model whose default version is not the one it
    /// had (`before`): a registration, a promotion, a rollback.
    pub fn deployed(
        &self,
        before: &std::collections::BTreeMap<String, u32>,
        models: &std::collections::BTreeMap<String, kiln_registry::ModelState>,
    ) {
        for name in models.keys() {
            let Ok(spec) = crate::inference::ModelHub::pick(models, name, None) else {
                continue;
            };
            if before.get(name) == Some(&spec.version) {
                continue;
            }
            let stage = models[name]
                .version(spec.version)
                .map(|v| v.stage.to_string())
                .unwrap_or_default();
            tracing::info!(model = %name, version = spec.version, %stage, "now serving by default");
            self.bus
                .publish(Event::Deployment(Arc::new(DeploymentEvent {
                    model: name.clone(),
                    version: spec.version,
                    stage,
                    ts_micros: now_micros(),
                })));
        }
    }

    /// Flushes the prediction log (after the server stopped answering); returns its counts.
    pub async fn close(&self) -> Option<LogStats> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner()).take();
        match log {
            Some(log) => Some(log.close().await),
            None => None,
        }
    }
}
