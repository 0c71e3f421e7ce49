//! What the evaluator reads: one measurement per (signal, subject), e.g. "p99 latency over 5m
//! of model `ranker` = 0.012 s". The serving process fills a [`Signals`] through a
//! [`SignalProvider`]; the evaluator never reaches into live state itself, so it stays pure and
//! tests script the numbers.
//!
//! A subject that is absent has *no data*, which is not the same as zero: a model without
//! traffic has no error rate, and an alert on it neither fires nor resolves (unless its rule
//! says `no_data = "resolve"`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use kiln_core::time::Micros;
use serde::Serialize;

/// A quantity the alert rules can watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    /// Share of a model's input columns that drifted, 0 to 1 (subject: [`Subject::Model`]).
    DriftShare,
    /// A feature's drift score ([`Subject::Feature`]).
    FeatureDrift,
    /// 99th percentile request latency in seconds, over the query's window
    /// ([`Subject::Model`]).
    LatencyP99,
    /// Failed requests (server errors, unavailable) over all requests in the window, 0 to 1
    /// ([`Subject::Model`]). Client errors are the client's problem and not counted.
    ErrorRate,
    /// A quality metric from labelled predictions over the window, by name (`accuracy`,
    /// `auc`, ...) ([`Subject::Model`]).
    Metric(String),
    /// The reference value of that metric, e.g. on the validation set ([`Subject::Model`]).
    MetricBaseline(String),
    /// Seconds since the newest value of a feature view was written ([`Subject::View`]).
    FeatureAge,
}

/// A signal and, where it is windowed, the window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalQuery {
    pub kind: SignalKind,
    pub window: Option<Duration>,
}

impl SignalQuery {
    pub fn new(kind: SignalKind) -> SignalQuery {
        SignalQuery { kind, window: None }
    }

    pub fn windowed(kind: SignalKind, window: Duration) -> SignalQuery {
        SignalQuery {
            kind,
            window: Some(window),
        }
    }
}

/// What a measurement is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Subject {
    Model { model: String },
    Feature { model: String, feature: String },
    View { view: String },
}

impl Subject {
    pub fn model(model: impl Into<String>) -> Subject {
        Subject::Model {
            model: model.into(),
        }
    }

    pub fn feature(model: impl Into<String>, feature: impl Into<String>) -> Subject {
        Subject::Feature {
            model: model.into(),
            feature: feature.into(),
        }
    }

    pub fn view(view: impl Into<String>) -> Subject {
        Subject::View { view: view.into() }
    }

    /// The subject of these label pairs (as [`Subject::labels`] gives them).
    pub fn from_labels(labels: &[(String, String)]) -> Option<Subject> {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match (get("model"), get("feature"), get("view")) {
            (Some(model), Some(feature), None) => Some(Subject::Feature { model, feature }),
            (Some(model), None, None) => Some(Subject::Model { model }),
            (None, None, Some(view)) => Some(Subject::View { view }),
            _ => None,
        }
    }

    /// As label pairs, e.g. `[("model", "ranker"), ("feature", "amount")]`.
    pub fn labels(&self) -> Vec<(&'static str, &str)> {
        match self {
            Subject::Model { model } => vec![("model", model)],
            Subject::Feature { model, feature } => vec![("model", model), ("feature", feature)],
            Subject::View { view } => vec![("view", view)],
        }
    }
}

/// `model=ranker`, `model=ranker,feature=amount`, `view=user_stats`.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.labels().into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// One measured value and, when known, how many samples it came from (requests in the
/// window, labelled rows); rules with `min_samples` treat thinner measurements as no data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub value: f64,
    pub samples: Option<u64>,
}

impl Measurement {
    pub fn with_samples(value: f64, samples: u64) -> Measurement {
        Measurement {
            value,
            samples: Some(samples),
        }
    }
}

impl From<f64> for Measurement {
    fn from(value: f64) -> Measurement {
        Measurement {
            value,
            samples: None,
        }
    }
}

/// Measurements by signal and subject. A NaN value is stored as given and read as no data.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    values: HashMap<SignalQuery, BTreeMap<Subject, Measurement>>,
}

impl Signals {
    pub fn new() -> Signals {
        Signals::default()
    }

    /// Records `m` for `subject` under `query`, replacing an earlier one.
    pub fn set(&mut self, query: SignalQuery, subject: Subject, m: impl Into<Measurement>) {
        self.values
            .entry(query)
            .or_default()
            .insert(subject, m.into());
    }

    /// Builder form of [`Signals::set`].
    pub fn with(mut self, query: SignalQuery, subject: Subject, m: impl Into<Measurement>) -> Self {
        self.set(query, subject, m);
        self
    }

    pub fn get(&self, query: &SignalQuery, subject: &Subject) -> Option<Measurement> {
        self.values
            .get(query)
            .and_then(|by_subject| by_subject.get(subject))
            .copied()
    }

    /// Every subject measured under `query`, in order.
    pub fn subjects<'a>(&'a self, query: &SignalQuery) -> impl Iterator<Item = &'a Subject> + 'a {
        self.values
            .get(query)
            .into_iter()
            .flat_map(|by_subject| by_subject.keys())
    }

    pub fn is_empty(&self) -> bool {
        self.values.values().all(BTreeMap::is_empty)
    }
}

/// A provider's failure; the engine logs it, counts it and skips that evaluation.
pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// Measures the signals the rules need. The serving process implements it over its live
/// windows (latency histograms, outcome counts, prediction log, drift results, online store).
///
/// It is called from a blocking thread (`spawn_blocking`), once per evaluation interval, so it
/// may compute (an AUC over a window) or read from disk without stalling the async workers.
/// It should return every subject it knows for each query in `wanted`; the rules pick theirs.
pub trait SignalProvider: Send + Sync + 'static {
    fn signals(&self, wanted: &[SignalQuery], now: Micros) -> Result<Signals, ProviderError>;
}

/// Any `Fn(&[SignalQuery], Micros) -> Result<Signals, ProviderError>` is a provider (tests,
/// adapters).
impl<F> SignalProvider for F
where
    F: Fn(&[SignalQuery], Micros) -> Result<Signals, ProviderError> + Send + Sync + 'static,
{
    fn signals(&self, wanted: &[SignalQuery], now: Micros) -> Result<Signals, ProviderError> {
        self(wanted, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_print_as_label_lists_and_absent_is_not_zero() {
        assert_eq!(Subject::model("ranker").to_string(), "model=ranker");
        assert_eq!(
            Subject::feature("ranker", "amount").to_string(),
            "model=ranker,feature=amount"
        );
        assert_eq!(Subject::view("users").to_string(), "view=users");
        let p99 = SignalQuery::windowed(SignalKind::LatencyP99, Duration::from_secs(300));
        let s = Signals::new().with(p99.clone(), Subject::model("ranker"), 0.012);
        assert_eq!(
            s.get(&p99, &Subject::model("ranker")).map(|m| m.value),
            Some(0.012)
        );
        assert_eq!(s.get(&p99, &Subject::model("other")), None);
        let other_window = SignalQuery::windowed(SignalKind::LatencyP99, Duration::from_secs(60));
        assert_eq!(s.get(&other_window, &Subject::model("ranker")), None);
        assert_eq!(s.subjects(&p99).count(), 1);
    }
}
