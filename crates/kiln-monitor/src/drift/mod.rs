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
//! Two ways in: [`drift_datasets`] for a one-off comparison (the CLI), or
//! [`PreparedReference`] once plus [`drift`] per window (live drift: the reference's sorting
//! and counting is done once).
//!
//! Columns are compared in parallel (rayon); the per-column work is a radix sort and one
//! merge for numbers, one counting pass for strings and low-cardinality numbers.

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

use std::collections::HashMap;

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
    let explicit = options.columns.is_some();
    let names: Vec<&str> = match &options.columns {
        Some(cols) => cols.iter().map(String::as_str).collect(),
        None => current.columns().iter().map(|c| c.name.as_str()).collect(),
    };
    if names.is_empty() {
        return Err(MonitorError::NoColumns(
            "the current data has no columns".into(),
        ));
    }
    let outcomes: Vec<Result<Outcome, MonitorError>> = names
        .par_iter()
        .map(|&name| {
            let cur = current
                .column(name)
                .ok_or_else(|| MonitorError::MissingColumn {
                    column: name.to_string(),
                    side: Side::Current,
                })?;
            let reference = reference
                .get(name)
                .ok_or_else(|| MonitorError::MissingColumn {
                    column: name.to_string(),
                    side: Side::Reference,
                })?;
            evaluate(name, reference, &cur.data, options, explicit)
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
        current.rows(),
    ))
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
