//! The sort-merge kernel of the point-in-time join, for one partition of one view.
//!
//! Both sides are reduced to plain vectors: a group id per row (equal ids = equal join keys),
//! the entity timestamp `T`, and the feature row's event and created timestamps. Entity rows
//! are sorted by (group, T); feature rows by (group, eligibility time), where a feature row
//! becomes *eligible* at its event time, or with the created-timestamp cut-off at the later of
//! its event and created times. Walking both in one pass, the best eligible row so far (greatest
//! event time, then created time, then position in the source) is the answer for each entity
//! row, provided it is within the ttl. This is exact: the eligible set only grows as `T` grows,
//! so its maximum only moves forward, and if the maximum is older than `T - ttl` every eligible
//! row is.
//!
//! Rows with a null key or timestamp never match (SQL semantics); feature rows with a null
//! created timestamp rank below any non-null one, and under the cut-off are never eligible.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Int64Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;

use crate::FeatureError;

/// The values of a single integer join key (the common case, which skips row encoding), or
/// `None` for other key types.
pub(crate) fn int_key(a: &ArrayRef) -> Option<Box<dyn Iterator<Item = Option<i64>> + '_>> {
    match a.data_type() {
        DataType::Int64 => Some(Box::new(a.as_primitive::<Int64Type>().iter())),
        DataType::Int32 => Some(Box::new(
            a.as_primitive::<Int32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        )),
        _ => None,
    }
}

/// A group id per row; `None` for a row with a null key.
pub(crate) type GroupIds = Vec<Option<u64>>;

/// Group ids for the rows of both sides: equal ids mean equal join keys. `None` marks a row
/// with a null key.
pub(crate) fn group_ids(
    entity_keys: &[ArrayRef],
    feature_keys: &[ArrayRef],
) -> Result<(GroupIds, GroupIds), FeatureError> {
    if let ([e], [f]) = (entity_keys, feature_keys)
        && let (Some(ei), Some(fi)) = (int_key(e), int_key(f))
    {
        let ids = |it: Box<dyn Iterator<Item = Option<i64>> + '_>| {
            it.map(|v| v.map(|v| v as u64)).collect()
        };
        return Ok((ids(ei), ids(fi)));
    }
    // General case: encode the key tuple with arrow-row and number the distinct encodings.
    let fields = entity_keys
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    let conv = RowConverter::new(fields).map_err(|e| FeatureError::internal("join keys", e))?;
    let er = conv
        .convert_columns(entity_keys)
        .map_err(|e| FeatureError::internal("join keys", e))?;
    let fr = conv
        .convert_columns(feature_keys)
        .map_err(|e| FeatureError::internal("join keys", e))?;
    let null_e = any_null(entity_keys);
    let null_f = any_null(feature_keys);
    let mut ids: HashMap<&[u8], u64> = HashMap::new();
    let e_ids = number_rows(&mut ids, &er, &null_e);
    let f_ids = number_rows(&mut ids, &fr, &null_f);
    Ok((e_ids, f_ids))
}

fn number_rows<'a>(
    ids: &mut HashMap<&'a [u8], u64>,
    rows: &'a arrow_row::Rows,
    nulls: &[bool],
) -> Vec<Option<u64>> {
    (0..rows.num_rows())
        .map(|i| {
            if nulls[i] {
                return None;
            }
            let next = ids.len() as u64;
            Some(*ids.entry(rows.row(i).data()).or_insert(next))
        })
        .collect()
}

fn any_null(cols: &[ArrayRef]) -> Vec<bool> {
    let n = cols.first().map_or(0, |c| c.len());
    (0..n).map(|i| cols.iter().any(|c| c.is_null(i))).collect()
}

/// The entity side of one partition.
pub(crate) struct EntityRows<'a> {
    pub group: &'a [Option<u64>],
    pub ts: &'a Int64Array,
}

/// The feature side of one partition.
pub(crate) struct FeatureRows<'a> {
    pub group: &'a [Option<u64>],
    pub event_ts: &'a Int64Array,
    /// `None` when the source has no created-timestamp column.
    pub created_ts: Option<&'a Int64Array>,
}

/// A sort key: group id in the high half, a time (order-preserving as unsigned) in the low half.
pub(crate) fn sort_key(group: u64, t: i64) -> u128 {
    (u128::from(group) << 64) | u128::from((t as u64) ^ (1 << 63))
}

pub(crate) fn key_group(k: u128) -> u64 {
    (k >> 64) as u64
}

pub(crate) fn key_time(k: u128) -> i64 {
    ((k as u64) ^ (1 << 63)) as i64
}

/// Sorts by the first field, in parallel when there is enough to share out (a partition that
/// is joined alone, the in-memory case, gets the whole pool).
pub(crate) fn sort<T: Send>(v: &mut [(u128, T)]) {
    use rayon::slice::ParallelSliceMut;
    if v.len() > 32_768 {
        v.par_sort_unstable_by_key(|x| x.0);
    } else {
        v.sort_unstable_by_key(|x| x.0);
    }
}

pub(crate) fn get(a: &Int64Array, i: usize) -> Option<i64> {
    a.is_valid(i).then(|| a.value(i))
}

