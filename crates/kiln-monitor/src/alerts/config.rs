//! The `[alerts]` section as written in `kiln.toml`: plain serde structs with their defaults
//! documented next to them. Nothing here is checked beyond its type;
//! [`AlertsConfig::validate`](crate::alerts::AlertsConfig::validate) (in `validate.rs`) turns it
//! into an [`AlertPlan`](crate::alerts::AlertPlan) and reports every problem at once.
//!
//! Rules are one flat struct with a `kind` rather than a tagged enum, so that a field that does
//! not belong to the kind (a `window` on `drift_share`) is reported by name with the rule, with
//! all the others, instead of serde stopping at the first one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Direction, Dur, Secret, Severity, WebhookUrl};

/// Alerting: how often rules are evaluated, where notifications go, and the rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often every rule is evaluated. Default `"30s"`.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Names this Kiln instance in notifications (PagerDuty's `payload.source`). Default
    /// `"kiln"`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Notification targets by name (`[alerts.webhooks.NAME]`); rules name them in `notify`.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// The rules (`[[alerts.rules]]`).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where the alerts' state is kept across restarts, so a restart neither announces a
    /// firing alert again nor forgets to resolve it. Unset: the embedding program decides
    /// (`kiln serve`: `.kiln/alerts/state.json` in the project); `""`: not kept.
    #[serde(default)]
    pub state_file: Option<String>,
}

fn default_interval() -> Dur {
    Dur::secs(30)
}

fn default_source() -> String {
    "kiln".into()
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval: default_interval(),
            source: default_source(),
            webhooks: BTreeMap::new(),
            rules: Vec::new(),
            state_file: None,
        }
    }
}

/// What a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// Kiln's own JSON body (docs/alerts.md), for chat bridges, Alertmanager-style receivers and
    /// scripts.
    Generic,
    /// PagerDuty Events API v2.
    Pagerduty,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Generic => "generic",
            WebhookKind::Pagerduty => "pagerduty",
        }
    }
}

/// PagerDuty's Events API v2 endpoint, the default `url` of a `pagerduty` webhook.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One notification target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub kind: WebhookKind,
    /// Where to POST. Required for `generic`; `pagerduty` defaults to
    /// [`PAGERDUTY_EVENTS_URL`]. Shown without its path in logs.
    #[serde(default)]
    pub url: Option<WebhookUrl>,
    /// PagerDuty: the integration's routing key. Prefer `routing_key_env`.
    #[serde(default)]
    pub routing_key: Option<Secret>,
    /// PagerDuty: the environment variable that holds the routing key (read at start-up).
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// Extra request headers (e.g. `Authorization`); their values are redacted in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Time allowed for one attempt, connection included. Default `"10s"`.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Attempts per notification, the first included; then it is counted as failed. Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles per attempt up to `max_backoff`, each delay
    /// jittered between half and all of it. Default `"1s"`.
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
    /// The longest delay between attempts. Default `"1m"`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    /// Notifications waiting for this webhook; when full, new ones are dropped and counted
    /// (evaluation never waits for a webhook). Default 256.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_timeout() -> Dur {
    Dur::secs(10)
}

fn default_max_attempts() -> u32 {
    5
}

fn default_backoff() -> Dur {
    Dur::secs(1)
}

fn default_max_backoff() -> Dur {
    Dur::secs(60)
}

fn default_queue_capacity() -> usize {
    256
}

impl WebhookConfig {
    /// A webhook of `kind` with every default (no URL, no key).
    pub fn new(kind: WebhookKind) -> WebhookConfig {
        WebhookConfig {
            kind,
            url: None,
            routing_key: None,
            routing_key_env: None,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

/// What a rule watches. Every value is "higher is worse" unless `direction = "below"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Per model: the share of its input columns that drifted, 0 to 1.
    DriftShare,
    /// Per model and feature: the feature's drift score (a distance, or a p-value with
    /// `direction = "below"`).
    FeatureDrift,
    /// Per model: the 99th percentile of request latency over `window`, in seconds.
    LatencyP99,
    /// Per model: failed requests over all requests in `window`, 0 to 1.
    ErrorRate,
    /// Per model: how far a windowed quality metric (`metric`) fell below its baseline.
    AccuracyDrop,
    /// Per feature view: age of its newest value, in seconds.
    FeatureFreshness,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::DriftShare => "drift_share",
            RuleKind::FeatureDrift => "feature_drift",
            RuleKind::LatencyP99 => "latency_p99",
            RuleKind::ErrorRate => "error_rate",
            RuleKind::AccuracyDrop => "accuracy_drop",
            RuleKind::FeatureFreshness => "feature_freshness",
        }
    }

