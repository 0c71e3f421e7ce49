//! Live drift per served model version, evaluated on a schedule: the version's window of
//! recent traffic (features and outputs, from the bus) against its reference. The reference
//! is the one recorded at registration (`kiln models register --reference`), read once from
//! the artifact store and checked against its SHA-256; without one, the version's first full
//! window is pinned as its baseline (for the server's life; `POST .../drift/pin` pins the
//! current window instead). Each evaluation is kept for `GET /v1/models/{name}/drift`, the
//! `/metrics` gauges and the drift alert rules, and published as a drift event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::time::now_micros;
use kiln_monitor::EventBus;
use kiln_monitor::events::{DriftEvent, Event};
use kiln_monitor::live::{
    LiveDrift, LiveReference, ReferenceInfo, ReferenceOrigin, decode_reference,
};
use kiln_monitor::window::{Window, Windows};
use kiln_store::artifacts::sha256_hex;
use tokio::task::JoinHandle;

use crate::ServeState;

/// How live drift runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Rows in each version's window (the current side), and in a pinned reference.
    pub window_rows: usize,
    /// A window is compared once it has at least this many rows.
    pub min_rows: usize,
    /// How often every window is compared.
    pub interval: Duration,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window_rows: 10_000,
            min_rows: 1_000,
            interval: Duration::from_secs(60),
        }
    }
}

type Key = (String, u32);

/// Where one version's live drift stands.
#[derive(Debug, Clone)]
pub enum DriftStatus {
    /// Evaluated.
    Evaluated(Arc<LiveDrift>),
    /// Not evaluated yet, or not evaluable; says why.
    Pending(String),
}

