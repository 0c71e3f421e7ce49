//! The result of a drift comparison: per column the type, test, score, threshold and verdict
//! (plus histogram data for people), and the dataset verdict (drift when at least
//! `drift_share` of the compared columns drifted). Serializes to the JSON `kiln drift
//! --output json` prints.

use serde::Serialize;

use super::histogram::Histogram;
use super::rules::{ColumnType, Method};

#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// `share_of_drifted_columns >= drift_share`.
    pub dataset_drift: bool,
    /// The dataset threshold (Evidently's default: 0.5).
    pub drift_share: f64,
    pub share_of_drifted_columns: f64,
    pub number_of_columns: usize,
    pub number_of_drifted_columns: usize,
    /// Rows of each side (missing values included).
    pub reference_rows: usize,
    pub current_rows: usize,
    pub columns: Vec<ColumnDrift>,
    /// Columns left out, and why (text, unsupported types).
    pub skipped: Vec<SkippedColumn>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    pub name: String,
    pub column_type: ColumnType,
    pub method: Method,
    /// Evidently's display name of the method ("K-S p_value", ...).
    pub method_name: &'static str,
    /// A p-value (ks, chisquare, z) or a distance (wasserstein, jensenshannon, psi).
    pub score: f64,
    pub threshold: f64,
    pub drifted: bool,
    /// Distinct non-missing values of both sides together.
    pub n_unique: usize,
    pub reference: SideStats,
    pub current: SideStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
}

/// Values compared and values dropped as missing, on one side.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SideStats {
    pub values: usize,
    pub missing: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedColumn {
    pub name: String,
    pub reason: String,
}

impl DriftReport {
    pub(crate) fn assemble(
        columns: Vec<ColumnDrift>,
        skipped: Vec<SkippedColumn>,
        drift_share: f64,
        reference_rows: usize,
        current_rows: usize,
    ) -> DriftReport {
        let drifted = columns.iter().filter(|c| c.drifted).count();
        let share = if columns.is_empty() {
            0.0
        } else {
            drifted as f64 / columns.len() as f64
        };
        DriftReport {
            dataset_drift: !columns.is_empty() && share >= drift_share,
            drift_share,
            share_of_drifted_columns: share,
            number_of_columns: columns.len(),
            number_of_drifted_columns: drifted,
            reference_rows,
            current_rows,
            columns,
            skipped,
        }
    }

    pub fn column(&self, name: &str) -> Option<&ColumnDrift> {
        self.columns.iter().find(|c| c.name == name)
    }
}
