//! Materialization: the latest row per entity in a time window, from the offline source into
//! the online store.
//!
//! The source is streamed (projection, row-group pruning to the window); rows in the window are
//! reduced to the latest per key (event time, then created time, then later row) in a bounded
//! map that is flushed to the store whenever it reaches `max_keys`, and at the end. Each flush
//! is one atomic, newer-wins batch write, so a re-run, an overlapping window, or a run killed at
//! any moment and run again all converge on the same state. The registry records the window
//! only after every flush succeeded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, ArrayRef};
use kiln_core::spec::ViewVersion;
use kiln_core::time::Micros;
use kiln_core::value::ValueWriter;
use kiln_store::offline::{ParquetScan, ScanRequest};
use kiln_store::online::{OnlineStore, StoredRow, ViewTable, WriteSummary};
use serde::Serialize;

use crate::arrow_values::encode_at;
use crate::source::SourceColumns;
use crate::{FeatureError, Progress};

/// Ordering of candidate rows for one key: event time, created time, arrival order.
type Rank = (Micros, Micros, u64);
/// The latest row seen so far per encoded key.
type Latest = HashMap<Vec<u8>, (Rank, StoredRow)>;

/// How to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    pub batch_size: usize,
    /// Flush the latest-per-key map to the store when it holds this many keys.
    pub max_keys: usize,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            batch_size: 65_536,
            max_keys: 262_144,
        }
    }
}

/// What one view's materialization did.
#[derive(Debug, Clone, Serialize)]
pub struct MaterializeReport {
    pub view: String,
    pub version: u32,
    pub start: Micros,
    pub end: Micros,
    /// Rows read from the source (after row-group pruning).
    pub rows_scanned: u64,
    /// Rows inside the window.
    pub rows_in_window: u64,
    pub written: u64,
    /// Keys whose stored value was newer than anything in the window.
    pub kept_newer: u64,
    pub seconds: f64,
}

fn encode_key(keys: &[ArrayRef], i: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 * keys.len());
    let mut w = ValueWriter::new(&mut key);
    for k in keys {
        encode_at(&mut w, k, i);
    }
    key
}

/// The stored payload of one row: the view version, then the encoded feature values.
fn encode_payload(features: &[ArrayRef], version: u32, i: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + 9 * features.len());
    payload.extend_from_slice(&version.to_le_bytes());
    let mut w = ValueWriter::new(&mut payload);
    for f in features {
        encode_at(&mut w, f, i);
    }
    payload
}

/// One view version and the window `[start, end]` (both inclusive) to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeJob {
    pub view: ViewVersion,
    pub start: Micros,
    pub end: Micros,
}

/// Materializes a job into `store`, reading the source relative to `project_dir`. Blocks: call
/// it from a blocking thread; `rt` runs the store's asynchronous writes.
pub fn materialize_view(
    rt: &tokio::runtime::Handle,
    store: &Arc<dyn OnlineStore>,
    project_dir: &Path,
    job: &MaterializeJob,
    opts: &MaterializeOptions,
    progress: &dyn Progress,
) -> Result<MaterializeReport, FeatureError> {
    let began = Instant::now();
    let MaterializeJob { view, start, end } = job;
    let (start, end) = (*start, *end);
    if !view.aggregations.is_empty() {
        return Err(FeatureError::BadRequest(format!(
            "feature view {} has windowed aggregations, which are not materialized: `kiln stream run` (or `kiln serve` with [stream] embedded = true) keeps them online",
            view.name
        )));
    }
    let cols = SourceColumns::for_view(view, None)?;
    let path = project_dir.join(&view.source.path);
    let scan = ParquetScan::plan(
        &path,
        &ScanRequest {
            columns: cols.scan_columns(),
            time_column: cols.timestamp.clone(),
            time_range: Some((start, end)),
            batch_size: opts.batch_size,
        },
    )?;
    let table = ViewTable {
        name: view.name.clone(),
        ttl_seconds: view.ttl_seconds,
    };
    let mut report = MaterializeReport {
        view: view.name.clone(),
        version: view.version,
        start,
        end,
        rows_scanned: 0,
        rows_in_window: 0,
        written: 0,
        kept_newer: 0,
        seconds: 0.0,
    };
    progress.begin(
        &format!("materializing {}@v{}", view.name, view.version),
        scan.total_rows,
        "rows",
    );
    // key -> (event, created, stored row); the rank also carries the arrival order so that
    // full ties go to the later row, as in the point-in-time join.
    let mut latest: Latest = HashMap::new();
    let mut seq = 0u64;
    let mut summary = WriteSummary::default();
    let flush = |latest: &mut Latest, summary: &mut WriteSummary| {
        if latest.is_empty() {
            return Ok::<(), FeatureError>(());
        }
        let rows: Vec<(Vec<u8>, StoredRow)> = latest.drain().map(|(k, (_, r))| (k, r)).collect();
        *summary += rt.block_on(store.write_batch(&table, rows))?;
        Ok(())
    };
    for item in scan {
        let (file, raw) = item?;
        report.rows_scanned += raw.num_rows() as u64;
        let norm = cols.normalize(&raw, &file)?;
        for i in 0..norm.event_ts.len() {
            seq += 1;
            if norm.event_ts.is_null(i) || norm.keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let ev = norm.event_ts.value(i);
            if ev < start || ev > end {
                continue;
            }
            report.rows_in_window += 1;
            let cr = norm
                .created_ts
                .as_ref()
                .and_then(|c| (!c.is_null(i)).then(|| c.value(i)))
                .unwrap_or(i64::MIN);
            let rank = (ev, cr, seq);
            let key = encode_key(&norm.keys, i);
            let row = || StoredRow {
                event_ts: ev,
                created_ts: cr,
                payload: encode_payload(&norm.features, view.version, i),
            };
            match latest.get_mut(&key) {
                Some((old, slot)) if rank > *old => {
                    *old = rank;
                    *slot = row();
                }
                Some(_) => {}
                None => {
                    latest.insert(key, (rank, row()));
                    if latest.len() >= opts.max_keys {
                        flush(&mut latest, &mut summary)?;
                    }
                }
            }
        }
        progress.inc(raw.num_rows() as u64);
    }
    flush(&mut latest, &mut summary)?;
    progress.end();
    report.written = summary.written;
    report.kept_newer = summary.kept_newer;
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}
