//! What the serving process tells its observers. Events are cheap to fan out: the payload is
//! behind an `Arc`, so each subscriber gets a pointer, not a copy.

use std::sync::Arc;

use serde::Serialize;

/// Something that happened in the serving process.
#[derive(Debug, Clone)]
pub enum Event {
    /// A scored request (one or more rows).
    Prediction(Arc<PredictionEvent>),
    /// A label joined to a logged prediction.
    Feedback(Arc<FeedbackEvent>),
    /// A model version started serving by default (registration, promotion, rollback).
    Deployment(Arc<DeploymentEvent>),
    /// A live drift evaluation finished.
    Drift(Arc<DriftEvent>),
    /// An alert fired or resolved.
    Alert(Arc<AlertEvent>),
}

impl Event {
    /// The kind, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Prediction(_) => "prediction",
            Event::Feedback(_) => "feedback",
            Event::Deployment(_) => "deployment",
            Event::Drift(_) => "drift",
            Event::Alert(_) => "alert",
        }
    }
}

/// One scored request: the features the model saw and what it answered.
#[derive(Debug, Clone)]
pub struct PredictionEvent {
    /// The request's id (the client's, or one the server made up); unique per request.
    pub request_id: String,
    pub model: String,
    pub version: u32,
    /// `rest`, `grpc` or `predict`.
    pub protocol: &'static str,
    /// When it was answered, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// The model's input names, in order (shared by every event of the version).
    pub inputs: Arc<[String]>,
    /// The model's objective as its file names it (decides which performance metrics apply).
    pub objective: Arc<str>,
    /// Row-major inputs, `rows * inputs.len()` values (NaN: missing).
    pub features: Vec<f64>,
    /// Row-major outputs, `rows * n_outputs` values.
    pub outputs: Vec<f64>,
    pub n_outputs: usize,
    /// The entity key of each row, when the request named entities (predict-by-entity).
    pub entities: Option<Vec<String>>,
    /// Time to answer the request, microseconds.
    pub latency_us: u64,
}

impl PredictionEvent {
    pub fn rows(&self) -> usize {
        self.outputs.len() / self.n_outputs.max(1)
    }
}

/// A label for a logged prediction.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackEvent {
    pub model: String,
    pub version: u32,
    pub request_id: String,
    pub row: usize,
    /// The model's output for that row: the output itself for one-output models (a
    /// positive-class probability, a regression value), the arg-max class for multiclass.
    pub prediction: f64,
    pub label: f64,
    /// When the prediction was made, microseconds since the Unix epoch.
    pub predicted_at_micros: i64,
    /// When the label arrived.
    pub ts_micros: i64,
}

/// A model version became the one answering by default.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentEvent {
    pub model: String,
    pub version: u32,
    /// The stage it is in now (`production`, `staging`, ...).
    pub stage: String,
    pub ts_micros: i64,
}

/// The outcome of one drift evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct DriftEvent {
    pub model: String,
    pub version: u32,
    /// Share of columns that drifted, 0 to 1.
    pub drift_share: f64,
    pub dataset_drift: bool,
    /// Columns that drifted, with their scores.
    pub drifted: Vec<(String, f64)>,
    pub ts_micros: i64,
}

/// An alert changed state.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// What the rule watched, e.g. `model=ranker`.
    pub subject: String,
    /// The value that caused the change (NaN: resolved for lack of data).
    pub value: f64,
    /// The threshold crossed: the firing one, or the resolve one (hysteresis).
    pub threshold: f64,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: &'static str,
    /// The rule's runbook (URL or repository path).
    pub runbook: String,
    /// When the alert started firing, microseconds since the Unix epoch.
    pub started_at_micros: i64,
    pub ts_micros: i64,
}
