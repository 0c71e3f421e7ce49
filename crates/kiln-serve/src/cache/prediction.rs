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
//!
//! A second level shared by the fleet (`shared`: the Redis online store's server, see
//! `kiln_store::shared`) is asked on a first-level miss before the model, under
//! `MODEL@vN:HASH`, for at most [`SHARED_TIMEOUT`]; what the model answers is written there in
//! the background. A slow or failing second level only costs that wait: the model is called.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use crate::batching::Scored;
use crate::inference::InferError;
use crate::resilience::{ScoreCall, ScoreFuture, ScoreService};

/// Fixed: the same rows make the same key in every process.
const SEED: u64 = 0x6b69_6c6e_7072_6564;

/// The longest a first-level miss waits for the second level before calling the model.
pub const SHARED_TIMEOUT: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, PartialEq)]
pub struct PredictionCacheSettings {
    /// Predicted values kept at most (rows, for a model with one output).
    pub values: u64,
    pub ttl: Duration,
    /// The second level, shared by the fleet.
    pub shared: Option<SharedLevel>,
}

/// A shared cache as a setting (compared by identity).
#[derive(Clone)]
pub struct SharedLevel(pub Arc<dyn kiln_store::shared::SharedCache>);

impl std::fmt::Debug for SharedLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.describe())
    }
}

impl PartialEq for SharedLevel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One version's cache and its counts.
pub struct PredictionCache {
    entries: moka::future::Cache<u128, Arc<Scored>>,
    /// The version (`fraud@v3`), for the second level's keys.
    what: String,
    ttl: Duration,
    shared: Option<SharedLevel>,
    hits: AtomicU64,
    shared_hits: AtomicU64,
    shared_errors: AtomicU64,
    misses: AtomicU64,
}

/// How a call was answered.
const JOINED: u8 = 0;
const FROM_SHARED: u8 = 1;
const CALLED: u8 = 2;

