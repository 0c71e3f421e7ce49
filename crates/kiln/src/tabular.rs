//! Reading a table file into drift's column-oriented [`Dataset`], with each column's kind
//! decided as pandas decides it when it reads the same file — Evidently types columns by their
//! pandas dtype, so this is what makes `kiln drift` on a file agree with Evidently on
//! `pd.read_parquet` of it:
//!
//! * floats (16/32/64 bit) -> float (nulls are NaN; float32 widened to f64);
//! * signed integers -> integer, but **float when the column has a null** (pandas has no
//!   missing integer in its default dtypes);
//! * unsigned integers -> float when the column has a null, else *unsupported*: pandas keeps
//!   them as `uint*`, which Evidently does not type;
//! * booleans -> boolean, but *unsupported* when the column has a null (pandas holds it as
//!   objects, which Evidently does not type);
//! * strings -> strings; dictionary-encoded strings -> strings typed **categorical** whatever
//!   their number of distinct values (pandas reads them as `category`, which Evidently always
//!   types categorical; plain strings are text when more than half are distinct);
//! * anything else (timestamps, dates, decimals, binary, nested) -> unsupported, named.
//!
//! Parquet is read with the columns split across threads (each with its own reader on the
//! same footer), so decoding runs on every core. String columns are read as Arrow
//! dictionaries (Parquet writers dictionary-encode their pages almost always), so a label is
//! looked up once per page dictionary rather than once per row. CSV is in
//! [`crate::tabular_csv`].

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field, Schema};
use indicatif::ProgressBar;
use kiln_monitor::drift::{ColumnData, Dataset, Strings};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use rayon::prelude::*;

/// Columns per reading task.
const COLUMNS_PER_TASK: usize = 2;
const BATCH_ROWS: usize = 65_536;

/// A file read for drift.
pub struct Table {
    pub dataset: Dataset,
    /// Columns whose storage makes them categorical (dictionary-encoded strings).
    pub categorical: Vec<String>,
}

/// Reads `path` (Parquet, or CSV by its `.csv` extension). `columns`: only these, each of which
/// must exist. `bar` advances by values read.
pub fn read(
    path: &Path,
    role: &str,
    columns: Option<&[String]>,
    bar: &ProgressBar,
) -> anyhow::Result<Table> {
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        return crate::tabular_csv::read(path, role, columns, bar);
    }
    let file = File::open(path)
        .with_context(|| format!("cannot open the {role} file {}", path.display()))?;
    let meta = ArrowReaderMetadata::load(&file, Default::default()).with_context(|| {
        format!(
            "the {role} file {} is not a Parquet file (or is damaged)",
            path.display()
        )
    })?;
    let schema = meta.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let wanted = wanted_columns(&names, columns, role, path)?;
    let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
    bar.set_length(bar.length().unwrap_or(0) + rows * wanted.len() as u64);
    let read_meta = with_dictionary_strings(&meta)
        .with_context(|| format!("cannot read the {role} file {}", path.display()))?;
    let tasks: Vec<&[usize]> = wanted.chunks(COLUMNS_PER_TASK).collect();
    let parts: Vec<anyhow::Result<Vec<(String, ColumnData)>>> = tasks
        .par_iter()
        .map(|group| read_group(path, role, &read_meta, group, bar))
        .collect();
    let mut dataset = Dataset::new();
    for part in parts {
        for (name, data) in part? {
            dataset
                .push(name, data)
                .with_context(|| format!("in the {role} file {}", path.display()))?;
        }
    }
    let categorical = wanted
        .iter()
        .filter(|&&i| matches!(schema.field(i).data_type(), DataType::Dictionary(..)))
        .map(|&i| schema.field(i).name().clone())
        .collect();
    Ok(Table {
        dataset,
        categorical,
    })
}

/// The file's metadata with its plain string columns read as `Dictionary(Int32, Utf8)`. The
/// file's own schema (which says which columns were categorical in pandas) is left to the
/// caller.
fn with_dictionary_strings(
    meta: &ArrowReaderMetadata,
) -> parquet::errors::Result<ArrowReaderMetadata> {
    let schema = meta.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8)
    {
        return Ok(meta.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if f.data_type() == &DataType::Utf8 {
                f.with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                ))
            } else {
                f
            }
        })
        .collect();
    let hint = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    ArrowReaderMetadata::try_new(
        Arc::clone(meta.metadata()),
        ArrowReaderOptions::new().with_schema(hint),
    )
}

