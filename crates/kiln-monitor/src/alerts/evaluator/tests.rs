//! Tests of the alert state machine: scripted cases for each edge, and property tests that
//! hysteresis and dedup hold for any sequence of values.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::alerts::AlertsConfig;
use crate::alerts::config::RuleConfig;
use crate::alerts::signals::{Measurement, SignalKind};
use crate::alerts::types::Dur;

const SEC: Micros = 1_000_000;

fn p99() -> SignalQuery {
    SignalQuery::windowed(SignalKind::LatencyP99, Duration::from_secs(300))
}

/// A latency rule: fires above 0.25 s, resolves at or below 0.2 s.
fn latency_rule(hold: u64, resolve_after: u64) -> RuleConfig {
    let mut r = RuleConfig::new("lat", RuleKind::LatencyP99);
    r.threshold = Some(0.25);
    r.resolve_threshold = Some(0.2);
    r.for_ = Dur::secs(hold);
    r.resolve_after = Dur::secs(resolve_after);
    r
}

fn evaluator(rules: Vec<RuleConfig>) -> Evaluator {
    let config = AlertsConfig {
        rules,
        ..AlertsConfig::default()
    };
    Evaluator::new(config.validate(&|_| None).expect("valid").rules)
}

fn at(value: Option<f64>, model: &str) -> Signals {
    let mut s = Signals::new();
    if let Some(v) = value {
        s.set(p99(), Subject::model(model), v);
    }
    s
}

/// Feeds `values` (one per `step` seconds, from t = 0) and returns (second, change, repeat).
fn run(e: &mut Evaluator, values: &[Option<f64>], step: i64) -> Vec<(i64, Change, bool)> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let t = i as i64 * step;
        for tr in e.evaluate(&at(*v, "ranker"), t * SEC) {
            out.push((t, tr.change, tr.repeat));
        }
    }
    out
}

#[test]
fn fires_only_after_holding_for_its_duration_and_a_dip_restarts_the_wait() {
    let mut e = evaluator(vec![latency_rule(60, 0)]);
    let got = run(
        &mut e,
        &[
            Some(0.3),
            Some(0.3),
            Some(0.22),
            Some(0.3),
            Some(0.3),
            Some(0.3),
            Some(0.3),
        ],
        30,
    );
    // Pending from 0, reset at 60 (0.22 is not above 0.25), pending again from 90, fires at 150.
    assert_eq!(got, vec![(150, Change::Firing, false)]);
}

#[test]
fn flapping_inside_the_band_does_not_renotify_and_resolve_waits_for_the_good_side() {
    let mut e = evaluator(vec![latency_rule(0, 60)]);
    let values = [
        Some(0.3),  // 0: fires
        Some(0.22), // band
        Some(0.3),
        Some(0.21),
        Some(0.26),
        Some(0.1), // 150: good from here
        Some(0.15),
        Some(0.22), // 210: band: the resolve wait starts over
        Some(0.1),  // 240
        Some(0.1),
        Some(0.1), // 300: good for 60 s: resolves
        Some(0.1),
    ];
    let got = run(&mut e, &values, 30);
    assert_eq!(
        got,
        vec![(0, Change::Firing, false), (300, Change::Resolved, false)]
    );
}

#[test]
fn no_data_keeps_the_state_unless_the_rule_says_resolve() {
    let mut e = evaluator(vec![latency_rule(0, 0)]);
    let got = run(&mut e, &[Some(0.5), None, None, None], 30);
    assert_eq!(got, vec![(0, Change::Firing, false)]);
    assert_eq!(e.states()[0].state, AlertState::Firing);
    assert_eq!(e.states()[0].value, Some(0.5), "the last value seen");

    let mut r = latency_rule(0, 0);
    r.no_data = NoData::Resolve;
    let mut e = evaluator(vec![r]);
    let mut got = Vec::new();
    for (t, v) in [(0, Some(0.5)), (30, None)] {
        got.extend(e.evaluate(&at(v, "ranker"), t * SEC));
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].change, Change::Resolved);
    assert_eq!(got[1].value, None);
    assert_eq!(got[1].started_at, 0);
    assert_eq!(got[1].resolved_at, Some(30 * SEC));
}

#[test]
fn repeat_interval_reminds_while_firing_and_keeps_the_dedup_key() {
    let mut r = latency_rule(0, 0);
    r.repeat_interval = Some(Dur::secs(90));
    let mut e = evaluator(vec![r]);
    let mut got = Vec::new();
    for i in 0..8 {
        got.extend(e.evaluate(&at(Some(0.4), "ranker"), i * 30 * SEC));
    }
    let times: Vec<(Micros, bool)> = got.iter().map(|t| (t.at / SEC, t.repeat)).collect();
    assert_eq!(times, vec![(0, false), (90, true), (180, true)]);
    assert!(got.iter().all(|t| t.dedup_key() == "kiln/lat/model=ranker"));
    assert!(got.iter().all(|t| t.started_at == 0));
}

