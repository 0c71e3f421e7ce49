//! Alerting: rules over drift, latency, errors, model quality and feature freshness that fire
//! and resolve with hysteresis, announce each change once on the event bus, and notify webhooks
//! (generic JSON, PagerDuty Events v2) with a runbook link.
//!
//! The data flows one way:
//!
//! ```text
//! [alerts] config --validate--> AlertPlan
//! SignalProvider --Signals--> Evaluator (pure) --Transitions--> EventBus (Event::Alert)
//!                                                          \--> Notifiers (queue per webhook,
//!                                                               retries, counts) --> HTTP
//! ```
//!
//! [`AlertEngine`] drives it on a timer. The serving process supplies the measurements through
//! [`SignalProvider`]; this module never reads live state itself.

mod config;
mod engine;
mod error;
mod evaluator;
mod notify;
mod payload;
mod rule;
mod signals;
mod types;
mod validate;

pub use config::{
    AlertsConfig, DropMode, NoData, PAGERDUTY_EVENTS_URL, RuleConfig, RuleKind, WebhookConfig,
    WebhookKind,
};
pub use engine::{AlertEngine, EngineStats};
pub use error::AlertError;
pub use evaluator::{AlertState, AlertStatus, Change, Evaluator, Transition, dedup_key};
pub use notify::NotifierStats;
pub use payload::{generic as generic_body, pagerduty as pagerduty_body, summary};
pub use rule::{AlertPlan, Baseline, Rule, Value, Webhook, Zone};
pub use signals::{
    Measurement, ProviderError, SignalKind, SignalProvider, SignalQuery, Signals, Subject,
};
pub use types::{Direction, Dur, Secret, Severity, WebhookUrl};
pub use validate::EnvLookup;
