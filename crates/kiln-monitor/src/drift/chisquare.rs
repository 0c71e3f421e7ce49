//! Pearson's chi-square test of the current counts against the reference proportions
//! ("chisquare", Evidently's default for at most 1000 reference values when a categorical
//! column has more than 2 values, or a numerical one 3 to 5). Drift when p < threshold (0.05).
//!
//! Over the union of both sides' values: expected = reference count x (current size /
//! reference size), observed = current count, statistic = Σ (observed - expected)² / expected,
//! p = Q((k - 1)/2, statistic/2). A value the reference never had has expected 0, so the
//! statistic is infinite and p = 0: an unseen category is drift.

use super::sample::KeyCounts;
use super::special::{Sum, chi2_sf};

/// The p-value of `scipy.stats.chisquare(f_obs, f_exp)` as Evidently builds the two lists.
pub fn chisquare_p(c: &KeyCounts) -> f64 {
    let k_norm = c.n_cur as f64 / c.n_ref as f64;
    let mut stat = Sum::default();
    for (&r, &o) in c.reference.iter().zip(&c.current) {
        let expected = r as f64 * k_norm;
        if expected == 0.0 {
            return chi2_sf((c.reference.len() - 1) as f64, f64::INFINITY);
        }
        let diff = o as f64 - expected;
        stat.add(diff * diff / expected);
    }
    chi2_sf((c.reference.len() - 1) as f64, stat.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::sample::NumericKind;

    #[test]
    fn textbook_value() {
        // Observed 10, 20, 30 against equal reference proportions: statistic 10, df 2,
        // p = exp(-5).
        let c = KeyCounts::numbers(
            &[(1.0, 5), (2.0, 5), (3.0, 5)],
            &[(1.0, 10), (2.0, 20), (3.0, 30)],
            NumericKind::Int,
        );
        assert!((chisquare_p(&c) - (-5.0f64).exp()).abs() < 1e-15);
    }

    #[test]
    fn unseen_value_is_p_zero() {
        let c = KeyCounts::numbers(
            &[(1.0, 5), (2.0, 5)],
            &[(1.0, 5), (2.0, 4), (3.0, 1)],
            NumericKind::Int,
        );
        assert_eq!(chisquare_p(&c), 0.0);
    }
}
