//! Label feedback: a label posted for a request id (and row), or for an entity and the time of
//! the outcome, is joined to the logged prediction it judges, logged itself (as a feedback
//! event, which the prediction log writes), and kept per model version for windowed
//! performance ([`crate::performance`]).
//!
//! The index of recent predictions is fed from the event bus like every other observer. A label
//! can arrive before the indexer has seen the prediction's event (a client that posts feedback
//! right after its answer): a miss waits for the indexer to catch up with what was published
//! before it, briefly, before it is reported as unmatched.

pub mod index;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::bus::EventBus;
use crate::events::{Event, FeedbackEvent};
use crate::performance::{self, Performance, Task};
use index::Index;

/// How much feedback state is kept.
#[derive(Debug, Clone)]
pub struct FeedbackConfig {
    /// Recent requests remembered for joining labels (the oldest are forgotten first).
    pub remember_requests: usize,
    /// Labels kept per model version for performance, at most...
    pub max_labels: usize,
    /// ...and at most this old.
    pub retention: Duration,
    /// Probability at or above which a binary prediction counts as positive.
    pub threshold: f64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            remember_requests: 100_000,
            max_labels: 100_000,
            retention: Duration::from_secs(24 * 3600),
            threshold: performance::DEFAULT_THRESHOLD,
        }
    }
}

/// Which prediction a label is for.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelKey {
    Request {
        request_id: String,
        row: usize,
    },
    /// `entity` in the canonical form of [`entity_key`]; `at`: when the outcome happened.
    Entity {
        entity: String,
        at: Option<i64>,
    },
}

/// A label to join.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub model: String,
    pub key: LabelKey,
    pub label: f64,
}

/// The canonical text of an entity key: `name=value` pairs sorted by name, joined by `&`
/// (what predict-by-entity logs, and what a label by entity is matched against).
pub fn entity_key<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut pairs: Vec<(&str, String)> = pairs.into_iter().collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

struct Labelled {
    task: Task,
    /// (label time, outputs of the row, label), oldest first.
    pairs: VecDeque<(i64, Vec<f64>, f64)>,
    /// (request id, row) of the pairs kept, to replace a repeated label instead of counting it
    /// twice.
    keys: HashSet<(String, usize)>,
    keys_in_order: VecDeque<(String, usize)>,
}

/// Performance of one model version over a window.
#[derive(Debug, Clone, Serialize)]
pub struct VersionPerformance {
    pub version: u32,
    pub task: Task,
    pub window_seconds: u64,
    #[serde(flatten)]
    pub performance: Performance,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FeedbackCounters {
    pub matched: AtomicU64,
    pub unmatched: AtomicU64,
    pub relabelled: AtomicU64,
}

/// The name of the indexer's subscription on the bus.
pub const SUBSCRIBER: &str = "feedback_index";

pub struct Feedback {
    config: FeedbackConfig,
    bus: EventBus,
    index: Mutex<Index>,
    labelled: Mutex<HashMap<(String, u32), Labelled>>,
    /// Prediction events the indexer has taken in.
    indexed: AtomicU64,
    pub counters: FeedbackCounters,
}

impl std::fmt::Debug for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedback")
            .field("config", &self.config)
            .finish()
    }
}

fn predictions(e: &Event) -> bool {
    matches!(e, Event::Prediction(_))
}

impl Feedback {
    /// Starts indexing the predictions published on `bus`.
    pub fn start(bus: &EventBus, config: FeedbackConfig) -> Arc<Feedback> {
        let capacity = config.remember_requests;
        // Room for a burst: the indexer is fast, and a dropped event only means its labels
        // cannot be joined (counted as unmatched).
        let mut sub = bus.subscribe(SUBSCRIBER, 65_536, predictions);
        let feedback = Arc::new(Feedback {
            config,
            bus: bus.clone(),
            index: Mutex::new(Index::new(capacity)),
            labelled: Mutex::new(HashMap::new()),
            indexed: AtomicU64::new(0),
            counters: FeedbackCounters::default(),
        });
        let me = Arc::downgrade(&feedback);
        tokio::spawn(async move {
            while let Some(event) = sub.rx.recv().await {
                let Some(me) = me.upgrade() else { break };
                if let Event::Prediction(p) = event {
                    me.index.lock().unwrap_or_else(|p| p.into_inner()).insert(p);
                }
                me.indexed.fetch_add(1, Ordering::Release);
            }
        });
        feedback
    }

    /// Whether the indexer has taken in every prediction delivered to it so far.
    fn caught_up(&self) -> bool {
        let delivered = self
            .bus
            .stats()
            .into_iter()
            .find(|s| s.name == SUBSCRIBER)
            .map_or(0, |s| s.delivered);
        self.indexed.load(Ordering::Acquire) >= delivered
    }

