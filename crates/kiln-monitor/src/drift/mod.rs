//! Data drift: has the distribution of each input column moved between a reference sample
//! (the training set) and a current one (a file, or a window of logged features)?
//!
//! The semantics are Evidently 0.7.23's `DataDriftPreset` with its defaults, reproduced to a
//! relative 1e-9 on every score (tested against fixtures Evidently itself produced, see
//! `tests/fixtures/drift/`): the typing and test choice of [`rules`], the tests in one file
//! each ([`ks`], [`chisquare`], [`ztest`], [`wasserstein`], [`jensenshannon`], [`psi`]), and
//! the dataset verdict: drift when at least half (`drift_share`) of the compared columns
//! drifted.
//!
//! Two ways in: [`drift_datasets`] for a one-off comparison ([`drift_owned`] when the caller
//! is done with the data, as the CLI is), or [`PreparedReference`] once plus [`drift`] per
//! window (live drift: the reference's sorting and counting is done once).
//!
//! Columns are compared in parallel (rayon); the per-column work is a sort (on u64 keys) and
//! one merge for numbers, one counting pass for strings and for numbers of at most 4096
//! distinct values.

pub mod binning;
pub mod chisquare;
mod column;
pub mod dataset;
pub mod histogram;
pub mod html;
pub mod jensenshannon;
pub mod kolmogorov;
pub mod ks;
pub mod ks_exact;
pub mod merge;
pub mod prepared;
pub mod psi;
pub mod report;
pub mod rules;
pub mod sample;
pub mod sort;
pub mod special;
pub mod wasserstein;
pub mod ztest;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

pub use dataset::{Column, ColumnData, Dataset, Strings};
pub use histogram::Histogram;
pub use prepared::PreparedReference;
pub use report::{ColumnDrift, DriftReport, SideStats, SkippedColumn};
pub use rules::{ColumnType, Method};

use crate::error::{MonitorError, Side};
use column::{Outcome, evaluate};

/// How to compare. The defaults are Evidently's `DataDriftPreset()`.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// Compare only these columns (in this order); each must exist on both sides, and an
    /// uncomparable one is an error. `None`: every column of the current data, leaving out
    /// (and listing) text and unsupported columns.
    pub columns: Option<Vec<String>>,
    /// One test for every column instead of the default choice (e.g. [`Method::Psi`]).
    pub method: Option<Method>,
    /// One threshold for every column instead of each test's default.
    pub threshold: Option<f64>,
    /// Dataset drift when at least this share of the compared columns drifted.
    pub drift_share: f64,
    /// Column types that override the inferred ones (e.g. integer codes sent as doubles by a
    /// model server are categorical).
    pub column_types: HashMap<String, ColumnType>,
    /// Compute the per-column histograms for people (the HTML report).
    pub histograms: bool,
    /// A column with no value on one side is listed as skipped instead of failing the report
    /// (Evidently fails; live drift over short windows may prefer to go on).
    pub skip_empty: bool,
}

impl Default for DriftOptions {
    fn default() -> DriftOptions {
        DriftOptions {
            columns: None,
            method: None,
            threshold: None,
            drift_share: 0.5,
            column_types: HashMap::new(),
            histograms: true,
            skip_empty: false,
        }
    }
}

impl DriftOptions {
    fn validate(&self) -> Result<(), MonitorError> {
        if !(0.0..=1.0).contains(&self.drift_share) {
            return Err(MonitorError::InvalidOption(format!(
                "drift_share must be between 0 and 1, got {}",
                self.drift_share
            )));
        }
        if let Some(t) = self.threshold
            && !t.is_finite()
        {
            return Err(MonitorError::InvalidOption(format!(
                "threshold must be a finite number, got {t}"
            )));
        }
        Ok(())
    }
}

/// The type Evidently's rules give a column of this data (`None`: it would not be typed). Live
/// drift types the server's doubles by their reference's storage with it.
pub fn reference_type(data: &ColumnData) -> Option<ColumnType> {
    match rules::infer(data) {
        rules::Typing::Type(t) => Some(t),
        rules::Typing::Text | rules::Typing::Untyped(_) => None,
    }
}

/// Compares `current` with a prepared reference.
pub fn drift(
    reference: &PreparedReference,
    current: &Dataset,
    options: &DriftOptions,
) -> Result<DriftReport, MonitorError> {
    options.validate()?;
    let names = compared_names(current, options)?;
    let current_columns = names
        .iter()
        .map(|&name| current.column(name).map(|c| Cow::Borrowed(&c.data)))
        .collect();
    compare(reference, &names, current_columns, current.rows(), options)
}

