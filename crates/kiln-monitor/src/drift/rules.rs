//! Evidently 0.7.23's rules, in one place: how a column is typed, which test its
//! `DataDriftPreset` picks by default, each test's threshold and which way it points.
//!
//! Typing looks at the **current** data only (Evidently types the columns of the dataset it
//! is asked about and compares the reference under those types):
//!
//! * float -> numerical;
//! * integer (no missing values) -> categorical with at most 10 distinct values, else
//!   numerical;
//! * boolean (no missing values) -> categorical;
//! * string -> text when more than half of the non-missing values are distinct (Evidently
//!   then runs a text classifier: Kiln leaves such columns out and says so), else
//!   categorical; all missing -> not typed (left out).
//!
//! The default test depends on the number of non-missing reference values and on the number of
//! distinct non-missing values of reference and current together (`n_unique`):
//!
//! | reference values | numerical, n_unique > 5 | numerical, 3-5 | numerical, <= 2 | categorical, > 2 | categorical, <= 2 |
//! | --- | --- | --- | --- | --- | --- |
//! | <= 1000 | KS | chi-square | Z | chi-square | Z |
//! | > 1000 | Wasserstein (normed) | Jensen-Shannon | Jensen-Shannon | Jensen-Shannon | Jensen-Shannon |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::dataset::{ColumnData, Strings};

/// A column's statistical type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Numerical,
    Categorical,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Numerical => "numerical",
            ColumnType::Categorical => "categorical",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A drift test, by Evidently's registered name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Two-sample Kolmogorov-Smirnov p-value.
    Ks,
    /// Pearson chi-square p-value.
    Chisquare,
    /// Two-proportion Z-test p-value.
    Z,
    /// Wasserstein distance / reference std.
    Wasserstein,
    /// Jensen-Shannon distance (natural log).
    Jensenshannon,
    /// Population stability index.
    Psi,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Ks,
        Method::Chisquare,
        Method::Z,
        Method::Wasserstein,
        Method::Jensenshannon,
        Method::Psi,
    ];

    /// Evidently's registered name (`DataDriftPreset(method=...)`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::Chisquare => "chisquare",
            Method::Z => "z",
            Method::Wasserstein => "wasserstein",
            Method::Jensenshannon => "jensenshannon",
            Method::Psi => "psi",
        }
    }

    /// Evidently's display name (what its reports print as the method).
    pub fn display_name(self) -> &'static str {
        match self {
            Method::Ks => "K-S p_value",
            Method::Chisquare => "chi-square p_value",
            Method::Z => "Z-test p_value",
            Method::Wasserstein => "Wasserstein distance (normed)",
            Method::Jensenshannon => "Jensen-Shannon distance",
            Method::Psi => "PSI",
        }
    }

    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Ks | Method::Chisquare | Method::Z => 0.05,
            Method::Wasserstein | Method::Jensenshannon | Method::Psi => 0.1,
        }
    }

    /// Whether the score is a p-value (drift when small) or a distance (drift when large).
    pub fn is_p_value(self) -> bool {
        matches!(self, Method::Ks | Method::Chisquare | Method::Z)
    }

    /// The verdict, with each test's own comparison: KS `p <= t`, chi-square and Z `p < t`,
    /// distances `score >= t`. A NaN score never drifts (as in Python).
    pub fn is_drift(self, score: f64, threshold: f64) -> bool {
        match self {
            Method::Ks => score <= threshold,
            Method::Chisquare | Method::Z => score < threshold,
            Method::Wasserstein | Method::Jensenshannon | Method::Psi => score >= threshold,
        }
    }

    /// Evidently registers KS and Wasserstein for numerical columns, chi-square and Z for
    /// categorical ones (its defaults still apply them to low-cardinality numerical columns),
    /// Jensen-Shannon and PSI for both.
    pub fn applies_to(self, t: ColumnType) -> bool {
        match self {
            Method::Ks | Method::Wasserstein => t == ColumnType::Numerical,
            Method::Chisquare | Method::Z => t == ColumnType::Categorical,
            Method::Jensenshannon | Method::Psi => true,
        }
    }

    pub fn allowed_types(self) -> &'static str {
        match self {
            Method::Ks | Method::Wasserstein => "numerical",
            Method::Chisquare | Method::Z => "categorical",
            Method::Jensenshannon | Method::Psi => "numerical and categorical",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Method, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
                format!("unknown drift method {s:?}; known: {}", names.join(", "))
            })
    }
}

/// References of at most this many values get the small-sample tests (KS, chi-square, Z).
pub const SMALL_REFERENCE: usize = 1000;

