//! Definitions as the registry stores them: entities, sources, feature views (with their
//! immutable versions) and feature services.
//!
//! These are the validated, resolved forms. The TOML a user writes is parsed and checked by
//! `kiln-features`; the registry only ever sees specs that passed validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::{MICROS_PER_SECOND, Micros};
use crate::{FeatureRef, ValueType};

/// Free-form labels, as in Feast.
pub type Tags = BTreeMap<String, String>;

/// A named, typed column: a join key or a feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub dtype: ValueType,
}

/// Something features describe (a driver, a card, a customer), identified by its join keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitySpec {
    pub name: String,
    pub join_keys: Vec<Field>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Tags,
}

/// Where a view's rows come from: a Parquet file or a directory of Parquet files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub name: String,
    /// As written in the definitions; relative paths are relative to the project directory.
    pub path: String,
    /// The event timestamp column.
    pub timestamp_field: String,
    /// When a row was written; breaks ties between rows with the same event timestamp.
    #[serde(default)]
    pub created_timestamp_column: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Tags,
}

/// A feature view as declared: a group of features of some entities, read from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureViewSpec {
    pub name: String,
    pub entities: Vec<String>,
    pub source: String,
    /// How long a value stays valid after its event timestamp; 0 means forever.
    pub ttl_seconds: u64,
    pub online: bool,
    pub features: Vec<Field>,
    /// Windowed aggregations over the source's events, one per output feature (their output
    /// fields are also in `features`). Empty for a view of plain columns; absent in registry
    /// events written before aggregations existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregations: Vec<AggregationSpec>,
    #[serde(flatten)]
    pub meta: Meta,
}

/// Description, owner and tags: the parts of a view or service that can change without a new
/// version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub tags: Tags,
}

/// One immutable version of a feature view: everything needed to read its data, frozen at the
/// time it was created (its source and join keys included), so training sets can still be
/// built from an old version after the view, its source or its entities changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewVersion {
    pub name: String,
    pub version: u32,
    pub entities: Vec<String>,
    /// The join keys of all entities, in entity order then key order.
    pub join_keys: Vec<Field>,
    pub source: SourceSpec,
    pub ttl_seconds: u64,
    pub features: Vec<Field>,
    /// The view's windowed aggregations, one per output feature (see [`AggregationSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregations: Vec<AggregationSpec>,
    pub created_at: Micros,
}

impl ViewVersion {
    /// The TTL in microseconds (0 = no limit); absurdly long ttls saturate.
    pub fn ttl_micros(&self) -> Micros {
        i64::try_from(self.ttl_seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(MICROS_PER_SECOND)
    }

    pub fn feature(&self, name: &str) -> Option<&Field> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Whether a new declaration differs from this version in anything that defines the data
    /// (schema, ttl, entities, and where and how the source is read), so that it needs a new
    /// version. A source's description or tags do not count.
    pub fn data_differs(&self, other: &ViewVersion) -> bool {
        self.entities != other.entities
            || self.join_keys != other.join_keys
            || !self.source.reads_like(&other.source)
            || self.ttl_seconds != other.ttl_seconds
            || self.features != other.features
            || self.aggregations != other.aggregations
    }

    /// The aggregation that computes feature `name`, if it is an aggregated feature.
    pub fn aggregation(&self, name: &str) -> Option<&AggregationSpec> {
        self.aggregations.iter().find(|a| a.name == name)
    }
}

impl SourceSpec {
    /// Whether two sources read the same data the same way (name, path, timestamp columns).
    pub fn reads_like(&self, other: &SourceSpec) -> bool {
        self.name == other.name
            && self.path == other.path
            && self.timestamp_field == other.timestamp_field
            && self.created_timestamp_column == other.created_timestamp_column
    }
}

/// One windowed aggregation of a feature view: `function` over `column` of the source's events
/// in a window before each point in time, grouped by the view's join keys.
///
/// The value as of time `T` covers the events of the window as of `T` ([`Window`]: sliding,
/// `T - window < event_ts <= T`; tumbling, the epoch-aligned bucket holding `T` up to `T`; or
/// session, the key's events since its current session began, none once it ended).
/// With no such event (or none with a non-null value), `count` and `count_distinct` are 0 and
/// every other function is null. The batch backfill (`kiln dataset build`) computes exactly
/// this; the streaming side (`kiln-stream`) computes the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregationSpec {
    /// The output feature, `{column}_{function}_{window}` (or `count_{window}`).
    pub name: String,
    pub function: AggFunction,
    /// The source column aggregated and the type it is read as (integers as int64, floats as
    /// float64); `None` for `count` of events.
    #[serde(default)]
    pub column: Option<Field>,
    pub window_seconds: u64,
    /// Sliding (the default, left out when stored), tumbling or session.
    #[serde(default, skip_serializing_if = "WindowKind::is_sliding")]
    pub kind: WindowKind,
}

