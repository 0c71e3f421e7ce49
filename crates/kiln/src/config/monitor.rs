//! `[monitor]`: the prediction log, label feedback, the performance window and live drift.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Log every scored request (or the `sample_rate` share of them) to Parquet.
    #[serde(default = "yes")]
    pub prediction_log: bool,
    /// Where the log's files go, relative to the project.
    #[serde(default = "default_log_dir")]
    pub log_dir: String,
    /// Share of requests logged, 0 to 1 (picked by request id).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    /// Requests waiting for the log writer at most; beyond it they are dropped and counted.
    #[serde(default = "default_log_queue")]
    pub log_queue: usize,
    /// A log file is written when a model version has this many rows waiting...
    #[serde(default = "default_roll_rows")]
    pub roll_rows: usize,
    /// ...or its oldest waiting row is this old.
    #[serde(default = "default_roll_interval")]
    pub roll_interval: String,
    /// Accept labels on `POST /v1/feedback` and compute performance from them.
    #[serde(default = "yes")]
    pub feedback: bool,
    /// Recent requests remembered so labels can be joined to them.
    #[serde(default = "default_remember")]
    pub remember_requests: usize,
    /// Labels kept per model version (at most, and at most `label_retention` old).
    #[serde(default = "default_remember")]
    pub max_labels: usize,
    #[serde(default = "default_label_retention")]
    pub label_retention: String,
    /// The window of the performance gauges in `/metrics` (and the performance endpoint's
    /// default).
    #[serde(default = "default_performance_window")]
    pub performance_window: String,
    /// Probability at or above which a binary prediction counts as positive.
    #[serde(default = "default_threshold")]
    pub positive_threshold: f64,
    /// Compare each served version's recent traffic with its reference on a schedule.
    #[serde(default = "yes")]
    pub drift: bool,
    /// Rows of recent traffic compared (and pinned, for a version without a reference).
    #[serde(default = "default_drift_window")]
    pub drift_window: usize,
    /// A window is compared once it has this many rows.
    #[serde(default = "default_drift_min_rows")]
    pub drift_min_rows: usize,
    /// How often the windows are compared.
    #[serde(default = "default_drift_interval")]
    pub drift_interval: String,
}

fn yes() -> bool {
    true
}
fn default_log_dir() -> String {
    ".kiln/logs".into()
}
fn default_sample_rate() -> f64 {
    1.0
}
fn default_log_queue() -> usize {
    65_536
}
fn default_roll_rows() -> usize {
    100_000
}
fn default_roll_interval() -> String {
    "1m".into()
}
fn default_remember() -> usize {
    100_000
}
fn default_label_retention() -> String {
    "24h".into()
}
fn default_performance_window() -> String {
    "1h".into()
}
fn default_threshold() -> f64 {
    0.5
}
fn default_drift_window() -> usize {
    10_000
}
fn default_drift_min_rows() -> usize {
    1_000
}
fn default_drift_interval() -> String {
    "1m".into()
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            prediction_log: true,
            log_dir: default_log_dir(),
            sample_rate: default_sample_rate(),
            log_queue: default_log_queue(),
            roll_rows: default_roll_rows(),
            roll_interval: default_roll_interval(),
            feedback: true,
            remember_requests: default_remember(),
            max_labels: default_remember(),
            label_retention: default_label_retention(),
            performance_window: default_performance_window(),
            positive_threshold: default_threshold(),
            drift: true,
            drift_window: default_drift_window(),
            drift_min_rows: default_drift_min_rows(),
            drift_interval: default_drift_interval(),
        }
    }
}

fn duration(key: &str, value: &str, errors: &mut Vec<String>) -> Duration {
    match kiln_core::time::parse_duration(value) {
        Ok(secs) => Duration::from_secs(secs),
        Err(e) => {
            errors.push(format!("monitor.{key}: {e}"));
            Duration::ZERO
        }
    }
}

impl MonitorConfig {
    /// Problems with values that parse but cannot work.
    pub fn validate(&self, errors: &mut Vec<String>) {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            errors.push(format!(
                "monitor.sample_rate {}: must be between 0 and 1",
                self.sample_rate
            ));
        }
        if self.drift_min_rows > self.drift_window {
            errors.push(format!(
                "monitor.drift_min_rows {} is more than monitor.drift_window {}: the window would never be compared",
                self.drift_min_rows, self.drift_window
            ));
        }
        if !(0.0..=1.0).contains(&self.positive_threshold) {
            errors.push(format!(
                "monitor.positive_threshold {}: must be between 0 and 1",
                self.positive_threshold
            ));
        }
        for (key, value) in [
            ("log_queue", self.log_queue),
            ("roll_rows", self.roll_rows),
            ("remember_requests", self.remember_requests),
            ("max_labels", self.max_labels),
            ("drift_window", self.drift_window),
            ("drift_min_rows", self.drift_min_rows),
        ] {
            if value == 0 {
                errors.push(format!("monitor.{key}: must be at least 1"));
            }
        }
        for (key, value) in [
            ("roll_interval", &self.roll_interval),
            ("label_retention", &self.label_retention),
            ("performance_window", &self.performance_window),
            ("drift_interval", &self.drift_interval),
        ] {
            let before = errors.len();
            if duration(key, value, errors) == Duration::ZERO && errors.len() == before {
                errors.push(format!("monitor.{key}: must be longer than 0s"));
            }
        }
    }

    /// The serving options these settings make, with the log under `project_dir`.
    pub fn options(&self, project_dir: &Path) -> anyhow::Result<kiln_serve::MonitorOptions> {
        let mut errors = Vec::new();
        let roll_interval = duration("roll_interval", &self.roll_interval, &mut errors);
        let retention = duration("label_retention", &self.label_retention, &mut errors);
        let window = duration("performance_window", &self.performance_window, &mut errors);
        let drift_interval = duration("drift_interval", &self.drift_interval, &mut errors);
        if !errors.is_empty() {
            anyhow::bail!("{}", errors.join("\n"));
        }
        Ok(kiln_serve::MonitorOptions {
            prediction_log: self.prediction_log.then(|| {
                let mut log =
                    kiln_monitor::predlog::LogConfig::new(project_dir.join(&self.log_dir));
                log.sample_rate = self.sample_rate;
                log.queue_capacity = self.log_queue;
                log.roll_rows = self.roll_rows;
                log.roll_interval = roll_interval;
                log
            }),
            feedback: self
                .feedback
                .then_some(kiln_monitor::feedback::FeedbackConfig {
                    remember_requests: self.remember_requests,
                    max_labels: self.max_labels,
                    retention,
                    threshold: self.positive_threshold,
                }),
            performance_window: window,
            track_requests: false,
            drift: self
                .drift
                .then_some(kiln_serve::monitor::drift::DriftConfig {
                    window_rows: self.drift_window,
                    min_rows: self.drift_min_rows,
                    interval: drift_interval,
                }),
        })
    }
}
