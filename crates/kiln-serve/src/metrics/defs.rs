//! Every metric `kiln serve` exports: name, type, labels, unit, help text and buckets, in one
//! place, so dashboards, alert rules (`deploy/`) and docs can be checked against one list.

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's definition: what `/metrics` shows and docs/http-api.md lists.
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Histograms only: upper bounds, strictly increasing (`+Inf` is added).
    pub buckets: &'static [f64],
}

/// Request latency, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Rows in a scored batch: powers of two up to 4096.
const ROW_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

pub const INFERENCE_REQUESTS: MetricDef = MetricDef {
    name: "kiln_inference_requests_total",
    kind: Kind::Counter,
    labels: &["model", "version", "protocol", "outcome"],
    help: "Inference requests answered, by outcome (ok, client_error, overloaded, unavailable, timeout, error) and protocol (rest, grpc, predict).",
    buckets: &[],
};
pub const INFERENCE_DURATION: MetricDef = MetricDef {
    name: "kiln_inference_request_duration_seconds",
    kind: Kind::Histogram,
    labels: &["model", "version", "protocol"],
    help: "Time to answer an inference request, whatever its outcome, in seconds.",
    buckets: LATENCY_BUCKETS,
};
pub const INFERENCE_QUEUE_DURATION: MetricDef = MetricDef {
    name: "kiln_inference_queue_duration_seconds",
    kind: Kind::Histogram,
    labels: &["model", "version"],
    help: "Time a scored request waited in its model version's batching queue, in seconds.",
    buckets: LATENCY_BUCKETS,
};
pub const INFERENCE_COMPUTE_DURATION: MetricDef = MetricDef {
    name: "kiln_inference_compute_duration_seconds",
    kind: Kind::Histogram,
    labels: &["model", "version"],
    help: "Model compute time of the batch a scored request was part of, in seconds.",
    buckets: LATENCY_BUCKETS,
};
pub const BATCH_ROWS: MetricDef = MetricDef {
    name: "kiln_inference_batch_rows",
    kind: Kind::Histogram,
    labels: &["model", "version"],
    help: "Rows per scored batch (one observation per batch, not per request).",
    buckets: ROW_BUCKETS,
};
pub const INFERENCE_IN_FLIGHT: MetricDef = MetricDef {
    name: "kiln_inference_requests_in_flight",
    kind: Kind::Gauge,
    labels: &["model", "version"],
    help: "Inference requests being answered now.",
    buckets: &[],
};
pub const QUEUE_DEPTH: MetricDef = MetricDef {
    name: "kiln_inference_queue_depth",
    kind: Kind::Gauge,
    labels: &["model", "version"],
    help: "Requests waiting in a model version's batching queue (saturation; full is 429).",
    buckets: &[],
};
pub const FEATURE_LOOKUPS: MetricDef = MetricDef {
    name: "kiln_feature_lookups_total",
    kind: Kind::Counter,
    labels: &["view", "status"],
    help: "Online feature values read, per feature and row, by view and status (present, not_found, expired).",
    buckets: &[],
};
pub const HTTP_REQUESTS: MetricDef = MetricDef {
    name: "kiln_http_requests_total",
    kind: Kind::Counter,
    labels: &["route", "method", "status"],
    help: "HTTP requests answered (gRPC included), by route template, method and status code.",
    buckets: &[],
};
pub const HTTP_DURATION: MetricDef = MetricDef {
    name: "kiln_http_request_duration_seconds",
    kind: Kind::Histogram,
    labels: &["route", "method"],
    help: "Time to answer an HTTP request (up to its response head), in seconds.",
    buckets: LATENCY_BUCKETS,
};