    /// The runbook a rule links to when it names none.
    pub fn default_runbook(self) -> String {
        format!("docs/runbooks/{}.md", self.as_str().replace('_', "-"))
    }
}

/// `accuracy_drop`: how the drop from the baseline is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropMode {
    /// `baseline - current` (0.92 -> 0.87 is 0.05).
    #[default]
    Absolute,
    /// `(baseline - current) / baseline` (0.92 -> 0.87 is 0.054).
    Relative,
}

/// What a firing alert does when its subject stops reporting (a model with no traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// Stay as it is: a pending alert waits for data, a firing one keeps firing.
    #[default]
    Keep,
    /// Resolve a firing alert (value `null`), forget a pending one.
    Resolve,
}

/// One alert rule (`[[alerts.rules]]`). Which fields apply depends on `kind`; the rest must be
/// left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique among the rules; names the alert in notifications and `dedup_key`s.
    #[serde(default)]
    pub name: String,
    pub kind: RuleKind,
    /// Fires when the value is past it (above, or below with `direction = "below"`). Required.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Which side of the threshold is bad. Default `"above"`.
    #[serde(default)]
    pub direction: Direction,
    /// Resolves only once the value is back past this one (hysteresis). Default: `threshold`.
    #[serde(default)]
    pub resolve_threshold: Option<f64>,
    /// How long the condition must hold before the alert fires (it is `pending` meanwhile).
    /// Default `"0"`: fire on the first bad evaluation.
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// How long the value must stay on the good side of `resolve_threshold` before a firing
    /// alert resolves. Default `"0"`.
    #[serde(default)]
    pub resolve_after: Dur,
    /// Notify again while the alert keeps firing, this often. Default: never.
    #[serde(default)]
    pub repeat_interval: Option<Dur>,
    /// `latency_p99`, `error_rate`: default `"5m"`; `accuracy_drop`: default `"1h"`.
    #[serde(default)]
    pub window: Option<Dur>,
    /// A subject whose measurement saw fewer samples (requests, labels) is "no data".
    /// Default 0.
    #[serde(default)]
    pub min_samples: u64,
    /// See [`NoData`]. Default `"keep"`.
    #[serde(default)]
    pub no_data: NoData,
    /// Only these models (all kinds except `feature_freshness`). Default: every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// `feature_drift`: only these features. Default: every feature.
    #[serde(default)]
    pub features: Vec<String>,
    /// `feature_freshness`: only these feature views. Default: every view.
    #[serde(default)]
    pub views: Vec<String>,
    /// `accuracy_drop`: the windowed metric (`accuracy`, `auc`, `f1`, ...). Default
    /// `"accuracy"`.
    #[serde(default)]
    pub metric: Option<String>,
    /// `accuracy_drop`: a fixed baseline. Default: the baseline the signal provider reports
    /// (e.g. the metric on the model's validation set).
    #[serde(default)]
    pub baseline: Option<f64>,
    /// `accuracy_drop`: `"absolute"` (default) or `"relative"`.
    #[serde(default)]
    pub drop: Option<DropMode>,
    /// Default `"warning"`.
    #[serde(default)]
    pub severity: Severity,
    /// A URL or repository path to the runbook. Default `docs/runbooks/<kind>.md`.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Extra labels carried by every notification of this rule (`team`, `service`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Webhook names to notify. Default: every webhook; `[]`: none (events and listing only).
    #[serde(default)]
    pub notify: Option<Vec<String>>,
}

impl RuleConfig {
    /// A rule with every default: no threshold, all subjects, every webhook.
    pub fn new(name: impl Into<String>, kind: RuleKind) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            kind,
            threshold: None,
            direction: Direction::Above,
            resolve_threshold: None,
            for_: Dur::default(),
            resolve_after: Dur::default(),
            repeat_interval: None,
            window: None,
            min_samples: 0,
            no_data: NoData::Keep,
            models: Vec::new(),
            features: Vec::new(),
            views: Vec::new(),
            metric: None,
            baseline: None,
            drop: None,
            severity: Severity::Warning,
            runbook: None,
            labels: BTreeMap::new(),
            notify: None,
        }
    }
}
