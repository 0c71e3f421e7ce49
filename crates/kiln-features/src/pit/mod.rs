//! Point-in-time correct training sets.
//!
//! For each entity row (join keys, timestamp `T`) and each requested view, the join picks the
//! view's row with the same keys and `T - ttl <= event_ts <= T` (both inclusive; ttl 0 = no
//! lower bound) with the greatest event timestamp, ties broken by the greatest created
//! timestamp and then by the later row in the source; with the cut-off, only rows created at
//! or before `T` count. No candidate means nulls. Entity rows keep their order and duplicates.
//!
//! How it runs, per view:
//! 1. The entity rows' keys and timestamps are read once; each row is assigned a partition by
//!    a hash of its keys.
//! 2. The source is streamed (projection, row-group pruning to `[min T - ttl, max T]`), rows
//!    normalised and hashed into the same partitions, kept in memory or spilled to Arrow IPC
//!    files when the estimated size exceeds the memory budget.
//! 3. Partitions are joined in parallel (rayon) by the sort-merge [`kernel`].
//! 4. The output is assembled in entity-row order by walking every partition's results in
//!    step, a chunk at a time, and streamed to Parquet.
//!
//! [`oracle`] is the brute-force definition the kernel is tested against.
//!
//! A view with windowed aggregations goes through the same scan, partitioning and output
//! assembly; only step 3 differs: instead of picking one row, each partition computes its
//! entity rows' window values with [`crate::window`]'s kernel, and the scan reaches back by
//! the widest window instead of the ttl.

pub(crate) mod kernel;
pub mod oracle;
mod spill;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use arrow_select::concat::concat;
use arrow_select::filter::filter_record_batch;
use arrow_select::interleave::interleave;
use arrow_select::take::take;
use kiln_core::spec::ViewVersion;
use kiln_store::offline::{ParquetScan, ScanRequest, timestamps_micros};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

use crate::source::{Normalized, SourceColumns, cast_to};
use crate::{FeatureError, Progress, window};
use kernel::{EntityRows, FeatureRows, group_ids, pit_match};
use spill::{Cursor, Spill, partition_of};

/// Record batches pulled one at a time.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch, FeatureError>>>;
/// Source batches with the file each came from (for error messages).
type SourceBatches = Box<dyn Iterator<Item = Result<(PathBuf, RecordBatch), FeatureError>>>;

/// The features wanted from one view version.
#[derive(Debug, Clone)]
pub struct ViewRequest {
    pub view: ViewVersion,
    pub features: Vec<String>,
}

/// How to build a training set.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Name output columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// Also require `created_ts <= T`.
    pub created_cutoff: bool,
    /// The entity rows' timestamp column; `event_timestamp` by default, or the only timestamp
    /// column if there is no such column.
    pub timestamp_column: Option<String>,
    /// Roughly how much memory feature rows may take before partitions spill to disk.
    pub memory_budget: usize,
    /// Where spill files go (a temporary directory is made inside).
    pub spill_dir: PathBuf,
    /// Rows per output batch.
    pub batch_size: usize,
    /// Force this many partitions (tests); chosen from the data size when `None`.
    pub partitions: Option<usize>,
    /// Where each feature column goes in the output, listed in the order the views and their
    /// features are given; empty keeps that order. Lets a caller group references by view
    /// (each view is scanned once) and still get the columns in the order they were asked for.
    pub feature_order: Vec<usize>,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            full_feature_names: false,
            created_cutoff: false,
            timestamp_column: None,
            memory_budget: 1 << 30,
            spill_dir: std::env::temp_dir(),
            batch_size: 65_536,
            partitions: None,
            feature_order: Vec::new(),
        }
    }
}

/// What a join did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DatasetStats {
    pub entity_rows: u64,
    /// Feature rows read from sources after pruning (per view, in request order).
    pub feature_rows: Vec<u64>,
    /// Entity rows that found a value (per view).
    pub matched: Vec<u64>,
    pub partitions: Vec<usize>,
    pub spilled_bytes: u64,
}

