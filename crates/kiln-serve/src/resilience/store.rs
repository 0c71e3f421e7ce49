//! The online store behind a circuit breaker (a decorator over [`OnlineStore`]): while the
//! store keeps timing out or refusing connections, reads fail at once with a 503 that says so,
//! instead of each request waiting out the store's timeout.
//!
//! Only retryable errors (unreachable, slow, restarting) count as failures; an answer that is
//! an error (a corrupt row) means the store is up.

use std::sync::Arc;

use kiln_store::StoreError;
use kiln_store::online::{BoxFuture, OnlineStore, StoredRow, ViewTable, WriteSummary};

use super::Breaker;

/// An online store whose calls go through a breaker.
pub struct GuardedStore {
    inner: Arc<dyn OnlineStore>,
    breaker: Arc<Breaker>,
}

impl GuardedStore {
    pub fn new(inner: Arc<dyn OnlineStore>, breaker: Arc<Breaker>) -> GuardedStore {
        GuardedStore { inner, breaker }
    }

    /// Runs `call` if the breaker lets it through (the store is not even asked to start a
    /// call otherwise) and reports how it went.
    async fn guard<'a, T>(
        &'a self,
        call: impl FnOnce() -> BoxFuture<'a, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let permit = self
            .breaker
            .admit()
            .map_err(|refused| StoreError::CircuitOpen {
                store: self.inner.describe(),
                message: refused.to_string(),
            })?;
        let result = call().await;
        match &result {
            Err(e) if e.is_retryable() => permit.record(Some(e)),
            _ => permit.record(None),
        }
        result
    }
}

impl OnlineStore for GuardedStore {
    fn write_batch<'a>(
        &'a self,
        table: &'a ViewTable,
        rows: Vec<(Vec<u8>, StoredRow)>,
    ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
        Box::pin(self.guard(|| self.inner.write_batch(table, rows)))
    }

    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
        Box::pin(self.guard(|| self.inner.get_many(view, keys)))
    }

    fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.guard(|| self.inner.delete_view(view)))
    }

    fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.guard(|| self.inner.count(view)))
    }

    fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
        Box::pin(self.guard(|| self.inner.keys(view)))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use kiln_store::online::MemoryStore;

    use super::*;
    use crate::resilience::{BreakerSettings, BreakerState};

    /// A store that fails every call with a retryable error while `down`.
    struct Flaky {
        down: AtomicBool,
        calls: std::sync::atomic::AtomicU64,
        up: MemoryStore,
    }

    impl OnlineStore for Flaky {
        fn write_batch<'a>(
            &'a self,
            table: &'a ViewTable,
            rows: Vec<(Vec<u8>, StoredRow)>,
        ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
            self.up.write_batch(table, rows)
        }

        fn get_many<'a>(
            &'a self,
            view: &'a str,
            keys: &'a [Vec<u8>],
        ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.down.load(Ordering::Relaxed) {
                return Box::pin(async {
                    Err(StoreError::Redis {
                        location: "redis://x".into(),
                        message: "timed out".into(),
                        retryable: true,
                    })
                });
            }
            self.up.get_many(view, keys)
        }

        fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            self.up.delete_view(view)
        }

        fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.up.count(view)
        }

        fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
            self.up.keys(view)
        }

        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    #[tokio::test]
    async fn a_failing_store_is_not_called_while_open_and_is_probed_after() {
        let flaky = Arc::new(Flaky {
            down: AtomicBool::new(true),
            calls: Default::default(),
            up: MemoryStore::new(),
        });
        let breaker = Arc::new(Breaker::new(
            "online_store",
            BreakerSettings {
                window: Duration::from_secs(10),
                min_calls: 5,
                failure_rate: 0.5,
                open_for: Duration::from_millis(50),
                probes: 1,
            },
        ));
        let store = GuardedStore::new(flaky.clone(), breaker.clone());
        let keys = [b"k".to_vec()];
        for _ in 0..5 {
            let e = store.get_many("v", &keys).await.expect_err("down");
            assert!(matches!(e, StoreError::Redis { .. }), "{e}");
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let e = store.get_many("v", &keys).await.expect_err("open");
        assert!(e.is_retryable());
        let msg = e.to_string();
        assert!(
            msg.starts_with("online store flaky: not called, circuit open (5 of 5 calls failed"),
            "{msg}"
        );
        assert_eq!(
            flaky.calls.load(Ordering::Relaxed),
            5,
            "not called while open"
        );

        flaky.down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.get_many("v", &keys).await.expect("probe"), vec![None]);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(flaky.calls.load(Ordering::Relaxed), 6);
    }
}