/// The positions of `columns` among a file's `names` (every column when `None`); a column the
/// file lacks is an error naming the file and its columns.
pub(crate) fn wanted_columns(
    names: &[&str],
    columns: Option<&[String]>,
    role: &str,
    path: &Path,
) -> anyhow::Result<Vec<usize>> {
    match columns {
        None => Ok((0..names.len()).collect()),
        Some(cols) => cols
            .iter()
            .map(|c| {
                names.iter().position(|n| n == c).with_context(|| {
                    format!(
                        "column {c:?} is not in the {role} file {} (its columns: {})",
                        path.display(),
                        names.join(", ")
                    )
                })
            })
            .collect(),
    }
}

fn read_group(
    path: &Path,
    role: &str,
    meta: &ArrowReaderMetadata,
    group: &[usize],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<(String, ColumnData)>> {
    let file = File::open(path)
        .with_context(|| format!("cannot open the {role} file {}", path.display()))?;
    let mask = ProjectionMask::roots(
        meta.metadata().file_metadata().schema_descr(),
        group.iter().copied(),
    );
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .with_context(|| format!("cannot read the {role} file {}", path.display()))?;
    let fields = meta.schema().fields();
    let mut acc: Vec<(String, Acc)> = group
        .iter()
        .map(|&i| {
            let rows = meta.metadata().file_metadata().num_rows().max(0) as usize;
            (
                fields[i].name().clone(),
                Acc::with_capacity(fields[i].data_type(), rows),
            )
        })
        .collect();
    for batch in reader {
        let batch =
            batch.with_context(|| format!("cannot decode the {role} file {}", path.display()))?;
        for (col, (_, a)) in batch.columns().iter().zip(acc.iter_mut()) {
            a.push(col)?;
        }
        bar.inc((batch.num_rows() * group.len()) as u64);
    }
    Ok(acc.into_iter().map(|(n, a)| (n, a.finish())).collect())
}

/// A column being read.
pub enum Acc {
    Float(Vec<f64>),
    /// Values, and their validity once a null has shown up (then it becomes a float column).
    Int(Vec<i64>, Option<Vec<bool>>),
    /// Unsigned: values as doubles (NaN for null), whether any was null.
    UInt(Vec<f64>, bool),
    Bool(Vec<bool>, bool),
    Str(Strings),
    Other(String, usize),
}

impl Acc {
    /// Room for `rows` values up front: growing a column of a million values by doubling
    /// writes (and faults in) about twice its memory.
    pub fn with_capacity(t: &DataType, rows: usize) -> Acc {
        match t {
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                Acc::Float(Vec::with_capacity(rows))
            }
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                Acc::Int(Vec::with_capacity(rows), None)
            }
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                Acc::UInt(Vec::with_capacity(rows), false)
            }
            DataType::Boolean => Acc::Bool(Vec::with_capacity(rows), false),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Acc::Str(strings_with_capacity(rows))
            }
            DataType::Dictionary(_, v)
                if matches!(
                    **v,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
            {
                Acc::Str(strings_with_capacity(rows))
            }
            other => Acc::Other(type_name(other), 0),
        }
    }

    fn push(&mut self, col: &ArrayRef) -> anyhow::Result<()> {
        match self {
            Acc::Float(v) => push_float(v, col),
            Acc::Int(v, valid) => push_int(v, valid, col)?,
            Acc::UInt(v, has_null) => push_uint(v, has_null, col)?,
            Acc::Bool(v, has_null) => {
                let b = col.as_boolean();
                *has_null |= b.null_count() > 0;
                v.extend((0..b.len()).map(|i| b.is_valid(i) && b.value(i)));
            }
            Acc::Str(s) => push_str(s, col)?,
            Acc::Other(_, n) => *n += col.len(),
        }
        Ok(())
    }

    pub fn finish(self) -> ColumnData {
        match self {
            Acc::Float(v) => ColumnData::Float(v),
            Acc::Int(v, Some(valid)) => ColumnData::Float(
                v.into_iter()
                    .zip(valid)
                    .map(|(x, ok)| if ok { x as f64 } else { f64::NAN })
                    .collect(),
            ),
            Acc::Int(v, None) => ColumnData::Int(v),
            Acc::UInt(v, true) => ColumnData::Float(v),
            Acc::UInt(v, false) => ColumnData::Unsupported {
                dtype: "unsigned integer (Evidently leaves unsigned integer columns untyped)"
                    .into(),
                len: v.len(),
            },
            Acc::Bool(v, false) => ColumnData::Bool(v),
            Acc::Bool(v, true) => ColumnData::Unsupported {
                dtype: "boolean with missing values".into(),
                len: v.len(),
            },
            Acc::Str(s) => ColumnData::Str(s),
            Acc::Other(dtype, len) => ColumnData::Unsupported { dtype, len },
        }
    }
}