/// Events a bus subscriber received, by subscriber.
pub const EVENTS_DELIVERED: MetricDef = MetricDef {
    name: "kiln_events_delivered_total",
    kind: Kind::Counter,
    labels: &["subscriber"],
    help: "Monitoring events handed to a subscriber (prediction_log, feedback_index, ...).",
    buckets: &[],
};
pub const EVENTS_DROPPED: MetricDef = MetricDef {
    name: "kiln_events_dropped_total",
    kind: Kind::Counter,
    labels: &["subscriber"],
    help: "Monitoring events dropped because the subscriber's queue was full (serving never waits for a subscriber).",
    buckets: &[],
};
pub const EVENTS_QUEUED: MetricDef = MetricDef {
    name: "kiln_events_queued",
    kind: Kind::Gauge,
    labels: &["subscriber"],
    help: "Monitoring events waiting in a subscriber's queue.",
    buckets: &[],
};
pub const LOG_ROWS: MetricDef = MetricDef {
    name: "kiln_prediction_log_rows_total",
    kind: Kind::Counter,
    labels: &["kind"],
    help: "Rows written to the prediction log's Parquet files, by kind (predictions, feedback).",
    buckets: &[],
};
pub const LOG_FILES: MetricDef = MetricDef {
    name: "kiln_prediction_log_files_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Parquet files the prediction log wrote.",
    buckets: &[],
};
pub const LOG_WRITE_ERRORS: MetricDef = MetricDef {
    name: "kiln_prediction_log_write_errors_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Failed prediction-log file writes (their rows are retried).",
    buckets: &[],
};
pub const LOG_ROWS_LOST: MetricDef = MetricDef {
    name: "kiln_prediction_log_rows_lost_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Prediction-log rows given up after writes kept failing.",
    buckets: &[],
};
pub const LOG_SAMPLED_OUT: MetricDef = MetricDef {
    name: "kiln_prediction_log_sampled_out_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Requests not logged because of the sample rate.",
    buckets: &[],
};
pub const FEEDBACK_LABELS: MetricDef = MetricDef {
    name: "kiln_feedback_labels_total",
    kind: Kind::Counter,
    labels: &["outcome"],
    help: "Labels posted to /v1/feedback, by outcome (matched, unmatched, relabelled).",
    buckets: &[],
};
pub const MODEL_LABELLED: MetricDef = MetricDef {
    name: "kiln_model_labelled_predictions",
    kind: Kind::Gauge,
    labels: &["model", "version"],
    help: "Labelled predictions in the performance window.",
    buckets: &[],
};
pub const MODEL_PERFORMANCE: MetricDef = MetricDef {
    name: "kiln_model_performance",
    kind: Kind::Gauge,
    labels: &["model", "version", "metric"],
    help: "Model performance over the labels of the performance window (metric: accuracy, precision, recall, f1, auc, log_loss, brier, calibration_error, predicted_positive_rate, label_positive_rate, mae, rmse).",
    buckets: &[],
};
pub const DRIFT_SHARE: MetricDef = MetricDef {
    name: "kiln_drift_share",
    kind: Kind::Gauge,
    labels: &["model", "version"],
    help: "Share of a model version's compared columns (inputs and outputs) that drifted in its latest live drift evaluation, 0 to 1.",
    buckets: &[],
};
pub const DRIFT_DETECTED: MetricDef = MetricDef {
    name: "kiln_drift_detected",
    kind: Kind::Gauge,
    labels: &["model", "version"],
    help: "1 when the latest live drift evaluation found dataset drift (the drifted share reached the drift share threshold), else 0.",
    buckets: &[],
};
pub const DRIFT_FEATURE_SCORE: MetricDef = MetricDef {
    name: "kiln_drift_feature_score",
    kind: Kind::Gauge,
    labels: &["model", "version", "feature", "method"],
    help: "A column's score in the latest live drift evaluation: a p-value (ks, chisquare, z; drift below the threshold) or a distance (wasserstein, jensenshannon, psi; drift at or above it).",
    buckets: &[],
};
pub const DRIFT_FEATURE_DRIFTED: MetricDef = MetricDef {
    name: "kiln_drift_feature_drifted",
    kind: Kind::Gauge,
    labels: &["model", "version", "feature"],
    help: "1 when the column drifted in the latest live drift evaluation, else 0.",
    buckets: &[],
};
pub const DRIFT_EVALUATED: MetricDef = MetricDef {
    name: "kiln_drift_last_evaluation_timestamp_seconds",
    kind: Kind::Gauge,
    labels: &["model", "version"],
    help: "When a model version's live drift was last evaluated, in seconds since the Unix epoch.",
    buckets: &[],
};
pub const MATERIALIZATION_LAG: MetricDef = MetricDef {
    name: "kiln_materialization_lag_seconds",
    kind: Kind::Gauge,
    labels: &["view"],
    help: "Time since the end of the latest materialized window of a feature view (its current version).",
    buckets: &[],
};
pub const ALERTS_FIRING: MetricDef = MetricDef {
    name: "kiln_alerts_firing",
    kind: Kind::Gauge,
    labels: &[],
    help: "Alerts firing now (in-process alert rules).",
    buckets: &[],
};
pub const ALERT_NOTIFICATIONS: MetricDef = MetricDef {
    name: "kiln_alert_notifications_total",
    kind: Kind::Counter,
    labels: &["webhook", "outcome"],
    help: "Alert notifications by webhook and outcome (sent, failed, dropped).",
    buckets: &[],
};
pub const PROCESS_CPU: MetricDef = MetricDef {
    name: "process_cpu_seconds_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Total user and system CPU time spent, in seconds.",
    buckets: &[],
};
pub const PROCESS_RSS: MetricDef = MetricDef {
    name: "process_resident_memory_bytes",
    kind: Kind::Gauge,
    labels: &[],
    help: "Resident memory size, in bytes.",
    buckets: &[],
};
pub const PROCESS_FDS: MetricDef = MetricDef {
    name: "process_open_fds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Open file descriptors.",
    buckets: &[],
};
pub const PROCESS_THREADS: MetricDef = MetricDef {
    name: "process_threads",
    kind: Kind::Gauge,
    labels: &[],
    help: "OS threads of the process.",
    buckets: &[],
};
pub const PROCESS_START: MetricDef = MetricDef {
    name: "process_start_time_seconds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Start time of the process since the Unix epoch, in seconds.",
    buckets: &[],
};

