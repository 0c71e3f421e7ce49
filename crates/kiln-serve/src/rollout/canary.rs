//! Canary verdicts. While a model's deployment has a canary, every answered request of its
//! canary and baseline versions is recorded here for the current step: counts, failures
//! (server errors, timeouts, sheds and fallback answers; a client's own errors do not count),
//! and bounded uniform samples of latencies and predictions. Every second the server judges
//! each step ([`judge`]): once both versions have `min_requests`, a canary worse than its
//! baseline on error rate, p99 latency or prediction distribution is rolled back at once;
//! a healthy one advances when its step has baked, and is promoted to production after the
//! last step. The verdict is a registry event appended only if the log still ends where the
//! judge read it, so of several replicas judging the same step exactly one verdict lands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_core::deploy::{Canary, Deployment, percent};
use kiln_core::spec::Stage;
use kiln_core::time::{Micros, format_duration, now_micros};
use kiln_monitor::performance::Performance;
use kiln_registry::{Event, ModelState};
use tokio::task::JoinHandle;

use crate::state::ServeState;

/// Latencies and predictions sampled per version and step.
const SAMPLES: usize = 10_000;

/// One version's traffic in the current step.
#[derive(Debug, Default, Clone)]
pub struct ArmStats {
    pub requests: u64,
    pub failed: u64,
    /// Seconds; a uniform sample of every request's latency.
    latencies: Vec<f64>,
    /// Each answered row's first output; a uniform sample.
    predictions: Vec<f64>,
    rows: u64,
}

/// Keeps a uniform sample of at most [`SAMPLES`] of `seen` values (reservoir sampling).
fn sample(into: &mut Vec<f64>, seen: u64, x: f64) {
    if into.len() < SAMPLES {
        into.push(x);
    } else {
        let j = fastrand::u64(0..seen);
        if (j as usize) < SAMPLES {
            into[j as usize] = x;
        }
    }
}

impl ArmStats {
    pub fn record(&mut self, failed: bool, latency: Duration, predictions: &[f64]) {
        self.requests += 1;
        self.failed += u64::from(failed);
        sample(&mut self.latencies, self.requests, latency.as_secs_f64());
        for &p in predictions.iter().filter(|p| p.is_finite()) {
            self.rows += 1;
            sample(&mut self.predictions, self.rows, p);
        }
    }

    pub fn error_rate(&self) -> f64 {
        self.failed as f64 / self.requests.max(1) as f64
    }

    /// Nearest-rank p99 of the sampled latencies, in seconds.
    pub fn p99(&self) -> f64 {
        let mut l = self.latencies.clone();
        if l.is_empty() {
            return 0.0;
        }
        l.sort_by(f64::total_cmp);
        l[((l.len() as f64 * 0.99).ceil() as usize).max(1) - 1]
    }

    fn sorted_predictions(&self) -> Vec<f64> {
        let mut p = self.predictions.clone();
        p.sort_by(f64::total_cmp);
        p
    }
}

/// What to do with a canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Rollback(String),
    Advance(String),
    Promote(String),
}

/// The quality of the baseline and the canary on the labels posted during a step.
pub type Labelled = (Performance, Performance);

/// Why the canary's quality is worse than the baseline's by more than the gate allows.
fn quality_drop(c: &Canary, (base, can): &Labelled) -> Option<String> {
    let g = &c.gates;
    if (base.count as u64) < g.min_labels || (can.count as u64) < g.min_labels {
        return None;
    }
    match (base.accuracy, can.accuracy, base.rmse, can.rmse) {
        (Some(b), Some(k), _, _) if k < b - g.max_accuracy_drop => Some(format!(
            "accuracy {:.1}% vs {:.1}% for the baseline on {} and {} labels (at most {:.1} points less)",
            k * 100.0,
            b * 100.0,
            can.count,
            base.count,
            g.max_accuracy_drop * 100.0
        )),
        (_, _, Some(b), Some(k)) if k > b * (1.0 + g.max_accuracy_drop) => Some(format!(
            "RMSE {k:.4} vs {b:.4} for the baseline on {} and {} labels (at most {:.1}% more)",
            can.count,
            base.count,
            g.max_accuracy_drop * 100.0
        )),
        _ => None,
    }
}