impl PredictionCache {
    /// `what` names the version (`fraud@v3`).
    pub fn new(settings: &PredictionCacheSettings, what: &str) -> PredictionCache {
        PredictionCache {
            entries: moka::future::Cache::builder()
                .max_capacity(settings.values)
                .weigher(|_, v: &Arc<Scored>| v.values.len().clamp(1, u32::MAX as usize) as u32)
                .time_to_live(settings.ttl)
                .build(),
            what: what.to_string(),
            ttl: settings.ttl,
            shared: settings.shared.clone(),
            hits: AtomicU64::new(0),
            shared_hits: AtomicU64::new(0),
            shared_errors: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Answers from the cache (a request that joined one in flight counts as a hit).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Answers from the second level.
    pub fn shared_hits(&self) -> u64 {
        self.shared_hits.load(Ordering::Relaxed)
    }

    /// Second-level reads and writes that failed or were too slow.
    pub fn shared_errors(&self) -> u64 {
        self.shared_errors.load(Ordering::Relaxed)
    }

    /// Requests that called the model.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn shared_key(&self, key: u128) -> String {
        format!("{}:{key:032x}", self.what)
    }

    /// The second level's answer, if it has one in time.
    async fn read_shared(&self, shared: &SharedLevel, key: u128) -> Option<Vec<f64>> {
        let got = tokio::time::timeout(SHARED_TIMEOUT, shared.0.get(&self.shared_key(key))).await;
        match got {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(bytes))) if bytes.len() % 8 == 0 => Some(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
                    .collect(),
            ),
            failed => {
                self.shared_errors.fetch_add(1, Ordering::Relaxed);
                match failed {
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "shared prediction cache read failed")
                    }
                    Err(_) => tracing::debug!("shared prediction cache read timed out"),
                    Ok(Ok(_)) => tracing::debug!("shared prediction cache entry is not f64s"),
                }
                None
            }
        }
    }

    /// Writes an answer to the second level, in the background.
    fn write_shared(self: &Arc<Self>, shared: &SharedLevel, key: u128, values: &[f64]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (me, shared) = (self.clone(), shared.clone());
        tokio::spawn(async move {
            let key = me.shared_key(key);
            if let Err(e) = shared.0.put(&key, bytes, me.ttl).await {
                me.shared_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "shared prediction cache write failed");
            }
        });
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
            let how = AtomicU8::new(JOINED);
            let k = key(&call.rows);
            let got = cache
                .entries
                .try_get_with(k, async {
                    if let Some(shared) = &cache.shared
                        && let Some(values) = cache.read_shared(shared, k).await
                    {
                        how.store(FROM_SHARED, Ordering::Relaxed);
                        return Ok(Arc::new(Scored {
                            values,
                            queue_time: Duration::ZERO,
                            compute_time: Duration::ZERO,
                            batch_rows: 0,
                            fallback: None,
                            cached: true,
                        }));
                    }
                    how.store(CALLED, Ordering::Relaxed);
                    let scored = inner.oneshot(call).await?;
                    if let Some(shared) = &cache.shared {
                        cache.write_shared(shared, k, &scored.values);
                    }
                    Ok(Arc::new(scored))
                })
                .await;
            let counter = match how.load(Ordering::Relaxed) {
                CALLED => {
                    cache.misses.fetch_add(1, Ordering::Relaxed);
                    return got
                        .map(|s| Scored::clone(&s))
                        .map_err(|e| InferError::clone(&e));
                }
                FROM_SHARED => &cache.shared_hits,
                _ => &cache.hits,
            };
            counter.fetch_add(1, Ordering::Relaxed);
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
        stack_with(model, None)
    }

    fn stack_with(
        model: &Scripted,
        shared: Option<SharedLevel>,
    ) -> (ScoreService, Arc<PredictionCache>) {
        let cache = Arc::new(PredictionCache::new(
            &PredictionCacheSettings {
                values: 1_000,
                ttl: Duration::from_secs(60),
                shared,
            },
            "m@v1",
        ));
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

    /// A shared level in memory, optionally slow to answer.
    #[derive(Default)]
    struct MemoryShared {
        entries: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
        delay: Option<Duration>,
    }

    impl kiln_store::shared::SharedCache for MemoryShared {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> kiln_store::online::BoxFuture<'a, Result<Option<Vec<u8>>, kiln_store::StoreError>>
        {
            Box::pin(async move {
                if let Some(d) = self.delay {
                    tokio::time::sleep(d).await;
                }
                Ok(self.entries.lock().expect("lock").get(key).cloned())
            })
        }

        fn put<'a>(
            &'a self,
            key: &'a str,
            value: Vec<u8>,
            _ttl: Duration,
        ) -> kiln_store::online::BoxFuture<'a, Result<(), kiln_store::StoreError>> {
            Box::pin(async move {
                self.entries
                    .lock()
                    .expect("lock")
                    .insert(key.to_string(), value);
                Ok(())
            })
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    #[tokio::test]
    async fn a_prediction_one_server_made_answers_another_through_the_shared_level() {
        let shared = Arc::new(MemoryShared::default());
        let level = || Some(SharedLevel(shared.clone()));
        let (model_a, model_b) = (Scripted::new(vec![]), Scripted::new(vec![]));
        let (a, cache_a) = stack_with(&model_a, level());
        let (b, cache_b) = stack_with(&model_b, level());
        let first = a.oneshot(call(&[7.0, 8.0])).await.expect("scored");
        for _ in 0..100 {
            if !shared.entries.lock().expect("lock").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = b.clone().oneshot(call(&[7.0, 8.0])).await.expect("shared");
        assert_eq!(second.values, first.values);
        assert!(second.cached);
        assert_eq!((model_a.calls(), model_b.calls()), (1, 0));
        assert_eq!((cache_a.misses(), cache_b.shared_hits()), (1, 1));
        // Then it is in B's own level.
        b.oneshot(call(&[7.0, 8.0])).await.expect("cached");
        assert_eq!((cache_b.hits(), cache_b.shared_hits()), (1, 1));
    }

    #[tokio::test]
    async fn a_slow_shared_level_only_delays_the_model_call() {
        let shared = Arc::new(MemoryShared {
            delay: Some(Duration::from_secs(5)),
            ..MemoryShared::default()
        });
        let model = Scripted::new(vec![]);
        let (service, cache) = stack_with(&model, Some(SharedLevel(shared)));
        service.oneshot(call(&[1.0])).await.expect("scored");
        // An error, not an empty answer: the read was given up (it would answer none at 5 s).
        assert_eq!(
            (model.calls(), cache.misses(), cache.shared_errors()),
            (1, 1, 1)
        );
    }
}
