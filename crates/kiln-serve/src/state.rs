//! The state shared by all requests: the registry snapshot (feature catalog and models), the
//! online store, the loaded models.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kiln_features::online::Catalog;
use kiln_registry::{ModelState, Registry, State};
use kiln_store::artifacts::ArtifactStore;
use kiln_store::online::OnlineStore;
use tokio::task::JoinHandle;

use crate::batching::BatchConfig;
use crate::inference::ModelHub;
use crate::metrics::ServeMetrics;
use crate::monitor::{MonitorOptions, Monitoring};

/// How the server serves, beyond what the registry says.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where model files are read from; without one, models cannot be loaded.
    pub artifacts: Option<ArtifactStore>,
    /// How each model version's requests are batched...
    pub batching: BatchConfig,
    /// ...unless its model has its own settings here.
    pub model_batching: BTreeMap<String, BatchConfig>,
    /// How each model version is called (timeout, retries, breaker, bulkhead, fallbacks)...
    pub resilience: crate::resilience::ModelPolicy,
    /// ...unless its model has its own policy here.
    pub model_resilience: BTreeMap<String, crate::resilience::ModelPolicy>,
    /// Request bodies larger than this are refused with 413.
    pub max_request_bytes: usize,
    /// Prediction log, label feedback, performance.
    pub monitor: MonitorOptions,
    /// Alert rules, evaluated in the server against its live signals.
    pub alerts: Option<kiln_monitor::alerts::AlertPlan>,
    /// The event logs `POST /v1/push/{source}` appends to (absent: the endpoint answers 404).
    pub push: Option<Arc<kiln_stream::push::PushHub>>,
    /// The circuit breakers guarding dependencies, for `/metrics`.
    pub breakers: Vec<Arc<crate::resilience::Breaker>>,
    /// Per-key rate limits in front of every route but health and metrics.
    pub rate_limit: Option<crate::resilience::RateLimitSettings>,
    /// On shutdown, readiness answers 503 this long before the listener closes, so load
    /// balancers stop sending first...
    pub drain_delay: Duration,
    /// ...then requests in flight get at most this long to finish.
    pub drain_timeout: Duration,
    /// The online-feature cache, when the store given to [`ServeState::new`] is behind one:
    /// kept in line with the registry, and counted in `/metrics`.
    pub feature_cache: Option<crate::cache::features::FeatureCache>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            artifacts: None,
            batching: BatchConfig::default(),
            model_batching: BTreeMap::new(),
            resilience: crate::resilience::ModelPolicy::default(),
            model_resilience: BTreeMap::new(),
            max_request_bytes: 64 << 20,
            monitor: MonitorOptions::default(),
            alerts: None,
            push: None,
            breakers: Vec::new(),
            rate_limit: None,
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            feature_cache: None,
        }
    }
}

/// What requests read of the registry, replaced whole when the registry changes.
pub struct Snapshot {
    pub catalog: Catalog,
    pub models: BTreeMap<String, ModelState>,
    /// Each live view's materialization watermark (its current version's), if materialized.
    pub materialized: BTreeMap<String, kiln_core::time::Micros>,
    /// The models with a deployment, ready to route.
    pub routers: BTreeMap<String, crate::rollout::Router>,
}

impl Snapshot {
    fn of(state: &State) -> Snapshot {
        Snapshot {
            catalog: Catalog::from_state(state),
            models: state.models.clone(),
            routers: crate::rollout::routers(&state.models),
            materialized: state
                .live_views()
                .filter_map(|v| {
                    let current = v.versions.len() as u32;
                    v.materialized
                        .get(&current)
                        .map(|m| (v.name.clone(), m.watermark))
                })
                .collect(),
        }
    }
}

/// Cheap to clone; one per request.
#[derive(Clone)]
pub struct ServeState {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    snapshot: RwLock<Arc<Snapshot>>,
    registry_state: tokio::sync::Mutex<State>,
    registry: Option<Registry>,
    store: Arc<dyn OnlineStore>,
    models: ModelHub,
    metrics: Arc<ServeMetrics>,
    monitor: Monitoring,
    alerts: std::sync::OnceLock<Arc<kiln_monitor::alerts::AlertEngine>>,
    max_request_bytes: usize,
    push: Option<Arc<kiln_stream::push::PushHub>>,
    breakers: Vec<Arc<crate::resilience::Breaker>>,
    rate_limits: Option<crate::resilience::RateLimits>,
    draining: std::sync::atomic::AtomicBool,
    drain_delay: Duration,
    drain_timeout: Duration,
    shadow_slots: Arc<tokio::sync::Semaphore>,
    canaries: crate::rollout::canary::Canaries,
    feature_cache: Option<crate::cache::features::FeatureCache>,
}

