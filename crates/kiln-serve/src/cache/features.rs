//! The online-feature cache as `kiln serve` runs it: a [`CachedStore`] in front of the online
//! store, told after every registry change which views exist, their ttls and marks (a
//! materialization or a new version drops a view's entries), and which views may use the
//! filter of known entities: those whose every write is seen by this server (batch views,
//! whose writes end with a registry event, and streamed views whose stream runs in this
//! server and writes through the cache).

use std::collections::HashSet;

use kiln_registry::State;
use kiln_store::online::{CachedStore, ViewPolicy};

#[derive(Debug, Clone)]
pub struct FeatureCache {
    store: CachedStore,
    known_entities: bool,
    /// Views with windowed aggregations whose stream runs in this server.
    streamed_here: HashSet<String>,
}

impl FeatureCache {
    pub fn new(
        store: CachedStore,
        known_entities: bool,
        streamed_here: HashSet<String>,
    ) -> FeatureCache {
        FeatureCache {
            store,
            known_entities,
            streamed_here,
        }
    }

    pub fn store(&self) -> &CachedStore {
        &self.store
    }

    /// Brings the cached views in line with the registry.
    pub fn sync(&self, state: &State) {
        self.store
            .sync_views(state.live_views().filter(|v| v.online).map(|v| {
                let current = v.current();
                let materialized = v.materialized.get(&current.version).map_or(0, |m| m.at);
                ViewPolicy {
                    name: v.name.clone(),
                    ttl_seconds: current.ttl_seconds,
                    mark: (current.version, materialized),
                    filter: self.known_entities
                        && (current.aggregations.is_empty()
                            || self.streamed_here.contains(&v.name)),
                }
            }));
    }
}
