//! One side of a column reduced to what the tests read: numbers as a sorted array (plus their
//! runs of equal values when there are few), strings as sorted (label, count) pairs; and the
//! two sides' counts aligned over the union of their values ([`KeyCounts`]).
//!
//! Missing values are dropped here, as Evidently drops them: NaN and ±inf for numbers, null
//! for strings. `-0.0` becomes `0.0` (pandas counts them as one value).

use std::borrow::Cow;
use std::cmp::Ordering;

use super::dataset::Strings;
use super::sort::{from_key, to_key};

/// The source type of a numeric sample (it decides typing, bin edges and labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericKind {
    Float,
    Int,
    Bool,
}

/// Up to this many distinct values a column is counted in one pass (a hash table that stays
/// in cache) instead of sorted: counting a million values is several times cheaper than
/// sorting them, and columns of prices on a grid, ages or small counts are common.
const FEW: usize = 4096;

/// Finite values of one side, sorted.
#[derive(Debug, Clone)]
pub struct NumericSample {
    pub sorted: Vec<f64>,
    pub distinct: usize,
    pub kind: NumericKind,
    /// Values dropped as missing (NaN, ±inf).
    pub missing: usize,
    runs: Option<Vec<(f64, u64)>>,
}

impl NumericSample {
    pub fn from_floats(values: &[f64]) -> NumericSample {
        // `+ 0.0` turns -0.0 into 0.0.
        let keys: Vec<u64> = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| to_key(v + 0.0))
            .collect();
        let missing = values.len() - keys.len();
        NumericSample::build(keys, NumericKind::Float, missing)
    }

    /// [`NumericSample::from_floats`] reusing the values' memory for the sorted sample.
    pub fn from_float_vec(values: Vec<f64>) -> NumericSample {
        let len = values.len();
        // Same size and alignment, so this collects in place.
        let keys: Vec<u64> = values
            .into_iter()
            .filter(|v| v.is_finite())
            .map(|v| to_key(v + 0.0))
            .collect();
        let missing = len - keys.len();
        NumericSample::build(keys, NumericKind::Float, missing)
    }

    /// [`NumericSample::from_ints`] reusing the values' memory for the sorted sample.
    pub fn from_int_vec(values: Vec<i64>) -> NumericSample {
        let keys = values.into_iter().map(|x| to_key(x as f64)).collect();
        NumericSample::build(keys, NumericKind::Int, 0)
    }

    pub fn from_ints(values: &[i64]) -> NumericSample {
        let keys = values.iter().map(|&x| to_key(x as f64)).collect();
        NumericSample::build(keys, NumericKind::Int, 0)
    }

    pub fn from_bools(values: &[bool]) -> NumericSample {
        let keys = values
            .iter()
            .map(|&b| to_key(if b { 1.0 } else { 0.0 }))
            .collect();
        NumericSample::build(keys, NumericKind::Bool, 0)
    }

    /// From the order-preserving keys of the finite values (see [`super::sort`]).
    fn build(mut keys: Vec<u64>, kind: NumericKind, missing: usize) -> NumericSample {
        if let Some(runs) = count_few(&keys) {
            // The sorted values go where the keys were.
            keys.clear();
            for &(v, c) in &runs {
                keys.resize(keys.len() + c as usize, v.to_bits());
            }
            let sorted = keys.into_iter().map(f64::from_bits).collect();
            return NumericSample {
                sorted,
                distinct: runs.len(),
                kind,
                missing,
                runs: Some(runs),
            };
        }
        keys.sort_unstable();
        let mut distinct = 0;
        let mut last = None;
        let sorted = keys
            .into_iter()
            .map(|k| {
                if last != Some(k) {
                    distinct += 1;
                    last = Some(k);
                }
                from_key(k)
            })
            .collect();
        NumericSample {
            sorted,
            distinct,
            kind,
            missing,
            runs: None,
        }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// (value, count) for each distinct value, ascending.
    pub fn runs(&self) -> Cow<'_, [(f64, u64)]> {
        match &self.runs {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned(runs_of(&self.sorted)),
        }
    }

    /// Whether the runs are at hand (few distinct values).
    pub fn has_runs(&self) -> bool {
        self.runs.is_some()
    }

    /// The runs without materializing them: the cached ones, or a scan of the sorted values.
    pub fn run_iter(&self) -> RunIter<'_> {
        match &self.runs {
            Some(r) => RunIter::Cached(r.iter()),
            None => RunIter::Scan(&self.sorted),
        }
    }

    /// Keeps the runs computed, for a sample that will be compared many times.
    pub fn cache_runs(&mut self, max_distinct: usize) {
        if self.runs.is_none() && self.distinct <= max_distinct {
            self.runs = Some(runs_of(&self.sorted));
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted.first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted.last().copied()
    }
}

