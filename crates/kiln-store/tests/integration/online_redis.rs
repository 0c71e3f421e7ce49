//! The Redis online store against real servers: the machine's Redis (`KILN_TEST_REDIS_URL`)
//! and a 3-primary Redis Cluster started here from `redis-server` processes on loopback ports.
//! Without `KILN_TEST_REDIS_URL` the tests say so and pass.

use std::time::Duration;

use kiln_store::StoreError;
use kiln_store::online::{
    MemoryStore, OnlineStore, RedisOptions, RedisStore, StoredRow, ViewTable,
};
use proptest::prelude::*;

use crate::online::conformance;
use crate::redis_cluster::{Cluster, free_ports, wait_for};

fn redis_url() -> Option<String> {
    let url = std::env::var("KILN_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("KILN_TEST_REDIS_URL is not set: skipping the Redis online store test");
    }
    url
}

/// A key prefix no other test (or earlier run) uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("kiln-test:{test}:{}:{nanos}", std::process::id())
}

fn options(prefix: &str) -> RedisOptions {
    RedisOptions {
        key_prefix: prefix.to_string(),
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
    }
}

async fn cleanup(store: &RedisStore) {
    for view in ["driver_stats", "other", "big", "v"] {
        store.delete_view(view).await.expect("delete");
    }
}

#[tokio::test]
async fn redis_store_conforms() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("conforms");
    let store = RedisStore::connect(&url, &options(&prefix))
        .await
        .expect("connect");
    conformance(&store).await;
    // A second client (another replica, a restarted server process) sees the same rows.
    let other = RedisStore::connect(&url, &options(&prefix))
        .await
        .expect("connect");
    assert_eq!(other.count("big").await.expect("count"), 1_000);
    cleanup(&store).await;
    assert_eq!(other.count("big").await.expect("count"), 0);
}

#[tokio::test]
async fn redis_cluster_store_conforms() {
    if redis_url().is_none() {
        return;
    }
    let cluster = Cluster::start().await;
    let store = RedisStore::connect_cluster(&cluster.nodes(), &options("kiln-test"))
        .await
        .expect("connect");
    conformance(&store).await;
    // The rows really are spread over the three primaries.
    for port in &cluster.ports {
        let mut c = wait_for(*port).await;
        let n: u64 = redis::cmd("DBSIZE")
            .query_async(&mut c)
            .await
            .expect("DBSIZE");
        assert!(n > 200, "primary {port} holds only {n} keys");
    }
    assert!(store.describe().contains("cluster redis://127.0.0.1:"));
}

#[tokio::test]
async fn rows_expire_a_ttl_after_their_event_or_their_write_and_views_without_ttl_never() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("ttl");
    let store = RedisStore::connect(&url, &options(&prefix))
        .await
        .expect("connect");
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let row = |event_ts| StoredRow {
        event_ts,
        created_ts: 0,
        payload: vec![1],
    };
    let ttl = |s| ViewTable {
        name: "v".into(),
        ttl_seconds: s,
    };
    store
        .write_batch(&ttl(3_600), vec![(b"fresh".to_vec(), row(now_micros))])
        .await
        .expect("write");
    // An event an hour ahead (a clock skew) stays live until an hour after it.
    store
        .write_batch(
            &ttl(3_600),
            vec![(b"ahead".to_vec(), row(now_micros + 3_600_000_000))],
        )
        .await
        .expect("write");
    // A row written after its ttl ran out is kept a ttl from now, reported expired meanwhile.
    let old = now_micros - 6_600_000_000;
    store
        .write_batch(&ttl(3_600), vec![(b"old".to_vec(), row(old))])
        .await
        .expect("write");
    store
        .write_batch(&ttl(0), vec![(b"forever".to_vec(), row(old))])
        .await
        .expect("write");
    let mut c = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let pttl = async |c: &mut redis::aio::MultiplexedConnection, key: &[u8]| -> i64 {
        redis::cmd("PTTL")
            .arg(store.redis_key("v", key))
            .query_async(c)
            .await
            .expect("PTTL")
    };
    let fresh = pttl(&mut c, b"fresh").await;
    assert!((3_590_000..=3_600_000).contains(&fresh), "{fresh}");
    let ahead = pttl(&mut c, b"ahead").await;
    assert!((7_190_000..=7_200_000).contains(&ahead), "{ahead}");
    let old_ttl = pttl(&mut c, b"old").await;
    assert!((3_590_000..=3_600_000).contains(&old_ttl), "{old_ttl}");
    assert_eq!(pttl(&mut c, b"forever").await, -1);
    cleanup(&store).await;
}