impl AggregationSpec {
    pub fn window_micros(&self) -> Micros {
        i64::try_from(self.window_seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(MICROS_PER_SECOND)
    }

    pub fn window(&self) -> Window {
        Window {
            kind: self.kind,
            micros: self.window_micros(),
        }
    }
}

/// How a window moves with the time it is read as of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The window's length before `T`: `T - window < event_ts <= T`.
    #[default]
    Sliding,
    /// The bucket holding `T`, from its start up to `T`: buckets of the window's length aligned
    /// to the Unix epoch (a `1d` bucket is a UTC day), `floor(T / window) * window <= event_ts
    /// <= T`. At a bucket's end the value starts again from nothing.
    Tumbling,
    /// The key's current session, the window's length being the gap that ends one: the events up
    /// to `T` back to the first that came a gap or more after the one before it, provided the
    /// latest came less than a gap before `T`; once `T` is a gap past the latest event, the
    /// session has ended and the window is empty.
    Session,
}

impl WindowKind {
    pub fn is_sliding(&self) -> bool {
        *self == WindowKind::Sliding
    }
}

impl std::fmt::Display for WindowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WindowKind::Sliding => "sliding",
            WindowKind::Tumbling => "tumbling",
            WindowKind::Session => "session",
        })
    }
}

/// A window of a given kind and length: which events it holds as of a time. Every
/// implementation (batch kernel, its oracle, the streaming operator) asks this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub kind: WindowKind,
    /// The length, in microseconds (positive).
    pub micros: Micros,
}

impl Window {
    pub fn sliding(micros: Micros) -> Window {
        Window {
            kind: WindowKind::Sliding,
            micros,
        }
    }

    /// Events with `event_ts <= horizon(T)` are outside the window as of `T` (those up to `T`
    /// and after it, inside); `None` for a session window, whose bounds depend on the events
    /// ([`Window::session_horizon`]).
    #[inline]
    pub fn horizon(&self, t: Micros) -> Option<Micros> {
        match self.kind {
            WindowKind::Sliding => Some(t.saturating_sub(self.micros)),
            WindowKind::Tumbling => Some(
                t.div_euclid(self.micros)
                    .saturating_mul(self.micros)
                    .saturating_sub(1),
            ),
            WindowKind::Session => None,
        }
    }

    /// The first moment at which the window no longer holds an event at `ts` (for a session
    /// window: if no later event extends its session).
    #[inline]
    pub fn leaves(&self, ts: Micros) -> Micros {
        match self.kind {
            WindowKind::Sliding | WindowKind::Session => ts.saturating_add(self.micros),
            WindowKind::Tumbling => ts
                .div_euclid(self.micros)
                .saturating_add(1)
                .saturating_mul(self.micros),
        }
    }

    /// A session window's horizon as of `t` over one key's event times in order, `ts(i)` for
    /// `i < upto` being those at or before `t`: `t` itself (nothing inside) once the latest is a
    /// gap or more before `t`, else the instant before the session's first event.
    pub fn session_horizon(&self, t: Micros, upto: usize, ts: impl Fn(usize) -> Micros) -> Micros {
        let Some(last) = upto.checked_sub(1) else {
            return t;
        };
        if t.saturating_sub(ts(last)) >= self.micros {
            return t;
        }
        let mut first = last;
        while first > 0 && ts(first).saturating_sub(ts(first - 1)) < self.micros {
            first -= 1;
        }
        ts(first).saturating_sub(1)
    }
}

