//! The windowed-aggregation kernel for one partition: events and entity rows sorted by (key,
//! time), walked together. For each entity row `(key, T)` and window `w`, the events in the
//! window are a contiguous run `lo..hi` of the key's sorted events (`hi`: first with
//! `event_ts > T`; `lo`: first past the window's horizon, `T - w` sliding, the start of `T`'s
//! bucket tumbling, the current session's first event or `hi` for a session window), and both
//! ends only move forward as `T`
//! grows, so each aggregate is maintained incrementally: prefix sums for counts and integer
//! sums (exact, in i128), [`super::swag`] for min, max and float sums and moments, a count map
//! for `count_distinct`, and a "latest valid event at or before" index for `last`. No entity
//! row rescans the events.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;
use arrow_select::take::take;
use kiln_core::spec::{AggFunction, Window, WindowKind};

use super::swag::{MaxF, MaxI, MinF, MinI, Moments, Monoid, SumF, TwoStacks};
use crate::pit::kernel::{EntityRows, get, key_group, key_time, sort, sort_key};
use crate::{FeatureError, value_at};

/// The events of one partition.
pub(crate) struct Events<'a> {
    pub group: &'a [Option<u64>],
    pub ts: &'a Int64Array,
    /// Breaks ties in event time for `last`; `None` when the source has no such column.
    pub created: Option<&'a Int64Array>,
}

/// One aggregate to compute.
pub(crate) struct Agg<'a> {
    pub function: AggFunction,
    pub window: Window,
    /// The input column (normalised: int64, float64, utf8, ...); `None` for a count of events.
    pub input: Option<&'a ArrayRef>,
}

/// Events sorted by (group, event time, created time, source order), with their original
/// indices, and entity rows sorted by (group, T).
pub(crate) struct Sorted {
    /// (group, event time) as a sort key, per sorted event.
    ev: Vec<u128>,
    /// The original index of each sorted event.
    perm: Vec<u32>,
    /// (group, T) and the original index of each entity row with a key and a timestamp.
    rows: Vec<(u128, u32)>,
    n_rows: usize,
}

impl Sorted {
    pub(crate) fn new(e: &EntityRows<'_>, f: &Events<'_>) -> Sorted {
        let mut rows: Vec<(u128, u32)> = (0..e.group.len())
            .filter_map(|i| Some((sort_key(e.group[i]?, get(e.ts, i)?), i as u32)))
            .collect();
        sort(&mut rows);
        let mut evs: Vec<(u128, (i64, u32))> = (0..f.group.len())
            .filter_map(|i| {
                let g = f.group[i]?;
                let t = get(f.ts, i)?;
                let cr = f.created.and_then(|c| get(c, i)).unwrap_or(i64::MIN);
                Some((sort_key(g, t), (cr, i as u32)))
            })
            .collect();
        // Ties in (group, time) must be ordered by created time and then source order, for
        // `last`: sort on the whole tuple.
        evs.sort_unstable();
        Sorted {
            ev: evs.iter().map(|x| x.0).collect(),
            perm: evs.iter().map(|x| x.1.1).collect(),
            rows,
            n_rows: e.group.len(),
        }
    }

    /// Calls `f(row, group_changed, lo, hi)` for every entity row in (group, T) order, where
    /// `lo..hi` are the sorted events of the row's group in the window as of `T`: `(horizon(T), T]`.
    fn walk(&self, w: Window, mut f: impl FnMut(usize, bool, usize, usize)) {
        let starts = if w.kind == WindowKind::Session {
            self.session_starts(w.micros)
        } else {
            Vec::new()
        };
        let (mut lo, mut hi) = (0usize, 0usize);
        let mut group = None;
        // The first event of the current group.
        let mut first = 0usize;
        for &(k, row) in &self.rows {
            let (g, t) = (key_group(k), key_time(k));
            let changed = group != Some(g);
            if changed {
                group = Some(g);
                while hi < self.ev.len() && key_group(self.ev[hi]) < g {
                    hi += 1;
                }
                lo = hi;
                first = hi;
            }
            while hi < self.ev.len() && key_group(self.ev[hi]) == g && key_time(self.ev[hi]) <= t {
                hi += 1;
            }
            match w.horizon(t) {
                Some(from) => {
                    while lo < hi && key_time(self.ev[lo]) <= from {
                        lo += 1;
                    }
                }
                // The session of the latest event, if it has not ended by `t`. Sessions only
                // start later as `t` grows, so `lo` still only moves forward.
                None => {
                    let active =
                        hi > first && t.saturating_sub(key_time(self.ev[hi - 1])) < w.micros;
                    lo = if active { starts[hi - 1] } else { hi };
                }
            }
            f(row as usize, changed, lo, hi);
        }
    }