#[test]
fn each_subject_has_its_own_state_and_selectors_apply() {
    let mut r = latency_rule(0, 0);
    r.models = vec!["a".into(), "b".into()];
    let mut e = evaluator(vec![r]);
    let s = Signals::new()
        .with(p99(), Subject::model("a"), 0.5)
        .with(p99(), Subject::model("b"), 0.1)
        .with(p99(), Subject::model("c"), 0.9);
    let got = e.evaluate(&s, 0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].subject, Subject::model("a"));
    let s =
        Signals::new()
            .with(p99(), Subject::model("a"), 0.5)
            .with(p99(), Subject::model("b"), 0.6);
    let got = e.evaluate(&s, SEC);
    assert_eq!(got.len(), 1, "a already fired; b fires now");
    assert_eq!(got[0].subject, Subject::model("b"));
    let states = e.states();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].labels.get("model").map(String::as_str), Some("a"));
}

#[test]
fn too_few_samples_is_no_data_not_a_good_value() {
    let mut r = latency_rule(0, 0);
    r.min_samples = 10;
    let mut e = evaluator(vec![r]);
    let thin = |v: f64, n: u64| {
        Signals::new().with(p99(), Subject::model("m"), Measurement::with_samples(v, n))
    };
    assert_eq!(e.evaluate(&thin(0.9, 9), 0).len(), 0);
    assert_eq!(e.evaluate(&thin(0.9, 10), SEC).len(), 1);
    assert_eq!(
        e.evaluate(&thin(0.0, 3), 2 * SEC).len(),
        0,
        "a thin good window does not resolve"
    );
    assert_eq!(e.evaluate(&thin(0.0, 30), 3 * SEC).len(), 1);
}

#[test]
fn long_dedup_keys_are_shortened_stably() {
    let subject = Subject::feature("m", "f".repeat(400));
    let a = dedup_key("rule", &subject);
    assert!(a.len() <= 255, "{}", a.len());
    assert_eq!(a, dedup_key("rule", &subject));
    assert_ne!(a, dedup_key("rule2", &subject));
}

/// Values drawn around the thresholds (bad > 0.25 >= band > 0.2 >= good) and gaps.
fn value() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        3 => Just(Some(0.4)),
        3 => Just(Some(0.23)),
        3 => Just(Some(0.1)),
        1 => Just(None),
    ]
}

fn zone(v: f64) -> Zone {
    if v > 0.25 {
        Zone::Bad
    } else if v > 0.2 {
        Zone::Band
    } else {
        Zone::Good
    }
}

proptest! {
    /// For any sequence: notifications alternate firing/resolved starting with firing; a fire
    /// comes after `for` of unbroken bad values (gaps allowed); a resolve comes after
    /// `resolve_after` of good values; and nothing is announced while the value stays in the
    /// band or keeps being bad.
    #[test]
    fn hysteresis_and_dedup_hold_for_any_sequence(
        values in proptest::collection::vec(value(), 1..80),
        hold_steps in 0i64..4,
        resolve_steps in 0i64..4,
    ) {
        let step = 30;
        let mut e = evaluator(vec![latency_rule((hold_steps * step) as u64, (resolve_steps * step) as u64)]);
        let got = run(&mut e, &values, step);
        let mut expect_next = Change::Firing;
        let mut last: Option<usize> = None;
        for (t, change, repeat) in &got {
            prop_assert!(!repeat, "no repeat_interval, no reminders");
            prop_assert_eq!(*change, expect_next, "alternates: {:?}", got);
            let i = (*t / step) as usize;
            let v = values[i].expect("a transition needs data");
            let window = |n: i64| values[i.saturating_sub(n as usize)..=i].iter().flatten().map(|v| zone(*v));
            match change {
                Change::Firing => {
                    prop_assert_eq!(zone(v), Zone::Bad);
                    prop_assert!(i as i64 >= hold_steps, "fired before {} steps", hold_steps);
                    prop_assert!(window(hold_steps).all(|z| z == Zone::Bad), "held bad: {:?}", values);
                    expect_next = Change::Resolved;
                }
                Change::Resolved => {
                    prop_assert!(window(resolve_steps).all(|z| z == Zone::Good), "held good: {:?}", values);
                    expect_next = Change::Firing;
                }
            }
            last = Some(i);
        }
        // After the last announcement, a firing alert only stays firing if the good side was
        // not held for `resolve_after`; an inactive one only if bad was not held for `for`.
        let tail_start = last.map_or(0, |i| i + 1);
        let tail: Vec<Zone> = values[tail_start..].iter().flatten().map(|v| zone(*v)).collect();
        let longest_run = |want: Zone| {
            let (mut best, mut cur) = (0, 0);
            for v in &values[tail_start..] {
                match v.map(zone) {
                    Some(z) if z == want => { cur += 1; best = best.max(cur); }
                    None => {}
                    Some(_) => cur = 0,
                }
            }
            best
        };
        if expect_next == Change::Resolved {
            prop_assert!(longest_run(Zone::Good) <= resolve_steps, "should have resolved: {:?} / {:?}", tail, got);
        } else {
            prop_assert!(longest_run(Zone::Bad) <= hold_steps, "should have fired: {:?} / {:?}", tail, got);
        }
    }

    /// Evaluating the same measurements again never announces twice.
    #[test]
    fn re_evaluating_the_same_state_is_silent(
        values in proptest::collection::vec(value(), 1..40),
    ) {
        let mut e = evaluator(vec![latency_rule(0, 0)]);
        for (i, v) in values.iter().enumerate() {
            let t = i as i64 * 2 * SEC;
            let _ = e.evaluate(&at(*v, "ranker"), t);
            let again = e.evaluate(&at(*v, "ranker"), t);
            prop_assert!(again.is_empty(), "re-evaluation at {} announced {:?}", i, again);
        }
    }
}