    fn find(&self, label: &Label) -> Result<index::Found, String> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        match &label.key {
            LabelKey::Request { request_id, row } => {
                index.by_request(&label.model, request_id, *row)
            }
            LabelKey::Entity { entity, at } => index.by_entity(&label.model, entity, *at),
        }
    }

    /// Joins `label` to its prediction; `now` is when it arrived. The error says why it could
    /// not be joined.
    pub async fn label(&self, label: &Label, now: i64) -> Result<FeedbackEvent, String> {
        if !label.label.is_finite() {
            self.counters.unmatched.fetch_add(1, Ordering::Relaxed);
            return Err(format!("label {} is not a finite number", label.label));
        }
        let mut found = self.find(label);
        // The prediction may still be on its way to the indexer.
        for _ in 0..200 {
            if found.is_ok() || self.caught_up() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            found = self.find(label);
        }
        if found.is_err() {
            found = self.find(label);
        }
        let found = found.inspect_err(|_| {
            self.counters.unmatched.fetch_add(1, Ordering::Relaxed);
        })?;
        let e = &found.event;
        let k = e.n_outputs.max(1);
        let outputs = e.outputs[found.row * k..(found.row + 1) * k].to_vec();
        let task = Task::infer(&e.objective, e.n_outputs);
        let prediction = match task {
            Task::Multiclass { .. } => outputs
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > outputs[best] { i } else { best })
                as f64,
            Task::Binary | Task::Regression => outputs[0],
        };
        self.keep(
            (e.model.clone(), e.version),
            task,
            (e.request_id.clone(), found.row),
            (now, outputs, label.label),
        );
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
        let joined = FeedbackEvent {
            model: e.model.clone(),
            version: e.version,
            request_id: e.request_id.clone(),
            row: found.row,
            prediction,
            label: label.label,
            predicted_at_micros: e.ts_micros,
            ts_micros: now,
        };
        self.bus.publish(Event::Feedback(Arc::new(joined.clone())));
        Ok(joined)
    }

    fn keep(
        &self,
        version: (String, u32),
        task: Task,
        key: (String, usize),
        pair: (i64, Vec<f64>, f64),
    ) {
        let mut all = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        let l = all.entry(version).or_insert_with(|| Labelled {
            task,
            pairs: VecDeque::new(),
            keys: HashSet::new(),
            keys_in_order: VecDeque::new(),
        });
        if l.keys.contains(&key) {
            // A corrected label replaces the earlier one.
            if let Some(i) = l.keys_in_order.iter().position(|k| *k == key) {
                l.pairs[i] = pair;
            }
            self.counters.relabelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        l.keys.insert(key.clone());
        l.keys_in_order.push_back(key);
        l.pairs.push_back(pair);
        let oldest_kept = pair_cutoff(l.pairs.back().map_or(0, |p| p.0), self.config.retention);
        while l.pairs.len() > self.config.max_labels.max(1)
            || l.pairs.front().is_some_and(|p| p.0 < oldest_kept)
        {
            l.pairs.pop_front();
            if let Some(k) = l.keys_in_order.pop_front() {
                l.keys.remove(&k);
            }
        }
    }

    /// Performance of `model`'s versions (one, or all that have labels) over the labels that
    /// arrived in the last `window` before `now`.
    pub fn performance(
        &self,
        model: &str,
        version: Option<u32>,
        window: Duration,
        now: i64,
    ) -> Vec<VersionPerformance> {
        let from = pair_cutoff(now, window);
        let all = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        let mut versions: Vec<(u32, Task, Vec<f64>, Vec<f64>)> = all
            .iter()
            .filter(|((m, v), _)| m == model && version.is_none_or(|want| want == *v))
            .map(|((_, v), l)| {
                let mut outputs = Vec::new();
                let mut labels = Vec::new();
                for (_, o, y) in l.pairs.iter().filter(|p| p.0 >= from) {
                    outputs.extend_from_slice(o);
                    labels.push(*y);
                }
                (*v, l.task, outputs, labels)
            })
            .collect();
        drop(all);
        versions.sort_by_key(|v| v.0);
        versions
            .into_iter()
            .map(|(version, task, outputs, labels)| VersionPerformance {
                version,
                task,
                window_seconds: window.as_secs(),
                performance: performance::compute(task, &outputs, &labels, self.config.threshold),
            })
            .collect()
    }

    /// Every (model, version) that has labels.
    pub fn labelled_versions(&self) -> Vec<(String, u32)> {
        let mut out: Vec<_> = self
            .labelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        out.sort();
        out
    }
}

fn pair_cutoff(now: i64, window: Duration) -> i64 {
    now.saturating_sub(i64::try_from(window.as_micros()).unwrap_or(i64::MAX))
}
