//! The alert engine: every `interval` it asks the [`SignalProvider`] for measurements (on a
//! blocking thread), runs the [`Evaluator`], publishes each fire/resolve on the [`EventBus`]
//! and queues notifications. Nothing here waits on a webhook.
//!
//! With a state file, the alerts' state is written (atomically: temporary file, fsync, rename)
//! after each evaluation that changed it, and read back at start, so a restart neither
//! announces a firing alert a second time nor loses the resolve of one that recovered while
//! the server was down.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::time::{Micros, now_micros};
use serde::Serialize;

use super::error::AlertError;
use super::evaluator::{AlertStatus, Change, Evaluator, SavedAlert, Transition};
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
    state_file: Option<PathBuf>,
    /// What the state file holds now (to write it only when an alert's state changes).
    saved: tokio::sync::Mutex<Vec<SavedAlert>>,
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
        let mut evaluator = Evaluator::new(plan.rules);
        let mut saved = Vec::new();
        if let Some(path) = &plan.state_file {
            match load_state(path) {
                Ok(Some(alerts)) => {
                    let n = evaluator.restore(alerts.clone());
                    tracing::info!(file = %path.display(), alerts = n, "alert state restored");
                    saved = alerts;
                }
                Ok(None) => {}
                Err(e) => {
                    // Kept aside for a person to look at; the engine starts afresh.
                    let aside = path.with_extension("unreadable");
                    let _ = std::fs::rename(path, &aside);
                    tracing::warn!(file = %path.display(), moved_to = %aside.display(), "alert state not restored: {e}");
                }
            }
        }
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
            state_file: plan.state_file,
            saved: tokio::sync::Mutex::new(saved),
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
        self.save().await;
        Ok(transitions)
    }

    /// Writes the state file when an alert's state changed since it was last written.
    async fn save(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let alerts = self
            .evaluator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saved();
        let mut saved = self.saved.lock().await;
        if saved.len() == alerts.len() && saved.iter().zip(&alerts).all(|(a, b)| a.same_state(b)) {
            return;
        }
        let text = match serde_json::to_string_pretty(&alerts) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("alert state not saved: {e}");
                return;
            }
        };
        let path = path.clone();
        match tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes())).await {
            Ok(Ok(())) => *saved = alerts,
            Ok(Err(e)) => tracing::warn!("alert state not saved: {e}"),
            Err(e) => tracing::warn!("alert state not saved: {e}"),
        }
    }

    /// Stops taking notifications and waits up to `grace` for the queued ones to be delivered
    /// (each within its retry limits); returns how many were still queued when it gave up.
    pub async fn close(&self, grace: Duration) -> usize {
        self.notifiers.close(grace).await
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

/// Reads a state file: `None` when there is none.
fn load_state(path: &Path) -> Result<Option<Vec<SavedAlert>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let alerts =
        serde_json::from_str(&text).map_err(|e| format!("not an alert state file: {e}"))?;
    Ok(Some(alerts))
}

/// Writes `bytes` beside `path`, syncs, and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