impl ServeState {
    /// Serving state from a registry state; `registry`, when given, is polled for changes.
    /// Starts the configured monitoring observers, so it needs a tokio runtime.
    pub fn new(
        state: State,
        registry: Option<Registry>,
        store: Arc<dyn OnlineStore>,
        options: ServeOptions,
    ) -> ServeState {
        let metrics = Arc::new(ServeMetrics::new());
        let alerts = options.alerts;
        let mut monitor_options = options.monitor;
        monitor_options.track_requests |= alerts.is_some();
        if let Some(cache) = &options.feature_cache {
            cache.sync(&state);
        }
        let state = ServeState {
            inner: Arc::new(Inner {
                snapshot: RwLock::new(Arc::new(Snapshot::of(&state))),
                registry_state: tokio::sync::Mutex::new(state),
                registry,
                store,
                models: ModelHub::new(
                    options.artifacts,
                    options.batching,
                    options.model_batching,
                    options.resilience,
                    options.model_resilience,
                    metrics.clone(),
                ),
                metrics,
                monitor: Monitoring::start(monitor_options),
                alerts: std::sync::OnceLock::new(),
                max_request_bytes: options.max_request_bytes,
                push: options.push,
                breakers: options.breakers,
                rate_limits: options.rate_limit.map(crate::resilience::RateLimits::new),
                draining: std::sync::atomic::AtomicBool::new(false),
                drain_delay: options.drain_delay,
                drain_timeout: options.drain_timeout,
                shadow_slots: Arc::new(tokio::sync::Semaphore::new(
                    crate::rollout::shadow::MAX_IN_FLIGHT,
                )),
                canaries: Default::default(),
                feature_cache: options.feature_cache,
            }),
        };
        if let Some(plan) = alerts {
            let provider = Arc::new(crate::monitor::signals::LiveSignals {
                state: Arc::downgrade(&state.inner),
            });
            match kiln_monitor::alerts::AlertEngine::new(
                plan,
                provider,
                state.monitor().bus().clone(),
            ) {
                Ok(engine) => {
                    engine.spawn();
                    let _ = state.inner.alerts.set(engine);
                }
                Err(e) => tracing::error!(error = %e, "alert rules not started"),
            }
        }
        state
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> ServeState {
        ServeState { inner }
    }

    /// The alert engine, when rules are configured.
    pub fn alerts(&self) -> Option<&Arc<kiln_monitor::alerts::AlertEngine>> {
        self.inner.alerts.get()
    }

    /// The current registry snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock still holds a valid Arc (it is only ever replaced whole).
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Permits for shadow calls in flight.
    pub(crate) fn shadow_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.shadow_slots
    }

    /// The canaries being judged on this server.
    pub fn canaries(&self) -> &crate::rollout::canary::Canaries {
        &self.inner.canaries
    }

    pub fn models(&self) -> &ModelHub {
        &self.inner.models
    }

    /// This server's metrics (its own recorder, not a process-global one).
    pub fn metrics(&self) -> &ServeMetrics {
        &self.inner.metrics
    }

    /// The event bus and the monitoring observers.
    pub fn monitor(&self) -> &Monitoring {
        &self.inner.monitor
    }

    /// The event logs pushes append to, when streaming is set up.
    pub fn push_hub(&self) -> Option<&Arc<kiln_stream::push::PushHub>> {
        self.inner.push.as_ref()
    }

    /// The circuit breakers guarding dependencies.
    pub fn breakers(&self) -> &[Arc<crate::resilience::Breaker>] {
        &self.inner.breakers
    }

    /// The per-key rate limits, when configured.
    pub fn rate_limits(&self) -> Option<&crate::resilience::RateLimits> {
        self.inner.rate_limits.as_ref()
    }

