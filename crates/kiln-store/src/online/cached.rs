//! The online store behind an in-process cache (a decorator over [`OnlineStore`]): the serving
//! fleet's reads of hot entities answered from memory instead of a network round trip to Redis.
//!
//! - **Entries** are per (view, entity key), the stored row or its absence, kept at most the
//!   cache's `ttl`, and never longer than the view's own ttl (a view that allows values an hour
//!   old allows an hour-old cached read at most).
//! - **Refresh-ahead**: a key read after `refresh_after` is still answered from the cache
//!   (counted as *stale*) and re-read in the background, once per key however many requests ask,
//!   so a hot key is refreshed before it expires and its readers never wait for the store.
//! - **Known entities**: per view, a Bloom filter (XXH3 with a fixed seed) of the keys the store
//!   holds, built by walking the view (`OnlineStore::keys`). A key the filter has never seen is
//!   certainly absent, so unknown entities (new users, scrapers) cost no store read; a false
//!   positive only costs the read. Used only where the caller says every write to the view is
//!   seen here (see [`ViewPolicy::filter`]).
//! - **Invalidation**: writes through this store invalidate their keys (and add them to the
//!   filter); a view whose registry mark changes (a materialization ran, a new version was
//!   applied) starts a new generation, which drops all its entries at once and rebuilds its
//!   filter. A read that raced a write is not kept: each key hashes to a stripe whose counter
//!   every write bumps, and a read re-checks the counters of its keys after inserting.
//!
//! Writes from other processes that leave no registry mark (a second server's stream) are seen
//! when their entries expire: the ttl bounds the staleness.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{BoxFuture, OnlineStore, StoredRow, ViewTable, WriteSummary};
use crate::StoreError;

/// Fixed, so entries and filters are laid out the same in every process and run.
const SEED: u64 = 0x6b69_6c6e_6665_6174;

/// Write counters; a key's reads and writes meet at one of them.
const STRIPES: usize = 4_096;

/// The filter's bits per expected key (1% false positives at [`HASHES`] hashes).
const BITS_PER_KEY: f64 = 9.6;
const HASHES: u64 = 7;

#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Rows (or absences) kept at most, over all views.
    pub rows: u64,
    /// The longest an entry is used (bounded by each view's ttl).
    pub ttl: Duration,
    /// A read of an entry older than this re-reads it in the background; `None`: never.
    pub refresh_after: Option<Duration>,
}

/// How one view is cached; given by the caller from the registry ([`CachedStore::sync_views`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPolicy {
    pub name: String,
    /// The view's ttl (0: none).
    pub ttl_seconds: u64,
    /// Changes whenever the view's stored rows may have changed behind this process (a
    /// materialization, a new version): the view's entries are dropped.
    pub mark: (u32, i64),
    /// Whether to keep the filter of known entities: only when every write to the view either
    /// goes through this store or changes `mark`.
    pub filter: bool,
}

/// Lookups of one view, by how they were answered.
#[derive(Debug, Default)]
pub struct CacheCounts {
    /// From the cache.
    pub hits: AtomicU64,
    /// From the cache, past `refresh_after` (and re-read in the background).
    pub stale: AtomicU64,
    /// From the store.
    pub misses: AtomicU64,
    /// Absent by the filter of known entities, without a store read.
    pub negative: AtomicU64,
    /// Background re-reads of entries (refresh-ahead), in keys.
    pub refreshed: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    row: Option<StoredRow>,
    loaded: Instant,
}

struct ViewCache {
    policy: ViewPolicy,
    generation: u64,
    ttl: Duration,
    counts: Arc<CacheCounts>,
    /// The filter in use, once built.
    known: Option<Arc<KnownKeys>>,
    /// While a filter is being built: the keys written meanwhile, which the walk may miss.
    building: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
}

struct Shared {
    inner: Arc<dyn OnlineStore>,
    settings: CacheSettings,
    entries: moka::sync::Cache<u128, Entry>,
    views: RwLock<HashMap<String, ViewCache>>,
    stripes: Box<[AtomicU64]>,
    refreshing: Mutex<HashSet<u128>>,
    next_generation: AtomicU64,
}

/// The cached store. Cheap to clone.
#[derive(Clone)]
pub struct CachedStore {
    shared: Arc<Shared>,
}

