//! The bodies webhooks receive: Kiln's generic JSON (documented in docs/alerts.md) and
//! PagerDuty's Events API v2. Built from a [`Transition`] when it is queued, so the sender task
//! only moves bytes.

use kiln_core::time::format_timestamp;
use serde_json::{Value, json};

use super::evaluator::{Change, Transition, labels};
use super::rule::Value as RuleValue;
use super::types::Direction;

/// PagerDuty truncates `payload.summary` at 1024 characters; we cut first, on a char boundary.
const SUMMARY_MAX: usize = 1024;

/// One line for humans, e.g. `[FIRING] ranker-latency: latency_p99 of model=ranker is 0.31
/// (threshold 0.25)`.
pub fn summary(t: &Transition) -> String {
    let r = &t.rule;
    let what = match &r.value {
        RuleValue::Direct => r.kind.as_str().to_string(),
        RuleValue::Drop { .. } => format!("{} drop", r.kind.as_str()),
    };
    let value = t.value.map_or_else(|| "no data".to_string(), short);
    let side = match r.direction {
        Direction::Above => "above",
        Direction::Below => "below",
    };
    let mut s = match t.change {
        Change::Firing => format!(
            "[FIRING] {}: {what} of {} is {value} ({side} threshold {})",
            r.name, t.subject, r.threshold
        ),
        Change::Resolved => format!(
            "[RESOLVED] {}: {what} of {} is {value} (resolves at {})",
            r.name, t.subject, r.resolve_threshold
        ),
    };
    if s.len() > SUMMARY_MAX {
        let mut cut = SUMMARY_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Four significant digits, trailing zeros dropped (`0.3123`, `1250`, `0.000001234`).
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 15) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Kiln's generic webhook body:
///
/// ```json
/// {"version": 1, "source": "kiln", "rule": "ranker-latency", "kind": "latency_p99",
///  "subject": "model=ranker", "state": "firing", "repeat": false, "value": 0.31,
///  "threshold": 0.25, "resolve_threshold": 0.2, "severity": "critical",
///  "runbook": "docs/runbooks/latency-p99.md", "summary": "[FIRING] ...",
///  "started_at": "2026-01-31T12:00:00Z", "resolved_at": null,
///  "dedup_key": "kiln/ranker-latency/model=ranker", "labels": {"model": "ranker"}}
/// ```
pub fn generic(t: &Transition, source: &str) -> Value {
    let r = &t.rule;
    json!({
        "version": 1,
        "source": source,
        "rule": r.name,
        "kind": r.kind,
        "subject": t.subject.to_string(),
        "state": t.change.as_str(),
        "repeat": t.repeat,
        "value": t.value,
        "threshold": r.threshold,
        "resolve_threshold": r.resolve_threshold,
        "severity": r.severity,
        "runbook": r.runbook,
        "summary": summary(t),
        "started_at": format_timestamp(t.started_at),
        "resolved_at": t.resolved_at.map(format_timestamp),
        "dedup_key": t.dedup_key(),
        "labels": labels(r, &t.subject),
    })
}

/// A PagerDuty Events API v2 event: `trigger` when firing (reminders re-trigger the same
/// `dedup_key`, which PagerDuty folds into the open incident), `resolve` when resolved (PagerDuty
/// reads only the key and action then, so no payload is sent).
pub fn pagerduty(t: &Transition, source: &str, routing_key: &str) -> Value {
    let r = &t.rule;
    match t.change {
        Change::Resolved => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": t.dedup_key(),
        }),
        Change::Firing => {
            let mut details = serde_json::Map::new();
            details.insert("rule".into(), json!(r.name));
            details.insert("kind".into(), json!(r.kind));
            details.insert("subject".into(), json!(t.subject.to_string()));
            details.insert("value".into(), json!(t.value));
            details.insert("threshold".into(), json!(r.threshold));
            details.insert("resolve_threshold".into(), json!(r.resolve_threshold));
            details.insert("runbook".into(), json!(r.runbook));
            details.insert("started_at".into(), json!(format_timestamp(t.started_at)));
            for (k, v) in labels(r, &t.subject) {
                details.entry(k).or_insert(json!(v));
            }
            let mut event = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": t.dedup_key(),
                "payload": {
                    "summary": summary(t),
                    "source": source,
                    "severity": r.severity,
                    "timestamp": format_timestamp(t.at),
                    "component": component(t),
                    "group": r.kind,
                    "class": r.name,
                    "custom_details": details,
                },
            });
            // PagerDuty wants a URL in `href`; a repository path stays in custom_details.
            if r.runbook.starts_with("http://") || r.runbook.starts_with("https://") {
                event["links"] =
                    json!([{"href": r.runbook, "text": format!("Runbook: {}", r.name)}]);
            }
            event
        }
    }
}