fn strings_with_capacity(rows: usize) -> Strings {
    let mut s = Strings::new();
    s.codes.reserve(rows);
    s
}

fn push_float(v: &mut Vec<f64>, col: &ArrayRef) {
    macro_rules! floats {
        ($t:ty) => {{
            let a = col.as_primitive::<$t>();
            v.extend((0..a.len()).map(|i| {
                if a.is_valid(i) {
                    f64::from(a.value(i))
                } else {
                    f64::NAN
                }
            }));
        }};
    }
    match col.data_type() {
        DataType::Float16 => floats!(Float16Type),
        DataType::Float32 => floats!(Float32Type),
        _ => {
            let a = col.as_primitive::<Float64Type>();
            if a.null_count() == 0 {
                v.extend_from_slice(a.values());
            } else {
                v.extend((0..a.len()).map(|i| if a.is_valid(i) { a.value(i) } else { f64::NAN }));
            }
        }
    }
}

fn push_int(v: &mut Vec<i64>, valid: &mut Option<Vec<bool>>, col: &ArrayRef) -> anyhow::Result<()> {
    macro_rules! ints {
        ($t:ty) => {{
            let a = col.as_primitive::<$t>();
            if a.null_count() > 0 && valid.is_none() {
                *valid = Some(vec![true; v.len()]);
            }
            v.extend(a.values().iter().map(|&x| i64::from(x)));
            if let Some(valid) = valid {
                valid.extend((0..a.len()).map(|i| a.is_valid(i)));
            }
        }};
    }
    match col.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        other => bail!("unexpected integer type {other}"),
    }
    Ok(())
}

fn push_uint(v: &mut Vec<f64>, has_null: &mut bool, col: &ArrayRef) -> anyhow::Result<()> {
    macro_rules! uints {
        ($t:ty) => {{
            let a = col.as_primitive::<$t>();
            *has_null |= a.null_count() > 0;
            v.extend((0..a.len()).map(|i| {
                if a.is_valid(i) {
                    a.value(i) as f64
                } else {
                    f64::NAN
                }
            }));
        }};
    }
    match col.data_type() {
        DataType::UInt8 => uints!(UInt8Type),
        DataType::UInt16 => uints!(UInt16Type),
        DataType::UInt32 => uints!(UInt32Type),
        DataType::UInt64 => uints!(UInt64Type),
        other => bail!("unexpected unsigned type {other}"),
    }
    Ok(())
}

fn push_str(s: &mut Strings, col: &ArrayRef) -> anyhow::Result<()> {
    if let Some(d) = col.as_dictionary_opt::<Int32Type>() {
        // One look-up per dictionary value, then a table look-up per row.
        let values = utf8(d.values())?;
        let values = values.as_string::<i32>();
        let codes: Vec<u32> = (0..values.len())
            .map(|i| {
                if values.is_valid(i) {
                    s.code_of(values.value(i))
                } else {
                    Strings::MISSING
                }
            })
            .collect();
        let keys = d.keys();
        s.codes.reserve(keys.len());
        for (i, &k) in keys.values().iter().enumerate() {
            let code = match usize::try_from(k).ok().and_then(|k| codes.get(k)) {
                Some(&c) if keys.is_valid(i) => c,
                _ => Strings::MISSING,
            };
            s.push_code(code);
        }
        return Ok(());
    }
    let col = utf8(col)?;
    let a = col.as_string::<i32>();
    for i in 0..a.len() {
        s.push(a.is_valid(i).then(|| a.value(i)));
    }
    Ok(())
}

/// A string array as `Utf8` (large, view and other-keyed dictionary strings are cast).
fn utf8(col: &ArrayRef) -> anyhow::Result<ArrayRef> {
    match col.data_type() {
        DataType::Utf8 => Ok(Arc::clone(col)),
        _ => arrow_cast::cast(col, &DataType::Utf8).context("cannot read a string column"),
    }
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "decimal".into(),
        other => other.to_string().to_lowercase(),
    }
}