/// For each entity row, the index of the feature row that the point-in-time join picks.
pub(crate) fn pit_match(
    e: &EntityRows<'_>,
    f: &FeatureRows<'_>,
    ttl_micros: i64,
    cutoff: bool,
) -> Vec<Option<u32>> {
    // Order among equal keys does not matter on either side: entity rows are answered
    // independently, and the best feature row is the maximum by rank over all eligible rows.
    let mut ents: Vec<(u128, u32)> = (0..e.group.len())
        .filter_map(|i| Some((sort_key(e.group[i]?, get(e.ts, i)?), i as u32)))
        .collect();
    sort(&mut ents);

    // Each feature row carries what its rank needs, so the merge reads memory in order:
    // (group + eligible-at, (created, index)); the event time is the key's time unless the
    // cut-off makes eligibility the later of event and created time.
    let cutoff = cutoff && f.created_ts.is_some();
    let mut feats: Vec<(u128, (i64, u32))> = (0..f.group.len())
        .filter_map(|i| {
            let g = f.group[i]?;
            let ev = get(f.event_ts, i)?;
            let cr = match f.created_ts {
                None => i64::MIN,
                Some(c) if cutoff => get(c, i)?,
                Some(c) => get(c, i).unwrap_or(i64::MIN),
            };
            let eligible = if cutoff { ev.max(cr) } else { ev };
            Some((sort_key(g, eligible), (cr, i as u32)))
        })
        .collect();
    sort(&mut feats);

    let mut out = vec![None; e.group.len()];
    let mut fi = 0;
    let mut group = None;
    let mut best: Option<(i64, i64, u32)> = None;
    for &(k, ei) in &ents {
        let (g, t) = (key_group(k), key_time(k));
        if group != Some(g) {
            group = Some(g);
            best = None;
            while fi < feats.len() && key_group(feats[fi].0) < g {
                fi += 1;
            }
        }
        while fi < feats.len() && key_group(feats[fi].0) == g && key_time(feats[fi].0) <= t {
            let (key, (cr, idx)) = feats[fi];
            let ev = if cutoff {
                f.event_ts.value(idx as usize)
            } else {
                key_time(key)
            };
            let cand = (ev, cr, idx);
            if best.is_none_or(|b| cand > b) {
                best = Some(cand);
            }
            fi += 1;
        }
        if let Some((ev, _, idx)) = best
            && (ttl_micros == 0 || ev >= t.saturating_sub(ttl_micros))
        {
            out[ei as usize] = Some(idx);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        eg: &[Option<u64>],
        et: &[Option<i64>],
        fg: &[Option<u64>],
        fe: &[Option<i64>],
        fc: Option<&[Option<i64>]>,
        ttl: i64,
        cutoff: bool,
    ) -> Vec<Option<u32>> {
        let (et, fe) = (Int64Array::from(et.to_vec()), Int64Array::from(fe.to_vec()));
        let fc = fc.map(|c| Int64Array::from(c.to_vec()));
        pit_match(
            &EntityRows { group: eg, ts: &et },
            &FeatureRows {
                group: fg,
                event_ts: &fe,
                created_ts: fc.as_ref(),
            },
            ttl,
            cutoff,
        )
    }

    #[test]
    fn latest_within_ttl_inclusive_bounds() {
        let fg = [Some(1), Some(1), Some(1), Some(2)];
        let fe = [Some(10), Some(20), Some(30), Some(20)];
        // T = 20 picks event 20 (upper bound inclusive); T = 25 with ttl 5 picks 20 (lower
        // bound inclusive); T = 26 with ttl 5 finds nothing; T = 5 is before everything.
        let eg = [Some(1), Some(1), Some(1), Some(1), Some(2), Some(3), None];
        let et = [
            Some(20),
            Some(25),
            Some(26),
            Some(5),
            Some(100),
            Some(100),
            Some(100),
        ];
        assert_eq!(
            run(&eg, &et, &fg, &fe, None, 5, false),
            vec![Some(1), Some(1), None, None, None, None, None]
        );
        // ttl 0: no lower bound.
        assert_eq!(
            run(&eg, &et, &fg, &fe, None, 0, false),
            vec![Some(1), Some(1), Some(1), None, Some(3), None, None]
        );
    }

    #[test]
    fn ties_prefer_later_created_then_later_row() {
        let fg = [Some(1); 4];
        let fe = [Some(10), Some(10), Some(10), Some(9)];
        let fc = [Some(5), Some(7), Some(7), Some(100)];
        let eg = [Some(1)];
        let et = [Some(10)];
        assert_eq!(run(&eg, &et, &fg, &fe, Some(&fc), 0, false), vec![Some(2)]);
        // With the cut-off, rows created after T are not eligible.
        let et = [Some(6)];
        let fe2 = [Some(1), Some(2), Some(3), Some(4)];
        let fc2 = [Some(5), Some(7), None, Some(6)];
        assert_eq!(run(&eg, &et, &fg, &fe2, Some(&fc2), 0, true), vec![Some(3)]);
        assert_eq!(
            run(&eg, &et, &fg, &fe2, Some(&fc2), 0, false),
            vec![Some(3)]
        );
        let et = [Some(5)];
        assert_eq!(run(&eg, &et, &fg, &fe2, Some(&fc2), 0, true), vec![Some(0)]);
    }
}
