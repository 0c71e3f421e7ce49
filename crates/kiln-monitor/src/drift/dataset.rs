//! The column-oriented input of a drift report: named columns of doubles, integers, booleans
//! or strings. The kinds mirror what decides Evidently's column typing (pandas dtypes): a
//! float column is numerical; an integer column is categorical when it has at most 10
//! distinct values; booleans are categorical; strings are categorical, or text when more than
//! half of the values are distinct.

use std::collections::HashMap;

use crate::error::MonitorError;

/// A table of named columns. Columns may have different lengths (each side of a report is
/// compared column by column, after dropping its missing values).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
}

/// One named column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// The values of a column.
#[derive(Debug, Clone)]
pub enum ColumnData {
    /// Doubles; NaN and ±inf are missing.
    Float(Vec<f64>),
    /// Integers without missing values (an integer column with missing values is a `Float`
    /// column, as pandas holds it).
    Int(Vec<i64>),
    /// Booleans without missing values.
    Bool(Vec<bool>),
    /// Strings, dictionary-encoded.
    Str(Strings),
    /// A column drift cannot compare (dates, binary, booleans with missing values...): kept
    /// so the report can say why it was left out. `dtype` names the type.
    Unsupported { dtype: String, len: usize },
}

impl ColumnData {
    /// Number of rows, missing values included.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Float(v) => v.len(),
            ColumnData::Int(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::Str(s) => s.codes.len(),
            ColumnData::Unsupported { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type as error messages name it.
    pub fn dtype(&self) -> &str {
        match self {
            ColumnData::Float(_) => "float",
            ColumnData::Int(_) => "integer",
            ColumnData::Bool(_) => "boolean",
            ColumnData::Str(_) => "string",
            ColumnData::Unsupported { dtype, .. } => dtype,
        }
    }
}

/// Dictionary-encoded strings: `codes[i]` indexes `labels`, [`Strings::MISSING`] is a missing
/// value.
#[derive(Debug, Clone, Default)]
pub struct Strings {
    pub codes: Vec<u32>,
    pub labels: Vec<String>,
    lookup: HashMap<String, u32>,
}

impl Strings {
    pub const MISSING: u32 = u32::MAX;

    pub fn new() -> Strings {
        Strings::default()
    }

    /// Appends a value (`None`: missing).
    pub fn push(&mut self, value: Option<&str>) {
        let code = match value {
            None => Strings::MISSING,
            Some(s) => match self.lookup.get(s) {
                Some(&c) => c,
                None => {
                    let c = self.labels.len() as u32;
                    self.labels.push(s.to_string());
                    self.lookup.insert(s.to_string(), c);
                    c
                }
            },
        };
        self.codes.push(code);
    }

    /// Appends a code already in the dictionary (see [`Strings::code_of`]): no hashing.
    pub fn push_code(&mut self, code: u32) {
        self.codes.push(code);
    }

    /// The code of a label, adding it to the dictionary if new.
    pub fn code_of(&mut self, s: &str) -> u32 {
        if let Some(&c) = self.lookup.get(s) {
            return c;
        }
        let c = self.labels.len() as u32;
        self.labels.push(s.to_string());
        self.lookup.insert(s.to_string(), c);
        c
    }
}

impl<'a> FromIterator<Option<&'a str>> for Strings {
    fn from_iter<I: IntoIterator<Item = Option<&'a str>>>(iter: I) -> Strings {
        let mut s = Strings::new();
        for v in iter {
            s.push(v);
        }
        s
    }
}

impl Dataset {
    pub fn new() -> Dataset {
        Dataset::default()
    }

    /// Adds a column; names must be unique.
    pub fn push(&mut self, name: impl Into<String>, data: ColumnData) -> Result<(), MonitorError> {
        let name = name.into();
        if self.index.contains_key(&name) {
            return Err(MonitorError::DuplicateColumn(name));
        }
        self.index.insert(name.clone(), self.columns.len());
        self.columns.push(Column { name, data });
        Ok(())
    }

    /// Builder form of [`Dataset::push`].
    pub fn with(
        mut self,
        name: impl Into<String>,
        data: ColumnData,
    ) -> Result<Dataset, MonitorError> {
        self.push(name, data)?;
        Ok(self)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.index.get(name).map(|&i| &self.columns[i])
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The columns, taken out (for a caller done with the dataset, see
    /// [`super::drift_owned`]).
    pub fn into_columns(self) -> Vec<Column> {
        self.columns
    }

    /// Rows of the longest column.
    pub fn rows(&self) -> usize {
        self.columns.iter().map(|c| c.data.len()).max().unwrap_or(0)
    }
}
