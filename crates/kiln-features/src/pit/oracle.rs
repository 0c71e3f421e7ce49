//! The point-in-time join written as its definition, row by row: for each entity row, look at
//! every feature row. Quadratic and obviously right; the kernel is tested against it.

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_select::concat::concat_batches;
use kiln_core::Value;
use kiln_store::offline::timestamps_micros;

use super::ViewRequest;
use crate::source::{SourceColumns, cast_to};
use crate::{FeatureError, value_at};

/// For each entity row, the requested features of every view in order (nulls where nothing
/// matches). `entities` must hold the join-key columns and `ts_col`; each view needs at least
/// one (possibly empty) batch.
pub fn oracle_join(
    entities: &RecordBatch,
    ts_col: &str,
    views: &[(ViewRequest, Vec<RecordBatch>)],
    created_cutoff: bool,
) -> Result<Vec<Vec<Value>>, FeatureError> {
    let bad = |what: &str| FeatureError::BadRequest(format!("oracle: {what}"));
    let n = entities.num_rows();
    let ts = entities
        .column_by_name(ts_col)
        .and_then(|c| timestamps_micros(c).ok())
        .ok_or_else(|| bad("no entity timestamps"))?;
    let mut out = vec![Vec::new(); n];
    for (req, batches) in views {
        let cols = SourceColumns::for_view(&req.view, Some(&req.features))?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| bad("a view without batches"))?;
        let all = concat_batches(&schema, batches).map_err(|e| bad(&e.to_string()))?;
        let norm = cols.normalize(&all, std::path::Path::new("oracle"))?;
        let ekeys: Vec<ArrayRef> = req
            .view
            .join_keys
            .iter()
            .map(|k| {
                cast_to(
                    entities
                        .column_by_name(&k.name)
                        .ok_or_else(|| bad("missing key column"))?,
                    &k.dtype.arrow_type(),
                )
                .map_err(|e| bad(&e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let has_created = norm.created_ts.is_some();
        let ttl = req.view.ttl_micros();
        for (row, out_row) in out.iter_mut().enumerate() {
            let key: Vec<Value> = ekeys.iter().map(|k| value_at(k, row)).collect();
            let t = (!ts.is_null(row)).then(|| ts.value(row));
            let mut best: Option<(i64, i64, usize)> = None;
            if let Some(t) = t.filter(|_| key.iter().all(|v| !v.is_null())) {
                for f in 0..norm.len() {
                    let fkey: Vec<Value> = norm.keys.iter().map(|k| value_at(k, f)).collect();
                    if fkey != key || norm.event_ts.is_null(f) {
                        continue;
                    }
                    let ev = norm.event_ts.value(f);
                    if ev > t || (ttl > 0 && ev < t - ttl) {
                        continue;
                    }
                    let cr = norm
                        .created_ts
                        .as_ref()
                        .and_then(|c| (!c.is_null(f)).then(|| c.value(f)));
                    if created_cutoff && has_created && cr.is_none_or(|cr| cr > t) {
                        continue;
                    }
                    let rank = (ev, cr.unwrap_or(i64::MIN), f);
                    if best.is_none_or(|b| rank > b) {
                        best = Some(rank);
                    }
                }
            }
            for feat in &norm.features {
                out_row.push(best.map_or(Value::Null, |(_, _, f)| value_at(feat, f)));
            }
        }
    }
    Ok(out)
}
