//! One walk over both sorted samples of a numeric column, giving everything the numerical
//! tests and the test choice need at once: the number of distinct values of both sides
//! together, the KS statistic and the first Wasserstein distance. The arithmetic is the same
//! as [`super::ks::statistic`] and [`super::wasserstein::wasserstein_distance`] (tested equal
//! to the bit); fusing them halves the passes over two million values.
//!
//! When the test will not be KS (a reference of more than 1000 values, the common case),
//! [`unique_and_w1`] walks faster: it takes one value at a time, choosing the side with a
//! conditional move instead of a branch (which sample holds the next value is a coin toss
//! that a branch predictor loses half the time), and does the arithmetic only where the value
//! changes. It gives the same `n_unique` and the same `w1` to the bit: |F_a - F_b| keeps
//! SciPy's two divisions, whose rounding (where F_a and F_b nearly cancel) is what Evidently
//! reports.

use super::sample::NumericSample;
use super::special::Sum;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergeStats {
    /// Distinct values of both samples together.
    pub n_unique: usize,
    /// sup |F_a - F_b|.
    pub ks_d: f64,
    /// ∫ |F_a - F_b|.
    pub w1: f64,
}

/// The running state of the walk: cumulative counts, the extremes of F_a - F_b, W1 so far.
struct Walk {
    n1: f64,
    n2: f64,
    ca: u64,
    cb: u64,
    max: f64,
    min: f64,
    w1: Sum,
    prev: Option<(f64, f64)>,
    n_unique: usize,
}

impl Walk {
    fn new(a: &NumericSample, b: &NumericSample) -> Walk {
        Walk {
            n1: a.len() as f64,
            n2: b.len() as f64,
            ca: 0,
            cb: 0,
            max: f64::NEG_INFINITY,
            min: f64::INFINITY,
            w1: Sum::default(),
            prev: None,
            n_unique: 0,
        }
    }

    /// After all values <= `v` of both sides are counted.
    #[inline]
    fn step(&mut self, v: f64) {
        self.n_unique += 1;
        let diff = self.ca as f64 / self.n1 - self.cb as f64 / self.n2;
        self.max = self.max.max(diff);
        self.min = self.min.min(diff);
        if let Some((pv, gap)) = self.prev {
            self.w1.add(gap * (v - pv));
        }
        self.prev = Some((v, diff.abs()));
    }

    fn finish(self) -> MergeStats {
        let min_s = (-self.min).clamp(0.0, 1.0);
        MergeStats {
            n_unique: self.n_unique,
            ks_d: if min_s > self.max { min_s } else { self.max },
            w1: self.w1.value(),
        }
    }
}

/// Walks two non-empty samples in ascending order, one step per distinct value.
pub fn merge_stats(a: &NumericSample, b: &NumericSample) -> MergeStats {
    let mut w = Walk::new(a, b);
    if a.has_runs() && b.has_runs() {
        walk_runs(&mut w, a, b);
    } else {
        walk_sorted(&mut w, &a.sorted, &b.sorted);
    }
    w.finish()
}

/// Few distinct values on both sides: walk the (value, count) runs.
fn walk_runs(w: &mut Walk, a: &NumericSample, b: &NumericSample) {
    let mut ra = a.run_iter().peekable();
    let mut rb = b.run_iter().peekable();
    loop {
        let v = match (ra.peek(), rb.peek()) {
            (Some(x), Some(y)) => x.0.min(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => break,
        };
        if let Some(&(x, c)) = ra.peek()
            && x == v
        {
            w.ca += c;
            ra.next();
        }
        if let Some(&(y, c)) = rb.peek()
            && y == v
        {
            w.cb += c;
            rb.next();
        }
        w.step(v);
    }
}

/// The general case: walk the sorted values, skipping over equal ones.
fn walk_sorted(w: &mut Walk, a: &[f64], b: &[f64]) {
    let (na, nb) = (a.len(), b.len());
    let (mut i, mut j) = (0usize, 0usize);
    while i < na || j < nb {
        let v = if j == nb || (i < na && a[i] <= b[j]) {
            a[i]
        } else {
            b[j]
        };
        while i < na && a[i] == v {
            i += 1;
        }
        while j < nb && b[j] == v {
            j += 1;
        }
        w.ca = i as u64;
        w.cb = j as u64;
        w.step(v);
    }
}

/// `n_unique` and `w1` of [`MergeStats`], without the KS statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UniqueW1 {
    pub n_unique: usize,
    pub w1: f64,
}

