//! The alert engine: every `interval` it asks the [`SignalProvider`] for measurements (on a
//! blocking thread), runs the [`Evaluator`], publishes each fire/resolve on the [`EventBus`]
//! and queues notifications. Nothing here waits on a webhook.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::time::{Micros, now_micros};
use serde::Serialize;

use super::error::AlertError;
use super::evaluator::{AlertStatus, Change, Evaluator, Transition};
use super::notify::{NotifierStats, Notifiers};
use super::rule::AlertPlan;
use super::signals::{SignalProvider, SignalQuery};
use crate::bus::EventBus;
use crate::events::{AlertEvent, Event};

/// The engine's counts, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Evaluations completed.
    pub evaluations: u64,
    /// Evaluations skipped because the provider failed.
    pub provider_errors: u64,
    /// Transitions announced (fires, resolves and reminders).
    pub transitions: u64,
    /// Alerts firing now.
    pub firing: usize,
    pub notifiers: Vec<NotifierStats>,
}

/// Evaluates the rules of an [`AlertPlan`] on a timer and tells the bus and the webhooks.
pub struct AlertEngine {
    interval: Duration,
    queries: Vec<SignalQuery>,
    evaluator: Mutex<Evaluator>,
    provider: Arc<dyn SignalProvider>,
    bus: EventBus,
    notifiers: Notifiers,
    evaluations: AtomicU64,
    provider_errors: AtomicU64,
    transitions: AtomicU64,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertEngine")
            .field("interval", &self.interval)
            .field("stats", &self.stats())
            .finish()
    }
}

impl AlertEngine {
    /// An engine for `plan`, reading from `provider` and publishing on `bus`. Starts the
    /// webhooks' sender tasks, so it must be called inside a tokio runtime; evaluation starts
    /// with [`AlertEngine::run`] (or by calling [`AlertEngine::tick`]).
    pub fn new(
        plan: AlertPlan,
        provider: Arc<dyn SignalProvider>,
        bus: EventBus,
    ) -> Result<Arc<AlertEngine>, AlertError> {
        let notifiers = Notifiers::start(&plan.webhooks, &plan.source)?;
        let evaluator = Evaluator::new(plan.rules);
        Ok(Arc::new(AlertEngine {
            interval: plan.interval,
            queries: evaluator.queries(),
            evaluator: Mutex::new(evaluator),
            provider,
            bus,
            notifiers,
            evaluations: AtomicU64::new(0),
            provider_errors: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        }))
    }

    /// Evaluates every `interval` until `shutdown` completes. A failed evaluation is logged and
    /// counted, and the next one runs on time.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut timer = tokio::time::interval(self.interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = timer.tick() => {
                    if let Err(e) = self.tick().await {
                        tracing::warn!("alert evaluation skipped: {e}");
                    }
                }
            }
        }
    }

    /// Spawns [`AlertEngine::run`] on the current runtime until the returned handle is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run(std::future::pending()))
    }

    /// One evaluation now.
    pub async fn tick(&self) -> Result<Vec<Transition>, AlertError> {
        self.tick_at(now_micros()).await
    }

    /// One evaluation as of `now` (microseconds since the epoch): measure, evaluate, publish,
    /// queue notifications. Returns the transitions announced.
    pub async fn tick_at(&self, now: Micros) -> Result<Vec<Transition>, AlertError> {
        let provider = self.provider.clone();
        let queries = self.queries.clone();
        let signals = tokio::task::spawn_blocking(move || provider.signals(&queries, now))
            .await
            .map_err(|e| AlertError::Signals(format!("the provider panicked: {e}")))
            .and_then(|r| r.map_err(|e| AlertError::Signals(e.to_string())));
        let signals = match signals {
            Ok(s) => s,
            Err(e) => {
                self.provider_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let transitions = self
            .evaluator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evaluate(&signals, now);
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        self.transitions
            .fetch_add(transitions.len() as u64, Ordering::Relaxed);
        for t in &transitions {
            if !t.repeat {
                tracing::info!(rule = %t.rule.name, subject = %t.subject, value = ?t.value, "alert {}", t.change.as_str());
                self.bus.publish(Event::Alert(Arc::new(event(t))));
            }
            self.notifiers.enqueue(t);
        }
        Ok(transitions)
    }

    /// Every pending, firing and last-resolved alert, for `GET /v1/alerts` and
    /// `kiln alerts list --json`.
    pub fn alerts(&self) -> Vec<AlertStatus> {
        self.evaluator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .states()
    }

    pub fn stats(&self) -> EngineStats {
        let firing = self
            .alerts()
            .iter()
            .filter(|a| a.state == super::evaluator::AlertState::Firing)
            .count();
        EngineStats {
            evaluations: self.evaluations.load(Ordering::Relaxed),
            provider_errors: self.provider_errors.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            firing,
            notifiers: self.notifiers.stats(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// The bus's view of a transition.
pub fn event(t: &Transition) -> AlertEvent {
    AlertEvent {
        rule: t.rule.name.clone(),
        state: t.change.as_str(),
        subject: t.subject.to_string(),
        value: t.value.unwrap_or(f64::NAN),
        threshold: match t.change {
            Change::Firing => t.rule.threshold,
            Change::Resolved => t.rule.resolve_threshold,
        },
        severity: t.rule.severity.as_str(),
        runbook: t.rule.runbook.clone(),
        started_at_micros: t.started_at,
        ts_micros: t.at,
    }
}