    /// For each sorted event, the index of the first event of its session (a group's first
    /// event, or one that came `gap` or more after the one before it, starts one).
    fn session_starts(&self, gap: i64) -> Vec<usize> {
        let mut starts: Vec<usize> = Vec::with_capacity(self.ev.len());
        for i in 0..self.ev.len() {
            let same = i > 0
                && key_group(self.ev[i]) == key_group(self.ev[i - 1])
                && key_time(self.ev[i]).saturating_sub(key_time(self.ev[i - 1])) < gap;
            starts.push(if same { starts[i - 1] } else { i });
        }
        starts
    }

    /// Entity rows with at least one event within `w` before them.
    pub(crate) fn matched(&self, w: i64) -> u64 {
        let mut n = 0;
        self.walk(Window::sliding(w), |_, _, lo, hi| n += u64::from(hi > lo));
        n
    }

    /// One aggregate for every entity row, in the rows' original order.
    pub(crate) fn compute(&self, agg: &Agg<'_>) -> Result<ArrayRef, FeatureError> {
        use AggFunction as F;
        let w = agg.window;
        let Some(input) = agg.input else {
            // A count of events.
            return Ok(Arc::new(self.per_row(w, |lo, hi| Some((hi - lo) as i64))));
        };
        let valid = self.valid(input);
        let mut count = vec![0i64; valid.len() + 1];
        for (i, v) in valid.iter().enumerate() {
            count[i + 1] = count[i] + i64::from(*v);
        }
        let n = |lo: usize, hi: usize| count[hi] - count[lo];
        let ints = input.as_primitive_opt::<Int64Type>();
        let floats = input.as_primitive_opt::<Float64Type>();
        let ints_out = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let out: ArrayRef = match (agg.function, ints, floats) {
            (F::Count, _, _) => Arc::new(self.per_row(w, |lo, hi| Some(n(lo, hi)))),
            (F::CountDistinct, _, _) => Arc::new(self.count_distinct(w, input, &valid)?),
            (F::ApproxCountDistinct, _, _) => {
                Arc::new(self.approx_count_distinct(w, input, &valid))
            }
            (F::Last, _, _) => self.last(w, input, &valid)?,
            (F::Sum | F::Mean, Some(a), _) => {
                let mut sum = vec![0i128; valid.len() + 1];
                for (i, &v) in valid.iter().enumerate() {
                    let x = if v { a.value(self.perm[i] as usize) } else { 0 };
                    sum[i + 1] = sum[i] + i128::from(x);
                }
                let s = |lo: usize, hi: usize| sum[hi] - sum[lo];
                if agg.function == F::Sum {
                    // Saturates: a window sum beyond int64 is clamped, never wrapped.
                    let clamp = |x: i128| x.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
                    Arc::new(self.per_row(w, |lo, hi| (n(lo, hi) > 0).then(|| clamp(s(lo, hi)))))
                } else {
                    Arc::new(Float64Array::from(self.rows_out(w, |lo, hi| {
                        let k = n(lo, hi);
                        (k > 0).then(|| s(lo, hi) as f64 / k as f64)
                    })))
                }
            }
            (F::Min, Some(a), _) => {
                ints_out(self.swag(w, |i| MinI(a.value(i)), &valid, &n, |m, _| Some(m.0)))
            }
            (F::Max, Some(a), _) => {
                ints_out(self.swag(w, |i| MaxI(a.value(i)), &valid, &n, |m, _| Some(m.0)))
            }
            (F::Stddev, Some(a), _) => floats_out(self.swag(
                w,
                |i| Moments::of(a.value(i) as f64),
                &valid,
                &n,
                |m, _| m.stddev(),
            )),
            (F::Min, _, Some(a)) => {
                floats_out(self.swag(w, |i| MinF(a.value(i)), &valid, &n, |m, _| Some(m.0)))
            }
            (F::Max, _, Some(a)) => {
                floats_out(self.swag(w, |i| MaxF(a.value(i)), &valid, &n, |m, _| Some(m.0)))
            }
            (F::Sum, _, Some(a)) => floats_out(self.swag(
                w,
                |i| SumF::of(a.value(i)),
                &valid,
                &n,
                |m, _| Some(m.value()),
            )),
            (F::Mean, _, Some(a)) => floats_out(self.swag(
                w,
                |i| SumF::of(a.value(i)),
                &valid,
                &n,
                |m, k| Some(m.value() / k as f64),
            )),
            (F::Stddev, _, Some(a)) => floats_out(self.swag(
                w,
                |i| Moments::of(a.value(i)),
                &valid,
                &n,
                |m, _| m.stddev(),
            )),
            (f, _, _) => {
                return Err(FeatureError::BadRequest(format!(
                    "{f} cannot aggregate a column of type {}",
                    input.data_type()
                )));
            }
        };
        Ok(out)
    }