/// Evidently's default test.
pub fn default_method(t: ColumnType, reference_values: usize, n_unique: usize) -> Method {
    let small = reference_values <= SMALL_REFERENCE;
    match (t, small) {
        (ColumnType::Numerical, true) if n_unique > 5 => Method::Ks,
        (ColumnType::Numerical, false) if n_unique > 5 => Method::Wasserstein,
        (_, true) if n_unique > 2 => Method::Chisquare,
        (_, true) => Method::Z,
        (_, false) => Method::Jensenshannon,
    }
}

/// What typing made of a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typing {
    Type(ColumnType),
    /// Strings, more than half distinct: Evidently's text column.
    Text,
    /// Not typed (all missing strings, unsupported types): left out.
    Untyped(String),
}

/// Integer columns with at most this many distinct values are categorical.
pub const INTEGER_CARDINALITY_LIMIT: usize = 10;

/// Types a column from its current values, as Evidently does.
pub fn infer(current: &ColumnData) -> Typing {
    match current {
        ColumnData::Float(_) => Typing::Type(ColumnType::Numerical),
        ColumnData::Int(v) => {
            if distinct_ints_at_most(v, INTEGER_CARDINALITY_LIMIT) {
                Typing::Type(ColumnType::Categorical)
            } else {
                Typing::Type(ColumnType::Numerical)
            }
        }
        ColumnData::Bool(_) => Typing::Type(ColumnType::Categorical),
        ColumnData::Str(s) => infer_strings(s),
        ColumnData::Unsupported { dtype, .. } => {
            Typing::Untyped(format!("its type ({dtype}) is not supported"))
        }
    }
}

fn distinct_ints_at_most(v: &[i64], limit: usize) -> bool {
    let mut seen: Vec<i64> = Vec::with_capacity(limit + 1);
    for &x in v {
        if !seen.contains(&x) {
            seen.push(x);
            if seen.len() > limit {
                return false;
            }
        }
    }
    true
}

fn infer_strings(s: &Strings) -> Typing {
    let mut used = vec![false; s.labels.len()];
    let mut count = 0usize;
    for &c in &s.codes {
        if let Some(u) = used.get_mut(c as usize) {
            *u = true;
            count += 1;
        }
    }
    if count == 0 {
        return Typing::Untyped("it has no values in the current data".into());
    }
    let mut labels: Vec<&str> = s
        .labels
        .iter()
        .zip(&used)
        .filter(|(_, u)| **u)
        .map(|(l, _)| l.as_str())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    if labels.len() as f64 > count as f64 * 0.5 {
        Typing::Text
    } else {
        Typing::Type(ColumnType::Categorical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_table() {
        use ColumnType::*;
        assert_eq!(default_method(Numerical, 1000, 6), Method::Ks);
        assert_eq!(default_method(Numerical, 1000, 5), Method::Chisquare);
        assert_eq!(default_method(Numerical, 1000, 2), Method::Z);
        assert_eq!(default_method(Categorical, 1000, 3), Method::Chisquare);
        assert_eq!(default_method(Categorical, 1000, 2), Method::Z);
        assert_eq!(default_method(Numerical, 1001, 6), Method::Wasserstein);
        assert_eq!(default_method(Numerical, 1001, 5), Method::Jensenshannon);
        assert_eq!(default_method(Categorical, 1001, 50), Method::Jensenshannon);
    }

    #[test]
    fn typing() {
        let ints = |n: i64| ColumnData::Int((0..100).map(|i| i % n).collect());
        assert_eq!(infer(&ints(10)), Typing::Type(ColumnType::Categorical));
        assert_eq!(infer(&ints(11)), Typing::Type(ColumnType::Numerical));
        let text: Strings = ["a", "b", "c", "a"].iter().map(|s| Some(*s)).collect();
        assert_eq!(infer(&ColumnData::Str(text)), Typing::Text);
        let cat: Strings = ["a", "b", "a", "b"].iter().map(|s| Some(*s)).collect();
        assert_eq!(
            infer(&ColumnData::Str(cat)),
            Typing::Type(ColumnType::Categorical)
        );
        let none: Strings = [None, None].into_iter().collect();
        assert!(matches!(infer(&ColumnData::Str(none)), Typing::Untyped(_)));
    }

    #[test]
    fn verdict_directions() {
        assert!(Method::Ks.is_drift(0.05, 0.05));
        assert!(!Method::Chisquare.is_drift(0.05, 0.05));
        assert!(!Method::Z.is_drift(0.05, 0.05));
        assert!(Method::Psi.is_drift(0.1, 0.1));
        assert!(!Method::Wasserstein.is_drift(f64::NAN, 0.1));
    }
}
