//! The alert state machine, pure: given the rules, the measurements and the time, it returns
//! the state changes to announce. No clock, no I/O, no async, so tests drive it with scripted
//! numbers and times.
//!
//! Per (rule, subject):
//!
//! ```text
//!            bad                    bad for `for`
//! inactive -------> pending ----------------------> firing --(notify "firing")
//!    ^                 | not bad                      |  good (past resolve_threshold)
//!    +-----------------+                              |  for `resolve_after`
//!    +------------------------------------------------+--(notify "resolved")
//! ```
//!
//! *Hysteresis*: a firing alert resolves only once the value is back past `resolve_threshold`
//! (and has stayed there for `resolve_after`), so a value flapping between the two thresholds
//! does not re-notify. *Dedup*: a notification is a transition, so there is exactly one per
//! fire and one per resolve of each (rule, subject); `repeat_interval` adds reminders while it
//! keeps firing. *No data* (the subject absent, NaN, too few samples) moves nothing, unless the
//! rule says `no_data = "resolve"`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_core::time::{Micros, format_timestamp};
use serde::{Deserialize, Serialize};

use super::config::{NoData, RuleKind};
use super::rule::{Rule, Zone};
use super::signals::{SignalQuery, Signals, Subject};
use super::types::Severity;

/// What a transition announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Firing,
    Resolved,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Firing => "firing",
            Change::Resolved => "resolved",
        }
    }
}

/// A state change of one (rule, subject): what gets published and notified.
#[derive(Debug, Clone)]
pub struct Transition {
    pub rule: Arc<Rule>,
    pub subject: Subject,
    pub change: Change,
    /// A `repeat_interval` reminder of an alert that was already firing.
    pub repeat: bool,
    /// The value that caused it (the last one seen, for a reminder); `None` when it resolved
    /// for lack of data.
    pub value: Option<f64>,
    /// When it started firing.
    pub started_at: Micros,
    pub resolved_at: Option<Micros>,
    /// The evaluation that produced it.
    pub at: Micros,
}

impl Transition {
    /// Stable per (rule, subject): the same alert's fire, reminders and resolve share it.
    pub fn dedup_key(&self) -> String {
        dedup_key(&self.rule.name, &self.subject)
    }
}

/// `kiln/<rule>/<subject>`; past PagerDuty's 255 characters, shortened with a hash of the whole.
pub fn dedup_key(rule: &str, subject: &Subject) -> String {
    let key = format!("kiln/{rule}/{subject}");
    if key.len() <= 255 {
        return key;
    }
    // FNV-1a: stable across processes and releases (std's hasher is not).
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = 230;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash:016x}", &key[..cut])
}

/// Where an alert is, as listed by `GET /v1/alerts` / `kiln alerts list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

/// One alert, serializable.
#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    pub rule: String,
    pub kind: RuleKind,
    /// `model=ranker`, `view=user_stats`, ...
    pub subject: String,
    /// The subject's labels and the rule's.
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    /// The last value measured (`null`: no data yet).
    pub value: Option<f64>,
    pub threshold: f64,
    pub resolve_threshold: f64,
    pub severity: Severity,
    pub runbook: String,
    /// RFC 3339 timestamps.
    pub pending_since: Option<String>,
    pub started_at: Option<String>,
    pub resolved_at: Option<String>,
    pub last_notified_at: Option<String>,
    pub evaluated_at: String,
}

