//! The online store contract, run against every backend.

use kiln_store::online::{MemoryStore, OnlineStore, RedbStore, StoredRow, ViewTable};

fn row(event_ts: i64, created_ts: i64, v: u8) -> StoredRow {
    StoredRow {
        event_ts,
        created_ts,
        payload: vec![v],
    }
}

fn table(name: &str) -> ViewTable {
    ViewTable {
        name: name.into(),
        ttl_seconds: 3_600,
    }
}

pub(crate) async fn conformance(store: &dyn OnlineStore) {
    let t = table("driver_stats");
    let keys: Vec<Vec<u8>> = (0u8..5).map(|k| vec![k]).collect();

    // Reads of an unknown view are all misses, not errors.
    assert_eq!(
        store.get_many("nope", &keys).await.expect("get"),
        vec![None; 5]
    );

    let s = store
        .write_batch(
            &t,
            vec![
                (keys[0].clone(), row(10, 0, 1)),
                (keys[1].clone(), row(10, 0, 2)),
            ],
        )
        .await
        .expect("write");
    assert_eq!((s.written, s.kept_newer), (2, 0));

    // Newer-wins: an older event does not replace; a newer one or a later correction does.
    let s = store
        .write_batch(
            &t,
            vec![
                (keys[0].clone(), row(9, 99, 3)),
                (keys[1].clone(), row(10, 1, 4)),
                (keys[2].clone(), row(1, 0, 5)),
            ],
        )
        .await
        .expect("write");
    assert_eq!((s.written, s.kept_newer), (2, 1));
    let got = store.get_many("driver_stats", &keys).await.expect("get");
    assert_eq!(
        got,
        vec![
            Some(row(10, 0, 1)),
            Some(row(10, 1, 4)),
            Some(row(1, 0, 5)),
            None,
            None
        ]
    );

    // Re-writing identical rows is idempotent.
    let s = store
        .write_batch(&t, vec![(keys[0].clone(), row(10, 0, 1))])
        .await
        .expect("write");
    assert_eq!(s.written, 1);
    assert_eq!(store.count("driver_stats").await.expect("count"), 3);
    let mut listed = store.keys("driver_stats").await.expect("keys");
    listed.sort();
    let mut expected = keys[..3].to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(store.keys("no_such_view").await.expect("keys").is_empty());

    // Views are separate tables.
    store
        .write_batch(&table("other"), vec![(keys[0].clone(), row(1, 1, 9))])
        .await
        .expect("write");
    assert_eq!(
        store
            .get_many("driver_stats", &keys[..1])
            .await
            .expect("get"),
        vec![Some(row(10, 0, 1))]
    );

    // Large batches (the blocking path of redb) behave the same.
    let many: Vec<Vec<u8>> = (0u32..1_000).map(|k| k.to_le_bytes().to_vec()).collect();
    let rows = many
        .iter()
        .map(|k| (k.clone(), row(i64::from(k[0]), 0, k[1])))
        .collect();
    assert_eq!(
        store
            .write_batch(&table("big"), rows)
            .await
            .expect("write")
            .written,
        1_000
    );
    let got = store.get_many("big", &many).await.expect("get");
    assert!(
        got.iter()
            .zip(&many)
            .all(|(r, k)| r.as_ref().map(|r| r.payload[0]) == Some(k[1]))
    );
    // A walk of more keys than one page of a networked store's scan.
    let mut listed = store.keys("big").await.expect("keys");
    listed.sort();
    let mut expected = many.clone();
    expected.sort();
    assert_eq!(listed, expected);

    store.delete_view("driver_stats").await.expect("delete");
    assert_eq!(store.count("driver_stats").await.expect("count"), 0);
    assert_eq!(
        store.get_many("other", &keys[..1]).await.expect("get"),
        vec![Some(row(1, 1, 9))]
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redb_store_conforms_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/online.redb");
    {
        let store = RedbStore::open(&path).expect("open");
        conformance(&store).await;
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.count("other").await.expect("count"), 1);
    assert_eq!(store.count("big").await.expect("count"), 1_000);
}

#[tokio::test]
async fn a_new_redb_file_appears_whole_and_leaves_nothing_beside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("online.redb");
    // What a process killed while creating the file used to leave behind is never at `path`:
    // a stray temporary file of another (dead) process does not get in the way either.
    std::fs::write(dir.path().join(".online.redb.new-1"), b"torn").expect("write");
    drop(RedbStore::open(&path).expect("create"));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.contains(&"online.redb".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains(&format!("new-{}", std::process::id()))),
        "{names:?}"
    );
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(store.count("v").await.expect("count"), 0);
}
