//! Values read when `/metrics` is scraped rather than counted on the request path: the event
//! bus's per-subscriber counts, the prediction log's and feedback's counters, model performance
//! over the configured window, each feature view's materialization lag, the circuit
//! breakers' states (the online store's and each loaded model version's), model retries and
//! the caches' counts.

use std::sync::atomic::Ordering;

use kiln_core::time::now_micros;

use super::ServeMetrics;
use super::defs::*;
use crate::ServeState;

impl ServeMetrics {
    /// Brings the scraped values up to date.
    pub(crate) fn collect(&self, state: &ServeState) {
        let models = state.models().loaded_models();
        let model_breakers = models.iter().filter_map(|m| m.breaker());
        for b in state.breakers().iter().chain(model_breakers) {
            self.gauge(&CIRCUIT_STATE, &[b.name()])
                .set(b.state().gauge());
            self.counter(&CIRCUIT_OPENED, &[b.name()])
                .absolute(b.opened());
            self.counter(&CIRCUIT_REFUSED, &[b.name()])
                .absolute(b.refused());
        }
        for m in &models {
            let version = m.spec.version.to_string();
            if let Some(b) = m.retry_budget() {
                let labels = [m.spec.name.as_str(), &version];
                self.counter(&RETRIES, &labels).absolute(b.retried());
                self.counter(&RETRIES_DENIED, &labels).absolute(b.denied());
            }
            if let Some(c) = m.prediction_cache() {
                let labels = [m.spec.name.as_str(), &version];
                for (result, n) in [
                    ("hit", c.hits()),
                    ("shared_hit", c.shared_hits()),
                    ("miss", c.misses()),
                ] {
                    self.counter(&PREDICTION_CACHE, &[labels[0], labels[1], result])
                        .absolute(n);
                }
                self.counter(&PREDICTION_CACHE_SHARED_ERRORS, &labels)
                    .absolute(c.shared_errors());
            }
        }
        if let Some(cache) = state.feature_cache() {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            for (view, c) in cache.store().counts() {
                for (result, n) in [
                    ("hit", &c.hits),
                    ("stale", &c.stale),
                    ("miss", &c.misses),
                    ("negative", &c.negative),
                ] {
                    self.counter(&FEATURE_CACHE, &[view.as_str(), result])
                        .absolute(load(n));
                }
                self.counter(&FEATURE_CACHE_REFRESHED, &[view.as_str()])
                    .absolute(load(&c.refreshed));
            }
        }
        if let Some(limits) = state.rate_limits() {
            self.counter(&RATE_LIMITED, &[]).absolute(limits.limited());
        }
        let monitor = state.monitor();
        for s in monitor.bus().stats() {
            self.counter(&EVENTS_DELIVERED, &[s.name])
                .absolute(s.delivered);
            self.counter(&EVENTS_DROPPED, &[s.name]).absolute(s.dropped);
            self.gauge(&EVENTS_QUEUED, &[s.name]).set(s.queued as f64);
        }
        if let Some(c) = monitor.log_counters() {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            self.counter(&LOG_ROWS, &["predictions"])
                .absolute(load(&c.prediction_rows));
            self.counter(&LOG_ROWS, &["feedback"])
                .absolute(load(&c.feedback_rows));
            self.counter(&LOG_FILES, &[]).absolute(load(&c.files));
            self.counter(&LOG_WRITE_ERRORS, &[])
                .absolute(load(&c.write_errors));
            self.counter(&LOG_ROWS_LOST, &[])
                .absolute(load(&c.rows_lost));
            self.counter(&LOG_SAMPLED_OUT, &[])
                .absolute(load(&c.sampled_out));
        }
        if let Some(drift) = monitor.drift() {
            for d in drift.evaluated() {
                let (model, version) = (d.model.as_str(), d.version.to_string());
                let r = &d.report;
                self.gauge(&DRIFT_SHARE, &[model, &version])
                    .set(r.share_of_drifted_columns);
                self.gauge(&DRIFT_DETECTED, &[model, &version])
                    .set(f64::from(u8::from(r.dataset_drift)));
                self.gauge(&DRIFT_EVALUATED, &[model, &version])
                    .set(d.evaluated_at_micros as f64 / 1e6);
                for c in &r.columns {
                    self.gauge(
                        &DRIFT_FEATURE_SCORE,
                        &[model, &version, &c.name, c.method.name()],
                    )
                    .set(c.score);
                    self.gauge(&DRIFT_FEATURE_DRIFTED, &[model, &version, &c.name])
                        .set(f64::from(u8::from(c.drifted)));
                }
            }
        }
        let now = now_micros();
        if let Some(feedback) = monitor.feedback() {
            let c = &feedback.counters;
            for (outcome, n) in [
                ("matched", &c.matched),
                ("unmatched", &c.unmatched),
                ("relabelled", &c.relabelled),
            ] {
                self.counter(&FEEDBACK_LABELS, &[outcome])
                    .absolute(n.load(Ordering::Relaxed));
            }
            let window = monitor.performance_window();
            let mut models: Vec<String> = feedback
                .labelled_versions()
                .into_iter()
                .map(|(m, _)| m)
                .collect();
            models.dedup();
            for model in models {
                for v in feedback.performance(&model, None, window, now) {
                    let version = v.version.to_string();
                    let p = &v.performance;
                    self.gauge(&MODEL_LABELLED, &[&model, &version])
                        .set(p.count as f64);
                    for (metric, value) in [
                        ("accuracy", p.accuracy),
                        ("precision", p.precision),
                        ("recall", p.recall),
                        ("f1", p.f1),
                        ("auc", p.auc),
                        ("log_loss", p.log_loss),
                        ("brier", p.brier),
                        ("calibration_error", p.calibration_error),
                        ("predicted_positive_rate", p.predicted_positive_rate),
                        ("label_positive_rate", p.label_positive_rate),
                        ("mae", p.mae),
                        ("rmse", p.rmse),
                    ] {
                        if let Some(value) = value {
                            self.gauge(&MODEL_PERFORMANCE, &[&model, &version, metric])
                                .set(value);
                        }
                    }
                }
            }
        }
        if let Some(engine) = state.alerts() {
            let stats = engine.stats();
            self.gauge(&ALERTS_FIRING, &[]).set(stats.firing as f64);
            for n in &stats.notifiers {
                for (outcome, count) in [
                    ("sent", n.sent),
                    ("failed", n.failed),
                    ("dropped", n.dropped),
                ] {
                    self.counter(&ALERT_NOTIFICATIONS, &[&n.webhook, outcome])
                        .absolute(count);
                }
            }
        }
        for (view, watermark) in &state.snapshot().materialized {
            self.gauge(&MATERIALIZATION_LAG, &[view])
                .set((now - watermark) as f64 / 1e6);
        }
    }
}