/// Where a view's rows come from.
pub enum FeatureInput {
    /// A Parquet file or directory (the view's source, resolved to a path).
    Parquet(PathBuf),
    /// Rows already in memory, with the source's column names.
    Batches(Vec<RecordBatch>),
}

/// Builds a training set from a Parquet file of entity rows into a Parquet file. The output is
/// written to a temporary file and renamed into place, so a crash never leaves a partial file
/// at `out`.
pub fn build_dataset(
    entities: &Path,
    views: Vec<(ViewRequest, FeatureInput)>,
    out: &Path,
    opts: &DatasetOptions,
    progress: &dyn Progress,
) -> Result<DatasetStats, FeatureError> {
    let not_parquet = |e: parquet::errors::ParquetError| FeatureError::Data {
        path: entities.to_path_buf(),
        message: format!("not a readable Parquet file: {e}"),
    };
    let open = || -> Result<ParquetRecordBatchReaderBuilder<File>, FeatureError> {
        let f = File::open(entities).map_err(|source| FeatureError::Io {
            path: entities.to_path_buf(),
            source,
        })?;
        ParquetRecordBatchReaderBuilder::try_new(f).map_err(not_parquet)
    };
    let read = |builder: ParquetRecordBatchReaderBuilder<File>| -> Result<Batches, FeatureError> {
        let reader = builder
            .with_batch_size(opts.batch_size)
            .build()
            .map_err(not_parquet)?;
        let path = entities.to_path_buf();
        Ok(Box::new(reader.map(move |b| {
            b.map_err(|e| FeatureError::Data {
                path: path.clone(),
                message: format!("cannot decode: {e}"),
            })
        })))
    };
    let first = open()?;
    let plan = JoinPlan::new(
        first.schema(),
        &views,
        opts,
        &entities.display().to_string(),
    )?;
    let tmp = out.with_extension("parquet.partial");
    let result = write_output(
        &tmp,
        &plan,
        || read(first),
        || read(open()?),
        views,
        opts,
        progress,
    )
    .and_then(|stats| {
        std::fs::rename(&tmp, out).map_err(|source| FeatureError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        Ok(stats)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Runs the join, streaming the output into a Parquet file at `tmp`.
fn write_output(
    tmp: &Path,
    plan: &JoinPlan,
    first: impl FnOnce() -> Result<Batches, FeatureError>,
    again: impl FnOnce() -> Result<Batches, FeatureError>,
    views: Vec<(ViewRequest, FeatureInput)>,
    opts: &DatasetOptions,
    progress: &dyn Progress,
) -> Result<DatasetStats, FeatureError> {
    let io = |e: parquet::errors::ParquetError| FeatureError::Io {
        path: tmp.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let file = File::create(tmp).map_err(|source| FeatureError::Io {
        path: tmp.to_path_buf(),
        source,
    })?;
    // Feature values rarely repeat: dictionary encoding would cost time and save little.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, plan.output_schema.clone(), Some(props)).map_err(io)?;
    let stats = plan.run(first()?, again, views, opts, progress, &mut |batch| {
        writer.write(&batch).map_err(io)
    })?;
    writer.close().map_err(io)?;
    Ok(stats)
}

/// Joins in memory: entity rows as record batches, output as one record batch.
pub fn join_batches(
    entities: &[RecordBatch],
    views: Vec<(ViewRequest, FeatureInput)>,
    opts: &DatasetOptions,
) -> Result<(RecordBatch, DatasetStats), FeatureError> {
    let schema = entities
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| FeatureError::BadRequest("no entity rows given".into()))?;
    let plan = JoinPlan::new(&schema, &views, opts, "entity rows")?;
    let owned: Vec<RecordBatch> = entities.to_vec();
    let iter = |b: Vec<RecordBatch>| -> Batches { Box::new(b.into_iter().map(Ok)) };
    let mut out = Vec::new();
    let stats = plan.run(
        iter(owned.clone()),
        || Ok(iter(owned.clone())),
        views,
        opts,
        &crate::NoProgress,
        &mut |b| {
            out.push(b);
            Ok(())
        },
    )?;
    let batch = arrow_select::concat::concat_batches(&plan.output_schema, &out)
        .map_err(|e| FeatureError::internal("output", e))?;
    Ok((batch, stats))
}

/// Checked inputs and the output shape.
struct JoinPlan {
    output_schema: SchemaRef,
    /// Output position of each feature column, in the order the views produce them.
    feature_order: Vec<usize>,
    entity_columns: usize,
    timestamp_column: String,
    /// Every join-key column needed, by name.
    key_columns: Vec<String>,
}

impl JoinPlan {
    fn new(
        entity_schema: &SchemaRef,
        views: &[(ViewRequest, FeatureInput)],
        opts: &DatasetOptions,
        what: &str,
    ) -> Result<JoinPlan, FeatureError> {
        let columns = || {
            entity_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let timestamp_column = match &opts.timestamp_column {
            Some(c) => {
                if entity_schema.field_with_name(c).is_err() {
                    return Err(FeatureError::BadRequest(format!(
                        "{what} has no timestamp column {c:?} (columns: {})",
                        columns()
                    )));
                }
                c.clone()
            }
            None if entity_schema.field_with_name("event_timestamp").is_ok() => {
                "event_timestamp".to_string()
            }
            None => {
                let ts: Vec<&str> = entity_schema
                    .fields()
                    .iter()
                    .filter(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
                    .map(|f| f.name().as_str())
                    .collect();
                match ts.as_slice() {
                    [one] => one.to_string(),
                    _ => {
                        return Err(FeatureError::BadRequest(format!(
                            "{what} needs an event_timestamp column (or exactly one timestamp column, or name it with --timestamp-column); columns: {}",
                            columns()
                        )));
                    }
                }
            }
        };
        let ts_type = entity_schema
            .field_with_name(&timestamp_column)
            .map(|f| f.data_type().clone())
            .ok();
        if !matches!(
            ts_type,
            Some(DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64)
        ) {
            return Err(FeatureError::BadRequest(format!(
                "column {timestamp_column:?} of {what} is {}, not a timestamp",
                ts_type.map_or("missing".to_string(), |t| t.to_string())
            )));
        }
        let mut key_columns = Vec::new();
        let mut fields: Vec<ArrowField> = entity_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut names: HashSet<String> = fields.iter().map(|f| f.name().clone()).collect();
        for (req, _) in views {
            if opts.created_cutoff && !req.view.aggregations.is_empty() {
                return Err(FeatureError::BadRequest(format!(
                    "feature view {} has windowed aggregations, which do not support the created-timestamp cut-off yet (an event log is append-only: leave out --created-cutoff, or build this view's features separately)",
                    req.view.name
                )));
            }
            for k in &req.view.join_keys {
                let Ok(f) = entity_schema.field_with_name(&k.name) else {
                    return Err(FeatureError::BadRequest(format!(
                        "{what} has no column {:?}, the join key of feature view {} (columns: {})",
                        k.name,
                        req.view.name,
                        columns()
                    )));
                };
                if !k.dtype.accepts(f.data_type())
                    && !matches!(
                        f.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Int64 | DataType::Int32
                    )
                {
                    return Err(FeatureError::BadRequest(format!(
                        "column {:?} of {what} is {}, but feature view {} declares it {}",
                        k.name,
                        f.data_type(),
                        req.view.name,
                        k.dtype
                    )));
                }
                if !key_columns.contains(&k.name) {
                    key_columns.push(k.name.clone());
                }
            }
            let cols = SourceColumns::for_view(&req.view, Some(&req.features))?;
            for f in &cols.features {
                let name = if opts.full_feature_names {
                    format!("{}__{}", req.view.name, f.name)
                } else {
                    f.name.clone()
                };
                if !names.insert(name.clone()) {
                    return Err(FeatureError::BadRequest(format!(
                        "output column {name:?} would appear twice: {}",
                        if opts.full_feature_names {
                            "the same feature of the same view is requested twice (two versions of one view share their column names)"
                        } else {
                            "a feature is named like an entity column or like a feature of another view; use --full-feature-names"
                        }
                    )));
                }
                fields.push(ArrowField::new(name, f.dtype.arrow_type(), true));
            }
        }
        let entity_columns = entity_schema.fields().len();
        let features = fields.split_off(entity_columns);
        let feature_order = if opts.feature_order.is_empty() {
            (0..features.len()).collect()
        } else {
            let mut sorted = opts.feature_order.clone();
            sorted.sort_unstable();
            if sorted != (0..features.len()).collect::<Vec<_>>() {
                return Err(FeatureError::BadRequest(format!(
                    "feature_order {:?} is not an ordering of the {} requested features",
                    opts.feature_order,
                    features.len()
                )));
            }
            opts.feature_order.clone()
        };
        let mut ordered: Vec<Option<ArrowField>> = vec![None; features.len()];
        for (f, pos) in features.into_iter().zip(&feature_order) {
            ordered[*pos] = Some(f);
        }
        fields.extend(ordered.into_iter().flatten());
        Ok(JoinPlan {
            output_schema: Arc::new(Schema::new(fields)),
            feature_order,
            entity_columns,
            timestamp_column,
            key_columns,
        })
    }

    /// Runs the join. `first` yields the entity rows once for the keys; `again` yields them a
    /// second time, in the same order, for the output.
    fn run(
        &self,
        first: Batches,
        again: impl FnOnce() -> Result<Batches, FeatureError>,
        views: Vec<(ViewRequest, FeatureInput)>,
        opts: &DatasetOptions,
        progress: &dyn Progress,
        sink: &mut dyn FnMut(RecordBatch) -> Result<(), FeatureError>,
    ) -> Result<DatasetStats, FeatureError> {
        let started = std::time::Instant::now();
        let entities =
            EntityKeys::read(first, &self.key_columns, &self.timestamp_column, progress)?;
        tracing::debug!(
            rows = entities.len,
            ms = started.elapsed().as_millis() as u64,
            "read entity keys"
        );
        let spill_root = tempdir_in(&opts.spill_dir)?;
        let mut stats = DatasetStats {
            entity_rows: entities.len as u64,
            ..Default::default()
        };
        let mut results = Vec::new();
        for (i, (req, input)) in views.into_iter().enumerate() {
            let dir = spill_root
                .path
                .join(format!("{i}_{}_v{}", req.view.name, req.view.version));
            let r = join_view(&entities, &req, input, opts, &dir, progress)?;
            stats.feature_rows.push(r.feature_rows);
            stats.matched.push(r.matched);
            stats.partitions.push(r.spills.len());
            stats.spilled_bytes += r.spilled_bytes;
            results.push(r);
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "joined every view"
        );
        progress.begin("writing training set", entities.len as u64, "rows");
        let mut cursors: Vec<Vec<Cursor>> = results
            .iter()
            .map(|r| r.spills.iter().map(Cursor::new).collect::<Result<_, _>>())
            .collect::<Result<_, _>>()?;
        let mut offset = 0usize;
        for batch in again()? {
            let batch = batch?;
            let n = batch.num_rows();
            if n == 0 {
                continue;
            }
            let rows = offset..offset + n;
            let mut features = Vec::new();
            for (r, cursors) in results.iter().zip(cursors.iter_mut()) {
                let parts = r.part_of_row.get(rows.clone()).ok_or_else(|| {
                    FeatureError::BadRequest(
                        "the entity rows changed while the training set was being built".into(),
                    )
                })?;
                features.extend(assemble(parts, cursors)?);
            }
            let mut ordered: Vec<Option<ArrayRef>> = vec![None; features.len()];
            for (c, pos) in features.into_iter().zip(&self.feature_order) {
                ordered[*pos] = Some(c);
            }
            let mut cols = batch.columns().to_vec();
            if cols.len() != self.entity_columns {
                return Err(FeatureError::BadRequest(
                    "entity row batches do not all have the same columns".into(),
                ));
            }
            cols.extend(ordered.into_iter().flatten());
            let out = RecordBatch::try_new(self.output_schema.clone(), cols)
                .map_err(|e| FeatureError::internal("output", e))?;
            sink(out)?;
            offset += n;
            progress.inc(n as u64);
        }
        progress.end();
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "assembled the output"
        );
        Ok(stats)
    }
}

/// The entity rows' join keys (as read) and timestamps, for all views.
struct EntityKeys {
    len: usize,
    columns: Vec<(String, ArrayRef)>,
    ts: Int64Array,
    min_t: Option<i64>,
    max_t: Option<i64>,
}

impl EntityKeys {
    fn read(
        batches: Batches,
        keys: &[String],
        ts_col: &str,
        progress: &dyn Progress,
    ) -> Result<EntityKeys, FeatureError> {
        progress.begin("reading entity rows", 0, "rows");
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); keys.len()];
        let mut ts: Vec<i64> = Vec::new();
        let mut ts_valid: Vec<bool> = Vec::new();
        for b in batches {
            let b = b?;
            let missing = |c: &str| {
                FeatureError::BadRequest(format!("a batch of entity rows has no column {c:?}"))
            };
            for (i, k) in keys.iter().enumerate() {
                parts[i].push(b.column_by_name(k).ok_or_else(|| missing(k))?.clone());
            }
            let t = timestamps_micros(b.column_by_name(ts_col).ok_or_else(|| missing(ts_col))?)
                .map_err(FeatureError::BadRequest)?;
            ts.extend_from_slice(t.values());
            ts_valid.extend((0..t.len()).map(|i| t.is_valid(i)));
            progress.inc(b.num_rows() as u64);
        }
        progress.end();
        let mut columns = Vec::new();
        for (k, p) in keys.iter().zip(parts) {
            let refs: Vec<&dyn Array> = p.iter().map(|a| a.as_ref()).collect();
            let col = if refs.is_empty() {
                arrow_array::new_empty_array(&DataType::Int64)
            } else {
                concat(&refs).map_err(|e| FeatureError::internal("entity keys", e))?
            };
            columns.push((k.clone(), col));
        }
        let ts = Int64Array::new(ts.into(), Some(arrow_buffer::NullBuffer::from(ts_valid)));
        let min_t = ts.iter().flatten().min();
        let max_t = ts.iter().flatten().max();
        Ok(EntityKeys {
            len: ts.len(),
            columns,
            ts,
            min_t,
            max_t,
        })
    }

    fn keys_for(&self, view: &ViewVersion) -> Result<Vec<ArrayRef>, FeatureError> {
        view.join_keys
            .iter()
            .map(|k| {
                let (_, col) =
                    self.columns
                        .iter()
                        .find(|(n, _)| n == &k.name)
                        .ok_or_else(|| {
                            FeatureError::BadRequest(format!(
                                "entity rows have no column {:?}",
                                k.name
                            ))
                        })?;
                cast_to(col, &k.dtype.arrow_type()).map_err(|e| {
                    FeatureError::BadRequest(format!(
                        "entity column {:?} cannot be read as {}: {e}",
                        k.name, k.dtype
                    ))
                })
            })
            .collect()
    }
}

/// One view's join results: per partition, the feature values of that partition's entity rows
/// in entity-row order.
struct ViewResult {
    part_of_row: Vec<u32>,
    spills: Vec<Spill>,
    feature_rows: u64,
    matched: u64,
    spilled_bytes: u64,
}

/// Bytes a value of this type takes in memory, for sizing partitions.
fn width(t: &DataType) -> usize {
    match t {
        DataType::Boolean | DataType::Int8 | DataType::UInt8 => 1,
        DataType::Int32 | DataType::Float32 | DataType::UInt32 => 4,
        DataType::Utf8 | DataType::Binary => 32,
        _ => 8,
    }
}

fn join_view(
    entities: &EntityKeys,
    req: &ViewRequest,
    input: FeatureInput,
    opts: &DatasetOptions,
    view_dir: &Path,
    progress: &dyn Progress,
) -> Result<ViewResult, FeatureError> {
    let view_started = std::time::Instant::now();
    let view = &req.view;
    // An aggregated view reads the columns its aggregations take, not its output features.
    let aggs = if view.aggregations.is_empty() {
        None
    } else {
        Some(window::requested(view, &req.features)?)
    };
    let cols = match &aggs {
        None => SourceColumns::for_view(view, Some(&req.features))?,
        Some(a) => window::source_columns(view, a),
    };
    let schema = cols.normalized_schema();
    let ttl = view.ttl_micros();
    // How far back from an entity row its values may reach (0 = no limit).
    let reach = aggs.as_deref().map_or(ttl, window::reach_micros);
    let range = match (entities.min_t, entities.max_t) {
        (Some(lo), Some(hi)) => Some((
            if reach == 0 {
                i64::MIN
            } else {
                lo.saturating_sub(reach)
            },
            hi,
        )),
        _ => None,
    };

    let (batches, hint): (SourceBatches, u64) = match input {
        FeatureInput::Parquet(path) => {
            // No entity row has a timestamp: nothing can match, read nothing.
            let range = range.unwrap_or((i64::MIN, i64::MIN));
            let scan = ParquetScan::plan(
                &path,
                &ScanRequest {
                    columns: cols.scan_columns(),
                    time_column: cols.timestamp.clone(),
                    time_range: Some(range),
                    batch_size: opts.batch_size,
                },
            )?;
            let total = scan.total_rows;
            (
                Box::new(scan.map(|r| {
                    r.map(|(p, b)| (p.to_path_buf(), b))
                        .map_err(FeatureError::from)
                })),
                total,
            )
        }
        FeatureInput::Batches(bs) => {
            let total = bs.iter().map(|b| b.num_rows() as u64).sum();
            (
                Box::new(bs.into_iter().map(|b| Ok((PathBuf::from("<memory>"), b)))),
                total,
            )
        }
    };

    let row_bytes: usize = schema
        .fields()
        .iter()
        .map(|f| width(f.data_type()))
        .sum::<usize>()
        + 16;
    let estimate = hint as usize * row_bytes;
    let threads = rayon::current_num_threads().max(1);
    let spill = estimate > opts.memory_budget;
    // Partitions small enough to sort in cache beat one big sort even in memory; spilling,
    // also enough that a few of them fit the memory budget at once.
    let partitions = opts.partitions.unwrap_or_else(|| {
        let for_parallelism = if hint > 50_000 { 4 * threads } else { 1 };
        let for_memory = if spill {
            estimate.div_ceil((opts.memory_budget / (4 * threads)).max(1))
        } else {
            1
        };
        for_parallelism.max(for_memory).clamp(1, 4_096)
    });
    let flush_rows =
        ((opts.memory_budget / 4) / partitions.max(1) / row_bytes).clamp(1_024, 1 << 20);
    if spill {
        std::fs::create_dir_all(view_dir).map_err(|source| FeatureError::Io {
            path: view_dir.to_path_buf(),
            source,
        })?;
    }
    let spill_path =
        |kind: &str, p: usize| spill.then(|| view_dir.join(format!("{kind}-{p}.arrows")));

    // Entity side: partition of every row, and each partition's rows in ascending order.
    let entity_keys = entities.keys_for(view)?;
    let part_of_row = partition_of(&entity_keys, partitions)?;
    let mut rows_of_part: Vec<Vec<u32>> = vec![Vec::new(); partitions];
    for (i, p) in part_of_row.iter().enumerate() {
        rows_of_part[*p as usize].push(i as u32);
    }

    // Feature side: stream, filter to the time range, partition.
    let mut parts: Vec<Spill> = (0..partitions)
        .map(|p| Spill::new(schema.clone(), spill_path("rows", p), flush_rows))
        .collect();
    progress.begin(
        &format!("scanning {}@v{}", view.name, view.version),
        hint,
        "rows",
    );
    let mut feature_rows = 0u64;
    for item in batches {
        let (path, raw) = item?;
        let n = raw.num_rows() as u64;
        let norm = cols.normalize(&raw, &path)?;
        let keep = time_filter(&norm, range);
        let batch = norm.into_batch(&schema)?;
        let batch = if keep.true_count() == batch.num_rows() {
            batch
        } else {
            filter_record_batch(&batch, &keep)
                .map_err(|e| FeatureError::internal("filtering", e))?
        };
        feature_rows += batch.num_rows() as u64;
        let keys: Vec<ArrayRef> = batch.columns()[..cols.keys.len()].to_vec();
        let pof = partition_of(&keys, partitions)?;
        if partitions == 1 {
            parts[0].push(batch)?;
        } else {
            let mut idx: Vec<Vec<u32>> = vec![Vec::new(); partitions];
            for (i, p) in pof.iter().enumerate() {
                idx[*p as usize].push(i as u32);
            }
            for (p, rows) in idx.into_iter().enumerate() {
                if !rows.is_empty() {
                    let rows = UInt32Array::from(rows);
                    let cols = batch
                        .columns()
                        .iter()
                        .map(|c| take(c, &rows, None))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| FeatureError::internal("partitioning", e))?;
                    parts[p].push(
                        RecordBatch::try_new(schema.clone(), cols)
                            .map_err(|e| FeatureError::internal("partitioning", e))?,
                    )?;
                }
            }
        }
        progress.inc(n);
    }
    progress.end();
    for p in &mut parts {
        p.seal()?;
    }
    tracing::debug!(view = %view.name, rows = feature_rows, partitions, spill, ms = view_started.elapsed().as_millis() as u64, "scanned and partitioned");
    let mut spilled_bytes: u64 = parts.iter().map(|p| p.bytes_spilled).sum();

    // Join partitions in parallel.
    let out_schema = Arc::new(Schema::new(
        SourceColumns::for_view(view, Some(&req.features))?
            .features
            .iter()
            .map(|f| ArrowField::new(&f.name, f.dtype.arrow_type(), true))
            .collect::<Vec<_>>(),
    ));
    progress.begin(
        &format!("joining {}@v{}", view.name, view.version),
        partitions as u64,
        "partitions",
    );
    let matched = AtomicU64::new(0);
    let results: Vec<Spill> = parts
        .into_par_iter()
        .enumerate()
        .map(|(p, mut part)| -> Result<Spill, FeatureError> {
            let feats = Normalized::from_batch(&part.read_all()?, &cols);
            part.discard();
            let local = UInt32Array::from(rows_of_part[p].clone());
            let ekeys = entity_keys
                .iter()
                .map(|k| take(k, &local, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| FeatureError::internal("joining", e))?;
            let ets = take(&entities.ts, &local, None)
                .map_err(|e| FeatureError::internal("joining", e))?;
            let ets = ets.as_primitive::<arrow_array::types::Int64Type>();
            let (eg, fg) = group_ids(&ekeys, &feats.keys)?;
            let rows = EntityRows {
                group: &eg,
                ts: ets,
            };
            let (out, n_rows) = match &aggs {
                Some(aggs) => {
                    let events = window::Events {
                        group: &fg,
                        ts: &feats.event_ts,
                        created: feats.created_ts.as_ref(),
                    };
                    let (out, m) = window::compute(&rows, &events, aggs, &cols, &feats.features)?;
                    matched.fetch_add(m, Ordering::Relaxed);
                    (out, eg.len())
                }
                None => {
                    let picks = pit_match(
                        &rows,
                        &FeatureRows {
                            group: &fg,
                            event_ts: &feats.event_ts,
                            created_ts: feats.created_ts.as_ref(),
                        },
                        ttl,
                        opts.created_cutoff,
                    );
                    matched.fetch_add(
                        picks.iter().filter(|p| p.is_some()).count() as u64,
                        Ordering::Relaxed,
                    );
                    let picks = UInt32Array::from(picks);
                    let out = feats
                        .features
                        .iter()
                        .map(|c| take(c, &picks, None))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| FeatureError::internal("joining", e))?;
                    (out, picks.len())
                }
            };
            let mut res = Spill::new(out_schema.clone(), spill_path("result", p), 1);
            res.push(
                RecordBatch::try_new_with_options(
                    out_schema.clone(),
                    out,
                    &arrow_array::RecordBatchOptions::new().with_row_count(Some(n_rows)),
                )
                .map_err(|e| FeatureError::internal("joining", e))?,
            )?;
            res.seal()?;
            progress.inc(1);
            Ok(res)
        })
        .collect::<Result<_, _>>()?;
    progress.end();
    spilled_bytes += results.iter().map(|r| r.bytes_spilled).sum::<u64>();
    Ok(ViewResult {
        part_of_row,
        spills: results,
        feature_rows,
        matched: matched.into_inner(),
        spilled_bytes,
    })
}

/// Rows with an event time inside the range the entity rows can reach.
fn time_filter(norm: &Normalized, range: Option<(i64, i64)>) -> arrow_array::BooleanArray {
    let (lo, hi) = range.unwrap_or((i64::MAX, i64::MIN));
    norm.event_ts
        .iter()
        .map(|t| Some(t.is_some_and(|t| t >= lo && t <= hi)))
        .collect()
}

/// Feature columns for a run of entity rows, given each row's partition: takes the next rows
/// of every partition involved and interleaves them back into entity order.
fn assemble(parts: &[u32], cursors: &mut [Cursor]) -> Result<Vec<ArrayRef>, FeatureError> {
    if let [only] = cursors {
        return Ok(only.take(parts.len())?.columns().to_vec());
    }
    let mut count = vec![0usize; cursors.len()];
    for p in parts {
        count[*p as usize] += 1;
    }
    let mut slot = vec![usize::MAX; cursors.len()];
    let mut chunks = Vec::new();
    for (p, n) in count.iter().enumerate() {
        if *n > 0 {
            slot[p] = chunks.len();
            chunks.push(cursors[p].take(*n)?);
        }
    }
    let mut next = vec![0usize; chunks.len()];
    let indices: Vec<(usize, usize)> = parts
        .iter()
        .map(|p| {
            let s = slot[*p as usize];
            let i = next[s];
            next[s] += 1;
            (s, i)
        })
        .collect();
    let ncols = chunks.first().map_or(0, |c| c.num_columns());
    (0..ncols)
        .map(|c| {
            let arrays: Vec<&dyn Array> = chunks.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, &indices)
                .map_err(|e| FeatureError::internal("assembling the output", e))
        })
        .collect()
}

/// A temporary directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempdir_in(dir: &Path) -> Result<TempDir, FeatureError> {
    let path = dir.join(format!(
        "kiln-spill-{}-{}",
        std::process::id(),
        kiln_core::time::now_micros()
    ));
    std::fs::create_dir_all(&path).map_err(|source| FeatureError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(TempDir { path })
}