/// What a read needs of its view, copied out of the lock.
struct ViewRead {
    generation: u64,
    ttl: Duration,
    counts: Arc<CacheCounts>,
    known: Option<Arc<KnownKeys>>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.shared.inner.describe())
            .field("settings", &self.shared.settings)
            .finish()
    }
}

fn entry_key(generation: u64, key: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(SEED);
    h.update(&generation.to_le_bytes());
    h.update(key);
    h.digest128()
}

fn stripe(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, SEED) % STRIPES as u64) as usize
}

impl CachedStore {
    pub fn new(inner: Arc<dyn OnlineStore>, settings: CacheSettings) -> CachedStore {
        CachedStore {
            shared: Arc::new(Shared {
                inner,
                entries: moka::sync::Cache::builder()
                    .max_capacity(settings.rows)
                    .time_to_live(settings.ttl)
                    .build(),
                settings,
                views: RwLock::new(HashMap::new()),
                stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
                refreshing: Mutex::new(HashSet::new()),
                next_generation: AtomicU64::new(1),
            }),
        }
    }

    /// Takes the registry's views: new ones are cached from now on, ones whose mark changed
    /// start afresh (their filters rebuilt in the background, on the current tokio runtime),
    /// ones no longer given are no longer cached.
    pub fn sync_views(&self, policies: impl IntoIterator<Item = ViewPolicy>) {
        let mut rebuild = Vec::new();
        {
            let mut views = self.shared.write_views();
            let mut kept = HashMap::new();
            for policy in policies {
                let name = policy.name.clone();
                let view = match views.remove(&name) {
                    Some(v) if v.policy == policy => v,
                    old => {
                        if policy.filter {
                            rebuild.push(name.clone());
                        }
                        ViewCache {
                            generation: self.shared.next_generation.fetch_add(1, Ordering::Relaxed),
                            ttl: view_ttl(self.shared.settings.ttl, policy.ttl_seconds),
                            counts: old.map(|o| o.counts).unwrap_or_default(),
                            policy,
                            known: None,
                            building: None,
                        }
                    }
                };
                kept.insert(name, view);
            }
            *views = kept;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for name in rebuild {
                let me = self.clone();
                rt.spawn(async move {
                    if let Err(e) = me.rebuild_filter(&name).await {
                        tracing::warn!(view = %name, error = %e, "the filter of known entities was not built; reads go to the store");
                    }
                });
            }
        }
    }