    /// Whether each sorted event has a value: not null and, for floats, finite (NaN and
    /// infinities are skipped like nulls; they would poison every window they entered).
    fn valid(&self, input: &ArrayRef) -> Vec<bool> {
        match input.as_primitive_opt::<Float64Type>() {
            Some(a) => self
                .perm
                .iter()
                .map(|&i| a.is_valid(i as usize) && a.value(i as usize).is_finite())
                .collect(),
            None => self
                .perm
                .iter()
                .map(|&i| input.is_valid(i as usize))
                .collect(),
        }
    }

    /// `value(lo, hi)` for every entity row; rows without a key or a timestamp get null.
    fn rows_out<T: Clone>(
        &self,
        w: Window,
        mut value: impl FnMut(usize, usize) -> Option<T>,
    ) -> Vec<Option<T>> {
        let mut out: Vec<Option<T>> = vec![None; self.n_rows];
        self.walk(w, |row, _, lo, hi| out[row] = value(lo, hi));
        out
    }

    fn per_row(&self, w: Window, value: impl FnMut(usize, usize) -> Option<i64>) -> Int64Array {
        Int64Array::from(self.rows_out(w, value))
    }

    /// A monoid aggregate over the valid values in each window, finished by `finish(aggregate,
    /// count)`; null where the window holds no valid value.
    fn swag<M: Monoid, T: Copy>(
        &self,
        w: Window,
        lift: impl Fn(usize) -> M,
        valid: &[bool],
        n: &dyn Fn(usize, usize) -> i64,
        finish: impl Fn(M, i64) -> Option<T>,
    ) -> Vec<Option<T>> {
        let mut stack = TwoStacks::<M>::new();
        let (mut cur_lo, mut cur_hi) = (0usize, 0usize);
        let mut out: Vec<Option<T>> = vec![None; self.n_rows];
        self.walk(w, |row, changed, lo, hi| {
            if changed {
                stack.clear();
                (cur_lo, cur_hi) = (lo, lo);
            }
            while cur_hi < hi {
                stack.push(if valid[cur_hi] {
                    lift(self.perm[cur_hi] as usize)
                } else {
                    M::IDENTITY
                });
                cur_hi += 1;
            }
            while cur_lo < lo {
                stack.pop();
                cur_lo += 1;
            }
            let k = n(lo, hi);
            if k > 0 {
                out[row] = finish(stack.query(), k);
            }
        });
        out
    }

    /// The value of the latest event in the window that has one.
    fn last(&self, w: Window, input: &ArrayRef, valid: &[bool]) -> Result<ArrayRef, FeatureError> {
        // prev[i]: the greatest j <= i with a value, as j + 1 (0 = none).
        let mut prev = vec![0usize; valid.len()];
        let mut p = 0;
        for (i, v) in valid.iter().enumerate() {
            if *v {
                p = i + 1;
            }
            prev[i] = p;
        }
        let mut pick: Vec<Option<u32>> = vec![None; self.n_rows];
        self.walk(w, |row, _, lo, hi| {
            if hi > lo && prev[hi - 1] > lo {
                pick[row] = Some(self.perm[prev[hi - 1] - 1]);
            }
        });
        take(input, &UInt32Array::from(pick), None).map_err(|e| FeatureError::internal("last", e))
    }