fn runs_of(sorted: &[f64]) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for &v in sorted {
        match out.last_mut() {
            Some((last, c)) if *last == v => *c += 1,
            _ => out.push((v, 1)),
        }
    }
    out
}

/// Counts the keys in one pass with an open-addressing table, giving up (None) as soon as
/// there are more than [`FEW`] distinct values. The table starts small (a column of a
/// handful of values counts in L1 cache) and doubles at half load. Returns the runs sorted by
/// value.
fn count_few(keys: &[u64]) -> Option<Vec<(f64, u64)>> {
    // A slot holds (key, count); count 0 marks it free.
    let mut table = vec![(0u64, 0u64); 64];
    let mut distinct = 0;
    for &k in keys {
        if !insert(&mut table, k, 1) {
            continue;
        }
        distinct += 1;
        if distinct > FEW {
            return None;
        }
        if 2 * distinct > table.len() {
            let grown = vec![(0, 0); 2 * table.len()];
            let old = std::mem::replace(&mut table, grown);
            for (k, c) in old.into_iter().filter(|&(_, c)| c > 0) {
                insert(&mut table, k, c);
            }
        }
    }
    let mut runs: Vec<(u64, u64)> = table.into_iter().filter(|&(_, c)| c > 0).collect();
    runs.sort_unstable();
    Some(runs.into_iter().map(|(k, c)| (from_key(k), c)).collect())
}

/// Adds `count` to `key`'s slot of a power-of-two table that has a free slot; true when the
/// key was new.
fn insert(table: &mut [(u64, u64)], key: u64, count: u64) -> bool {
    let mask = table.len() - 1;
    let shift = 64 - table.len().trailing_zeros();
    let mut slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize;
    loop {
        let (k, c) = &mut table[slot];
        if *c == 0 {
            *k = key;
            *c = count;
            return true;
        }
        if *k == key {
            *c += count;
            return false;
        }
        slot = (slot + 1) & mask;
    }
}

/// Non-missing string values of one side: (label, count), sorted by label.
#[derive(Debug, Clone)]
pub struct LabelCounts {
    pub counts: Vec<(String, u64)>,
    pub total: u64,
    pub missing: usize,
}

impl LabelCounts {
    pub fn from_strings(s: &Strings) -> LabelCounts {
        let mut per_code = vec![0u64; s.labels.len()];
        let mut missing = 0;
        for &c in &s.codes {
            match per_code.get_mut(c as usize) {
                Some(n) => *n += 1,
                None => missing += 1,
            }
        }
        let mut counts: Vec<(String, u64)> = s
            .labels
            .iter()
            .zip(per_code)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (l.clone(), n))
            .collect();
        counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // A dictionary built elsewhere may repeat a label: merge.
        counts.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 += b.1;
                true
            } else {
                false
            }
        });
        let total = counts.iter().map(|(_, n)| n).sum();
        LabelCounts {
            counts,
            total,
            missing,
        }
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

/// The keys of [`KeyCounts`], ascending.
#[derive(Debug, Clone)]
pub enum Keys {
    Numbers(Vec<f64>, NumericKind),
    Labels(Vec<String>),
}

