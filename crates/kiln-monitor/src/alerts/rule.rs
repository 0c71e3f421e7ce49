//! A validated rule and webhook: what the evaluator and the notifiers run from. Built only by
//! [`AlertsConfig::validate`](crate::alerts::AlertsConfig::validate), so every field here has
//! already been checked (the threshold is on the right side of the resolve threshold, selectors
//! fit the kind, webhooks named in `notify` exist, the routing key was found).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::config::{DropMode, NoData, RuleKind, WebhookKind};
use super::signals::{SignalQuery, Signals, Subject};
use super::types::{Direction, Dur, Secret, Severity, WebhookUrl};

/// Everything the alert engine needs, validated.
#[derive(Debug, Clone)]
pub struct AlertPlan {
    pub interval: Duration,
    pub source: String,
    pub webhooks: Vec<Webhook>,
    pub rules: Vec<Arc<Rule>>,
    /// Where the state is kept across restarts; `None`: it is not.
    pub state_file: Option<std::path::PathBuf>,
}

/// A notification target.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub kind: WebhookKind,
    pub url: WebhookUrl,
    /// PagerDuty only.
    pub routing_key: Option<Secret>,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub queue_capacity: usize,
}

/// Where an `accuracy_drop` rule's baseline comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    Fixed(f64),
    Signal(SignalQuery),
}

/// How a rule turns measurements into the value it compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The measurement itself.
    Direct,
    /// The drop of the measured metric from a baseline.
    Drop { mode: DropMode, baseline: Baseline },
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// What to ask the provider for.
    pub signal: SignalQuery,
    pub value: Value,
    pub direction: Direction,
    pub threshold: f64,
    pub resolve_threshold: f64,
    pub hold: Dur,
    pub resolve_after: Dur,
    pub repeat_interval: Option<Dur>,
    pub min_samples: u64,
    pub no_data: NoData,
    /// Empty: every model / feature / view.
    pub models: Vec<String>,
    pub features: Vec<String>,
    pub views: Vec<String>,
    pub severity: Severity,
    pub runbook: String,
    pub labels: BTreeMap<String, String>,
    /// Webhook names.
    pub notify: Vec<String>,
}

/// Where a value stands against a rule's two thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Past `threshold`: the condition holds.
    Bad,
    /// Between the thresholds: neither fires nor resolves.
    Band,
    /// Back past `resolve_threshold`.
    Good,
}

impl Rule {
    /// The queries this rule needs answered.
    pub fn queries(&self) -> Vec<SignalQuery> {
        match &self.value {
            Value::Drop {
                baseline: Baseline::Signal(q),
                ..
            } => vec![self.signal.clone(), q.clone()],
            _ => vec![self.signal.clone()],
        }
    }

    /// Whether the rule's selectors take `subject`.
    pub fn selects(&self, subject: &Subject) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        match subject {
            Subject::Model { model } => {
                self.kind != RuleKind::FeatureDrift
                    && self.kind != RuleKind::FeatureFreshness
                    && any(&self.models, model)
            }
            Subject::Feature { model, feature } => {
                self.kind == RuleKind::FeatureDrift
                    && any(&self.models, model)
                    && any(&self.features, feature)
            }
            Subject::View { view } => {
                self.kind == RuleKind::FeatureFreshness && any(&self.views, view)
            }
        }
    }

    /// The value compared with the thresholds, or `None` for no data (absent, NaN, too few
    /// samples, no baseline).
    pub fn value_of(&self, signals: &Signals, subject: &Subject) -> Option<f64> {
        let m = signals.get(&self.signal, subject)?;
        if m.value.is_nan() || m.samples.is_some_and(|n| n < self.min_samples) {
            return None;
        }
        match &self.value {
            Value::Direct => Some(m.value),
            Value::Drop { mode, baseline } => {
                let base = match baseline {
                    Baseline::Fixed(b) => *b,
                    Baseline::Signal(q) => signals.get(q, subject)?.value,
                };
                let drop = base - m.value;
                match mode {
                    DropMode::Absolute => Some(drop).filter(|d| !d.is_nan()),
                    DropMode::Relative if base > 0.0 => Some(drop / base),
                    DropMode::Relative => None,
                }
            }
        }
    }

    pub fn zone(&self, value: f64) -> Zone {
        let (bad, good) = match self.direction {
            Direction::Above => (value > self.threshold, value <= self.resolve_threshold),
            Direction::Below => (value < self.threshold, value >= self.resolve_threshold),
        };
        if bad {
            Zone::Bad
        } else if good {
            Zone::Good
        } else {
            Zone::Band
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertsConfig;
    use crate::alerts::config::RuleConfig;
    use crate::alerts::signals::{Measurement, SignalKind};

    fn compile(rule: RuleConfig) -> Rule {
        let mut config = AlertsConfig::default();
        config.rules.push(rule);
        let plan = config.validate(&|_| None).expect("valid");
        (*plan.rules[0]).clone()
    }

    #[test]
    fn zones_follow_direction_and_the_band() {
        let mut c = RuleConfig::new("p", RuleKind::FeatureDrift);
        c.threshold = Some(0.05);
        c.resolve_threshold = Some(0.1);
        c.direction = Direction::Below;
        let r = compile(c);
        assert_eq!(r.zone(0.01), Zone::Bad);
        assert_eq!(r.zone(0.05), Zone::Band);
        assert_eq!(r.zone(0.07), Zone::Band);
        assert_eq!(r.zone(0.1), Zone::Good);
        let mut c = RuleConfig::new("l", RuleKind::LatencyP99);
        c.threshold = Some(0.25);
        let r = compile(c);
        assert_eq!(r.zone(0.26), Zone::Bad);
        assert_eq!(
            r.zone(0.25),
            Zone::Good,
            "no band: at the threshold is fine"
        );
    }

    #[test]
    fn accuracy_drop_uses_the_baseline_and_thin_windows_are_no_data() {
        let mut c = RuleConfig::new("acc", RuleKind::AccuracyDrop);
        c.threshold = Some(0.05);
        c.drop = Some(DropMode::Relative);
        c.min_samples = 100;
        let r = compile(c);
        let subject = Subject::model("ranker");
        let current = r.signal.clone();
        let base = SignalQuery::new(SignalKind::MetricBaseline("accuracy".into()));
        assert_eq!(r.queries(), vec![current.clone(), base.clone()]);
        let s = Signals::new().with(
            current.clone(),
            subject.clone(),
            Measurement::with_samples(0.8, 500),
        );
        assert_eq!(r.value_of(&s, &subject), None, "no baseline yet");
        let s = s.with(base, subject.clone(), 1.0);
        let v = r.value_of(&s, &subject).expect("a value");
        assert!((v - 0.2).abs() < 1e-12, "{v}");
        let thin = s.with(current, subject.clone(), Measurement::with_samples(0.1, 99));
        assert_eq!(r.value_of(&thin, &subject), None);
    }

    #[test]
    fn selectors_pick_subjects_of_the_rule_kind() {
        let mut c = RuleConfig::new("d", RuleKind::FeatureDrift);
        c.threshold = Some(0.1);
        c.models = vec!["ranker".into()];
        let r = compile(c);
        assert!(r.selects(&Subject::feature("ranker", "amount")));
        assert!(!r.selects(&Subject::feature("fraud", "amount")));
        assert!(!r.selects(&Subject::model("ranker")));
        assert!(!r.selects(&Subject::view("ranker")));
    }
}