/// The model or view the alert is about.
fn component(t: &Transition) -> String {
    t.subject
        .labels()
        .first()
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alerts::AlertsConfig;
    use crate::alerts::config::{RuleConfig, RuleKind};
    use crate::alerts::signals::Subject;
    use crate::alerts::types::Severity;

    fn transition(change: Change, runbook: Option<&str>) -> Transition {
        let mut r = RuleConfig::new("ranker-latency", RuleKind::LatencyP99);
        r.threshold = Some(0.25);
        r.resolve_threshold = Some(0.2);
        r.severity = Severity::Critical;
        r.runbook = runbook.map(str::to_string);
        r.labels.insert("team".into(), "ranking".into());
        let config = AlertsConfig {
            rules: vec![r],
            ..AlertsConfig::default()
        };
        let rule: Arc<_> = config.validate(&|_| None).expect("valid").rules.remove(0);
        Transition {
            rule,
            subject: Subject::model("ranker"),
            change,
            repeat: false,
            value: Some(0.31),
            started_at: 1_769_860_800_000_000,
            resolved_at: (change == Change::Resolved).then_some(1_769_861_100_000_000),
            at: 1_769_860_800_000_000,
        }
    }

    #[test]
    fn summaries_show_four_significant_digits() {
        for (v, want) in [
            (0.31, "0.31"),
            (0.312_345, "0.3123"),
            (1250.0, "1250"),
            (123_456.7, "123457"),
            (0.000_001_234_5, "0.000001234"),
            (0.0, "0"),
            (-0.05, "-0.05"),
        ] {
            assert_eq!(short(v), want, "{v}");
        }
    }

    #[test]
    fn the_generic_body_carries_every_documented_field() {
        let body = generic(&transition(Change::Resolved, None), "kiln");
        assert_eq!(body["rule"], "ranker-latency");
        assert_eq!(body["kind"], "latency_p99");
        assert_eq!(body["state"], "resolved");
        assert_eq!(body["value"], 0.31);
        assert_eq!(body["severity"], "critical");
        assert_eq!(body["runbook"], "docs/runbooks/latency-p99.md");
        assert_eq!(body["started_at"], "2026-01-31T12:00:00Z");
        assert_eq!(body["resolved_at"], "2026-01-31T12:05:00Z");
        assert_eq!(
            body["labels"],
            json!({"model": "ranker", "team": "ranking"})
        );
        assert_eq!(
            body["summary"],
            "[RESOLVED] ranker-latency: latency_p99 of model=ranker is 0.31 (resolves at 0.2)"
        );
    }

    #[test]
    fn pagerduty_links_only_urls_and_resolves_by_key() {
        let t = transition(Change::Firing, Some("https://runbooks.example/latency"));
        let body = pagerduty(&t, "kiln-eu", "KEY");
        assert_eq!(body["links"][0]["href"], "https://runbooks.example/latency");
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["payload"]["component"], "ranker");
        let body = pagerduty(&transition(Change::Firing, None), "kiln-eu", "KEY");
        assert!(body.get("links").is_none(), "{body}");
        assert_eq!(
            body["payload"]["custom_details"]["runbook"],
            "docs/runbooks/latency-p99.md"
        );
        let body = pagerduty(&transition(Change::Resolved, None), "kiln-eu", "KEY");
        assert_eq!(
            body,
            json!({"routing_key": "KEY", "event_action": "resolve", "dedup_key": "kiln/ranker-latency/model=ranker"})
        );
    }
}
