//! The streaming operator against the batch side's brute-force definition
//! (`kiln_features::window::oracle`): after any sequence of events, in any order and any
//! batching, every key's online values equal the batch values as of the key's `as_of` time;
//! and a state restored from a checkpoint ends bit-for-bit where an uninterrupted run does.

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema, TimeUnit};
use kiln_core::Value;
use kiln_core::key::entity_key;
use kiln_core::spec::WindowKind;
use kiln_features::window::oracle::oracle_aggregate;
use kiln_stream::event::{EventSchema, Row};
use kiln_stream::operator::ViewOperator;
use kiln_stream::window::Plan;
use proptest::prelude::*;

use crate::common::{self, Ev};

fn row(e: &Ev) -> Row {
    vec![
        Value::Int64(e.card),
        Value::Timestamp(e.ts),
        e.amount.map_or(Value::Null, Value::Float64),
        Value::Int64(e.merchant),
    ]
}

/// Runs events through a fresh operator in batches of the given sizes.
fn run(schema: &EventSchema, plan: &Plan, events: &[Ev], batches: &[usize]) -> ViewOperator {
    let mut op = ViewOperator::new(plan.clone());
    let mut now = i64::MIN;
    let mut at = 0;
    for (i, size) in batches.iter().cycle().enumerate() {
        if at >= events.len() {
            break;
        }
        let end = (at + size.max(&1)).min(events.len());
        for (j, e) in events[at..end].iter().enumerate() {
            op.apply(schema, &row(e), (at + j) as u64);
            now = now.max(e.ts);
        }
        at = end;
        op.advance(now);
        if i % 2 == 0 {
            op.drain();
        }
    }
    op.advance(now);
    op.drain();
    op
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float64(x), Value::Float64(y)) => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

const T0: i64 = 1_700_000_000_000_000;

fn event() -> impl Strategy<Value = Ev> {
    (
        0i64..3,
        0i64..7_200,
        prop_oneof![
            8 => (-1000i64..1000).prop_map(|x| Some(x as f64 / 8.0)),
            1 => Just(None),
            1 => Just(Some(f64::NAN)),
            1 => Just(Some(1e12)),
        ],
        0i64..5,
    )
        .prop_map(|(card, secs, amount, merchant)| Ev {
            card,
            // Whole and half seconds, so ties and exact window edges happen.
            ts: T0 + secs * 500_000,
            amount,
            merchant,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn online_values_equal_the_batch_definition_as_of_each_key(
        // Up to 400 events over 3 cards: long windows go past 64 events and use tiles.
        mut events in prop::collection::vec(event(), 1..400),
        shuffle in prop::collection::vec(0usize..1000, 0..20),
        batches in prop::collection::vec(1usize..40, 1..5),
        dense in any::<bool>(),
        only_sessions in any::<bool>(),
    ) {
        // Dense: every event on one card over two hours, so its hour windows hold more than
        // 64 events (computed from tiles) and have older events just outside them.
        if dense {
            for e in &mut events {
                e.card = 0;
                e.ts = T0 + (e.ts - T0) * 2;
            }
        }
        // Mostly in time order, with some events late.
        events.sort_by_key(|e| e.ts);
        for (i, s) in shuffle.iter().enumerate() {
            let (a, b) = (s % events.len(), (s / 7 + i) % events.len());
            events.swap(a, b);
        }
        let mut view = common::view("unused");
        if only_sessions {
            // Nothing longer keeps events around: what a session keeps is its own doing.
            view.aggregations.retain(|a| a.kind == WindowKind::Session);
            let names: Vec<String> = view.aggregations.iter().map(|a| a.name.clone()).collect();
            view.features.retain(|f| names.contains(&f.name));
        }
        let schema = EventSchema::new(&[&view], &common::arrow_schema()).expect("schema");
        let mut plan = Plan::new(&view, &schema).expect("plan");
        // As late as the latest event here is, as the stream's allowed lateness would admit.
        plan.lateness = events
            .iter()
            .scan(i64::MIN, |seen, e| {
                *seen = (*seen).max(e.ts);
                Some(*seen - e.ts)
            })
            .max()
            .unwrap_or(0);
        let mut op = run(&schema, &plan, &events, &batches);

        // The batch definition, as of each key's time.
        let cards: Vec<i64> = (0..3).filter(|c| events.iter().any(|e| e.card == *c)).collect();
        let mut key_col = Int64Builder::new();
        let mut ts_col = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut online = Vec::new();
        // Each key's time is the latest moment up to the stream's time at which its values
        // changed (one of its events, or one leaving a window: a session's end), as seen after
        // any prefix of the stream: it never goes back, so a late event that continues a
        // session which had ended by the stream's time leaves the key at that end (its values
        // as of then include the event).
        let latest = |card: i64, seen: &[Ev], now: i64| {
            let mut ts: Vec<i64> = seen.iter().filter(|e| e.card == card).map(|e| e.ts).collect();
            ts.sort_unstable();
            let mut moments = ts.clone();
            for w in view.aggregations.iter().map(|a| a.window()) {
                for (i, t) in ts.iter().enumerate() {
                    let session_goes_on = w.kind == WindowKind::Session
                        && ts.get(i + 1).is_some_and(|next| next - t < w.micros);
                    if !session_goes_on {
                        moments.push(w.leaves(*t));
                    }
                }
            }
            moments.into_iter().filter(|m| *m <= now).max()
        };
        let expected_as_of = |card: i64| {
            let mut now = i64::MIN;
            (0..events.len())
                .map(|i| {
                    now = now.max(events[i].ts);
                    latest(card, &events[..=i], now)
                })
                .max()
                .flatten()
        };
        for c in &cards {
            let (as_of, values) = op
                .current(&entity_key(&[Value::Int64(*c)]))
                .expect("every card with events has state");
            prop_assert_eq!(Some(as_of), expected_as_of(*c), "card {}", c);
            key_col.append_value(*c);
            ts_col.append_value(as_of);
            online.push(values);
        }
        let entities = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                ArrowField::new("card", DataType::Int64, true),
                ArrowField::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            ])),
            vec![Arc::new(key_col.finish()) as ArrayRef, Arc::new(ts_col.finish())],
        ).expect("entities");
        let names: Vec<String> = view.features.iter().map(|f| f.name.clone()).collect();
        let want = oracle_aggregate(&entities, "at", &view, &names, &[common::batch(&events)])
            .expect("oracle");
        for (k, (got, want)) in online.iter().zip(&want).enumerate() {
            for (f, (g, w)) in got.iter().zip(want).enumerate() {
                prop_assert!(close(g, w), "card {} feature {}: online {:?}, batch {:?}", cards[k], names[f], g, w);
            }
        }

        // Batched differently, the state is the same to the bit.
        let mut other = run(&schema, &plan, &events, &[3]);
        for c in &cards {
            let key = entity_key(&[Value::Int64(*c)]);
            prop_assert_eq!(format!("{:?}", op.current(&key)), format!("{:?}", other.current(&key)));
        }
    }
}