impl Keys {
    pub fn len(&self) -> usize {
        match self {
            Keys::Numbers(v, _) => v.len(),
            Keys::Labels(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key as a person reads it.
    pub fn label(&self, i: usize) -> String {
        match self {
            Keys::Numbers(v, NumericKind::Bool) => {
                if v[i] != 0.0 {
                    "True".into()
                } else {
                    "False".into()
                }
            }
            Keys::Numbers(v, _) => format!("{}", v[i]),
            Keys::Labels(v) => v[i].clone(),
        }
    }
}

/// Both sides' counts over the union of their values, in ascending key order (the order of
/// Python's `sorted` for numbers, booleans and strings alike).
#[derive(Debug, Clone)]
pub struct KeyCounts {
    pub keys: Keys,
    pub reference: Vec<u64>,
    pub current: Vec<u64>,
    pub n_ref: u64,
    pub n_cur: u64,
}

impl KeyCounts {
    pub fn numbers(a: &[(f64, u64)], b: &[(f64, u64)], kind: NumericKind) -> KeyCounts {
        let (keys, reference, current) = merge(a, b, |x, y| x.total_cmp(y));
        KeyCounts::new(Keys::Numbers(keys, kind), reference, current)
    }

    pub fn labels(a: &LabelCounts, b: &LabelCounts) -> KeyCounts {
        let (keys, reference, current) = merge(&a.counts, &b.counts, |x: &String, y| x.cmp(y));
        KeyCounts::new(Keys::Labels(keys), reference, current)
    }

    fn new(keys: Keys, reference: Vec<u64>, current: Vec<u64>) -> KeyCounts {
        let n_ref = reference.iter().sum();
        let n_cur = current.iter().sum();
        KeyCounts {
            keys,
            reference,
            current,
            n_ref,
            n_cur,
        }
    }

    /// Each side's counts divided by its total (SciPy's "percents").
    pub fn shares(&self) -> (Vec<f64>, Vec<f64>) {
        let (nr, nc) = (self.n_ref as f64, self.n_cur as f64);
        (
            self.reference.iter().map(|&c| c as f64 / nr).collect(),
            self.current.iter().map(|&c| c as f64 / nc).collect(),
        )
    }
}

type Merged<K> = (Vec<K>, Vec<u64>, Vec<u64>);

fn merge<K: Clone>(a: &[(K, u64)], b: &[(K, u64)], cmp: impl Fn(&K, &K) -> Ordering) -> Merged<K> {
    let mut keys = Vec::with_capacity(a.len().max(b.len()));
    let mut ra = Vec::with_capacity(keys.capacity());
    let mut rb = Vec::with_capacity(keys.capacity());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ord = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => cmp(&x.0, &y.0),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                keys.push(a[i].0.clone());
                ra.push(a[i].1);
                rb.push(0);
                i += 1;
            }
            Ordering::Greater => {
                keys.push(b[j].0.clone());
                ra.push(0);
                rb.push(b[j].1);
                j += 1;
            }
            Ordering::Equal => {
                keys.push(a[i].0.clone());
                ra.push(a[i].1);
                rb.push(b[j].1);
                i += 1;
                j += 1;
            }
        }
    }
    (keys, ra, rb)
}

/// (value, count) of each run of equal values, ascending.
pub enum RunIter<'a> {
    Cached(std::slice::Iter<'a, (f64, u64)>),
    Scan(&'a [f64]),
}

impl Iterator for RunIter<'_> {
    type Item = (f64, u64);

    fn next(&mut self) -> Option<(f64, u64)> {
        match self {
            RunIter::Cached(it) => it.next().copied(),
            RunIter::Scan(rest) => {
                let v = *rest.first()?;
                let n = rest.iter().take_while(|&&x| x == v).count();
                *rest = &rest[n..];
                Some((v, n as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_are_counted_not_sorted() {
        let v: Vec<f64> = (0..10_000).map(|i| f64::from(i % 7) - 3.0).collect();
        let s = NumericSample::from_floats(&v);
        assert_eq!(s.distinct, 7);
        assert!(s.sorted.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(s.runs().len(), 7);
    }

    #[test]
    fn missing_values_and_negative_zero() {
        let s = NumericSample::from_floats(&[
            f64::NAN,
            -0.0,
            0.0,
            f64::INFINITY,
            1.0,
            f64::NEG_INFINITY,
        ]);
        assert_eq!(s.missing, 3);
        assert_eq!(s.distinct, 2);
        assert_eq!(s.runs().as_ref(), &[(0.0, 2), (1.0, 1)]);
    }

    #[test]
    fn run_iter_scans_like_cached_runs() {
        let v: Vec<f64> = (0..50_000).map(|i| f64::from(i % 5000)).collect();
        let s = NumericSample::from_floats(&v);
        assert!(
            s.runs.is_none(),
            "5000 distinct values are sorted, not counted"
        );
        let scanned: Vec<_> = s.run_iter().collect();
        assert_eq!(scanned.len(), 5000);
        assert!(scanned.iter().all(|&(_, c)| c == 10));
        let v: Vec<f64> = (0..40_000).map(|i| f64::from(i % 4000)).collect();
        let counted = NumericSample::from_floats(&v);
        assert!(counted.runs.is_some(), "4000 distinct values are counted");
        assert_eq!(counted.runs().as_ref(), &scanned[..4000]);
    }

    #[test]
    fn label_counts_merge_over_union() {
        let a: Strings = [Some("b"), Some("a"), None, Some("b")]
            .into_iter()
            .collect();
        let b: Strings = [Some("c"), Some("a")].into_iter().collect();
        let (la, lb) = (LabelCounts::from_strings(&a), LabelCounts::from_strings(&b));
        assert_eq!(la.missing, 1);
        let k = KeyCounts::labels(&la, &lb);
        assert_eq!(k.reference, vec![1, 2, 0]);
        assert_eq!(k.current, vec![1, 0, 1]);
        assert_eq!(k.keys.label(2), "c");
    }
}