/// The verdict on a step, if any yet: `baked` says whether its bake time is over; `labelled`
/// is the two versions' quality on the labels posted during the step, when labels are on.
pub fn judge(
    c: &Canary,
    baseline: &ArmStats,
    canary: &ArmStats,
    baked: bool,
    labelled: Option<&Labelled>,
) -> Option<Verdict> {
    let g = &c.gates;
    // Labels can arrive after the traffic: they are judged whenever there are enough.
    if let Some(why) = labelled.and_then(|l| quality_drop(c, l)) {
        return Some(Verdict::Rollback(why));
    }
    if baseline.requests < g.min_requests || canary.requests < g.min_requests {
        return None;
    }
    let (eb, ec) = (baseline.error_rate(), canary.error_rate());
    if ec > eb + g.max_error_increase {
        return Some(Verdict::Rollback(format!(
            "error rate {:.1}% vs {:.1}% for the baseline (at most {:.1} points more)",
            ec * 100.0,
            eb * 100.0,
            g.max_error_increase * 100.0
        )));
    }
    let (pb, pc) = (baseline.p99(), canary.p99());
    if pc > pb * g.max_latency_ratio + 0.001 {
        return Some(Verdict::Rollback(format!(
            "p99 latency {:.1} ms vs {:.1} ms for the baseline (at most {}x)",
            pc * 1e3,
            pb * 1e3,
            g.max_latency_ratio
        )));
    }
    let (sb, sc) = (baseline.sorted_predictions(), canary.sorted_predictions());
    let shift = if sb.is_empty() || sc.is_empty() {
        0.0
    } else {
        kiln_monitor::drift::ks::statistic(&sb, &sc)
    };
    if shift > g.max_prediction_shift {
        return Some(Verdict::Rollback(format!(
            "predictions shifted from the baseline's: Kolmogorov-Smirnov distance {shift:.3} (at most {})",
            g.max_prediction_shift
        )));
    }
    if !baked {
        return None;
    }
    let summary = format!(
        "{} and {} requests, error rate {:.1}% vs {:.1}%, p99 {:.1} ms vs {:.1} ms, prediction shift {shift:.3}",
        canary.requests,
        baseline.requests,
        ec * 100.0,
        eb * 100.0,
        pc * 1e3,
        pb * 1e3,
    );
    Some(if c.step + 1 < c.steps.len() {
        Verdict::Advance(summary)
    } else {
        Verdict::Promote(summary)
    })
}

/// The step of one model being judged.
#[derive(Debug)]
struct Watch {
    /// The registry event that started the step.
    seq: i64,
    baseline: u32,
    canary: u32,
    stats: [ArmStats; 2],
}

/// The canaries in progress on this server.
#[derive(Debug, Default)]
pub struct Canaries {
    /// Whether any canary is watched: requests of other models skip the lock.
    active: AtomicBool,
    watched: Mutex<HashMap<String, Watch>>,
}

impl Canaries {
    /// Records an answered request of `model` version `version` (`failed`: the server's fault
    /// or a fallback answer); `predictions` gives each row's first output.
    pub fn observe(
        &self,
        model: &str,
        version: &str,
        failed: bool,
        latency: Duration,
        predictions: impl FnOnce() -> Vec<f64>,
    ) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = watched.get_mut(model) else {
            return;
        };
        let Ok(v) = version.parse::<u32>() else {
            return;
        };
        let arm = if v == w.baseline {
            0
        } else if v == w.canary {
            1
        } else {
            return;
        };
        w.stats[arm].record(failed, latency, &predictions());
    }

    /// Follows the registry: watches each canary's current step from its start, and forgets
    /// finished ones.
    pub fn follow(&self, models: &BTreeMap<String, ModelState>) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.retain(|name, w| {
            models
                .get(name)
                .is_some_and(|m| m.deployed_seq == w.seq && canary(m).is_some())
        });
        for m in models.values() {
            if let Some(c) = canary(m) {
                watched.entry(m.name.clone()).or_insert_with(|| Watch {
                    seq: m.deployed_seq,
                    baseline: c.baseline,
                    canary: c.version,
                    stats: Default::default(),
                });
            }
        }
        self.active.store(!watched.is_empty(), Ordering::Relaxed);
    }

    /// The verdicts due at `now`: (model, the event that started the judged step, verdict).
    /// `labelled(model, canary, since)` gives the step's label comparison, when labels are on.
    pub fn verdicts(
        &self,
        models: &BTreeMap<String, ModelState>,
        now: Micros,
        labelled: impl Fn(&str, &Canary, Micros) -> Option<Labelled>,
    ) -> Vec<(String, i64, Verdict)> {
        // Judged on a copy: requests being recorded do not wait for the sorting.
        let watched: Vec<(String, i64, [ArmStats; 2])> = {
            let w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            w.iter()
                .map(|(name, w)| (name.clone(), w.seq, w.stats.clone()))
                .collect()
        };
        watched
            .into_iter()
            .filter_map(|(name, seq, stats)| {
                let m = models.get(&name).filter(|m| m.deployed_seq == seq)?;
                let c = canary(m)?;
                let baked = now.saturating_sub(m.deployed_at)
                    >= (c.bake_seconds as i64).saturating_mul(1_000_000);
                let l = labelled(&name, c, m.deployed_at);
                let v = judge(c, &stats[0], &stats[1], baked, l.as_ref())?;
                Some((name, seq, v))
            })
            .collect()
    }
}