pub struct LiveDriftMonitor {
    config: DriftConfig,
    windows: Arc<Windows>,
    references: Mutex<HashMap<Key, Arc<LiveReference>>>,
    status: Mutex<HashMap<Key, DriftStatus>>,
    bus: EventBus,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveDriftMonitor {
    /// Starts keeping windows of every version's traffic (needs a tokio runtime).
    pub fn start(bus: &EventBus, config: DriftConfig) -> LiveDriftMonitor {
        LiveDriftMonitor {
            windows: Windows::start(bus, config.window_rows),
            config,
            references: Mutex::new(HashMap::new()),
            status: Mutex::new(HashMap::new()),
            bus: bus.clone(),
        }
    }

    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// The latest evaluation (or why there is none) of a version.
    pub fn status(&self, model: &str, version: u32) -> Option<DriftStatus> {
        lock(&self.status)
            .get(&(model.to_string(), version))
            .cloned()
    }

    /// Every version's latest evaluation.
    pub fn evaluated(&self) -> Vec<Arc<LiveDrift>> {
        let mut out: Vec<Arc<LiveDrift>> = lock(&self.status)
            .values()
            .filter_map(|s| match s {
                DriftStatus::Evaluated(d) => Some(d.clone()),
                DriftStatus::Pending(_) => None,
            })
            .collect();
        out.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        out
    }

    /// Pins a version's current window as its reference (replacing any other); returns the
    /// reference's rows.
    pub fn pin(&self, model: &str, version: u32) -> Result<usize, String> {
        let window = self
            .windows
            .get(model, version)
            .filter(|w| w.rows() > 0)
            .ok_or_else(|| {
                format!("{model} v{version} has served no traffic since the server started")
            })?;
        let reference = LiveReference::pinned(&window, now_micros()).map_err(|e| e.to_string())?;
        let rows = reference.rows();
        lock(&self.references).insert((model.to_string(), version), Arc::new(reference));
        Ok(rows)
    }

    fn set(&self, key: Key, status: DriftStatus) {
        lock(&self.status).insert(key, status);
    }

    /// Compares every version's window with its reference, once.
    pub async fn evaluate_all(&self, state: &ServeState) {
        for (model, version) in self.windows.versions() {
            let Some(window) = self.windows.get(&model, version) else {
                continue;
            };
            let key = (model.clone(), version);
            if window.rows() < self.config.min_rows.max(1) {
                self.set(
                    key,
                    DriftStatus::Pending(format!(
                        "the window has {} of the {} rows compared at the least",
                        window.rows(),
                        self.config.min_rows
                    )),
                );
                continue;
            }
            let reference = match self.reference(state, &model, version, &window).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.set(
                        key,
                        DriftStatus::Pending(format!(
                            "no reference was recorded at registration; the first full window \
                             ({} of {} rows so far) becomes the reference",
                            window.rows(),
                            self.config.window_rows
                        )),
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%model, version, error = %e, "live drift: no reference");
                    self.set(key, DriftStatus::Pending(e));
                    continue;
                }
            };
            let compared = {
                let reference = reference.clone();
                tokio::task::spawn_blocking(move || {
                    let report = reference.compare(&window, true);
                    (report, window)
                })
                .await
            };
            let (report, window) = match compared {
                Ok(r) => r,
                Err(e) => {
                    self.set(key, DriftStatus::Pending(format!("evaluation failed: {e}")));
                    continue;
                }
            };
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    self.set(key, DriftStatus::Pending(format!("cannot compare: {e}")));
                    continue;
                }
            };
            let now = now_micros();
            self.bus.publish(Event::Drift(Arc::new(DriftEvent {
                model: model.clone(),
                version,
                drift_share: report.share_of_drifted_columns,
                dataset_drift: report.dataset_drift,
                drifted: report
                    .columns
                    .iter()
                    .filter(|c| c.drifted)
                    .map(|c| (c.name.clone(), c.score))
                    .collect(),
                ts_micros: now,
            })));
            self.set(
                key,
                DriftStatus::Evaluated(Arc::new(LiveDrift {
                    model,
                    version,
                    evaluated_at_micros: now,
                    reference: ReferenceInfo::of(&reference),
                    window_rows: window.rows(),
                    rows_seen: window.seen,
                    report,
                })),
            );
        }
    }

    /// The version's reference: cached, else the registered one (loaded now), else the
    /// window itself once it is full (pinned). `Ok(None)`: not yet.
    async fn reference(
        &self,
        state: &ServeState,
        model: &str,
        version: u32,
        window: &Window,
    ) -> Result<Option<Arc<LiveReference>>, String> {
        let key = (model.to_string(), version);
        if let Some(r) = lock(&self.references).get(&key) {
            return Ok(Some(r.clone()));
        }
        let snapshot = state.snapshot();
        let spec = snapshot
            .models
            .get(model)
            .and_then(|m| m.version(version))
            .map(|v| v.spec.clone())
            .ok_or_else(|| format!("{model} v{version} is no longer in the registry"))?;
        let reference = match &spec.reference {
            Some(r) => {
                let what = format!("{model} v{version}'s drift reference {}", r.artifact);
                let artifacts = state
                    .models()
                    .artifacts()
                    .ok_or_else(|| format!("{what}: this server has no artifact store"))?;
                let bytes = artifacts
                    .get(&r.artifact)
                    .await
                    .map_err(|e| format!("{what}: cannot be read: {e}"))?;
                let sha = sha256_hex(&bytes);
                if sha != r.sha256 {
                    return Err(format!(
                        "{what} has SHA-256 {sha}, registered as {}; it was changed after registration",
                        r.sha256
                    ));
                }
                let origin = ReferenceOrigin::Registered {
                    artifact: r.artifact.clone(),
                    source: r.source.clone(),
                };
                tokio::task::spawn_blocking(move || {
                    let dataset = decode_reference(bytes)?;
                    LiveReference::new(&dataset, origin)
                })
                .await
                .map_err(|e| format!("{what}: {e}"))?
                .map_err(|e| format!("{what}: {e}"))?
            }
            None if window.rows() >= self.config.window_rows => {
                tracing::info!(%model, version, rows = window.rows(), "live drift: pinned the first full window as the reference");
                LiveReference::pinned(window, now_micros()).map_err(|e| e.to_string())?
            }
            None => return Ok(None),
        };
        let reference = Arc::new(reference);
        lock(&self.references).insert(key, reference.clone());
        Ok(Some(reference))
    }

    /// Evaluates every `interval` until aborted.
    pub(crate) fn spawn(state: ServeState) -> Option<JoinHandle<()>> {
        let every = state.monitor().drift()?.config.interval;
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(d) = state.monitor().drift() {
                    d.evaluate_all(&state).await;
                }
            }
        }))
    }
}
