//! Online store reads: one key and 100 keys per `get_many`, from 100,000 stored rows of the
//! driver-stats shape (4 feature values), on the embedded redb store, on Redis and on a
//! 3-primary Redis Cluster (loopback, started from `redis-server`), and on Redis behind the
//! serving cache (`CachedStore`, warmed: the "Redis with L1" figure). The Redis backends run when
//! `KILN_TEST_REDIS_URL` is set (`redis://127.0.0.1:6379/0` on the project's machines).
//! Run with `KILN_TEST_REDIS_URL=redis://127.0.0.1:6379/0 cargo bench -p kiln-store --features
//! redis --bench online`.

use std::sync::OnceLock;

use kiln_core::Value;
use kiln_store::online::{OnlineStore, RedbStore, StoredRow, ViewTable};

#[cfg(feature = "redis")]
#[path = "../tests/integration/redis_cluster.rs"]
#[allow(dead_code)]
mod redis_cluster;

const KEYS: u64 = 100_000;
const VIEW: &str = "driver_hourly_stats";

fn main() {
    divan::main();
    // The shared Redis keeps no bench rows behind (the Cluster goes away with its processes).
    #[cfg(feature = "redis")]
    if let Some(b) = redis() {
        b.rt.block_on(b.store.delete_view(VIEW)).expect("clean up");
    }
}

struct Backend {
    rt: tokio::runtime::Runtime,
    store: Box<dyn OnlineStore>,
    /// Kept alive for the Cluster backend.
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

fn key(i: u64) -> Vec<u8> {
    kiln_core::key::entity_key(&[Value::Int64(1_000 + i as i64)])
}

fn fill(rt: &tokio::runtime::Runtime, store: &dyn OnlineStore) {
    let table = ViewTable {
        name: VIEW.into(),
        ttl_seconds: 0,
    };
    let rows: Vec<(Vec<u8>, StoredRow)> = (0..KEYS)
        .map(|i| {
            let values = [
                Value::Float32(0.5),
                Value::Float32(0.9),
                Value::Int64(i as i64),
                Value::Float64(4.5),
            ];
            let row = StoredRow {
                event_ts: 1_767_225_600_000_000,
                created_ts: 1_767_225_600_000_000,
                payload: StoredRow::encode_payload(1, &values),
            };
            (key(i), row)
        })
        .collect();
    for chunk in rows.chunks(4_096) {
        rt.block_on(store.write_batch(&table, chunk.to_vec()))
            .expect("fill");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn redb() -> &'static Backend {
    static B: OnceLock<Backend> = OnceLock::new();
    B.get_or_init(|| {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("online.redb")).expect("redb");
        fill(&rt, &store);
        Backend {
            rt,
            store: Box::new(store),
            _guard: Some(Box::new(dir)),
        }
    })
}

#[cfg(feature = "redis")]
fn redis_options() -> kiln_store::online::RedisOptions {
    kiln_store::online::RedisOptions {
        key_prefix: format!("kiln-bench:{}", std::process::id()),
        connect_timeout: std::time::Duration::from_secs(2),
        response_timeout: std::time::Duration::from_secs(5),
    }
}

#[cfg(feature = "redis")]
fn redis() -> Option<&'static Backend> {
    static B: OnceLock<Option<Backend>> = OnceLock::new();
    B.get_or_init(|| {
        let url = std::env::var("KILN_TEST_REDIS_URL").ok()?;
        let rt = runtime();
        let store = rt
            .block_on(kiln_store::online::RedisStore::connect(
                &url,
                &redis_options(),
            ))
            .expect("redis");
        fill(&rt, &store);
        Some(Backend {
            rt,
            store: Box::new(store),
            _guard: None,
        })
    })
    .as_ref()
}

#[cfg(feature = "redis")]
fn cluster() -> Option<&'static Backend> {
    static B: OnceLock<Option<Backend>> = OnceLock::new();
    B.get_or_init(|| {
        std::env::var("KILN_TEST_REDIS_URL").ok()?;
        let rt = runtime();
        let cluster = rt.block_on(redis_cluster::Cluster::start());
        let store = rt
            .block_on(kiln_store::online::RedisStore::connect_cluster(
                &cluster.nodes(),
                &redis_options(),
            ))
            .expect("cluster");
        fill(&rt, &store);
        Some(Backend {
            rt,
            store: Box::new(store),
            _guard: Some(Box::new(cluster)),
        })
    })
    .as_ref()
}

/// Redis behind the serving cache (`CachedStore`), warmed: every stored key read once and the
/// filter of known entities built, so reads are cache hits and unknown keys filter hits.
#[cfg(feature = "redis")]
fn redis_l1() -> Option<&'static Backend> {
    static B: OnceLock<Option<Backend>> = OnceLock::new();
    B.get_or_init(|| {
        let url = std::env::var("KILN_TEST_REDIS_URL").ok()?;
        redis()?; // filled there, under the same key prefix
        let rt = runtime();
        let redis = rt
            .block_on(kiln_store::online::RedisStore::connect(
                &url,
                &redis_options(),
            ))
            .expect("redis");
        let store = kiln_store::online::CachedStore::new(
            std::sync::Arc::new(redis),
            kiln_store::online::CacheSettings {
                rows: 2 * KEYS,
                ttl: std::time::Duration::from_secs(3_600),
                refresh_after: None,
            },
        );
        store.sync_views([kiln_store::online::ViewPolicy {
            name: VIEW.into(),
            ttl_seconds: 0,
            mark: (1, 0),
            filter: true,
        }]);
        rt.block_on(store.rebuild_filter(VIEW)).expect("filter");
        let all: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
        for chunk in all.chunks(512) {
            rt.block_on(store.get_many(VIEW, chunk)).expect("warm");
        }
        Some(Backend {
            rt,
            store: Box::new(store),
            _guard: None,
        })
    })
    .as_ref()
}

/// `n` keys spread over the stored ones (a few unknown), different on every call.
fn keys(n: u64, call: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|j| key((call * 7_919 + j * 104_729) % (KEYS + KEYS / 20)))
        .collect()
}

fn bench_reads(bencher: divan::Bencher, backend: Option<&'static Backend>, n: u64) {
    let Some(b) = backend else {
        eprintln!("KILN_TEST_REDIS_URL is not set: skipping");
        return;
    };
    let mut call = 0u64;
    bencher
        .with_inputs(|| {
            call += 1;
            keys(n, call)
        })
        .bench_local_refs(|ks| {
            let rows = b.rt.block_on(b.store.get_many(VIEW, ks)).expect("read");
            divan::black_box(rows)
        });
}

#[divan::bench(args = [1, 100])]
fn redb_get_many(bencher: divan::Bencher, n: u64) {
    bench_reads(bencher, Some(redb()), n);
}

#[cfg(feature = "redis")]
#[divan::bench(args = [1, 100])]
fn redis_get_many(bencher: divan::Bencher, n: u64) {
    bench_reads(bencher, redis(), n);
}

#[cfg(feature = "redis")]
#[divan::bench(args = [1, 100])]
fn redis_cluster_get_many(bencher: divan::Bencher, n: u64) {
    bench_reads(bencher, cluster(), n);
}

#[cfg(feature = "redis")]
#[divan::bench(args = [1, 100])]
fn redis_with_l1_get_many(bencher: divan::Bencher, n: u64) {
    bench_reads(bencher, redis_l1(), n);
}