/// What an aggregation computes over the events in its window. Null values are skipped by
/// every function (`count` of a column counts its non-null values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunction {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    /// Population standard deviation (divides by n, like numpy's default and SQL's
    /// `stddev_pop`); 0 for a single value.
    Stddev,
    /// The value of the latest event (greatest event time, then created time, then the later
    /// row).
    Last,
    /// The exact number of distinct values.
    CountDistinct,
    /// The number of distinct values estimated by HyperLogLog (4096 registers: a relative
    /// standard error of about 1.6%), in constant memory per window.
    ApproxCountDistinct,
}

impl AggFunction {
    pub const ALL: [AggFunction; 9] = [
        AggFunction::Count,
        AggFunction::Sum,
        AggFunction::Mean,
        AggFunction::Min,
        AggFunction::Max,
        AggFunction::Stddev,
        AggFunction::Last,
        AggFunction::CountDistinct,
        AggFunction::ApproxCountDistinct,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AggFunction::Count => "count",
            AggFunction::Sum => "sum",
            AggFunction::Mean => "mean",
            AggFunction::Min => "min",
            AggFunction::Max => "max",
            AggFunction::Stddev => "stddev",
            AggFunction::Last => "last",
            AggFunction::CountDistinct => "count_distinct",
            AggFunction::ApproxCountDistinct => "approx_count_distinct",
        }
    }

    /// The type of the result for an input column of type `input` (already widened to int64
    /// or float64 if numeric; `None` for a count of events).
    pub fn output_type(self, input: Option<ValueType>) -> ValueType {
        match self {
            AggFunction::Count | AggFunction::CountDistinct | AggFunction::ApproxCountDistinct => {
                ValueType::Int64
            }
            AggFunction::Mean | AggFunction::Stddev => ValueType::Float64,
            AggFunction::Sum | AggFunction::Min | AggFunction::Max | AggFunction::Last => {
                input.unwrap_or(ValueType::Int64)
            }
        }
    }
}

impl std::fmt::Display for AggFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AggFunction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.to_ascii_lowercase();
        let alias = match s.as_str() {
            "avg" => "mean",
            "std" | "stddev_pop" => "stddev",
            "distinct_count" => "count_distinct",
            "hll" | "approx_distinct" => "approx_count_distinct",
            other => other,
        };
        AggFunction::ALL
            .into_iter()
            .find(|f| f.name() == alias)
            .ok_or_else(|| {
                format!(
                    "unknown aggregation function {s:?} (expected one of: {})",
                    AggFunction::ALL.map(AggFunction::name).join(", ")
                )
            })
    }
}

/// A named set of features that a model consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureServiceSpec {
    pub name: String,
    pub features: Vec<FeatureRef>,
    #[serde(flatten)]
    pub meta: Meta,
}

/// Where a model version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::None => "none",
            Stage::Staging => "staging",
            Stage::Production => "production",
            Stage::Archived => "archived",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Stage::None),
            "staging" => Ok(Stage::Staging),
            "production" | "prod" => Ok(Stage::Production),
            "archived" => Ok(Stage::Archived),
            other => Err(format!(
                "unknown stage {other:?} (expected none, staging, production or archived)"
            )),
        }
    }
}

/// One immutable version of a registered model: its artifact, what it takes and gives, and
/// where its inputs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    /// `xgboost`, `lightgbm`, ...
    pub format: String,
    /// The artifact's key in the artifact store.
    pub artifact: String,
    /// Hex SHA-256 of the artifact, checked when it is loaded.
    pub sha256: String,
    pub size_bytes: u64,
    /// Input features in the order the model takes them.
    pub inputs: Vec<String>,
    pub n_outputs: usize,
    pub objective: String,
    /// The feature service that provides the inputs, if any.
    #[serde(default)]
    pub feature_service: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub description: String,
    /// What predict-by-entity does when an input feature is missing or expired.
    #[serde(default)]
    pub on_missing: MissingPolicy,
    pub created_at: Micros,
    /// The data live drift compares this version's traffic with (its training set, as
    /// recorded at registration), if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<DriftReference>,
}

