//! Online retrieval against a real store: statuses, TTL on read, rows written by other view
//! versions, and request errors.

use kiln_core::spec::{Meta, ViewVersion};
use kiln_core::time::MICROS_PER_SECOND;
use kiln_core::value::encode_values;
use kiln_core::{Value, ValueType, key::entity_key};
use kiln_features::online::{
    Catalog, FeatureSelection, FeatureStatus, OnlineRequest, get_online_features,
};
use kiln_registry::{Event, EventRecord, State};
use kiln_store::online::{MemoryStore, OnlineStore, StoredRow, ViewTable};
use serde_json::json;

use crate::common::view;

fn state(versions: &[ViewVersion]) -> State {
    let records: Vec<EventRecord> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| EventRecord {
            seq: i as i64 + 1,
            at: 0,
            event: Event::ViewVersionCreated {
                version: v.clone(),
                online: true,
                meta: Meta::default(),
            },
        })
        .collect();
    State::replay(&records).expect("valid log")
}

fn row(version: u32, event_ts: i64, values: &[Value]) -> StoredRow {
    let mut payload = version.to_le_bytes().to_vec();
    encode_values(values, &mut payload);
    StoredRow {
        event_ts,
        created_ts: 0,
        payload,
    }
}

fn request(ids: &[i64]) -> OnlineRequest {
    OnlineRequest {
        features: FeatureSelection::Refs(vec!["stats:rate".into(), "stats:trips".into()]),
        entities: vec![("driver_id".into(), ids.iter().map(|i| json!(i)).collect())],
        full_feature_names: false,
    }
}

#[tokio::test]
async fn statuses_ttl_and_versions() {
    let keys = [("driver_id", ValueType::Int64)];
    let v1 = view(
        "stats",
        &keys,
        3_600,
        false,
        &[("rate", ValueType::Float32), ("trips", ValueType::Int64)],
    );
    let mut v2 = view(
        "stats",
        &keys,
        3_600,
        false,
        &[("rate", ValueType::Float64), ("trips", ValueType::Int64)],
    );
    v2.version = 2;
    let store = MemoryStore::new();
    let now = 100_000 * MICROS_PER_SECOND;
    let fresh = now - 60 * MICROS_PER_SECOND;
    let stale = now - 7_200 * MICROS_PER_SECOND;
    let rows = vec![
        (
            entity_key(&[Value::Int64(1)]),
            row(2, fresh, &[Value::Float64(0.5), Value::Int64(7)]),
        ),
        (
            entity_key(&[Value::Int64(2)]),
            row(2, stale, &[Value::Float64(0.25), Value::Int64(8)]),
        ),
        // Written by v1: `rate` was float32 then, so it is not read as v2's float64.
        (
            entity_key(&[Value::Int64(3)]),
            row(1, fresh, &[Value::Float32(0.75), Value::Int64(9)]),
        ),
        // Written by a version this catalog does not know yet.
        (
            entity_key(&[Value::Int64(4)]),
            row(3, fresh, &[Value::Float64(1.0), Value::Int64(1)]),
        ),
    ];
    store
        .write_batch(
            &ViewTable {
                name: "stats".into(),
                ttl_seconds: 3_600,
            },
            rows,
        )
        .await
        .expect("write");
    let catalog = Catalog::from_state(&state(&[v1, v2]));
    let resp = get_online_features(&catalog, &store, &request(&[1, 2, 3, 4, 5]), now)
        .await
        .expect("read");
    let names: Vec<&str> = resp.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["driver_id", "rate", "trips"]);
    use FeatureStatus::*;
    assert_eq!(
        resp.columns[1].statuses,
        [Present, Expired, NotFound, NotFound, NotFound]
    );
    assert_eq!(resp.columns[1].values[0], Value::Float64(0.5));
    assert_eq!(resp.columns[1].values[1], Value::Null);
    assert_eq!(resp.columns[1].event_timestamps[1], stale);
    assert_eq!(
        resp.columns[2].statuses,
        [Present, Expired, Present, NotFound, NotFound]
    );
    assert_eq!(resp.columns[2].values[2], Value::Int64(9));
    assert_eq!(resp.columns[0].values[4], Value::Int64(5));
}

#[tokio::test]
async fn bad_requests_name_the_problem() {
    let v = view(
        "stats",
        &[("driver_id", ValueType::Int64)],
        0,
        false,
        &[("rate", ValueType::Float32), ("trips", ValueType::Int64)],
    );
    let catalog = Catalog::from_state(&state(&[v]));
    let store = MemoryStore::new();
    let mut twice = request(&[1]);
    twice.entities.push(("driver_id".into(), vec![json!(2)]));
    let mut ragged = request(&[1, 2]);
    ragged.entities.push(("city".into(), vec![json!("x")]));
    let mut dup = request(&[1]);
    dup.features = FeatureSelection::Refs(vec!["stats:rate".into(), "stats:rate".into()]);
    for (req, needle) in [
        (twice, "given twice"),
        (ragged, "\"city\" has 1 values"),
        (dup, "requested twice"),
    ] {
        let e = get_online_features(&catalog, &store, &req, 0)
            .await
            .expect_err("bad request");
        assert!(e.to_string().contains(needle), "{e}");
    }
}
