//! The prediction cache: a model version's answers kept in process (moka), keyed by a 128-bit
//! hash of the request's input rows (XXH3, fixed seed). Each loaded version has its own cache,
//! so a promotion or a routing change never answers from another version's entries, and
//! changed inputs (a materialization, a stream update) make another key: nothing needs to be
//! invalidated, and entries expire after `ttl` (a remote model may change behind its URL).
//!
//! It is the outermost layer of a version's stack (cache-aside): a hit answers without calling
//! the model (no retry, breaker, timeout or bulkhead is involved); a miss calls the rest of the
//! stack and keeps a good answer; identical requests that miss at the same time share one call
//! (single flight: moka's `try_get_with`). Errors are never kept, and fallback answers never
//! reach it (the fallback chain runs outside the stack).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use crate::batching::Scored;
use crate::inference::InferError;
use crate::resilience::{ScoreCall, ScoreFuture, ScoreService};

/// Fixed: the same rows make the same key in every process.
const SEED: u64 = 0x6b69_6c6e_7072_6564;

#[derive(Debug, Clone, PartialEq)]
pub struct PredictionCacheSettings {
    /// Predicted values kept at most (rows, for a model with one output).
    pub values: u64,
    pub ttl: Duration,
}

/// One version's cache and its counts.
pub struct PredictionCache {
    entries: moka::future::Cache<u128, Arc<Scored>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PredictionCache {
    pub fn new(settings: &PredictionCacheSettings) -> PredictionCache {
        PredictionCache {
            entries: moka::future::Cache::builder()
                .max_capacity(settings.values)
                .weigher(|_, v: &Arc<Scored>| v.values.len().clamp(1, u32::MAX as usize) as u32)
                .time_to_live(settings.ttl)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Answers from the cache (a request that joined one in flight counts as a hit).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests that called the model.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// The rows' key: XXH3-128 of their bits.
fn key(rows: &[f64]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(SEED);
    for x in rows {
        h.update(&x.to_bits().to_le_bytes());
    }
    h.digest128()
}

#[derive(Clone)]
pub struct PredictionCacheLayer {
    cache: Arc<PredictionCache>,
}

impl PredictionCacheLayer {
    pub fn new(cache: Arc<PredictionCache>) -> PredictionCacheLayer {
        PredictionCacheLayer { cache }
    }
}

impl Layer<ScoreService> for PredictionCacheLayer {
    type Service = Cached;

    fn layer(&self, inner: ScoreService) -> Cached {
        Cached {
            inner,
            cache: self.cache.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Cached {
    inner: ScoreService,
    cache: Arc<PredictionCache>,
}

impl Service<ScoreCall> for Cached {
    type Response = Scored;
    type Error = InferError;
    type Future = ScoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InferError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ScoreCall) -> ScoreFuture {
        let (inner, cache) = (self.inner.clone(), self.cache.clone());
        Box::pin(async move {
            let called = AtomicBool::new(false);
            let got = cache
                .entries
                .try_get_with(key(&call.rows), async {
                    called.store(true, Ordering::Relaxed);
                    inner.oneshot(call).await.map(Arc::new)
                })
                .await;
            if called.load(Ordering::Relaxed) {
                cache.misses.fetch_add(1, Ordering::Relaxed);
                return got
                    .map(|s| Scored::clone(&s))
                    .map_err(|e| InferError::clone(&e));
            }
            cache.hits.fetch_add(1, Ordering::Relaxed);
            let s = got.map_err(|e| InferError::clone(&e))?;
            Ok(Scored {
                values: s.values.clone(),
                queue_time: Duration::ZERO,
                compute_time: Duration::ZERO,
                batch_rows: 0,
                fallback: None,
                cached: true,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::testing::Scripted;

    fn stack(model: &Scripted) -> (ScoreService, Arc<PredictionCache>) {
        let cache = Arc::new(PredictionCache::new(&PredictionCacheSettings {
            values: 1_000,
            ttl: Duration::from_secs(60),
        }));
        let service =
            ScoreService::new(PredictionCacheLayer::new(cache.clone()).layer(model.service()));
        (service, cache)
    }

    fn call(rows: &[f64]) -> ScoreCall {
        ScoreCall {
            rows: Arc::new(rows.to_vec()),
        }
    }

    #[tokio::test]
    async fn a_repeated_request_is_answered_without_the_model_and_errors_are_not_kept() {
        let model = Scripted::new(vec![]);
        let (service, cache) = stack(&model);
        let first = service
            .clone()
            .oneshot(call(&[1.0, 2.0]))
            .await
            .expect("scored");
        let again = service
            .clone()
            .oneshot(call(&[1.0, 2.0]))
            .await
            .expect("cached");
        assert_eq!(first.values, again.values);
        assert!(again.cached && !first.cached);
        assert_eq!((model.calls(), cache.hits(), cache.misses()), (1, 1, 1));
        // Other rows (-0.0 is not 0.0 to the model's input bits) call the model.
        service
            .clone()
            .oneshot(call(&[1.0, -2.0]))
            .await
            .expect("scored");
        assert_eq!(model.calls(), 2);

        let failing = Scripted::new(vec![Err(InferError::Unavailable("down".into()))]);
        let (service, cache) = stack(&failing);
        assert!(service.clone().oneshot(call(&[3.0])).await.is_err());
        service
            .clone()
            .oneshot(call(&[3.0]))
            .await
            .expect("called again");
        assert_eq!((failing.calls(), cache.hits()), (2, 0));
    }

    #[tokio::test]
    async fn identical_requests_in_flight_share_one_call() {
        let model = Scripted::new(vec![]);
        model.set_delay(Duration::from_millis(50));
        let (service, cache) = stack(&model);
        let calls: Vec<_> = (0..8)
            .map(|_| tokio::spawn(service.clone().oneshot(call(&[4.0, 5.0]))))
            .collect();
        for c in calls {
            c.await.expect("joined").expect("scored");
        }
        assert_eq!(model.calls(), 1);
        assert_eq!((cache.misses(), cache.hits()), (1, 7));
    }
}
