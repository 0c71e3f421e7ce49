//! Parquet sources on local disk: file discovery, schemas, and streaming scans with projection
//! and row-group pruning on the event timestamp.
//!
//! A source is a `.parquet` file or a directory of them (searched recursively, read in path
//! order). Scans are pull-based iterators of Arrow record batches, so a caller holds one batch
//! at a time however large the source is.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use kiln_core::time::Micros;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};

use crate::StoreError;

/// The Parquet files of a source: the file itself, or every `*.parquet` below a directory,
/// sorted by path. Hidden files and directories (`.x`, `_x`, as Spark and Hive write them) are
/// skipped.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let meta = std::fs::metadata(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else if name.ends_with(".parquet") {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        return Err(StoreError::NoParquetFiles {
            path: path.to_path_buf(),
        });
    }
    out.sort();
    Ok(out)
}

fn load_metadata(path: &Path) -> Result<(File, ArrowReaderMetadata), StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| {
        StoreError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok((file, meta))
}

/// The Arrow schema of a source. For a directory, every file must have the same column names;
/// the first file's types are reported (readers cast per file to the declared types anyway).
pub fn read_schema(path: &Path) -> Result<SchemaRef, StoreError> {
    let files = parquet_files(path)?;
    let mut schema: Option<SchemaRef> = None;
    for f in &files {
        let (_, meta) = load_metadata(f)?;
        let s = meta.schema().clone();
        match &schema {
            None => schema = Some(s),
            Some(first) => {
                let names = |s: &SchemaRef| {
                    s.fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect::<Vec<_>>()
                };
                if names(first) != names(&s) {
                    return Err(StoreError::Data {
                        path: f.clone(),
                        message: format!(
                            "columns {:?} differ from {:?} in {}",
                            names(&s),
                            names(first),
                            files[0].display()
                        ),
                    });
                }
            }
        }
    }
    // `parquet_files` never returns an empty list.
    schema.ok_or_else(|| StoreError::NoParquetFiles {
        path: path.to_path_buf(),
    })
}

/// Converts a timestamp column of any unit and time zone to UTC microseconds. Naive
/// timestamps (no time zone) are taken as UTC, as Feast does.
pub fn timestamps_micros(array: &ArrayRef) -> Result<Int64Array, String> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = array.as_primitive::<TimestampMicrosecondType>();
            Ok(Int64Array::new(a.values().clone(), a.nulls().cloned()))
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let cast = arrow_cast::cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())?;
            let a = cast.as_primitive::<TimestampMicrosecondType>();
            Ok(Int64Array::new(a.values().clone(), a.nulls().cloned()))
        }
        other => Err(format!("expected a timestamp column, found {other}")),
    }
}

/// What to read from a source.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Columns to read; all if empty.
    pub columns: Vec<String>,
    /// The event-timestamp column used for pruning.
    pub time_column: String,
    /// Keep only row groups that may hold events in `[lo, hi]` (inclusive). Rows are not
    /// filtered individually: the caller applies its exact predicate.
    pub time_range: Option<(Micros, Micros)>,
    pub batch_size: usize,
}

/// A streaming scan over the selected row groups of a source's files.
pub struct ParquetScan {
    planned: VecDeque<PlannedFile>,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
    batch_size: usize,
    /// Rows in the selected row groups (for progress bars).
    pub total_rows: u64,
    /// Row groups skipped by time-range pruning.
    pub pruned_row_groups: usize,
}

impl std::fmt::Debug for ParquetScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetScan")
            .field("files_left", &self.planned.len())
            .field("total_rows", &self.total_rows)
            .finish()
    }
}

struct PlannedFile {
    path: PathBuf,
    file: File,
    meta: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    projection: Vec<usize>,
}