/// Judges the canaries every second until aborted.
pub(crate) fn spawn_judge(state: ServeState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = judge_once(&state).await {
                tracing::warn!(error = %e, "a canary verdict could not be recorded; judging again");
            }
        }
    })
}

/// Follows the registry and records the verdicts due now.
async fn judge_once(state: &ServeState) -> Result<(), kiln_registry::RegistryError> {
    let snapshot = state.snapshot();
    state.canaries().follow(&snapshot.models);
    let now = now_micros();
    let feedback = state.monitor().feedback();
    let labelled = |name: &str, c: &Canary, since: Micros| {
        let f = feedback?;
        let window = Duration::from_micros(now.saturating_sub(since).max(1) as u64);
        let quality = |v: u32| {
            f.performance(name, Some(v), window, now)
                .into_iter()
                .next()
                .map(|p| p.performance)
        };
        Some((quality(c.baseline)?, quality(c.version)?))
    };
    for (name, seq, verdict) in state.canaries().verdicts(&snapshot.models, now, labelled) {
        let recorded = state
            .append_if_unchanged(|s| {
                let m = s.models.get(&name).filter(|m| m.deployed_seq == seq)?;
                verdict_events(m, &verdict)
            })
            .await?;
        if recorded {
            tracing::info!(model = %name, ?verdict, "canary verdict recorded");
        }
    }
    Ok(())
}

/// The registry events of a verdict on `m`'s canary.
fn verdict_events(m: &ModelState, verdict: &Verdict) -> Option<Vec<Event>> {
    let d = m.deployment.as_ref()?;
    let c = d.canary.as_ref()?;
    let deployed = |deployment, reason| Event::ModelDeployed {
        name: m.name.clone(),
        deployment,
        reason,
    };
    Some(match verdict {
        Verdict::Rollback(why) => vec![deployed(
            Some(Deployment {
                arms: Deployment::single(c.baseline).arms,
                canary: None,
                ..d.clone()
            }),
            format!("{} rolled back: {why}", label(c)),
        )],
        Verdict::Advance(why) => {
            let next = Canary {
                step: c.step + 1,
                ..c.clone()
            };
            let reason = format!(
                "{} advanced to {}% after {} baking: {why}",
                label(c),
                percent(next.steps[next.step]),
                format_duration(c.bake_seconds)
            );
            vec![deployed(
                Some(Deployment {
                    arms: next.arms(),
                    canary: Some(next),
                    ..d.clone()
                }),
                reason,
            )]
        }
        // A promotion ends the deployment; the event before it says why.
        Verdict::Promote(why) => vec![
            deployed(
                None,
                format!(
                    "{} passed its last step: promoted to production ({why})",
                    label(c)
                ),
            ),
            Event::ModelStageChanged {
                name: m.name.clone(),
                version: c.version,
                stage: Stage::Production,
            },
        ],
    })
}

fn canary(m: &ModelState) -> Option<&Canary> {
    m.deployment.as_ref()?.canary.as_ref()
}

/// "canary v2 at 25%".
pub fn label(c: &Canary) -> String {
    format!("canary v{} at {}%", c.version, percent(c.steps[c.step]))
}

#[cfg(test)]
mod tests {
    use kiln_core::deploy::Gates;

    use super::*;

    fn canary(step: usize) -> Canary {
        Canary {
            version: 2,
            baseline: 1,
            steps: vec![1_000, 5_000],
            step,
            bake_seconds: 60,
            gates: Gates {
                min_requests: 10,
                ..Gates::default()
            },
        }
    }