pub const STREAM_PUSHED: MetricDef = MetricDef {
    name: "kiln_stream_events_pushed_total",
    kind: Kind::Counter,
    labels: &["source"],
    help: "Events appended to a source's log by POST /v1/push/{source} (durable when counted).",
    buckets: &[],
};
pub const STREAM_PUSH_REJECTED: MetricDef = MetricDef {
    name: "kiln_stream_push_rejected_total",
    kind: Kind::Counter,
    labels: &["source"],
    help: "Push requests refused with a 4xx (a malformed event; nothing of the request was appended).",
    buckets: &[],
};
pub const STREAM_APPLIED: MetricDef = MetricDef {
    name: "kiln_stream_events_applied_total",
    kind: Kind::Counter,
    labels: &["source"],
    help: "Events the embedded stream applied to the source's aggregated views.",
    buckets: &[],
};
pub const STREAM_DEAD_LETTERS: MetricDef = MetricDef {
    name: "kiln_stream_dead_letters_total",
    kind: Kind::Counter,
    labels: &["source", "reason"],
    help: "Events the embedded stream did not apply and wrote to the dead-letter file (reason: late, undecodable, malformed: a broker message that is not an event).",
    buckets: &[],
};
pub const STREAM_TIME: MetricDef = MetricDef {
    name: "kiln_stream_event_time_seconds",
    kind: Kind::Gauge,
    labels: &["source"],
    help: "The embedded stream's time: the greatest event time applied, since the Unix epoch.",
    buckets: &[],
};

pub const STREAM_BROKER_MESSAGES: MetricDef = MetricDef {
    name: "kiln_stream_broker_messages_total",
    kind: Kind::Counter,
    labels: &["source"],
    help: "Messages a broker connector (Kafka, NATS JetStream) read into the source's log.",
    buckets: &[],
};
pub const STREAM_BROKER_REJECTED: MetricDef = MetricDef {
    name: "kiln_stream_broker_rejected_total",
    kind: Kind::Counter,
    labels: &["source"],
    help: "Broker messages (or events in them) that were not events of the source; logged as dead letters.",
    buckets: &[],
};