/// A model version's drift reference: a Parquet artifact with the model's input columns (by
/// their logged names) and the version's outputs on those rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// The artifact's key in the artifact store.
    pub artifact: String,
    /// Hex SHA-256 of the artifact, checked when it is loaded.
    pub sha256: String,
    pub rows: u64,
    /// The file it was read from, for people.
    #[serde(default)]
    pub source: String,
}

/// What to do with an input feature that the online store does not have (not found or
/// expired) when scoring by entity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Pass it as missing (NaN): tree models follow each split's default direction, as they
    /// were trained to.
    #[default]
    Missing,
    /// Use this value.
    Default { value: f64 },
    /// Refuse the request.
    Reject,
}

impl std::fmt::Display for MissingPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissingPolicy::Missing => f.write_str("missing"),
            MissingPolicy::Default { value } => write!(f, "default:{value}"),
            MissingPolicy::Reject => f.write_str("reject"),
        }
    }
}

impl std::str::FromStr for MissingPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "missing" | "nan" => Ok(MissingPolicy::Missing),
            "reject" => Ok(MissingPolicy::Reject),
            other => match other.strip_prefix("default:").map(str::parse::<f64>) {
                Some(Ok(value)) => Ok(MissingPolicy::Default { value }),
                _ => Err(format!(
                    "unknown missing-value policy {other:?} (expected missing, reject or default:NUMBER)"
                )),
            },
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::{Window, WindowKind};

    /// `horizon` and `leaves` against the definitions, over small times on both sides of the
    /// epoch: an event is in the window as of `t` iff `horizon(t) < ts <= t`, and `leaves(ts)`
    /// is the first `t >= ts` at which it is not.
    #[test]
    fn horizon_and_leaves_agree_with_the_definitions() {
        for micros in [1, 3, 10] {
            for kind in [WindowKind::Sliding, WindowKind::Tumbling] {
                let w = Window { kind, micros };
                for ts in -25i64..25 {
                    for t in ts..ts + 30 {
                        let inside = match kind {
                            WindowKind::Sliding => t - micros < ts,
                            WindowKind::Tumbling => t.div_euclid(micros) * micros <= ts,
                            WindowKind::Session => unreachable!("sessions are tested below"),
                        };
                        let horizon = w.horizon(t).expect("not a session");
                        assert_eq!(horizon < ts, inside, "{kind} {micros}: ts {ts}, t {t}");
                    }
                    let first_out = (ts..)
                        .find(|&t| w.horizon(t).is_some_and(|h| h >= ts))
                        .expect("leaves");
                    assert_eq!(w.leaves(ts), first_out, "{kind} {micros}: ts {ts}");
                }
            }
        }
    }
}

#[cfg(test)]
mod session_tests {
    use super::{Window, WindowKind};

    #[test]
    fn a_session_runs_while_events_come_less_than_a_gap_apart() {
        let w = Window {
            kind: WindowKind::Session,
            micros: 10,
        };
        // Sessions {0, 5, 14} and {30, 30, 39}: 14 -> 30 is a gap of 16.
        let ts = [0, 5, 14, 30, 30, 39];
        let at = |t: i64| {
            let upto = ts.iter().filter(|x| **x <= t).count();
            w.session_horizon(t, upto, |i| ts[i])
        };
        assert_eq!(at(-1), -1, "no events yet: empty");
        assert_eq!(at(0), -1, "the first event opens a session");
        assert_eq!(at(23), -1, "14 + 10 > 23: still the first session");
        assert_eq!(at(24), 24, "a gap after 14: ended, empty");
        assert_eq!(at(30), 29, "both events at 30 open the second");
        assert_eq!(at(48), 29);
        assert_eq!(at(49), 49);
    }
}
