//! From the `[alerts]` section as written to an [`AlertPlan`]: every problem is collected and
//! reported at once, each naming the rule (by index and name) or webhook and the field, with
//! the value and what to write instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{
    AlertsConfig, DropMode, PAGERDUTY_EVENTS_URL, RuleConfig, RuleKind, WebhookConfig, WebhookKind,
};
use super::error::AlertError;
use super::rule::{AlertPlan, Baseline, Rule, Value, Webhook};
use super::signals::{SignalKind, SignalQuery};
use super::types::{Direction, Dur, Secret, WebhookUrl};

/// Looks up an environment variable (`std::env::var(name).ok()` in the binary; a map in tests,
/// which never set the process environment).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Labels a rule's subject already carries; a rule label may not shadow them.
const SUBJECT_LABELS: [&str; 3] = ["model", "feature", "view"];

impl AlertsConfig {
    /// Checks everything and builds the plan, resolving `routing_key_env` through `env`.
    pub fn validate(&self, env: EnvLookup<'_>) -> Result<AlertPlan, AlertError> {
        let mut problems = Vec::new();
        if self.interval.is_zero() {
            problems.push("alerts.interval: must be more than 0 (e.g. \"30s\")".to_string());
        }
        if self.source.trim().is_empty() {
            problems.push("alerts.source: must not be empty".to_string());
        }
        let mut webhooks = Vec::new();
        for (name, w) in &self.webhooks {
            if let Some(w) = webhook(name, w, env, &mut problems) {
                webhooks.push(w);
            }
        }
        let mut rules = Vec::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = if r.name.is_empty() {
                format!("alerts.rules[{i}]")
            } else {
                format!("alerts.rules[{i}] ({:?})", r.name)
            };
            if r.name.trim().is_empty() {
                problems.push(format!("{at}: `name` is required"));
            } else if let Some(j) = names.insert(&r.name, i) {
                problems.push(format!(
                    "{at}: `name` {:?} is already used by alerts.rules[{j}]; rule names must be unique",
                    r.name
                ));
            }
            let before = problems.len();
            let built = rule(r, &at, self, &mut problems);
            if problems.len() == before {
                rules.extend(built.map(Arc::new));
            }
        }
        if !problems.is_empty() {
            return Err(AlertError::InvalidConfig { problems });
        }
        Ok(AlertPlan {
            interval: self.interval.0,
            source: self.source.clone(),
            webhooks,
            rules,
            state_file: self
                .state_file
                .as_ref()
                .filter(|f| !f.is_empty())
                .map(std::path::PathBuf::from),
        })
    }
}