/// Prepares the columns of `reference` that the comparison needs, then compares.
pub fn drift_datasets(
    reference: &Dataset,
    current: &Dataset,
    options: &DriftOptions,
) -> Result<DriftReport, MonitorError> {
    let names: Vec<&str> = match &options.columns {
        Some(cols) => cols.iter().map(String::as_str).collect(),
        None => current.columns().iter().map(|c| c.name.as_str()).collect(),
    };
    let wanted: Vec<&str> = names
        .into_iter()
        .filter(|n| reference.column(n).is_some())
        .collect();
    let prepared = PreparedReference::with_columns(reference, &wanted)?;
    drift(&prepared, current, options)
}

/// [`drift_datasets`] for a caller that is done with both datasets (the CLI): the same
/// report, with each numeric column sorted in its own memory instead of a copy, which keeps
/// the memory touched (and the time spent faulting it in) to about half.
pub fn drift_owned(
    reference: Dataset,
    current: Dataset,
    options: &DriftOptions,
) -> Result<DriftReport, MonitorError> {
    options.validate()?;
    let names: Vec<String> = compared_names(&current, options)?
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut seen = HashSet::new();
    if !names.iter().all(|n| seen.insert(n.as_str())) {
        // A column named twice is compared twice: it cannot be handed over once.
        return drift_datasets(&reference, &current, options);
    }
    let (reference_rows, current_rows) = (reference.rows(), current.rows());
    let mut reference_columns: HashMap<String, ColumnData> = reference
        .into_columns()
        .into_iter()
        .map(|c| (c.name, c.data))
        .collect();
    let wanted: Vec<Column> = names
        .iter()
        .filter_map(|n| {
            reference_columns.remove(n).map(|data| Column {
                name: n.clone(),
                data,
            })
        })
        .collect();
    drop(reference_columns);
    let prepared = PreparedReference::from_owned(wanted, reference_rows);
    let mut current_columns: HashMap<String, ColumnData> = current
        .into_columns()
        .into_iter()
        .map(|c| (c.name, c.data))
        .collect();
    let current_columns = names
        .iter()
        .map(|n| current_columns.remove(n).map(Cow::Owned))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    compare(&prepared, &names, current_columns, current_rows, options)
}

/// The columns to compare: the ones asked for, or every column of the current data.
fn compared_names<'a>(
    current: &'a Dataset,
    options: &'a DriftOptions,
) -> Result<Vec<&'a str>, MonitorError> {
    let names: Vec<&str> = match &options.columns {
        Some(cols) => cols.iter().map(String::as_str).collect(),
        None => current.columns().iter().map(|c| c.name.as_str()).collect(),
    };
    if names.is_empty() {
        return Err(MonitorError::NoColumns(
            "the current data has no columns".into(),
        ));
    }
    Ok(names)
}

