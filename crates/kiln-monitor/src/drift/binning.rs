//! Evidently's `get_binned_data`, the shares PSI and Jensen-Shannon compare:
//!
//! * a numerical column whose *reference* has more than 20 distinct values: NumPy's
//!   'sturges' bins over both samples together — equal-width edges from the joint minimum to
//!   the joint maximum, ⌈range / (range / (log2(n) + 1))⌉ bins (width at least 1 when both
//!   sides are integers), edges `i * step + min` with the last edge exactly the maximum; bins
//!   are closed on the left, the last one on both sides;
//! * anything else: one bin per value of the union of both sides.
//!
//! Shares are counts divided by each side's size. PSI then replaces zero shares (per side) by
//! min(nonzero share)/1e6 when that minimum is at most 1e-4, else by 1e-4.

use super::sample::{KeyCounts, NumericKind, NumericSample};

/// Reference values (distinct) above which a numerical column is binned by 'sturges'.
pub const HISTOGRAM_ABOVE: usize = 20;

/// NumPy's `histogram_bin_edges(concat(a, b), bins='sturges')` for two sorted samples.
pub fn sturges_edges(a: &NumericSample, b: &NumericSample) -> Vec<f64> {
    let (Some(amin), Some(bmin), Some(amax), Some(bmax)) = (a.min(), b.min(), a.max(), b.max())
    else {
        return vec![0.0, 1.0];
    };
    let (mut first, mut last) = (amin.min(bmin), amax.max(bmax));
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let n = (a.len() + b.len()) as f64;
    let ptp = last - first;
    let mut width = ptp / (n.log2() + 1.0);
    let integer = a.kind == NumericKind::Int && b.kind == NumericKind::Int;
    if integer && width < 1.0 {
        width = 1.0;
    }
    let bins = if width > 0.0 {
        (ptp / width).ceil() as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

/// `np.linspace(start, stop, num)` (endpoint included): `i * step + start`, last = `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(l) = v.last_mut() {
        *l = stop;
    }
    v
}

/// Counts of a sorted sample in `edges`' bins (NumPy's `histogram` with explicit edges).
pub fn bin_counts(sorted: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut cum: Vec<usize> = edges[..edges.len() - 1]
        .iter()
        .map(|&e| sorted.partition_point(|&v| v < e))
        .collect();
    if let Some(&e) = edges.last() {
        cum.push(sorted.partition_point(|&v| v <= e));
    }
    cum.windows(2).map(|w| (w[1] - w[0]) as u64).collect()
}

/// Shares of each side, binned as Evidently bins them for PSI and Jensen-Shannon.
pub enum Binned<'a> {
    /// Numerical with more than 20 reference values.
    Histogram(&'a NumericSample, &'a NumericSample),
    /// One bin per value.
    Values(&'a KeyCounts),
}

pub fn shares(binned: Binned<'_>) -> (Vec<f64>, Vec<f64>) {
    match binned {
        Binned::Histogram(a, b) => {
            let edges = sturges_edges(a, b);
            let (na, nb) = (a.len() as f64, b.len() as f64);
            (
                bin_counts(&a.sorted, &edges)
                    .into_iter()
                    .map(|c| c as f64 / na)
                    .collect(),
                bin_counts(&b.sorted, &edges)
                    .into_iter()
                    .map(|c| c as f64 / nb)
                    .collect(),
            )
        }
        Binned::Values(k) => k.shares(),
    }
}

/// PSI's zero replacement, in place.
pub fn fill_zeros(shares: &mut [f64]) {
    let min = shares
        .iter()
        .copied()
        .filter(|&s| s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return;
    }
    let fill = if min <= 0.0001 { min / 1e6 } else { 0.0001 };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = fill;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_like_numpy() {
        // np.histogram_bin_edges(np.arange(100.0), 'sturges'): 8 bins of 99/8.
        let a = NumericSample::from_floats(&(0..60).map(f64::from).collect::<Vec<_>>());
        let b = NumericSample::from_floats(&(60..100).map(f64::from).collect::<Vec<_>>());
        let e = sturges_edges(&a, &b);
        assert_eq!(e.len(), 9);
        assert_eq!(e[1], 12.375);
        assert_eq!(e[8], 99.0);
        let counts = bin_counts(&a.sorted, &e);
        assert_eq!(counts.iter().sum::<u64>(), 60);
        assert_eq!(counts[0], 13); // 0..=12
    }

    #[test]
    fn last_bin_is_closed() {
        assert_eq!(
            bin_counts(&[0.0, 1.0, 2.0, 2.0], &[0.0, 1.0, 2.0]),
            vec![1, 3]
        );
    }

    #[test]
    fn zero_fill_rule() {
        let mut s = [0.5, 0.0, 0.5];
        fill_zeros(&mut s);
        assert_eq!(s[1], 0.0001);
        let mut t = [0.99995, 0.0, 0.00005];
        fill_zeros(&mut t);
        assert_eq!(t[1], 0.00005 / 1e6);
    }
}