    /// Shutdown has begun: readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How long readiness is 503 before the listener closes, and how long in-flight requests
    /// then get.
    pub fn drain_times(&self) -> (Duration, Duration) {
        (self.inner.drain_delay, self.inner.drain_timeout)
    }

    pub fn max_request_bytes(&self) -> usize {
        self.inner.max_request_bytes
    }

    /// Loads the models that answer by default, so first requests do not wait.
    pub async fn preload_models(&self) {
        let snapshot = self.snapshot();
        self.models().preload(&snapshot.models).await;
    }

    pub fn store(&self) -> &dyn OnlineStore {
        self.inner.store.as_ref()
    }

    /// The online-feature cache, when configured.
    pub fn feature_cache(&self) -> Option<&crate::cache::features::FeatureCache> {
        self.inner.feature_cache.as_ref()
    }

    /// Replays registry events appended since the last refresh; swaps the catalog if any.
    pub async fn refresh(&self) -> Result<bool, kiln_registry::RegistryError> {
        let Some(registry) = &self.inner.registry else {
            return Ok(false);
        };
        let mut state = self.inner.registry_state.lock().await;
        let changed = registry.refresh(&mut state).await?;
        if changed {
            if let Some(cache) = &self.inner.feature_cache {
                cache.sync(&state);
            }
            let snapshot = Arc::new(Snapshot::of(&state));
            // A promoted version is loaded before it is served: the switch is one pointer swap.
            self.models().preload(&snapshot.models).await;
            let before = std::mem::replace(
                &mut *self
                    .inner
                    .snapshot
                    .write()
                    .unwrap_or_else(|p| p.into_inner()),
                snapshot.clone(),
            );
            self.monitor()
                .deployed(&default_versions(&before.models), &snapshot.models);
            tracing::info!(
                seq = state.last_seq,
                "registry changed; serving the new definitions"
            );
        }
        Ok(changed)
    }

    /// Appends the events `decide` returns for the current registry state, if the registry
    /// still ends there when they are written (else another writer got there first: nothing is
    /// appended), and serves them at once. Returns whether they were appended.
    pub(crate) async fn append_if_unchanged(
        &self,
        decide: impl FnOnce(&State) -> Option<Vec<kiln_registry::Event>>,
    ) -> Result<bool, kiln_registry::RegistryError> {
        let Some(registry) = &self.inner.registry else {
            return Ok(false);
        };
        self.refresh().await?;
        let appended = {
            let state = self.inner.registry_state.lock().await;
            let Some(events) = decide(&state) else {
                return Ok(false);
            };
            match registry.append(state.last_seq, &events).await {
                Ok(_) => true,
                Err(kiln_registry::RegistryError::Conflict { .. }) => false,
                Err(e) => return Err(e),
            }
        };
        if appended {
            self.refresh().await?;
        }
        Ok(appended)
    }

    pub(crate) fn spawn_refresher(&self, every: Duration) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.refresh().await {
                    tracing::warn!(error = %e, "registry refresh failed; still serving the last definitions");
                }
            }
        })
    }

    pub(crate) async fn check_ready(&self) -> Result<String, String> {
        if self
            .inner
            .draining
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err("draining: the server is shutting down".to_string());
        }
        let snapshot = self.snapshot();
        // A read of a key that cannot exist proves the store answers.
        self.store()
            .get_many("__kiln_ready__", &[Vec::new()])
            .await
            .map_err(|e| format!("online store not ready: {e}"))?;
        let missing = self.models().not_loaded(&snapshot.models);
        if !missing.is_empty() {
            // Try again in the background (a load happens once however many ask), so a model
            // whose artifact comes back makes the server ready without any traffic.
            let me = self.clone();
            tokio::spawn(async move { me.preload_models().await });
            return Err(format!(
                "models not loaded (see the server's log for why): {}",
                missing.join(", ")
            ));
        }
        Ok(format!("ready (registry event #{})", snapshot.catalog.seq))
    }
}

/// The version each model answers with by default.
fn default_versions(models: &BTreeMap<String, ModelState>) -> BTreeMap<String, u32> {
    models
        .keys()
        .filter_map(|name| {
            ModelHub::pick(models, name, None)
                .ok()
                .map(|spec| (name.clone(), spec.version))
        })
        .collect()
}
