//! The state shared by all requests: the catalog snapshot, the online store, the registry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kiln_features::online::Catalog;
use kiln_registry::{Registry, State};
use kiln_store::online::OnlineStore;
use tokio::task::JoinHandle;

/// Cheap to clone; one per request.
#[derive(Clone)]
pub struct ServeState {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: RwLock<Arc<Catalog>>,
    registry_state: tokio::sync::Mutex<State>,
    registry: Option<Registry>,
    store: Arc<dyn OnlineStore>,
}

impl ServeState {
    /// Serving state from a registry state; `registry`, when given, is polled for changes.
    pub fn new(
        state: State,
        registry: Option<Registry>,
        store: Arc<dyn OnlineStore>,
    ) -> ServeState {
        ServeState {
            inner: Arc::new(Inner {
                catalog: RwLock::new(Arc::new(Catalog::from_state(&state))),
                registry_state: tokio::sync::Mutex::new(state),
                registry,
                store,
            }),
        }
    }

    /// The current catalog snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        // A poisoned lock still holds a valid Arc (it is only ever replaced whole).
        self.inner
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn store(&self) -> &dyn OnlineStore {
        self.inner.store.as_ref()
    }

    /// Replays registry events appended since the last refresh; swaps the catalog if any.
    pub async fn refresh(&self) -> Result<bool, kiln_registry::RegistryError> {
        let Some(registry) = &self.inner.registry else {
            return Ok(false);
        };
        let mut state = self.inner.registry_state.lock().await;
        let changed = registry.refresh(&mut state).await?;
        if changed {
            let catalog = Arc::new(Catalog::from_state(&state));
            *self
                .inner
                .catalog
                .write()
                .unwrap_or_else(|p| p.into_inner()) = catalog;
            tracing::info!(
                seq = state.last_seq,
                "registry changed; serving the new definitions"
            );
        }
        Ok(changed)
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
        let catalog = self.catalog();
        // A read of a key that cannot exist proves the store answers.
        self.store()
            .get_many("__kiln_ready__", &[Vec::new()])
            .await
            .map_err(|e| format!("online store not ready: {e}"))?;
        Ok(format!("ready (registry event #{})", catalog.seq))
    }
}