/// Compares each named column (its current values alongside, `None` when the current data
/// lacks it) with the prepared reference, in parallel, and assembles the report.
fn compare(
    reference: &PreparedReference,
    names: &[&str],
    current: Vec<Option<Cow<'_, ColumnData>>>,
    current_rows: usize,
    options: &DriftOptions,
) -> Result<DriftReport, MonitorError> {
    let explicit = options.columns.is_some();
    let outcomes: Vec<Result<Outcome, MonitorError>> = names
        .par_iter()
        .zip(current.into_par_iter())
        .map(|(&name, cur)| {
            let cur = cur.ok_or_else(|| MonitorError::MissingColumn {
                column: name.to_string(),
                side: Side::Current,
            })?;
            let reference = reference
                .get(name)
                .ok_or_else(|| MonitorError::MissingColumn {
                    column: name.to_string(),
                    side: Side::Reference,
                })?;
            evaluate(name, reference, cur, options, explicit)
        })
        .collect();
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    for o in outcomes {
        match o? {
            Outcome::Compared(c) => columns.push(c),
            Outcome::Skipped(s) => skipped.push(s),
        }
    }
    if columns.is_empty() {
        return Err(MonitorError::NoColumns(format!(
            "every column was left out ({})",
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.name, s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    Ok(DriftReport::assemble(
        columns,
        skipped,
        options.drift_share,
        reference.rows(),
        current_rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f64]) -> ColumnData {
        ColumnData::Float(v.to_vec())
    }

    fn one(name: &str, data: ColumnData) -> Dataset {
        Dataset::new().with(name, data).expect("dataset")
    }

    #[test]
    fn kinds_must_match_across_sides() {
        let r = one("x", floats(&[1.0, 2.0]));
        let c = one("x", ColumnData::Str([Some("a")].into_iter().collect()));
        let e = drift_datasets(&r, &c, &DriftOptions::default()).expect_err("mismatch");
        assert_eq!(
            e.to_string(),
            "column \"x\" is numeric in the reference data but string in the current data; both \
             sides must hold the same kind of values"
        );
        // A reference column of an unsupported type under a typed current one is a mismatch
        // too; an untyped current column is left out.
        let r = one(
            "x",
            ColumnData::Unsupported {
                dtype: "timestamp".into(),
                len: 2,
            },
        );
        let e = drift_datasets(&r, &one("x", floats(&[1.0])), &DriftOptions::default())
            .expect_err("mismatch");
        assert!(
            e.to_string().contains("is timestamp in the reference data"),
            "{e}"
        );
        let r = one("x", floats(&[1.0]))
            .with("t", floats(&[1.0]))
            .expect("dataset");
        let c = one("x", floats(&[1.0]))
            .with(
                "t",
                ColumnData::Unsupported {
                    dtype: "timestamp".into(),
                    len: 1,
                },
            )
            .expect("dataset");
        let report = drift_datasets(&r, &c, &DriftOptions::default()).expect("report");
        assert_eq!(report.skipped[0].name, "t");
    }

    #[test]
    fn missing_and_empty_columns() {
        let r = one("x", floats(&[1.0, 2.0]));
        let c = one("y", floats(&[1.0]));
        let e = drift_datasets(&r, &c, &DriftOptions::default()).expect_err("missing");
        assert_eq!(e.to_string(), "column \"y\" is not in the reference data");
        let c = one("x", floats(&[f64::NAN, f64::INFINITY]));
        let e = drift_datasets(&r, &c, &DriftOptions::default()).expect_err("empty");
        assert!(
            e.to_string()
                .starts_with("column \"x\" has no values in the current data (all 2 rows"),
            "{e}"
        );
        let both = r.clone().with("z", floats(&[1.0, 3.0])).expect("dataset");
        let cur = c.with("z", floats(&[2.0])).expect("dataset");
        let opts = DriftOptions {
            skip_empty: true,
            ..DriftOptions::default()
        };
        let report = drift_datasets(&both, &cur, &opts).expect("report");
        assert_eq!(report.number_of_columns, 1);
        assert_eq!(report.skipped[0].name, "x");
    }

    #[test]
    fn owned_equals_borrowed() {
        // Columns sorted (more than 4096 distinct values) and counted, ints, strings and
        // missing values, on both sides; then a column list naming a column twice.
        let side = |shift: f64| {
            let n = 6000;
            let cont: Vec<f64> = (0..n)
                .map(|i| {
                    let x = f64::from(i);
                    if i % 97 == 0 {
                        f64::NAN
                    } else {
                        (x * 0.37).sin() * 10.0 + shift
                    }
                })
                .collect();
            let few: Vec<f64> = (0..n).map(|i| f64::from(i % 40) + shift.round()).collect();
            let ints: Vec<i64> = (0..n).map(|i| i64::from(i % 7)).collect();
            let labels = ["a", "b", "c"];
            let strings: Strings = (0..n)
                .map(|i| (i % 11 != 0).then(|| labels[i as usize % 3]))
                .collect();
            Dataset::new()
                .with("cont", ColumnData::Float(cont))
                .and_then(|d| d.with("few", ColumnData::Float(few)))
                .and_then(|d| d.with("ints", ColumnData::Int(ints)))
                .and_then(|d| d.with("s", ColumnData::Str(strings)))
                .expect("dataset")
        };
        let (r, c) = (side(0.0), side(0.3));
        let json = |report: DriftReport| serde_json::to_value(report).expect("json");
        for columns in [None, Some(vec!["few".to_string(), "few".to_string()])] {
            let opts = DriftOptions {
                columns,
                ..DriftOptions::default()
            };
            let borrowed = drift_datasets(&r, &c, &opts).expect("borrowed");
            let owned = drift_owned(r.clone(), c.clone(), &opts).expect("owned");
            assert_eq!(json(owned), json(borrowed));
        }
    }

    #[test]
    fn forced_method_must_apply_to_the_type() {
        let r = one("x", floats(&[1.0, 2.0, 3.0]));
        let opts = DriftOptions {
            method: Some(Method::Chisquare),
            ..DriftOptions::default()
        };
        let e = drift_datasets(&r, &r, &opts).expect_err("not applicable");
        assert!(
            e.to_string()
                .contains("method chisquare does not apply to numerical column \"x\""),
            "{e}"
        );
        // A type override makes it categorical, and then it applies.
        let mut opts = opts;
        opts.column_types
            .insert("x".into(), ColumnType::Categorical);
        let report = drift_datasets(&r, &r, &opts).expect("report");
        assert_eq!(report.columns[0].score, 1.0);
    }
}
