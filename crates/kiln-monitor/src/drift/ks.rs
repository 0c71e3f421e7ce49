//! The two-sample Kolmogorov-Smirnov test ("ks", Evidently's default for numerical columns of
//! at most 1000 reference values with more than 5 distinct values): the p-value of
//! `scipy.stats.ks_2samp(reference, current)` (two-sided, method 'auto'). Drift when
//! p <= threshold (0.05).
//!
//! The statistic is one merge of the two sorted samples. The p-value is exact
//! ([`super::ks_exact`]) when both samples have at most 10,000 values, else asymptotic:
//! the one-sample distribution at n = round(m n / (m + n)) ([`super::kolmogorov`]).

use super::kolmogorov::kstwo_sf;
use super::ks_exact::{exact_p, gcd};

/// SciPy's `MAX_AUTO_N`: above it (in either sample) 'auto' is asymptotic.
const MAX_AUTO_N: usize = 10_000;

/// D = sup |F_ref - F_cur| of two sorted samples, with the float arithmetic SciPy uses
/// (`i/n1 - j/n2` at every observed value, the larger of the positive and negative sides).
pub fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut max = f64::NEG_INFINITY;
    let mut min = f64::INFINITY;
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max = max.max(diff);
        min = min.min(diff);
    }
    let min_s = (-min).clamp(0.0, 1.0);
    if min_s > max { min_s } else { max }
}

/// The p-value for statistic `d` of samples of sizes `n1` and `n2` (both > 0).
pub fn p_value(n1: usize, n2: usize, d: f64) -> f64 {
    let mut d = d;
    if n1.max(n2) <= MAX_AUTO_N {
        let (a, b) = (n1 as u64, n2 as u64);
        let lcm = (a / gcd(a, b)) * b;
        let h = (d * lcm as f64).round_ties_even();
        d = h / lcm as f64;
        if let Some(p) = exact_p(a, b, h as u64) {
            return p.clamp(0.0, 1.0);
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    kstwo_sf(en.round_ties_even() as u64, d).clamp(0.0, 1.0)
}

/// `ks_2samp(a, b).pvalue` for two sorted, non-empty samples.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> f64 {
    p_value(a.len(), b.len(), statistic(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// D by its definition: the largest |F_a(x) - F_b(x)| over every observed x.
    fn brute_statistic(a: &[f64], b: &[f64]) -> f64 {
        let cdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
        a.iter()
            .chain(b)
            .map(|&x| (cdf(a, x) - cdf(b, x)).abs())
            .fold(0.0, f64::max)
    }

    proptest! {
        #[test]
        fn statistic_matches_definition(
            mut a in proptest::collection::vec(-20i32..20, 1..60),
            mut b in proptest::collection::vec(-20i32..20, 1..60),
        ) {
            a.sort_unstable();
            b.sort_unstable();
            let a: Vec<f64> = a.into_iter().map(f64::from).collect();
            let b: Vec<f64> = b.into_iter().map(f64::from).collect();
            let d = statistic(&a, &b);
            prop_assert!((d - brute_statistic(&a, &b)).abs() < 1e-12);
        }
    }

    #[test]
    fn identical_samples_have_p_one() {
        let a: Vec<f64> = (0..50).map(f64::from).collect();
        assert_eq!(ks_2samp(&a, &a), 1.0);
    }
}