fn webhook(
    name: &str,
    w: &WebhookConfig,
    env: EnvLookup<'_>,
    problems: &mut Vec<String>,
) -> Option<Webhook> {
    let at = format!("alerts.webhooks.{name}");
    let before = problems.len();
    let url = match (&w.url, w.kind) {
        (Some(u), _) => u.clone(),
        (None, WebhookKind::Pagerduty) => WebhookUrl::new(PAGERDUTY_EVENTS_URL),
        (None, WebhookKind::Generic) => {
            problems.push(format!(
                "{at}.url: required for kind = \"generic\" (e.g. \"http://alert-bridge:8080/kiln\")"
            ));
            WebhookUrl::new("")
        }
    };
    let u = url.expose();
    let http = u.starts_with("http://") || u.starts_with("https://");
    if !u.is_empty() && !http {
        problems.push(format!("{at}.url: {url} is not an http:// or https:// URL"));
    }
    let routing_key = match w.kind {
        WebhookKind::Generic => {
            if w.routing_key.is_some() || w.routing_key_env.is_some() {
                problems.push(format!(
                    "{at}: `routing_key` and `routing_key_env` are only for kind = \"pagerduty\""
                ));
            }
            None
        }
        WebhookKind::Pagerduty => match (&w.routing_key, &w.routing_key_env) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{at}: set `routing_key` or `routing_key_env`, not both"
                ));
                None
            }
            (Some(k), None) if k.expose().trim().is_empty() => {
                problems.push(format!("{at}.routing_key: is empty"));
                None
            }
            (Some(k), None) => Some(k.clone()),
            (None, Some(var)) => match env(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => Some(Secret::new(v.trim())),
                None => {
                    problems.push(format!(
                        "{at}.routing_key_env: environment variable {var} is not set (or empty); export it with the PagerDuty integration's routing key"
                    ));
                    None
                }
            },
            (None, None) => {
                problems.push(format!(
                    "{at}: kind = \"pagerduty\" needs `routing_key_env` (the environment variable holding the integration's routing key) or `routing_key`"
                ));
                None
            }
        },
    };
    if w.timeout.is_zero() {
        problems.push(format!("{at}.timeout: must be more than 0 (e.g. \"10s\")"));
    }
    if w.max_attempts == 0 {
        problems.push(format!("{at}.max_attempts: must be at least 1"));
    }
    if w.queue_capacity == 0 {
        problems.push(format!("{at}.queue_capacity: must be at least 1"));
    }
    if w.backoff > w.max_backoff {
        problems.push(format!(
            "{at}.backoff: {} is longer than max_backoff ({})",
            w.backoff, w.max_backoff
        ));
    }
    for header in w.headers.keys() {
        let valid = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !valid {
            problems.push(format!(
                "{at}.headers: {header:?} is not a valid header name"
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Webhook {
        name: name.to_string(),
        kind: w.kind,
        url,
        routing_key,
        headers: w
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout: w.timeout.0,
        max_attempts: w.max_attempts,
        backoff: w.backoff.0,
        max_backoff: w.max_backoff.0,
        queue_capacity: w.queue_capacity,
    })
}

/// The unit and an example threshold, for messages.
fn threshold_hint(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::DriftShare => "a share from 0 to 1, e.g. 0.3",
        RuleKind::FeatureDrift => {
            "the drift score, e.g. 0.1, or a p-value such as 0.05 with direction = \"below\""
        }
        RuleKind::LatencyP99 => "seconds, e.g. 0.25",
        RuleKind::ErrorRate => "a share from 0 to 1, e.g. 0.01",
        RuleKind::AccuracyDrop => "the drop, e.g. 0.05",
        RuleKind::FeatureFreshness => "seconds, e.g. 3600",
    }
}

fn rule(
    r: &RuleConfig,
    at: &str,
    config: &AlertsConfig,
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let kind = r.kind;
    let k = kind.as_str();
    let mut not_for = |field: &str, set: bool| {
        if set {
            problems.push(format!("{at}: `{field}` does not apply to kind = {k:?}"));
        }
    };
    let windowed = matches!(
        kind,
        RuleKind::LatencyP99 | RuleKind::ErrorRate | RuleKind::AccuracyDrop
    );
    not_for("window", !windowed && r.window.is_some());
    not_for(
        "features",
        kind != RuleKind::FeatureDrift && !r.features.is_empty(),
    );
    not_for(
        "views",
        kind != RuleKind::FeatureFreshness && !r.views.is_empty(),
    );
    not_for(
        "models",
        kind == RuleKind::FeatureFreshness && !r.models.is_empty(),
    );
    let drop_kind = kind == RuleKind::AccuracyDrop;
    not_for("metric", !drop_kind && r.metric.is_some());
    not_for("baseline", !drop_kind && r.baseline.is_some());
    not_for("drop", !drop_kind && r.drop.is_some());
    if r.direction == Direction::Below && kind != RuleKind::FeatureDrift {
        problems.push(format!(
            "{at}.direction: \"below\" is only for kind = \"feature_drift\" (p-values); {k} is worse when higher"
        ));
    }

    let threshold = match r.threshold {
        None => {
            problems.push(format!(
                "{at}.threshold: required ({})",
                threshold_hint(kind)
            ));
            None
        }
        Some(t) if !t.is_finite() => {
            problems.push(format!("{at}.threshold: {t} is not a number"));
            None
        }
        Some(t) => {
            let mode = r.drop.unwrap_or_default();
            let range = match kind {
                RuleKind::DriftShare | RuleKind::ErrorRate => (0.0..1.0)
                    .contains(&t)
                    .then_some(())
                    .ok_or("from 0 up to (not including) 1"),
                RuleKind::LatencyP99 | RuleKind::FeatureFreshness => {
                    (t > 0.0).then_some(()).ok_or("more than 0 seconds")
                }
                RuleKind::AccuracyDrop if mode == DropMode::Relative => (t > 0.0 && t <= 1.0)
                    .then_some(())
                    .ok_or("a relative drop above 0, up to 1"),
                RuleKind::AccuracyDrop => (t > 0.0).then_some(()).ok_or("more than 0"),
                RuleKind::FeatureDrift => Ok(()),
            };
            if let Err(want) = range {
                problems.push(format!(
                    "{at}.threshold: {t} is out of range for {k}: expected {want} ({})",
                    threshold_hint(kind)
                ));
            }
            Some(t)
        }
    };
    let resolve_threshold = match (threshold, r.resolve_threshold) {
        (Some(t), None) => Some(t),
        (Some(t), Some(rt)) => {
            let wrong_side = match r.direction {
                Direction::Above => rt > t,
                Direction::Below => rt < t,
            };
            if !rt.is_finite() {
                problems.push(format!("{at}.resolve_threshold: {rt} is not a number"));
            } else if wrong_side {
                let (side, word) = match r.direction {
                    Direction::Above => ("above", "lower"),
                    Direction::Below => ("below", "higher"),
                };
                problems.push(format!(
                    "{at}.resolve_threshold: {rt} is {side} threshold ({t}); it must be {word} or equal, or the alert would resolve while still past its threshold"
                ));
            }
            Some(rt)
        }
        (None, _) => None,
    };
    if r.repeat_interval.is_some_and(Dur::is_zero) {
        problems.push(format!(
            "{at}.repeat_interval: must be more than 0 (leave it out to never repeat)"
        ));
    }
    if r.window.is_some_and(Dur::is_zero) {
        problems.push(format!("{at}.window: must be more than 0 (e.g. \"5m\")"));
    }
    if r.runbook.as_deref().is_some_and(|s| s.trim().is_empty()) {
        problems.push(format!(
            "{at}.runbook: is empty (leave it out for {})",
            kind.default_runbook()
        ));
    }
    let metric = r.metric.clone().unwrap_or_else(|| "accuracy".into());
    if metric.trim().is_empty() {
        problems.push(format!(
            "{at}.metric: is empty (e.g. \"accuracy\", \"auc\")"
        ));
    }
    if let Some(b) = r.baseline.filter(|b| !b.is_finite()) {
        problems.push(format!("{at}.baseline: {b} is not a number"));
    }
    for key in r.labels.keys() {
        if key.trim().is_empty() {
            problems.push(format!("{at}.labels: a label name is empty"));
        } else if SUBJECT_LABELS.contains(&key.as_str()) {
            problems.push(format!(
                "{at}.labels: {key:?} is set from the alert's subject and cannot be a rule label"
            ));
        }
    }
    let notify =
        match &r.notify {
            None => config.webhooks.keys().cloned().collect(),
            Some(names) => {
                for n in names.iter().filter(|n| !config.webhooks.contains_key(*n)) {
                    let known: Vec<&str> = config.webhooks.keys().map(String::as_str).collect();
                    problems.push(format!(
                    "{at}.notify: no webhook named {n:?} (defined: {}; add [alerts.webhooks.{n}])",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ));
                }
                names.clone()
            }
        };

    let default_window = |d: u64| r.window.unwrap_or(Dur::secs(d)).0;
    let (signal, value) = match kind {
        RuleKind::DriftShare => (SignalQuery::new(SignalKind::DriftShare), Value::Direct),
        RuleKind::FeatureDrift => (SignalQuery::new(SignalKind::FeatureDrift), Value::Direct),
        RuleKind::LatencyP99 => (
            SignalQuery::windowed(SignalKind::LatencyP99, default_window(300)),
            Value::Direct,
        ),
        RuleKind::ErrorRate => (
            SignalQuery::windowed(SignalKind::ErrorRate, default_window(300)),
            Value::Direct,
        ),
        RuleKind::AccuracyDrop => (
            SignalQuery::windowed(SignalKind::Metric(metric.clone()), default_window(3600)),
            Value::Drop {
                mode: r.drop.unwrap_or_default(),
                baseline: match r.baseline {
                    Some(b) => Baseline::Fixed(b),
                    None => Baseline::Signal(SignalQuery::new(SignalKind::MetricBaseline(metric))),
                },
            },
        ),
        RuleKind::FeatureFreshness => (SignalQuery::new(SignalKind::FeatureAge), Value::Direct),
    };
    Some(Rule {
        name: r.name.clone(),
        kind,
        signal,
        value,
        direction: r.direction,
        threshold: threshold?,
        resolve_threshold: resolve_threshold?,
        hold: r.for_,
        resolve_after: r.resolve_after,
        repeat_interval: r.repeat_interval,
        min_samples: r.min_samples,
        no_data: r.no_data,
        models: r.models.clone(),
        features: r.features.clone(),
        views: r.views.clone(),
        severity: r.severity,
        runbook: r.runbook.clone().unwrap_or_else(|| kind.default_runbook()),
        labels: r.labels.clone(),
        notify,
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