#[tokio::test]
async fn a_corrupt_row_is_reported_with_its_view_and_key() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("corrupt");
    let store = RedisStore::connect(&url, &options(&prefix))
        .await
        .expect("connect");
    let mut c = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SET")
        .arg(store.redis_key("v", b"\x01\x02"))
        .arg("short")
        .query_async(&mut c)
        .await
        .expect("SET");
    let err = store
        .get_many("v", &[b"\x01\x02".to_vec()])
        .await
        .expect_err("corrupt");
    let msg = err.to_string();
    assert!(
        msg.contains("view v") && msg.contains("0102") && msg.contains("shorter"),
        "{msg}"
    );
    // A write replaces the unreadable row instead of failing on it.
    let row = StoredRow {
        event_ts: 1,
        created_ts: 1,
        payload: vec![7],
    };
    let table = ViewTable {
        name: "v".into(),
        ttl_seconds: 0,
    };
    store
        .write_batch(&table, vec![(b"\x01\x02".to_vec(), row.clone())])
        .await
        .expect("write");
    assert_eq!(
        store
            .get_many("v", &[b"\x01\x02".to_vec()])
            .await
            .expect("get"),
        vec![Some(row)]
    );
    cleanup(&store).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_error_naming_it_without_its_password() {
    let port = free_ports(1)[0];
    let url = format!("redis://kiln:hunter2@127.0.0.1:{port}/0");
    let err = RedisStore::connect(&url, &options("p"))
        .await
        .expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("redis://kiln:***@127.0.0.1:{port}/0")) && !msg.contains("hunter2"),
        "{msg}"
    );
    assert!(err.is_retryable(), "{err:?}");
    let err = RedisStore::connect("http://127.0.0.1:1", &options("p"))
        .await
        .expect_err("not a redis URL");
    assert!(
        matches!(
            err,
            StoreError::Redis {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let err = RedisStore::connect_cluster(&[], &options("p"))
        .await
        .expect_err("no nodes");
    assert!(err.to_string().contains("at least one node"), "{err}");
}

/// Timestamps where a Lua double or a sign mix-up would go wrong.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..3,
        Just(i64::MIN),
        Just(i64::MAX),
        Just(i64::MAX - 1),
        Just(i64::MIN + 1),
        Just(1i64 << 53),
        Just((1i64 << 53) + 1),
        Just(-(1i64 << 32)),
        Just((1i64 << 32) - 1),
        Just(1i64 << 32),
        any::<i64>(),
    ]
}

type Batch = Vec<(u8, i64, i64, u8)>;

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    prop::collection::vec(
        prop::collection::vec((0u8..6, timestamp(), timestamp(), any::<u8>()), 1..8),
        1..6,
    )
}

/// Applies the same batches to the in-memory store (the oracle) and to `store`, checking each
/// write's summary and the final rows.
async fn same_as_memory(store: &dyn OnlineStore, view: &str, batches: &[Batch]) {
    let oracle = MemoryStore::new();
    let table = ViewTable {
        name: view.into(),
        ttl_seconds: 0,
    };
    for batch in batches {
        // One row per key and batch: a batch holds the latest row per key, as callers send it.
        let mut rows: Vec<(Vec<u8>, StoredRow)> = Vec::new();
        for (k, e, c, v) in batch {
            if rows.iter().all(|(key, _)| key[0] != *k) {
                let row = StoredRow {
                    event_ts: *e,
                    created_ts: *c,
                    payload: vec![*v],
                };
                rows.push((vec![*k], row));
            }
        }
        let want = oracle
            .write_batch(&table, rows.clone())
            .await
            .expect("oracle");
        let got = store.write_batch(&table, rows).await.expect("write");
        assert_eq!(got, want, "{batches:?}");
    }
    let keys: Vec<Vec<u8>> = (0u8..6).map(|k| vec![k]).collect();
    assert_eq!(
        store.get_many(view, &keys).await.expect("get"),
        oracle.get_many(view, &keys).await.expect("get"),
        "{batches:?}"
    );
}

#[test]
fn newer_wins_inside_redis_matches_the_in_memory_store() {
    let Some(url) = redis_url() else { return };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let prefix = unique_prefix("newer-wins");
    let store = rt
        .block_on(RedisStore::connect(&url, &options(&prefix)))
        .expect("connect");
    let case = std::cell::Cell::new(0u32);
    proptest!(ProptestConfig::with_cases(64), |(batches in batches())| {
        case.set(case.get() + 1);
        rt.block_on(same_as_memory(&store, &format!("case{}", case.get()), &batches));
    });
    for c in 1..=case.get() {
        rt.block_on(store.delete_view(&format!("case{c}")))
            .expect("delete");
    }
}

#[tokio::test]
async fn concurrent_writers_on_a_cluster_end_with_the_newest_rows() {
    if redis_url().is_none() {
        return;
    }
    let cluster = Cluster::start().await;
    let store = std::sync::Arc::new(
        RedisStore::connect_cluster(&cluster.nodes(), &options("race"))
            .await
            .expect("connect"),
    );
    let table = ViewTable {
        name: "v".into(),
        ttl_seconds: 0,
    };
    // Eight writers each write every key with their own timestamps, interleaved; the row with
    // the greatest (event, created) must win whatever the order of arrival.
    let keys: Vec<Vec<u8>> = (0u32..300).map(|k| k.to_be_bytes().to_vec()).collect();
    let mut tasks = Vec::new();
    for w in 0i64..8 {
        let (store, table, keys) = (store.clone(), table.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            for chunk in keys.chunks(37) {
                let rows = chunk
                    .iter()
                    .map(|k| {
                        let e = i64::from(k[3]) % 3 + (w * 7919 + i64::from(k[2])) % 5;
                        let row = StoredRow {
                            event_ts: e,
                            created_ts: w,
                            payload: vec![w as u8],
                        };
                        (k.clone(), row)
                    })
                    .collect();
                store.write_batch(&table, rows).await.expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let got = store.get_many("v", &keys).await.expect("get");
    for (k, row) in keys.iter().zip(got) {
        let best = (0i64..8)
            .map(|w| {
                let e = i64::from(k[3]) % 3 + (w * 7919 + i64::from(k[2])) % 5;
                (e, w)
            })
            .max()
            .expect("writers");
        let row = row.expect("written");
        assert_eq!((row.event_ts, row.created_ts), best, "key {k:?}");
        assert_eq!(row.payload, vec![best.1 as u8]);
    }
}