/// [`merge_stats`] less the KS statistic, for two non-empty samples (see the module docs).
pub fn unique_and_w1(a: &NumericSample, b: &NumericSample) -> UniqueW1 {
    if a.has_runs() && b.has_runs() {
        let m = merge_stats(a, b);
        return UniqueW1 {
            n_unique: m.n_unique,
            w1: m.w1,
        };
    }
    walk_unique_w1(&a.sorted, &b.sorted)
}

/// The fast walk over two sorted, non-empty samples.
fn walk_unique_w1(a: &[f64], b: &[f64]) -> UniqueW1 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    // `prev` is the last distinct value seen; (i, j) count the values up to and including it
    // once the next value differs. Equal values are skipped, so each term is the fused
    // walk's: |F_a - F_b| just after a value times the distance to the next one.
    let mut prev = a[0].min(b[0]);
    let mut n_unique = 1usize;
    let mut w1 = Sum::default();
    let mut step = |v: f64, i: usize, j: usize| {
        if v != prev {
            let gap = (i as f64 / n1 - j as f64 / n2).abs();
            w1.add(gap * (v - prev));
            n_unique += 1;
            prev = v;
        }
    };
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let take_a = x <= y;
        let v = if take_a { x } else { y };
        step(v, i, j);
        i += usize::from(take_a);
        j += usize::from(!take_a);
    }
    for &v in &a[i..] {
        step(v, i, j);
        i += 1;
    }
    for &v in &b[j..] {
        step(v, i, j);
        j += 1;
    }
    UniqueW1 {
        n_unique,
        w1: w1.value(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::ks::statistic;
    use crate::drift::wasserstein::wasserstein_distance;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fused_walk_equals_the_separate_definitions(
            a in proptest::collection::vec(-30i32..30, 1..300),
            b in proptest::collection::vec(-30i32..30, 1..300),
            scale in prop_oneof![Just(1.0), Just(0.37)],
        ) {
            // Few distinct values (runs cached) and many (scanned) alike.
            let a: Vec<f64> = a.into_iter().map(|x| f64::from(x) * scale).collect();
            let b: Vec<f64> = b.into_iter().map(|x| f64::from(x) * scale * 1.5).collect();
            let (sa, sb) = (NumericSample::from_floats(&a), NumericSample::from_floats(&b));
            let m = merge_stats(&sa, &sb);
            let mut all: Vec<u64> = a.iter().chain(&b).map(|x| x.to_bits()).collect();
            all.sort_unstable();
            all.dedup();
            prop_assert_eq!(m.n_unique, all.len());
            prop_assert_eq!(m.ks_d.to_bits(), statistic(&sa.sorted, &sb.sorted).to_bits());
            let w = wasserstein_distance(&sa.sorted, &sb.sorted);
            prop_assert!((m.w1 - w).abs() <= 1e-15 * w.max(1.0));
        }

        #[test]
        fn fast_walk_equals_the_fused_one(
            a in proptest::collection::vec(-300i32..300, 1..200),
            b in proptest::collection::vec(-300i32..300, 1..200),
            scale in prop_oneof![Just(1.0), Just(0.37), Just(1e-3)],
            repeat in 1usize..20,
        ) {
            // Many distinct values (each side sorted, not counted), with and without ties
            // within and across the sides.
            let a: Vec<f64> = a.iter().flat_map(|&x| std::iter::repeat_n(f64::from(x) * scale, repeat)).collect();
            let b: Vec<f64> = b.into_iter().map(|x| f64::from(x) * scale * 1.5).collect();
            let (sa, sb) = (NumericSample::from_floats(&a), NumericSample::from_floats(&b));
            let m = merge_stats(&sa, &sb);
            let f = walk_unique_w1(&sa.sorted, &sb.sorted);
            prop_assert_eq!(f.n_unique, m.n_unique);
            prop_assert_eq!(f.w1.to_bits(), m.w1.to_bits());
        }
    }
}
