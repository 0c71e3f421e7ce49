//! The point-in-time join against the brute-force oracle on random data.

use arrow_array::RecordBatch;
use kiln_core::{Value, ValueType};
use kiln_features::pit::oracle::oracle_join;
use kiln_features::pit::{DatasetOptions, FeatureInput, ViewRequest, join_batches};
use kiln_features::value_at;
use proptest::prelude::*;

use crate::common::*;

/// Small domains so that keys collide, timestamps tie and TTL edges are hit often.
fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 9 => s.prop_map(Some)]
}

/// key, city, event, created
type FeatureRow = (Option<i64>, Option<u8>, Option<i64>, Option<i64>);

#[derive(Debug, Clone)]
struct ViewCase {
    composite: bool,
    ttl: u64,
    created: bool,
    rows: Vec<FeatureRow>,
}

fn view_case() -> impl Strategy<Value = ViewCase> {
    (
        any::<bool>(),
        prop_oneof![Just(0u64), 1u64..20],
        any::<bool>(),
        proptest::collection::vec(
            (opt(0i64..5), opt(0u8..2), opt(0i64..40), opt(0i64..40)),
            0..40,
        ),
    )
        .prop_map(|(composite, ttl, created, rows)| ViewCase {
            composite,
            ttl,
            created,
            rows,
        })
}

const CITIES: [&str; 2] = ["ams", "sfo"];