/// The merged labels of a subject and a rule (subject first; validation keeps them apart).
pub fn labels(rule: &Rule, subject: &Subject) -> BTreeMap<String, String> {
    let mut out = rule.labels.clone();
    for (k, v) in subject.labels() {
        out.insert(k.to_string(), v.to_string());
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    Inactive,
    Pending {
        since: Micros,
    },
    Firing {
        since: Micros,
        notified_at: Micros,
        good_since: Option<Micros>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Track {
    phase: Phase,
    value: Option<f64>,
    evaluated_at: Micros,
    /// The last episode: (started, resolved).
    resolved: Option<(Micros, Micros)>,
}

/// One remembered (rule, subject), as the alert state file keeps it across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedAlert {
    rule: String,
    kind: RuleKind,
    /// The subject's labels (`[["model", "ranker"]]`).
    subject: Vec<(String, String)>,
    #[serde(flatten)]
    track: Track,
}

impl SavedAlert {
    /// Whether both hold the same alert in the same state; the last reading (value, time of
    /// evaluation) aside, which changes at every evaluation and is not worth a write.
    pub(crate) fn same_state(&self, other: &SavedAlert) -> bool {
        (
            &self.rule,
            self.kind,
            &self.subject,
            self.track.phase,
            self.track.resolved,
        ) == (
            &other.rule,
            other.kind,
            &other.subject,
            other.track.phase,
            other.track.resolved,
        )
    }
}

/// The rules and the state of each (rule, subject).
#[derive(Debug)]
pub struct Evaluator {
    rules: Vec<Arc<Rule>>,
    tracks: Vec<BTreeMap<Subject, Track>>,
}

impl Evaluator {
    pub fn new(rules: Vec<Arc<Rule>>) -> Evaluator {
        let tracks = rules.iter().map(|_| BTreeMap::new()).collect();
        Evaluator { rules, tracks }
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Every signal the rules need, each once.
    pub fn queries(&self) -> Vec<SignalQuery> {
        let set: BTreeSet<SignalQuery> = self.rules.iter().flat_map(|r| r.queries()).collect();
        set.into_iter().collect()
    }

    /// One evaluation at `now`: the transitions to announce, in rule order.
    pub fn evaluate(&mut self, signals: &Signals, now: Micros) -> Vec<Transition> {
        let mut out = Vec::new();
        for (rule, tracks) in self.rules.iter().zip(&mut self.tracks) {
            let active = tracks
                .iter()
                .filter(|(_, t)| t.phase != Phase::Inactive)
                .map(|(s, _)| s.clone());
            let measured = signals
                .subjects(&rule.signal)
                .filter(|s| rule.selects(s))
                .cloned();
            let subjects: BTreeSet<Subject> = active.chain(measured).collect();
            for subject in subjects {
                let value = rule.value_of(signals, &subject);
                let track = tracks.entry(subject.clone()).or_insert(Track {
                    phase: Phase::Inactive,
                    value: None,
                    evaluated_at: now,
                    resolved: None,
                });
                if let Some((change, repeat, started_at, resolved_at)) =
                    step(rule, track, value, now)
                {
                    out.push(Transition {
                        rule: rule.clone(),
                        subject,
                        change,
                        repeat,
                        value: if change == Change::Resolved {
                            value
                        } else {
                            track.value
                        },
                        started_at,
                        resolved_at,
                        at: now,
                    });
                }
            }
            // Subjects that never fired and are not pending are not worth remembering.
            tracks.retain(|_, t| t.phase != Phase::Inactive || t.resolved.is_some());
        }
        out
    }

    /// The state worth keeping across a restart: every pending, firing and last-resolved alert.
    pub(crate) fn saved(&self) -> Vec<SavedAlert> {
        let mut out = Vec::new();
        for (rule, tracks) in self.rules.iter().zip(&self.tracks) {
            for (subject, track) in tracks {
                out.push(SavedAlert {
                    rule: rule.name.clone(),
                    kind: rule.kind,
                    subject: subject
                        .labels()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    track: track.clone(),
                });
            }
        }
        out
    }

    /// Takes back saved state: a firing alert goes on firing (it is not announced again) and
    /// resolves, notifying, when its value recovers. State of rules that are gone, or whose
    /// kind changed, is forgotten. Returns the alerts taken back.
    pub(crate) fn restore(&mut self, saved: Vec<SavedAlert>) -> usize {
        let mut restored = 0;
        for s in saved {
            let Some(i) = self
                .rules
                .iter()
                .position(|r| r.name == s.rule && r.kind == s.kind)
            else {
                continue;
            };
            let Some(subject) = Subject::from_labels(&s.subject) else {
                continue;
            };
            if self.rules[i].selects(&subject) {
                self.tracks[i].insert(subject, s.track);
                restored += 1;
            }
        }
        restored
    }

    /// Every pending, firing or (last) resolved alert.
    pub fn states(&self) -> Vec<AlertStatus> {
        let ts = |m: Micros| Some(format_timestamp(m));
        let mut out = Vec::new();
        for (rule, tracks) in self.rules.iter().zip(&self.tracks) {
            for (subject, t) in tracks {
                let (state, pending_since, started_at, resolved_at, notified) = match t.phase {
                    Phase::Pending { since } => (AlertState::Pending, ts(since), None, None, None),
                    Phase::Firing {
                        since, notified_at, ..
                    } => (AlertState::Firing, None, ts(since), None, ts(notified_at)),
                    Phase::Inactive => match t.resolved {
                        Some((started, resolved)) => (
                            AlertState::Resolved,
                            None,
                            ts(started),
                            ts(resolved),
                            ts(resolved),
                        ),
                        None => continue,
                    },
                };
                out.push(AlertStatus {
                    rule: rule.name.clone(),
                    kind: rule.kind,
                    subject: subject.to_string(),
                    labels: labels(rule, subject),
                    state,
                    value: t.value,
                    threshold: rule.threshold,
                    resolve_threshold: rule.resolve_threshold,
                    severity: rule.severity,
                    runbook: rule.runbook.clone(),
                    pending_since,
                    started_at,
                    resolved_at,
                    last_notified_at: notified,
                    evaluated_at: format_timestamp(t.evaluated_at),
                });
            }
        }
        out
    }
}

/// Advances one track; returns (change, repeat, started_at, resolved_at) when it announces.
fn step(
    rule: &Rule,
    track: &mut Track,
    value: Option<f64>,
    now: Micros,
) -> Option<(Change, bool, Micros, Option<Micros>)> {
    track.evaluated_at = now;
    if value.is_some() {
        track.value = value;
    }
    let zone = value.map(|v| rule.zone(v));
    if track.phase == Phase::Inactive && zone == Some(Zone::Bad) {
        track.phase = Phase::Pending { since: now };
    }
    match track.phase {
        Phase::Inactive => None,
        Phase::Pending { since } => match zone {
            Some(Zone::Bad) if now.saturating_sub(since) >= rule.hold.micros() => {
                track.phase = Phase::Firing {
                    since: now,
                    notified_at: now,
                    good_since: None,
                };
                track.resolved = None;
                Some((Change::Firing, false, now, None))
            }
            Some(Zone::Bad) => None,
            Some(Zone::Band | Zone::Good) => {
                track.phase = Phase::Inactive;
                None
            }
            None => {
                if rule.no_data == NoData::Resolve {
                    track.phase = Phase::Inactive;
                }
                None
            }
        },
        Phase::Firing {
            since,
            notified_at,
            good_since,
        } => {
            let resolve = |track: &mut Track| {
                track.phase = Phase::Inactive;
                track.resolved = Some((since, now));
                Some((Change::Resolved, false, since, Some(now)))
            };
            let good_since = match zone {
                Some(Zone::Good) => {
                    let from = good_since.unwrap_or(now);
                    if now.saturating_sub(from) >= rule.resolve_after.micros() {
                        return resolve(track);
                    }
                    Some(from)
                }
                None if rule.no_data == NoData::Resolve => return resolve(track),
                None => good_since,
                Some(Zone::Bad | Zone::Band) => None,
            };
            let due = rule
                .repeat_interval
                .is_some_and(|every| now.saturating_sub(notified_at) >= every.micros());
            track.phase = Phase::Firing {
                since,
                notified_at: if due { now } else { notified_at },
                good_since,
            };
            due.then_some((Change::Firing, true, since, None))
        }
    }
}

#[cfg(test)]
mod tests;