    /// Walks the view's keys into a new filter of known entities and puts it in use.
    pub async fn rebuild_filter(&self, view: &str) -> Result<(), StoreError> {
        // Keys written from here on are logged, since the walk may not see them.
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut views = self.shared.write_views();
            let Some(v) = views.get_mut(view).filter(|v| v.policy.filter) else {
                return Ok(());
            };
            v.building = Some(log.clone());
        }
        let walked = self.shared.inner.keys(view).await;
        let mut views = self.shared.write_views();
        let Some(v) = views
            .get_mut(view)
            .filter(|v| v.building.as_ref().is_some_and(|b| Arc::ptr_eq(b, &log)))
        else {
            return Ok(()); // superseded by a newer walk, or the view went away
        };
        v.building = None;
        let keys = walked?;
        let written = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
        let filter = KnownKeys::new((keys.len() + written.len()) as u64);
        for k in keys.iter().chain(&written) {
            filter.insert(k);
        }
        v.known = Some(Arc::new(filter));
        Ok(())
    }

    /// Whether `view` has a filter of known entities in use.
    pub fn has_filter(&self, view: &str) -> bool {
        self.shared
            .read_views()
            .get(view)
            .is_some_and(|v| v.known.is_some())
    }

    /// Each cached view's counts.
    pub fn counts(&self) -> Vec<(String, Arc<CacheCounts>)> {
        let mut out: Vec<_> = self
            .shared
            .read_views()
            .iter()
            .map(|(name, v)| (name.clone(), v.counts.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn view(&self, view: &str) -> Option<ViewRead> {
        self.shared.read_views().get(view).map(|v| ViewRead {
            generation: v.generation,
            ttl: v.ttl,
            counts: v.counts.clone(),
            known: v.known.clone(),
        })
    }

    async fn get_cached(
        &self,
        view: &str,
        keys: &[Vec<u8>],
        v: ViewRead,
    ) -> Result<Vec<Option<StoredRow>>, StoreError> {
        let shared = &self.shared;
        let now = Instant::now();
        let refresh_after = shared.settings.refresh_after.filter(|r| *r < v.ttl);
        let mut out: Vec<Option<StoredRow>> = vec![None; keys.len()];
        let mut missed = Vec::new();
        let mut stale = Vec::new();
        let (mut hits, mut stales, mut negative) = (0u64, 0u64, 0u64);
        for (i, key) in keys.iter().enumerate() {
            if v.known.as_ref().is_some_and(|k| !k.may_contain(key)) {
                negative += 1;
                continue;
            }
            let ek = entry_key(v.generation, key);
            match shared.entries.get(&ek) {
                Some(e) if now.duration_since(e.loaded) < v.ttl => {
                    if refresh_after.is_some_and(|r| now.duration_since(e.loaded) >= r) {
                        stales += 1;
                        stale.push((ek, key.clone()));
                    } else {
                        hits += 1;
                    }
                    out[i] = e.row;
                }
                _ => missed.push(i),
            }
        }
        let c = &v.counts;
        c.hits.fetch_add(hits, Ordering::Relaxed);
        c.stale.fetch_add(stales, Ordering::Relaxed);
        c.negative.fetch_add(negative, Ordering::Relaxed);
        c.misses.fetch_add(missed.len() as u64, Ordering::Relaxed);
        if !stale.is_empty() {
            self.refresh(view, v.generation, &v.counts, stale);
        }
        if missed.is_empty() {
            return Ok(out);
        }
        let miss_keys: Vec<Vec<u8>> = missed.iter().map(|&i| keys[i].clone()).collect();
        let rows = self.load(view, v.generation, &miss_keys).await?;
        for (i, row) in missed.into_iter().zip(rows) {
            out[i] = row;
        }
        Ok(out)
    }

    /// Reads `keys` from the store and keeps what was read, unless a write to one of them
    /// raced the read.
    async fn load(
        &self,
        view: &str,
        generation: u64,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>, StoreError> {
        let shared = &self.shared;
        let stripes: Vec<usize> = keys.iter().map(|k| stripe(k)).collect();
        let before: Vec<u64> = stripes
            .iter()
            .map(|&s| shared.stripes[s].load(Ordering::Acquire))
            .collect();
        let rows = shared.inner.get_many(view, keys).await?;
        let loaded = Instant::now();
        for (((key, row), s), epoch) in keys.iter().zip(&rows).zip(&stripes).zip(&before) {
            let ek = entry_key(generation, key);
            shared.entries.insert(
                ek,
                Entry {
                    row: row.clone(),
                    loaded,
                },
            );
            // Checked after the insert: a write that began after the read bumped the stripe
            // and is seen here, or it ends after this insert and invalidates it itself.
            if shared.stripes[*s].load(Ordering::Acquire) != *epoch {
                shared.entries.invalidate(&ek);
            }
        }
        Ok(rows)
    }

    /// Re-reads stale keys in the background, each at most once at a time.
    fn refresh(
        &self,
        view: &str,
        generation: u64,
        counts: &Arc<CacheCounts>,
        stale: Vec<(u128, Vec<u8>)>,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let claimed: Vec<(u128, Vec<u8>)> = {
            let mut refreshing = self
                .shared
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            stale
                .into_iter()
                .filter(|(ek, _)| refreshing.insert(*ek))
                .collect()
        };
        if claimed.is_empty() {
            return;
        }
        let (me, view, counts) = (self.clone(), view.to_string(), counts.clone());
        rt.spawn(async move {
            let keys: Vec<Vec<u8>> = claimed.iter().map(|(_, k)| k.clone()).collect();
            match me.load(&view, generation, &keys).await {
                Ok(_) => {
                    counts
                        .refreshed
                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                }
                // The entries stay until they expire; the next read past the ttl asks again.
                Err(e) => tracing::debug!(view = %view, error = %e, "refresh-ahead read failed"),
            }
            let mut refreshing = me
                .shared
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (ek, _) in &claimed {
                refreshing.remove(ek);
            }
        });
    }
}

fn view_ttl(cache: Duration, view_seconds: u64) -> Duration {
    if view_seconds == 0 {
        cache
    } else {
        cache.min(Duration::from_secs(view_seconds))
    }
}

impl Shared {
    fn read_views(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ViewCache>> {
        // Each update replaces whole values: a poisoned map is still a valid one.
        self.views.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_views(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ViewCache>> {
        self.views.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl OnlineStore for CachedStore {
    fn write_batch<'a>(
        &'a self,
        table: &'a ViewTable,
        rows: Vec<(Vec<u8>, StoredRow)>,
    ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
        Box::pin(async move {
            let keys: Vec<Vec<u8>> = rows.iter().map(|(k, _)| k.clone()).collect();
            let result = self.shared.inner.write_batch(table, rows).await;
            // Even a failed batch may have written part of its rows (a Cluster writes per key).
            for k in &keys {
                self.shared.stripes[stripe(k)].fetch_add(1, Ordering::AcqRel);
            }
            let outgrown = {
                let views = self.shared.read_views();
                let Some(v) = views.get(&table.name) else {
                    return result;
                };
                for k in &keys {
                    self.shared.entries.invalidate(&entry_key(v.generation, k));
                }
                if let Some(log) = &v.building {
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(keys.iter().cloned());
                }
                v.known.as_ref().is_some_and(|known| {
                    keys.iter().for_each(|k| known.insert(k));
                    known.full()
                }) && v.building.is_none()
            };
            if outgrown && let Ok(rt) = tokio::runtime::Handle::try_current() {
                // New entities filled the filter past its size: walk again, for a bigger one.
                let (me, view) = (self.clone(), table.name.clone());
                rt.spawn(async move { me.rebuild_filter(&view).await });
            }
            result
        })
    }

    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
        match self.view(view) {
            Some(v) => Box::pin(self.get_cached(view, keys, v)),
            None => self.shared.inner.get_many(view, keys),
        }
    }

    fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let result = self.shared.inner.delete_view(view).await;
            if let Some(v) = self.shared.write_views().get_mut(view) {
                v.generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }

    fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.shared.inner.count(view)
    }

    fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
        self.shared.inner.keys(view)
    }

    fn describe(&self) -> String {
        self.shared.inner.describe()
    }
}

/// A Bloom filter of entity keys, safe to add to from many threads.
struct KnownKeys {
    bits: Box<[AtomicU64]>,
    /// Keys it was sized for.
    capacity: u64,
    /// Keys added that set a bit (new keys; a key written again sets none).
    added: AtomicU64,
}

impl KnownKeys {
    /// Room for twice `expected` keys (the view grows between walks), at least 4,096.
    fn new(expected: u64) -> KnownKeys {
        let capacity = expected.saturating_mul(2).max(4_096);
        let words = ((capacity as f64 * BITS_PER_KEY) / 64.0).ceil() as usize;
        KnownKeys {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            capacity,
            added: AtomicU64::new(0),
        }
    }

    /// More keys were added than it was sized for: its false positives climb.
    fn full(&self) -> bool {
        self.added.load(Ordering::Relaxed) > self.capacity
    }

    /// The bit positions of `key` (double hashing of one 128-bit hash).
    fn positions(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(key, SEED);
        let (a, b) = (h as u64, (h >> 64) as u64 | 1);
        let m = self.bits.len() as u64 * 64;
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % m) as usize)
    }

    fn insert(&self, key: &[u8]) {
        let mut new = false;
        for p in self.positions(key) {
            let bit = 1 << (p % 64);
            new |= self.bits[p / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0;
        }
        if new {
            self.added.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        self.positions(key)
            .all(|p| self.bits[p / 64].load(Ordering::Relaxed) & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::online::MemoryStore;

    /// A memory store that counts the keys it is asked for, and can hold a read after it has
    /// read its rows until released.
    #[derive(Default)]
    struct Counting {
        store: MemoryStore,
        keys_read: AtomicU64,
        hold: AtomicBool,
        held: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    impl OnlineStore for Counting {
        fn write_batch<'a>(
            &'a self,
            table: &'a ViewTable,
            rows: Vec<(Vec<u8>, StoredRow)>,
        ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
            self.store.write_batch(table, rows)
        }

        fn get_many<'a>(
            &'a self,
            view: &'a str,
            keys: &'a [Vec<u8>],
        ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
            Box::pin(async move {
                self.keys_read
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
                let rows = self.store.get_many(view, keys).await;
                if self.hold.swap(false, Ordering::SeqCst) {
                    self.held.notify_one();
                    self.release.notified().await;
                }
                rows
            })
        }

        fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            self.store.delete_view(view)
        }

        fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.store.count(view)
        }

        fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
            self.store.keys(view)
        }

        fn describe(&self) -> String {
            "counting".into()
        }
    }

    const VIEW: &str = "stats";

    fn row(event_ts: i64) -> StoredRow {
        StoredRow {
            event_ts,
            created_ts: 0,
            payload: vec![1, 0, 0, 0],
        }
    }

    fn key(i: u32) -> Vec<u8> {
        i.to_le_bytes().to_vec()
    }

    fn table() -> ViewTable {
        ViewTable {
            name: VIEW.into(),
            ttl_seconds: 0,
        }
    }

    fn policy(ttl_seconds: u64, mark: (u32, i64), filter: bool) -> ViewPolicy {
        ViewPolicy {
            name: VIEW.into(),
            ttl_seconds,
            mark,
            filter,
        }
    }

    fn cached(ttl: Duration, refresh_after: Option<Duration>) -> (Arc<Counting>, CachedStore) {
        let inner = Arc::new(Counting::default());
        let store = CachedStore::new(
            inner.clone(),
            CacheSettings {
                rows: 10_000,
                ttl,
                refresh_after,
            },
        );
        (inner, store)
    }

    fn counts(store: &CachedStore) -> [u64; 5] {
        let (_, c) = &store.counts()[0];
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            l(&c.hits),
            l(&c.stale),
            l(&c.misses),
            l(&c.negative),
            l(&c.refreshed),
        ]
    }

    async fn get(store: &CachedStore, keys: &[Vec<u8>]) -> Vec<Option<i64>> {
        store
            .get_many(VIEW, keys)
            .await
            .expect("read")
            .into_iter()
            .map(|r| r.map(|r| r.event_ts))
            .collect()
    }

    #[tokio::test]
    async fn reads_are_kept_until_a_write_or_a_new_mark_and_never_past_the_views_ttl() {
        let (inner, store) = cached(Duration::from_secs(60), None);
        inner
            .write_batch(&table(), vec![(key(1), row(10))])
            .await
            .expect("write");
        // A view the registry has not named is not cached.
        get(&store, &[key(1)]).await;
        get(&store, &[key(1)]).await;
        assert_eq!(inner.keys_read.load(Ordering::Relaxed), 2);

        store.sync_views([policy(0, (1, 0), false)]);
        assert_eq!(get(&store, &[key(1), key(2)]).await, [Some(10), None]);
        assert_eq!(get(&store, &[key(1), key(2)]).await, [Some(10), None]);
        assert_eq!(inner.keys_read.load(Ordering::Relaxed), 4);
        assert_eq!(counts(&store), [2, 0, 2, 0, 0]);

        // A write through the cache is read back at once, absent keys included.
        store
            .write_batch(&table(), vec![(key(1), row(11)), (key(2), row(5))])
            .await
            .expect("write");
        assert_eq!(get(&store, &[key(1), key(2)]).await, [Some(11), Some(5)]);

        // A write behind it (another process) is seen once the registry mark changes.
        inner
            .write_batch(&table(), vec![(key(1), row(12))])
            .await
            .expect("write");
        assert_eq!(get(&store, &[key(1)]).await, [Some(11)]);
        store.sync_views([policy(0, (1, 0), false)]);
        assert_eq!(get(&store, &[key(1)]).await, [Some(11)]);
        store.sync_views([policy(0, (1, 7), false)]);
        assert_eq!(get(&store, &[key(1)]).await, [Some(12)]);

        // A view with a 1-second ttl keeps entries 1 second, not the cache's 60.
        store.sync_views([policy(1, (1, 7), false)]);
        get(&store, &[key(1)]).await;
        inner
            .write_batch(&table(), vec![(key(1), row(13))])
            .await
            .expect("write");
        assert_eq!(get(&store, &[key(1)]).await, [Some(12)]);
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        assert_eq!(get(&store, &[key(1)]).await, [Some(13)]);
    }

    #[tokio::test]
    async fn hot_keys_are_refreshed_ahead_in_the_background() {
        let (inner, store) = cached(Duration::from_secs(5), Some(Duration::from_millis(100)));
        store.sync_views([policy(0, (1, 0), false)]);
        inner
            .write_batch(&table(), vec![(key(1), row(1))])
            .await
            .expect("write");
        assert_eq!(get(&store, &[key(1)]).await, [Some(1)]);
        inner
            .write_batch(&table(), vec![(key(1), row(2))])
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Past refresh_after: answered from the cache at once, and re-read once behind it
        // however many ask meanwhile.
        inner.hold.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            assert_eq!(get(&store, &[key(1)]).await, [Some(1)]);
        }
        inner.held.notified().await;
        inner.release.notify_one();
        for _ in 0..100 {
            if counts(&store)[4] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counts(&store), [0, 5, 1, 0, 1]);
        assert_eq!(get(&store, &[key(1)]).await, [Some(2)]);
        assert_eq!(inner.keys_read.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_read_that_raced_a_write_is_not_kept() {
        let (inner, store) = cached(Duration::from_secs(60), None);
        store.sync_views([policy(0, (1, 0), false)]);
        inner
            .write_batch(&table(), vec![(key(1), row(1))])
            .await
            .expect("write");
        inner.hold.store(true, Ordering::SeqCst);
        let reader = {
            let store = store.clone();
            tokio::spawn(async move { get(&store, &[key(1)]).await })
        };
        // The read has the old row in hand; the write lands before the read returns.
        inner.held.notified().await;
        store
            .write_batch(&table(), vec![(key(1), row(2))])
            .await
            .expect("write");
        inner.release.notify_one();
        assert_eq!(reader.await.expect("read"), [Some(1)]);
        assert_eq!(get(&store, &[key(1)]).await, [Some(2)]);
    }

    #[tokio::test]
    async fn unknown_entities_are_answered_by_the_filter_and_no_written_key_is_ever_missed() {
        let (inner, store) = cached(Duration::from_secs(60), None);
        let stored: Vec<(Vec<u8>, StoredRow)> = (0..20_000).map(|i| (key(i), row(1))).collect();
        inner.write_batch(&table(), stored).await.expect("write");
        store.sync_views([policy(0, (1, 0), true)]);
        for _ in 0..200 {
            if store.has_filter(VIEW) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.has_filter(VIEW), "the filter was built");

        // 20,000 unknown entities: all absent, about 1% of them read from the store.
        let unknown: Vec<Vec<u8>> = (100_000..120_000).map(key).collect();
        let before = inner.keys_read.load(Ordering::Relaxed);
        assert!(get(&store, &unknown).await.iter().all(Option::is_none));
        let read = inner.keys_read.load(Ordering::Relaxed) - before;
        assert!(
            read < 600,
            "{read} of 20,000 unknown keys went to the store"
        );
        assert_eq!(counts(&store)[3], 20_000 - read);

        // Every stored key and every key written since is found.
        store
            .write_batch(&table(), vec![(key(200_000), row(3))])
            .await
            .expect("write");
        let known: Vec<Vec<u8>> = (0..20_000).chain([200_000]).map(key).collect();
        assert!(get(&store, &known).await.iter().all(Option::is_some));

        // Keys written while a new filter is being built are in it.
        inner.hold.store(false, Ordering::SeqCst);
        let rebuild = {
            let store = store.clone();
            tokio::spawn(async move { store.rebuild_filter(VIEW).await })
        };
        let during: Vec<(Vec<u8>, StoredRow)> =
            (300_000..300_500).map(|i| (key(i), row(4))).collect();
        store.write_batch(&table(), during).await.expect("write");
        rebuild.await.expect("joined").expect("rebuilt");
        let written: Vec<Vec<u8>> = (300_000..300_500).map(key).collect();
        assert!(get(&store, &written).await.iter().all(Option::is_some));
    }
}