impl ParquetScan {
    /// Plans a scan: reads every file's footer, resolves the projection and prunes row groups.
    pub fn plan(path: &Path, req: &ScanRequest) -> Result<ParquetScan, StoreError> {
        let mut planned = VecDeque::new();
        let mut total_rows = 0u64;
        let mut pruned = 0usize;
        for f in parquet_files(path)? {
            let (file, meta) = load_metadata(&f)?;
            let schema = meta.schema().clone();
            let mut projection = Vec::new();
            if req.columns.is_empty() {
                projection.extend(0..schema.fields().len());
            } else {
                for c in &req.columns {
                    let idx = schema.index_of(c).map_err(|_| StoreError::Data {
                        path: f.clone(),
                        message: format!(
                            "column {c:?} not found (columns: {})",
                            column_list(&schema)
                        ),
                    })?;
                    projection.push(idx);
                }
                projection.sort_unstable();
                projection.dedup();
            }
            let groups = meta.metadata().row_groups();
            let keep: Vec<bool> = match req.time_range {
                None => vec![true; groups.len()],
                Some(range) => prune_by_time(&f, &meta, &req.time_column, range)?,
            };
            let mut row_groups = Vec::new();
            for (i, k) in keep.iter().enumerate() {
                if *k {
                    row_groups.push(i);
                    total_rows += groups[i].num_rows().max(0) as u64;
                } else {
                    pruned += 1;
                }
            }
            if !row_groups.is_empty() {
                planned.push_back(PlannedFile {
                    path: f,
                    file,
                    meta,
                    row_groups,
                    projection,
                });
            }
        }
        Ok(ParquetScan {
            planned,
            current: None,
            batch_size: req.batch_size.max(1),
            total_rows,
            pruned_row_groups: pruned,
        })
    }

    fn open_next(&mut self) -> Result<bool, StoreError> {
        let Some(p) = self.planned.pop_front() else {
            return Ok(false);
        };
        let mask = ProjectionMask::roots(p.meta.parquet_schema(), p.projection.iter().copied());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(p.file, p.meta)
            .with_projection(mask)
            .with_row_groups(p.row_groups)
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|source| StoreError::Parquet {
                path: p.path.clone(),
                source,
            })?;
        self.current = Some((p.path, reader));
        Ok(true)
    }
}

impl Iterator for ParquetScan {
    type Item = Result<(Arc<Path>, RecordBatch), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => return Some(Ok((Arc::from(path.as_path()), batch))),
                    Some(Err(e)) => {
                        return Some(Err(StoreError::Data {
                            path: path.clone(),
                            message: format!("cannot decode: {e}"),
                        }));
                    }
                    None => self.current = None,
                }
            }
            match self.open_next() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The column names of a schema, comma separated, for messages.
pub fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which row groups may hold timestamps in `[lo, hi]`, from their min/max statistics. A row
/// group without statistics is kept.
fn prune_by_time(
    path: &Path,
    meta: &ArrowReaderMetadata,
    column: &str,
    (lo, hi): (Micros, Micros),
) -> Result<Vec<bool>, StoreError> {
    let groups = meta.metadata().row_groups();
    let data_err = |message: String| StoreError::Data {
        path: path.to_path_buf(),
        message,
    };
    let conv = match StatisticsConverter::try_new(column, meta.schema(), meta.parquet_schema()) {
        Ok(c) => c,
        Err(_) => return Err(data_err(format!("column {column:?} not found"))),
    };
    let (Ok(mins), Ok(maxes)) = (
        conv.row_group_mins(groups.iter()),
        conv.row_group_maxes(groups.iter()),
    ) else {
        return Ok(vec![true; groups.len()]);
    };
    let (Ok(mins), Ok(maxes)) = (timestamps_micros(&mins), timestamps_micros(&maxes)) else {
        return Ok(vec![true; groups.len()]);
    };
    Ok((0..groups.len())
        .map(|i| {
            let min_ok = mins.is_null(i) || mins.value(i) <= hi;
            let max_ok = maxes.is_null(i) || maxes.value(i) >= lo;
            min_ok && max_ok
        })
        .collect())
}