    /// The exact number of distinct values in each window: values numbered densely, then a
    /// count per number kept as the window slides.
    fn count_distinct(
        &self,
        w: Window,
        input: &ArrayRef,
        valid: &[bool],
    ) -> Result<Int64Array, FeatureError> {
        let ids = dense_ids(input, &self.perm)?;
        let mut counts: Vec<u32> = vec![0; ids.iter().copied().max().map_or(0, |m| m as usize + 1)];
        let mut distinct = 0i64;
        let (mut cur_lo, mut cur_hi) = (0usize, 0usize);
        let mut out: Vec<Option<i64>> = vec![None; self.n_rows];
        self.walk(w, |row, changed, lo, hi| {
            if changed {
                // Empty the previous group's window.
                while cur_lo < cur_hi {
                    if valid[cur_lo] {
                        let c = &mut counts[ids[cur_lo] as usize];
                        *c -= 1;
                        distinct -= i64::from(*c == 0);
                    }
                    cur_lo += 1;
                }
                (cur_lo, cur_hi) = (lo, lo);
            }
            while cur_hi < hi {
                if valid[cur_hi] {
                    let c = &mut counts[ids[cur_hi] as usize];
                    distinct += i64::from(*c == 0);
                    *c += 1;
                }
                cur_hi += 1;
            }
            while cur_lo < lo {
                if valid[cur_lo] {
                    let c = &mut counts[ids[cur_lo] as usize];
                    *c -= 1;
                    distinct -= i64::from(*c == 0);
                }
                cur_lo += 1;
            }
            out[row] = Some(distinct);
        });
        Ok(Int64Array::from(out))
    }
}

impl Sorted {
    /// The HyperLogLog estimate of each window's distinct values, its registers kept as the
    /// window slides ([`super::hll::Sliding`]).
    fn approx_count_distinct(&self, w: Window, input: &ArrayRef, valid: &[bool]) -> Int64Array {
        use super::hll::{Sliding, slot};
        let slots: Vec<(u16, u8)> = (0..valid.len())
            .map(|i| {
                if valid[i] {
                    slot(&value_at(input, self.perm[i] as usize))
                } else {
                    (0, 0)
                }
            })
            .collect();
        let mut regs = Sliding::default();
        let (mut cur_lo, mut cur_hi) = (0usize, 0usize);
        let mut out: Vec<Option<i64>> = vec![None; self.n_rows];
        self.walk(w, |row, changed, lo, hi| {
            if changed {
                regs.clear();
                (cur_lo, cur_hi) = (lo, lo);
            }
            while cur_hi < hi {
                if valid[cur_hi] {
                    regs.add(slots[cur_hi]);
                }
                cur_hi += 1;
            }
            while cur_lo < lo {
                if valid[cur_lo] {
                    regs.remove(slots[cur_lo]);
                }
                cur_lo += 1;
            }
            out[row] = Some(regs.estimate());
        });
        Int64Array::from(out)
    }
}

/// A dense number per sorted event's value (equal values, equal numbers), via the row format.
fn dense_ids(input: &ArrayRef, perm: &[u32]) -> Result<Vec<u32>, FeatureError> {
    let sorted = take(input, &UInt32Array::from(perm.to_vec()), None)
        .map_err(|e| FeatureError::internal("count_distinct", e))?;
    if let DataType::Int64 = sorted.data_type() {
        let a = sorted.as_primitive::<Int64Type>();
        let mut ids: HashMap<i64, u32> = HashMap::new();
        return Ok((0..a.len())
            .map(|i| {
                let next = ids.len() as u32;
                *ids.entry(a.value(i)).or_insert(next)
            })
            .collect());
    }
    let conv = RowConverter::new(vec![SortField::new(sorted.data_type().clone())])
        .map_err(|e| FeatureError::internal("count_distinct", e))?;
    let rows = conv
        .convert_columns(&[sorted])
        .map_err(|e| FeatureError::internal("count_distinct", e))?;
    let mut ids: HashMap<&[u8], u32> = HashMap::new();
    Ok((0..rows.num_rows())
        .map(|i| {
            let next = ids.len() as u32;
            *ids.entry(rows.row(i).data()).or_insert(next)
        })
        .collect())
}

fn floats_out(v: Vec<Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(v))
}
