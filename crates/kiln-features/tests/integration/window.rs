//! Windowed aggregations in the point-in-time join against the brute-force oracle.

use arrow_array::RecordBatch;
use kiln_core::spec::{AggFunction, AggregationSpec, Field as KField, ViewVersion, WindowKind};
use kiln_core::{Value, ValueType};
use kiln_features::pit::{DatasetOptions, FeatureInput, ViewRequest, join_batches};
use kiln_features::value_at;
use kiln_features::window::oracle::oracle_aggregate;
use proptest::prelude::*;

use crate::common::*;

const US: i64 = 1_000_000;

fn col(name: &str, dtype: ValueType) -> KField {
    KField {
        name: name.into(),
        dtype,
    }
}

/// A view with every function over `n` (int64), `y` (float64) and `s` (string), and a count
/// of events, for each window (in seconds), sliding, tumbling and session.
fn aggregated_view(composite: bool, created: bool, windows: &[u64]) -> ViewVersion {
    let keys: &[(&str, ValueType)] = if composite {
        &[("driver_id", ValueType::Int64), ("city", ValueType::String)]
    } else {
        &[("driver_id", ValueType::Int64)]
    };
    let mut v = view("acts", keys, 0, created, &[]);
    use AggFunction as F;
    let mut aggs: Vec<(F, Option<KField>)> = vec![(F::Count, None)];
    for f in AggFunction::ALL {
        aggs.push((f, Some(col("n", ValueType::Int64))));
        if f != F::CountDistinct {
            aggs.push((f, Some(col("y", ValueType::Float64))));
        }
    }
    aggs.push((F::Last, Some(col("s", ValueType::String))));
    aggs.push((F::CountDistinct, Some(col("s", ValueType::String))));
    for (&w, kind) in windows.iter().flat_map(|w| {
        [
            (w, WindowKind::Sliding),
            (w, WindowKind::Tumbling),
            (w, WindowKind::Session),
        ]
    }) {
        for (f, c) in &aggs {
            let name = match c {
                Some(c) => format!("{}_{f}_{w}s_{kind}", c.name),
                None => format!("{f}_{w}s_{kind}"),
            };
            let input = c.as_ref().map(|c| c.dtype);
            if v.features.iter().any(|x| x.name == name) {
                continue;
            }
            v.features.push(KField {
                name: name.clone(),
                dtype: f.output_type(input),
            });
            v.aggregations.push(AggregationSpec {
                name,
                function: *f,
                column: c.clone(),
                window_seconds: w,
                kind,
            });
        }
    }
    v
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 9 => s.prop_map(Some)]
}

const CITIES: [&str; 2] = ["ams", "sfo"];
const WORDS: [&str; 3] = ["a", "b", "c"];

/// key, city, event time, created time, n, y (before the offset), s
type Event = (
    Option<i64>,
    Option<u8>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i8>,
    Option<u8>,
);

