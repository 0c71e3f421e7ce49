//! What the alert rules watch, measured from the live server: a short history of every
//! request's latency and outcome per model (p99 latency, error rate), performance from labels
//! (and the baseline recorded at registration), each view's materialization lag, and the
//! latest live drift evaluation of each model's default version.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use kiln_core::time::Micros;
use kiln_monitor::alerts::{
    Measurement, ProviderError, SignalKind, SignalProvider, SignalQuery, Signals, Subject,
};

use crate::inference::ModelHub;
use crate::state::Inner;

/// Requests remembered per model, at most (the oldest are forgotten first).
const MAX_REQUESTS: usize = 200_000;
/// Requests older than this are forgotten.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// (when, latency in seconds, failed) of one request.
type Answered = (Micros, f32, bool);

/// Latency and outcome of recent requests, per model.
#[derive(Debug, Default)]
pub struct RequestHistory {
    models: Mutex<HashMap<String, VecDeque<Answered>>>,
}

impl RequestHistory {
    /// Records one answered request (`failed`: a server-side failure, not a client error).
    pub fn record(&self, model: &str, at: Micros, latency: Duration, failed: bool) {
        if model.is_empty() {
            return;
        }
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let list = models.entry(model.to_string()).or_default();
        list.push_back((at, latency.as_secs_f32(), failed));
        let oldest = at - MAX_AGE.as_micros() as Micros;
        while list.len() > MAX_REQUESTS || list.front().is_some_and(|r| r.0 < oldest) {
            list.pop_front();
        }
    }

    /// Per model over the window before `now`: (p99 latency, error rate, requests).
    fn window(&self, window: Duration, now: Micros) -> Vec<(String, f64, f64, u64)> {
        let from = now - window.as_micros() as Micros;
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models
            .iter()
            .filter_map(|(model, list)| {
                let mut latencies: Vec<f32> = Vec::new();
                let mut failed = 0u64;
                for &(_, latency, f) in list.iter().filter(|r| r.0 >= from) {
                    latencies.push(latency);
                    failed += u64::from(f);
                }
                if latencies.is_empty() {
                    return None;
                }
                latencies.sort_by(f32::total_cmp);
                // Nearest rank: the smallest latency at or above 99% of the requests.
                let rank = ((latencies.len() as f64 * 0.99).ceil() as usize).max(1) - 1;
                let n = latencies.len() as u64;
                Some((
                    model.clone(),
                    f64::from(latencies[rank]),
                    failed as f64 / n as f64,
                    n,
                ))
            })
            .collect()
    }
}

/// The alert engine's view of the server. Holds the server weakly: the server owns the engine.
pub struct LiveSignals {
    pub(crate) state: Weak<Inner>,
}

impl SignalProvider for LiveSignals {
    fn signals(&self, wanted: &[SignalQuery], now: Micros) -> Result<Signals, ProviderError> {
        let mut out = Signals::new();
        let Some(inner) = self.state.upgrade() else {
            return Ok(out);
        };
        let state = crate::ServeState::from_inner(inner);
        let snapshot = state.snapshot();
        let monitor = state.monitor();
        for q in wanted {
            let window = q.window.unwrap_or(Duration::from_secs(300));
            match &q.kind {
                SignalKind::LatencyP99 | SignalKind::ErrorRate => {
                    for (model, p99, errors, n) in monitor.requests().window(window, now) {
                        let v = if q.kind == SignalKind::LatencyP99 {
                            p99
                        } else {
                            errors
                        };
                        out.set(
                            q.clone(),
                            Subject::model(model),
                            Measurement::with_samples(v, n),
                        );
                    }
                }
                SignalKind::Metric(name) => {
                    let Some(feedback) = monitor.feedback() else {
                        continue;
                    };
                    for model in snapshot.models.keys() {
                        // The version that answers by default is the one judged.
                        let Ok(spec) = ModelHub::pick(&snapshot.models, model, None) else {
                            continue;
                        };
                        let perf = feedback.performance(model, Some(spec.version), window, now);
                        let Some(p) = perf.first() else { continue };
                        let value = serde_json::to_value(&p.performance)
                            .ok()
                            .and_then(|v| v.get(name).and_then(serde_json::Value::as_f64));
                        if let Some(v) = value {
                            out.set(
                                q.clone(),
                                Subject::model(model.clone()),
                                Measurement::with_samples(v, p.performance.count as u64),
                            );
                        }
                    }
                }
                SignalKind::MetricBaseline(name) => {
                    for model in snapshot.models.keys() {
                        if let Ok(spec) = ModelHub::pick(&snapshot.models, model, None)
                            && let Some(v) = spec.metrics.get(name)
                        {
                            out.set(q.clone(), Subject::model(model.clone()), *v);
                        }
                    }
                }
                SignalKind::FeatureAge => {
                    for (view, watermark) in &snapshot.materialized {
                        out.set(
                            q.clone(),
                            Subject::view(view.clone()),
                            (now - watermark) as f64 / 1e6,
                        );
                    }
                }
                // The latest live evaluation of the version that answers by default; none yet
                // is no data, never a made-up zero.
                SignalKind::DriftShare | SignalKind::FeatureDrift => {
                    let Some(drift) = monitor.drift() else {
                        continue;
                    };
                    for d in drift.evaluated() {
                        let default = ModelHub::pick(&snapshot.models, &d.model, None)
                            .is_ok_and(|spec| spec.version == d.version);
                        if !default {
                            continue;
                        }
                        let rows = d.window_rows as u64;
                        if q.kind == SignalKind::DriftShare {
                            out.set(
                                q.clone(),
                                Subject::model(d.model.clone()),
                                Measurement::with_samples(d.report.share_of_drifted_columns, rows),
                            );
                        } else {
                            for c in &d.report.columns {
                                out.set(
                                    q.clone(),
                                    Subject::feature(d.model.clone(), c.name.clone()),
                                    Measurement::with_samples(c.score, rows),
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_and_error_rate_over_the_window() {
        let h = RequestHistory::default();
        let now = 10_000_000_000;
        for i in 0..200 {
            // Three slow requests in 200: the 198th fastest (p99, nearest rank) is slow.
            let latency = Duration::from_millis(if i < 197 { 1 } else { 100 });
            h.record("m", now - 1_000_000, latency, i % 10 == 0);
        }
        // An old request outside the window.
        h.record("m", now - 600_000_000, Duration::from_secs(9), true);
        let w = h.window(Duration::from_secs(60), now);
        assert_eq!(w.len(), 1);
        let (model, p99, errors, n) = &w[0];
        assert_eq!((model.as_str(), *n), ("m", 200));
        assert!((p99 - 0.1).abs() < 1e-6, "{p99}");
        assert!((errors - 0.1).abs() < 1e-12, "{errors}");
    }
}
