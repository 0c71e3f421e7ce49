//! The reference side, prepared once: per column the sorted finite values (with their runs of
//! equal values when there are at most a few thousand), the population standard deviation, or
//! the string counts. Live drift compares one fixed reference (a model's training set) with a
//! new window of logged features every minute; preparing it once leaves each comparison with
//! the current side's work only.

use std::collections::HashMap;

use rayon::prelude::*;

use super::dataset::{Column, ColumnData, Dataset};
use super::sample::{LabelCounts, NumericSample};
use super::wasserstein::population_std;
use crate::error::{MonitorError, Side};

/// Runs of equal values are kept for reference columns with at most this many distinct values.
const CACHED_RUNS: usize = 4096;

/// A reference dataset ready for [`super::drift`].
#[derive(Debug, Clone)]
pub struct PreparedReference {
    columns: Vec<(String, Prepared)>,
    index: HashMap<String, usize>,
    rows: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    Numeric { sample: NumericSample, std: f64 },
    Labels(LabelCounts),
    Unsupported { dtype: String },
}

fn numeric(mut sample: NumericSample) -> Prepared {
    sample.cache_runs(CACHED_RUNS);
    let std = population_std(&sample.sorted);
    Prepared::Numeric { sample, std }
}

impl Prepared {
    fn new(data: &ColumnData) -> Prepared {
        match data {
            ColumnData::Float(v) => numeric(NumericSample::from_floats(v)),
            ColumnData::Int(v) => numeric(NumericSample::from_ints(v)),
            ColumnData::Bool(v) => numeric(NumericSample::from_bools(v)),
            ColumnData::Str(s) => Prepared::Labels(LabelCounts::from_strings(s)),
            ColumnData::Unsupported { dtype, .. } => Prepared::Unsupported {
                dtype: dtype.clone(),
            },
        }
    }

    /// [`Prepared::new`] sorting numbers in the values' own memory.
    fn from_owned(data: ColumnData) -> Prepared {
        match data {
            ColumnData::Float(v) => numeric(NumericSample::from_float_vec(v)),
            ColumnData::Int(v) => numeric(NumericSample::from_int_vec(v)),
            other => Prepared::new(&other),
        }
    }
}

impl PreparedReference {
    /// Prepares every column (in parallel).
    pub fn new(reference: &Dataset) -> PreparedReference {
        let names: Vec<&str> = reference
            .columns()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        PreparedReference::build(reference, &names)
    }

    /// Prepares only `columns` (each must exist).
    pub fn with_columns(
        reference: &Dataset,
        columns: &[&str],
    ) -> Result<PreparedReference, MonitorError> {
        for c in columns {
            if reference.column(c).is_none() {
                return Err(MonitorError::MissingColumn {
                    column: (*c).to_string(),
                    side: Side::Reference,
                });
            }
        }
        Ok(PreparedReference::build(reference, columns))
    }

    fn build(reference: &Dataset, names: &[&str]) -> PreparedReference {
        let columns: Vec<(String, Prepared)> = names
            .par_iter()
            .filter_map(|n| reference.column(n))
            .map(|c| (c.name.clone(), Prepared::new(&c.data)))
            .collect();
        PreparedReference::indexed(columns, reference.rows())
    }

    /// Prepares the given columns of a reference of `rows` rows, taking their values.
    pub(crate) fn from_owned(columns: Vec<Column>, rows: usize) -> PreparedReference {
        let columns: Vec<(String, Prepared)> = columns
            .into_par_iter()
            .map(|c| (c.name, Prepared::from_owned(c.data)))
            .collect();
        PreparedReference::indexed(columns, rows)
    }

    fn indexed(columns: Vec<(String, Prepared)>, rows: usize) -> PreparedReference {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        PreparedReference {
            columns,
            index,
            rows,
        }
    }

    /// Rows of the reference dataset.
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Prepared> {
        self.index.get(name).map(|&i| &self.columns[i].1)
    }
}