pub const CIRCUIT_STATE: MetricDef = MetricDef {
    name: "kiln_circuit_state",
    kind: Kind::Gauge,
    labels: &["dependency"],
    help: "A dependency's circuit breaker: 0 closed (calls go through), 1 half-open (probing), 2 open (calls refused).",
    buckets: &[],
};
pub const CIRCUIT_OPENED: MetricDef = MetricDef {
    name: "kiln_circuit_opened_total",
    kind: Kind::Counter,
    labels: &["dependency"],
    help: "Times a dependency's circuit breaker opened (its failure rate crossed the threshold, or a probe failed).",
    buckets: &[],
};
pub const CIRCUIT_REFUSED: MetricDef = MetricDef {
    name: "kiln_circuit_refused_total",
    kind: Kind::Counter,
    labels: &["dependency"],
    help: "Calls to a dependency (the online store, or a model version as model:NAME@vN) refused by its open circuit breaker (answered 503 without calling it, or by a fallback).",
    buckets: &[],
};
pub const FALLBACKS: MetricDef = MetricDef {
    name: "kiln_fallback_total",
    kind: Kind::Counter,
    labels: &["model", "version", "source"],
    help: "Inference calls a model version could not answer that its fallback chain answered, by what answered (cache, model, value).",
    buckets: &[],
};
pub const RETRIES: MetricDef = MetricDef {
    name: "kiln_retries_total",
    kind: Kind::Counter,
    labels: &["model", "version"],
    help: "Retries of failed calls to a model version.",
    buckets: &[],
};
pub const RETRIES_DENIED: MetricDef = MetricDef {
    name: "kiln_retries_denied_total",
    kind: Kind::Counter,
    labels: &["model", "version"],
    help: "Retries of a model version not made because its retry budget was spent.",
    buckets: &[],
};
pub const RATE_LIMITED: MetricDef = MetricDef {
    name: "kiln_rate_limited_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Requests refused with 429 because their API key (or tenant) was over its rate limit.",
    buckets: &[],
};
pub const SHADOW_DROPPED: MetricDef = MetricDef {
    name: "kiln_shadow_dropped_total",
    kind: Kind::Counter,
    labels: &["model"],
    help: "Copies of routed requests not sent to a shadow version because 64 shadow calls were already in flight (shadow calls themselves count in kiln_inference_requests_total with protocol=\"shadow\").",
    buckets: &[],
};
pub const PREDICTION_CACHE: MetricDef = MetricDef {
    name: "kiln_prediction_cache_total",
    kind: Kind::Counter,
    labels: &["model", "version", "result"],
    help: "Inference calls of a model version with a prediction cache, by result: hit (answered from the cache, or by an identical call in flight), shared_hit (from the fleet's shared level in Redis) or miss (the model was called).",
    buckets: &[],
};
pub const PREDICTION_CACHE_SHARED_ERRORS: MetricDef = MetricDef {
    name: "kiln_prediction_cache_shared_errors_total",
    kind: Kind::Counter,
    labels: &["model", "version"],
    help: "Reads and writes of the prediction cache's shared level (Redis) that failed or took longer than 25 ms (the model was called instead).",
    buckets: &[],
};
pub const FEATURE_CACHE: MetricDef = MetricDef {
    name: "kiln_feature_cache_total",
    kind: Kind::Counter,
    labels: &["view", "result"],
    help: "Online feature lookups through the feature cache, per entity key, by result: hit (from the cache), stale (from the cache past refresh_after, re-read in the background), miss (read from the store) or negative (unknown to the filter of known entities, answered absent without a store read).",
    buckets: &[],
};
pub const FEATURE_CACHE_REFRESHED: MetricDef = MetricDef {
    name: "kiln_feature_cache_refreshed_total",
    kind: Kind::Counter,
    labels: &["view"],
    help: "Entity keys the feature cache re-read in the background because they were read past refresh_after (refresh-ahead).",
    buckets: &[],
};

/// Every metric `kiln serve` exports.
pub const ALL: [&MetricDef; 53] = [
    &INFERENCE_REQUESTS,
    &INFERENCE_DURATION,
    &INFERENCE_QUEUE_DURATION,
    &INFERENCE_COMPUTE_DURATION,
    &BATCH_ROWS,
    &INFERENCE_IN_FLIGHT,
    &QUEUE_DEPTH,
    &FEATURE_LOOKUPS,
    &HTTP_REQUESTS,
    &HTTP_DURATION,
    &EVENTS_DELIVERED,
    &EVENTS_DROPPED,
    &EVENTS_QUEUED,
    &LOG_ROWS,
    &LOG_FILES,
    &LOG_WRITE_ERRORS,
    &LOG_ROWS_LOST,
    &LOG_SAMPLED_OUT,
    &FEEDBACK_LABELS,
    &MODEL_LABELLED,
    &MODEL_PERFORMANCE,
    &DRIFT_SHARE,
    &DRIFT_DETECTED,
    &DRIFT_FEATURE_SCORE,
    &DRIFT_FEATURE_DRIFTED,
    &DRIFT_EVALUATED,
    &MATERIALIZATION_LAG,
    &ALERTS_FIRING,
    &ALERT_NOTIFICATIONS,
    &STREAM_PUSHED,
    &STREAM_PUSH_REJECTED,
    &STREAM_APPLIED,
    &STREAM_DEAD_LETTERS,
    &STREAM_TIME,
    &STREAM_BROKER_MESSAGES,
    &STREAM_BROKER_REJECTED,
    &CIRCUIT_STATE,
    &CIRCUIT_OPENED,
    &CIRCUIT_REFUSED,
    &FALLBACKS,
    &RETRIES,
    &RETRIES_DENIED,
    &RATE_LIMITED,
    &SHADOW_DROPPED,
    &PREDICTION_CACHE,
    &PREDICTION_CACHE_SHARED_ERRORS,
    &FEATURE_CACHE,
    &FEATURE_CACHE_REFRESHED,
    &PROCESS_CPU,
    &PROCESS_RSS,
    &PROCESS_FDS,
    &PROCESS_THREADS,
    &PROCESS_START,
];
