//! The first Wasserstein distance divided by the reference's population standard deviation
//! (floored at 0.001): "wasserstein", Evidently's default for numerical columns with more
//! than 1000 reference values and more than 5 distinct values. Drift when the score >= 0.1.
//!
//! W1 = ∫ |F_ref - F_cur| = Σ over consecutive distinct values of both samples of
//! |F_ref(v) - F_cur(v)| (v' - v): one merge of the two sorted samples, summed with
//! compensation (SciPy forms the same terms and sums them with a dot product).

use super::special::Sum;

/// W1 between two sorted, non-empty samples.
pub fn wasserstein_distance(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut sum = Sum::default();
    let mut prev: Option<(f64, f64)> = None; // (value, |F_a - F_b| just after it)
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        if let Some((pv, gap)) = prev {
            sum.add(gap * (v - pv));
        }
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        prev = Some((v, (i as f64 / n1 - j as f64 / n2).abs()));
    }
    sum.value()
}

/// NumPy's `np.std` (population: divided by n), with compensated sums.
pub fn population_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().copied().collect::<Sum>().value() / n;
    let ss: Sum = values.iter().map(|&v| (v - mean) * (v - mean)).collect();
    (ss.value() / n).sqrt()
}

/// Evidently's score: W1 / max(std(reference), 0.001).
pub fn wasserstein_norm(reference: &[f64], current: &[f64], reference_std: f64) -> f64 {
    wasserstein_distance(reference, current) / reference_std.max(0.001)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// W1 by its definition for equal-size samples: the mean |a_(i) - b_(i)| of the sorted
    /// samples (the optimal coupling pairs order statistics).
    fn equal_size(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
    }

    /// W1 by integrating |F_a - F_b| over a fine grid of the exact step functions.
    fn by_integration(a: &[f64], b: &[f64]) -> f64 {
        let mut pts: Vec<f64> = a.iter().chain(b).copied().collect();
        pts.sort_unstable_by(f64::total_cmp);
        pts.dedup();
        let cdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
        pts.windows(2)
            .map(|w| (cdf(a, w[0]) - cdf(b, w[0])).abs() * (w[1] - w[0]))
            .sum()
    }

    proptest! {
        #[test]
        fn matches_order_statistics(mut v in proptest::collection::vec((-1e3f64..1e3, -1e3f64..1e3), 1..80)) {
            v.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
            let mut a: Vec<f64> = v.iter().map(|p| p.0).collect();
            let mut b: Vec<f64> = v.iter().map(|p| p.1).collect();
            a.sort_unstable_by(f64::total_cmp);
            b.sort_unstable_by(f64::total_cmp);
            let w = wasserstein_distance(&a, &b);
            let e = equal_size(&a, &b);
            prop_assert!((w - e).abs() <= 1e-9 * e.max(1.0), "{} vs {}", w, e);
        }

        #[test]
        fn matches_integration_for_unequal_sizes(
            mut a in proptest::collection::vec(-50i32..50, 1..40),
            mut b in proptest::collection::vec(-50i32..50, 1..70),
        ) {
            a.sort_unstable();
            b.sort_unstable();
            let a: Vec<f64> = a.into_iter().map(f64::from).collect();
            let b: Vec<f64> = b.into_iter().map(f64::from).collect();
            let w = wasserstein_distance(&a, &b);
            let e = by_integration(&a, &b);
            prop_assert!((w - e).abs() <= 1e-12 * e.max(1.0));
        }
    }

    #[test]
    fn std_is_population() {
        assert!((population_std(&[1.0, 2.0, 3.0, 4.0]) - 1.25f64.sqrt()).abs() < 1e-15);
    }
}