fn city(c: Option<u8>) -> Option<&'static str> {
    c.map(|c| CITIES[c as usize])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn kernel_matches_oracle(
        entity_rows in proptest::collection::vec((opt(0i64..6), opt(0u8..2), opt(0i64..45)), 1..30),
        cases in proptest::collection::vec(view_case(), 1..4),
        cutoff in any::<bool>(),
        partitions in 1usize..6,
        spill in any::<bool>(),
    ) {
        // Seconds in the test data; the join works in microseconds.
        let us = 1_000_000;
        let entities = batch(vec![
            ("driver_id", i64s(&entity_rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            ("city", strs(&entity_rows.iter().map(|r| city(r.1)).collect::<Vec<_>>())),
            ("event_timestamp", times(&entity_rows.iter().map(|r| r.2.map(|t| t * us)).collect::<Vec<_>>())),
        ]);
        let mut views = Vec::new();
        let mut oracle_views = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let keys: &[(&str, ValueType)] = if c.composite {
                &[("driver_id", ValueType::Int64), ("city", ValueType::String)]
            } else {
                &[("driver_id", ValueType::Int64)]
            };
            let name = format!("v{i}");
            let v = view(&name, keys, c.ttl, c.created, &[(&format!("f{i}"), ValueType::Float64)]);
            // Each feature row's value is its index, so the test sees which row was picked.
            let mut cols = vec![
                ("driver_id", i64s(&c.rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                ("city", strs(&c.rows.iter().map(|r| city(r.1)).collect::<Vec<_>>())),
                ("ts", times(&c.rows.iter().map(|r| r.2.map(|t| t * us)).collect::<Vec<_>>())),
            ];
            if c.created {
                cols.push(("created", times(&c.rows.iter().map(|r| r.3.map(|t| t * us)).collect::<Vec<_>>())));
            }
            let fname = format!("f{i}");
            cols.push((fname.as_str(), f64s(&(0..c.rows.len()).map(|i| Some(i as f64)).collect::<Vec<_>>())));
            let rows = batch(cols);
            let req = ViewRequest { view: v, features: vec![fname.clone()] };
            oracle_views.push((req.clone(), vec![rows.clone()]));
            views.push((req, FeatureInput::Batches(vec![rows])));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = DatasetOptions {
            created_cutoff: cutoff,
            partitions: Some(partitions),
            memory_budget: if spill { 0 } else { 1 << 30 },
            spill_dir: dir.path().to_path_buf(),
            batch_size: 7,
            ..DatasetOptions::default()
        };
        // Feed the entity rows in several batches to exercise output assembly across chunks.
        let chunks: Vec<RecordBatch> = (0..entities.num_rows()).step_by(7).map(|o| entities.slice(o, 7.min(entities.num_rows() - o))).collect();
        let (out, stats) = join_batches(&chunks, views, &opts).expect("join");
        let expected = oracle_join(&entities, "event_timestamp", &oracle_views, cutoff).expect("oracle");

        prop_assert_eq!(out.num_rows(), entity_rows.len());
        prop_assert_eq!(stats.entity_rows as usize, entity_rows.len());
        // Entity columns pass through unchanged and in order.
        for c in 0..3 {
            prop_assert_eq!(out.column(c).as_ref(), entities.column(c).as_ref());
        }
        for (row, want) in expected.iter().enumerate() {
            let got: Vec<Value> = (3..out.num_columns()).map(|c| value_at(out.column(c), row)).collect();
            prop_assert_eq!(&got, want, "entity row {}", row);
        }
        // The directory holds no leftover spill files.
        prop_assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}

#[test]
fn output_names_follow_feast_and_collisions_are_refused() {
    let v = view(
        "driver_stats",
        &[("driver_id", ValueType::Int64)],
        0,
        false,
        &[("conv_rate", ValueType::Float64)],
    );
    let entities = batch(vec![
        ("driver_id", i64s(&[Some(1)])),
        ("event_timestamp", times(&[Some(5)])),
    ]);
    let rows = batch(vec![
        ("driver_id", i64s(&[Some(1)])),
        ("ts", times(&[Some(1)])),
        ("conv_rate", f64s(&[Some(0.5)])),
    ]);
    let req = ViewRequest {
        view: v.clone(),
        features: vec!["conv_rate".into()],
    };
    let opts = DatasetOptions {
        full_feature_names: true,
        ..DatasetOptions::default()
    };
    let (out, _) = join_batches(
        std::slice::from_ref(&entities),
        vec![(req.clone(), FeatureInput::Batches(vec![rows.clone()]))],
        &opts,
    )
    .expect("join");
    assert_eq!(out.schema().field(2).name(), "driver_stats__conv_rate");
    assert_eq!(value_at(out.column(2), 0), Value::Float64(0.5));

    let mut v2 = v.clone();
    v2.name = "other".into();
    let req2 = ViewRequest {
        view: v2,
        features: vec!["conv_rate".into()],
    };
    let e = join_batches(
        std::slice::from_ref(&entities),
        vec![
            (req.clone(), FeatureInput::Batches(vec![rows.clone()])),
            (req2, FeatureInput::Batches(vec![rows.clone()])),
        ],
        &DatasetOptions::default(),
    )
    .expect_err("collision");
    assert!(e.to_string().contains("--full-feature-names"), "{e}");

    let no_key = batch(vec![
        ("rider_id", i64s(&[Some(1)])),
        ("event_timestamp", times(&[Some(5)])),
    ]);
    let e = join_batches(
        &[no_key],
        vec![(req, FeatureInput::Batches(vec![rows]))],
        &DatasetOptions::default(),
    )
    .expect_err("missing key");
    assert!(e.to_string().contains("driver_id"), "{e}");
}

#[test]
fn columns_come_out_in_the_requested_order() {
    let keys = [("driver_id", ValueType::Int64)];
    let a = view(
        "a",
        &keys,
        0,
        false,
        &[("x", ValueType::Float64), ("z", ValueType::Float64)],
    );
    let b = view("b", &keys, 0, false, &[("y", ValueType::Float64)]);
    let entities = batch(vec![
        ("driver_id", i64s(&[Some(1)])),
        ("event_timestamp", times(&[Some(5)])),
    ]);
    let rows_a = batch(vec![
        ("driver_id", i64s(&[Some(1)])),
        ("ts", times(&[Some(1)])),
        ("x", f64s(&[Some(1.0)])),
        ("z", f64s(&[Some(3.0)])),
    ]);
    let rows_b = batch(vec![
        ("driver_id", i64s(&[Some(1)])),
        ("ts", times(&[Some(1)])),
        ("y", f64s(&[Some(2.0)])),
    ]);
    // Asked for a:x, b:y, a:z; grouped by view that is a:[x, z], b:[y] -> slots [0, 2, 1].
    let opts = DatasetOptions {
        feature_order: vec![0, 2, 1],
        ..DatasetOptions::default()
    };
    let views = vec![
        (
            ViewRequest {
                view: a,
                features: vec!["x".into(), "z".into()],
            },
            FeatureInput::Batches(vec![rows_a]),
        ),
        (
            ViewRequest {
                view: b,
                features: vec!["y".into()],
            },
            FeatureInput::Batches(vec![rows_b]),
        ),
    ];
    let (out, _) = join_batches(std::slice::from_ref(&entities), views, &opts).expect("join");
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["driver_id", "event_timestamp", "x", "y", "z"]);
    let values: Vec<Value> = (2..5).map(|c| value_at(out.column(c), 0)).collect();
    assert_eq!(
        values,
        [
            Value::Float64(1.0),
            Value::Float64(2.0),
            Value::Float64(3.0)
        ]
    );
}