fn events_batch(evs: &[Event], created: bool, offset: f64, nan_at: Option<usize>) -> RecordBatch {
    let mut cols = vec![
        (
            "driver_id",
            i64s(&evs.iter().map(|r| r.0).collect::<Vec<_>>()),
        ),
        (
            "city",
            strs(
                &evs.iter()
                    .map(|r| r.1.map(|c| CITIES[c as usize]))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "ts",
            times(&evs.iter().map(|r| r.2.map(|t| t * US)).collect::<Vec<_>>()),
        ),
    ];
    if created {
        cols.push((
            "created",
            times(&evs.iter().map(|r| r.3.map(|t| t * US)).collect::<Vec<_>>()),
        ));
    }
    cols.push(("n", i64s(&evs.iter().map(|r| r.4).collect::<Vec<_>>())));
    cols.push((
        "y",
        f64s(
            &evs.iter()
                .enumerate()
                .map(|(i, r)| {
                    if Some(i) == nan_at {
                        Some(f64::NAN)
                    } else {
                        r.5.map(|y| offset + f64::from(y) / 4.0)
                    }
                })
                .collect::<Vec<_>>(),
        ),
    ));
    cols.push((
        "s",
        strs(
            &evs.iter()
                .map(|r| r.6.map(|s| WORDS[s as usize]))
                .collect::<Vec<_>>(),
        ),
    ));
    batch(cols)
}

/// Equal, with floats equal up to rounding: relative to the value, plus a little relative to
/// the data's offset (a standard deviation of values near 1e9 is only known to about 1e-7).
fn close(got: &Value, want: &Value, offset: f64) -> bool {
    match (got, want) {
        (Value::Float64(a), Value::Float64(b)) => {
            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0) + 1e-12 * offset
        }
        _ => got == want,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn kernel_matches_oracle(
        entity_rows in proptest::collection::vec((opt(0i64..5), opt(0u8..2), opt(0i64..45)), 1..30),
        evs in proptest::collection::vec(
            (opt(0i64..4), opt(0u8..2), opt(0i64..40), opt(0i64..40), opt(-50i64..50), opt(-20i8..20), opt(0u8..3)),
            0..50,
        ),
        windows in proptest::collection::btree_set(1u64..25, 1..3),
        composite in any::<bool>(),
        created in any::<bool>(),
        large_offset in any::<bool>(),
        nan in any::<bool>(),
        partitions in 1usize..5,
        spill in any::<bool>(),
    ) {
        let windows: Vec<u64> = windows.into_iter().collect();
        let v = aggregated_view(composite, created, &windows);
        let offset = if large_offset { 1e9 } else { 0.0 };
        let nan_at = (nan && !evs.is_empty()).then_some(evs.len() / 2);
        let events = events_batch(&evs, created, offset, nan_at);
        let entities = batch(vec![
            ("driver_id", i64s(&entity_rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            ("city", strs(&entity_rows.iter().map(|r| r.1.map(|c| CITIES[c as usize])).collect::<Vec<_>>())),
            ("event_timestamp", times(&entity_rows.iter().map(|r| r.2.map(|t| t * US)).collect::<Vec<_>>())),
        ]);
        let features: Vec<String> = v.features.iter().map(|f| f.name.clone()).collect();
        let req = ViewRequest { view: v.clone(), features: features.clone() };
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = DatasetOptions {
            partitions: Some(partitions),
            memory_budget: if spill { 0 } else { 1 << 30 },
            spill_dir: dir.path().to_path_buf(),
            batch_size: 7,
            ..DatasetOptions::default()
        };
        let chunks: Vec<RecordBatch> = (0..entities.num_rows()).step_by(7).map(|o| entities.slice(o, 7.min(entities.num_rows() - o))).collect();
        let (out, _) = join_batches(&chunks, vec![(req, FeatureInput::Batches(vec![events.clone()]))], &opts).expect("join");
        let expected = oracle_aggregate(&entities, "event_timestamp", &v, &features, &[events]).expect("oracle");
        prop_assert_eq!(out.num_rows(), entity_rows.len());
        for (row, want) in expected.iter().enumerate() {
            for (c, w) in want.iter().enumerate() {
                let got = value_at(out.column(3 + c), row);
                prop_assert!(close(&got, w, offset), "row {} feature {}: got {:?}, want {:?}", row, features[c], got, w);
            }
        }
    }
}

/// The window bounds and empty windows, computed by hand.
#[test]
fn window_bounds_and_empty_windows() {
    // Card 1: amounts 10 at t=100, 20 at t=160, 5 at t=200 (seconds); card 2: nothing.
    let evs: Vec<Event> = vec![
        (
            Some(1),
            Some(0),
            Some(100),
            None,
            Some(10),
            Some(0),
            Some(0),
        ),
        (
            Some(1),
            Some(0),
            Some(160),
            None,
            Some(20),
            Some(0),
            Some(1),
        ),
        (Some(1), Some(0), Some(200), None, Some(5), Some(0), Some(0)),
    ];
    let v = aggregated_view(false, false, &[60]);
    let events = events_batch(&evs, false, 0.0, None);
    // T = 200: window (140, 200] holds 160 and 200. T = 160: (100, 160] holds only 160 (100 is
    // exactly T - w, excluded). T = 99: before everything. Card 2 has no events. A duplicate
    // row gives the same answer.
    let rows = [(1, 200), (1, 160), (1, 99), (2, 200), (1, 200)];
    let entities = batch(vec![
        (
            "driver_id",
            i64s(&rows.iter().map(|r| Some(r.0)).collect::<Vec<_>>()),
        ),
        (
            "event_timestamp",
            times(&rows.iter().map(|r| Some(r.1 * US)).collect::<Vec<_>>()),
        ),
    ]);
    let features: Vec<String> = [
        "count_60s_sliding",
        "n_sum_60s_sliding",
        "n_mean_60s_sliding",
        "n_max_60s_sliding",
        "n_last_60s_sliding",
        "s_count_distinct_60s_sliding",
        "n_stddev_60s_sliding",
        // Buckets [60, 120), [120, 180), [180, 240).
        "count_60s_tumbling",
        "n_sum_60s_tumbling",
    ]
    .map(String::from)
    .to_vec();
    let req = ViewRequest {
        view: v,
        features: features.clone(),
    };
    let (out, stats) = join_batches(
        &[entities],
        vec![(req, FeatureInput::Batches(vec![events]))],
        &DatasetOptions::default(),
    )
    .expect("join");
    let got: Vec<Vec<Value>> = (0..out.num_rows())
        .map(|r| {
            (2..out.num_columns())
                .map(|c| value_at(out.column(c), r))
                .collect()
        })
        .collect();
    use Value::{Float64 as F, Int64 as I, Null};
    // T = 200 is in the bucket [180, 240): only the event at 200; T = 160 in [120, 180): 160.
    let at_200 = vec![I(2), I(25), F(12.5), I(20), I(5), I(2), F(7.5), I(1), I(5)];
    assert_eq!(
        got,
        vec![
            at_200.clone(),
            vec![
                I(1),
                I(20),
                F(20.0),
                I(20),
                I(20),
                I(1),
                F(0.0),
                I(1),
                I(20)
            ],
            vec![I(0), Null, Null, Null, Null, I(0), Null, I(0), Null],
            vec![I(0), Null, Null, Null, Null, I(0), Null, I(0), Null],
            at_200,
        ]
    );
    assert_eq!(stats.matched, vec![3]);
}

#[test]
fn created_cutoff_is_refused_for_aggregated_views() {
    let v = aggregated_view(false, true, &[60]);
    let events = events_batch(&[], true, 0.0, None);
    let entities = batch(vec![
        ("driver_id", i64s(&[Some(1)])),
        ("event_timestamp", times(&[Some(0)])),
    ]);
    let req = ViewRequest {
        view: v,
        features: vec!["count_60s_sliding".into()],
    };
    let err = join_batches(
        &[entities],
        vec![(req, FeatureInput::Batches(vec![events]))],
        &DatasetOptions {
            created_cutoff: true,
            ..DatasetOptions::default()
        },
    )
    .expect_err("the cut-off is not supported for aggregations");
    assert!(err.to_string().contains("cut-off"), "{err}");
}