    fn arm(n: u64, failed: u64, latency_ms: u64, prediction: f64) -> ArmStats {
        let mut a = ArmStats::default();
        for i in 0..n {
            let p = prediction + (i % 10) as f64 / 100.0;
            a.record(i < failed, Duration::from_millis(latency_ms), &[p]);
        }
        a
    }

    #[test]
    fn a_canary_is_judged_on_errors_latency_and_predictions() {
        let good = arm(100, 0, 10, 0.5);
        // Too little traffic: no verdict, even baked.
        assert_eq!(
            judge(&canary(0), &good, &arm(5, 5, 10, 0.5), true, None),
            None
        );
        // Worse on errors: rolled back at once, baked or not.
        let v = judge(&canary(0), &good, &arm(100, 20, 10, 0.5), false, None);
        assert!(
            matches!(&v, Some(Verdict::Rollback(r)) if r.contains("error rate 20.0% vs 0.0%")),
            "{v:?}"
        );
        // Slower at p99.
        let v = judge(&canary(0), &good, &arm(100, 0, 30, 0.5), false, None);
        assert!(
            matches!(&v, Some(Verdict::Rollback(r)) if r.contains("p99 latency 30.0 ms")),
            "{v:?}"
        );
        // Predicting something else.
        let v = judge(&canary(0), &good, &arm(100, 0, 10, 0.9), false, None);
        assert!(
            matches!(&v, Some(Verdict::Rollback(r)) if r.contains("Kolmogorov-Smirnov distance 1.000")),
            "{v:?}"
        );
        // As good: waits for the bake, then advances; after the last step, promotes.
        let same = arm(100, 1, 10, 0.5);
        assert_eq!(judge(&canary(0), &good, &same, false, None), None);
        assert!(matches!(
            judge(&canary(0), &good, &same, true, None),
            Some(Verdict::Advance(_))
        ));
        assert!(matches!(
            judge(&canary(1), &good, &same, true, None),
            Some(Verdict::Promote(_))
        ));
    }

    #[test]
    fn labels_roll_back_a_canary_that_is_less_accurate() {
        use kiln_monitor::performance::{Task, compute};
        let labels = vec![1.0; 60];
        let right = compute(Task::Binary, &[0.9; 60], &labels, 0.5);
        let half: Vec<f64> = (0..60)
            .map(|i| if i % 2 == 0 { 0.9 } else { 0.1 })
            .collect();
        let wrong = compute(Task::Binary, &half, &labels, 0.5);
        let quiet = ArmStats::default();
        // Judged on labels alone, before any traffic threshold or bake.
        let v = judge(
            &canary(0),
            &quiet,
            &quiet,
            false,
            Some(&(right.clone(), wrong.clone())),
        );
        assert!(
            matches!(&v, Some(Verdict::Rollback(r)) if r.contains("accuracy 50.0% vs 100.0%")),
            "{v:?}"
        );
        let v = judge(
            &canary(0),
            &quiet,
            &quiet,
            false,
            Some(&(right.clone(), right.clone())),
        );
        assert_eq!(v, None);
        // Too few labels: not judged.
        let few = compute(Task::Binary, &[0.1; 10], &[1.0; 10], 0.5);
        assert_eq!(
            judge(&canary(0), &quiet, &quiet, false, Some(&(right, few))),
            None
        );
        let reg = |err: f64| compute(Task::Regression, &vec![1.0 + err; 60], &vec![1.0; 60], 0.5);
        let v = judge(
            &canary(0),
            &quiet,
            &quiet,
            false,
            Some(&(reg(0.1), reg(0.2))),
        );
        assert!(
            matches!(&v, Some(Verdict::Rollback(r)) if r.contains("RMSE 0.2000 vs 0.1000")),
            "{v:?}"
        );
    }

    #[test]
    fn samples_stay_bounded_and_uniform() {
        let mut a = ArmStats::default();
        for i in 0..100_000u32 {
            a.record(false, Duration::from_micros(u64::from(i)), &[f64::from(i)]);
        }
        assert_eq!((a.latencies.len(), a.predictions.len()), (SAMPLES, SAMPLES));
        // The sample's p99 is near the true one (99,000 µs).
        assert!((a.p99() - 0.099).abs() < 0.002, "{}", a.p99());
    }
}
