//! The two-proportion Z-test ("z", Evidently's default for at most 1000 reference values when
//! a column has at most 2 values). Drift when p < threshold (0.05).
//!
//! The smallest value of the union (Python's `sorted` order) is "0", every other value "1";
//! z = (p1 - p2) / √(P (1 - P) (1/n1 + 1/n2)) with the pooled proportion P, and
//! p = 2 (1 - Φ(|z|)) — formed exactly so, with SciPy's Φ, so p is 0 once Φ(|z|) rounds to 1
//! (|z| above about 8.3). When both sides hold one and the same value, p = 1.

use super::sample::KeyCounts;
use super::special::ndtr;

pub fn z_test_p(c: &KeyCounts) -> f64 {
    let only = |counts: &[u64]| {
        let mut present = counts.iter().enumerate().filter(|(_, n)| **n > 0);
        match (present.next(), present.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };
    if let (Some(a), Some(b)) = (only(&c.reference), only(&c.current))
        && a == b
    {
        return 1.0;
    }
    let (n1, n2) = (c.n_ref as f64, c.n_cur as f64);
    // Counts of "1" (anything but the first key).
    let s1 = (c.n_ref - c.reference.first().copied().unwrap_or(0)) as f64;
    let s2 = (c.n_cur - c.current.first().copied().unwrap_or(0)) as f64;
    let p1 = s1 / n1;
    let p2 = s2 / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - ndtr(z.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::sample::NumericKind;

    #[test]
    fn same_single_value_is_p_one() {
        let c = KeyCounts::numbers(&[(1.0, 5)], &[(1.0, 9)], NumericKind::Bool);
        assert_eq!(z_test_p(&c), 1.0);
    }

    #[test]
    fn known_value() {
        // 30/100 vs 45/100: pooled 0.375, z = -0.15 / sqrt(0.375 * 0.625 * 0.02).
        let c = KeyCounts::numbers(
            &[(0.0, 70), (1.0, 30)],
            &[(0.0, 55), (1.0, 45)],
            NumericKind::Bool,
        );
        let z: f64 = -0.15 / (0.375f64 * 0.625 * 0.02).sqrt();
        let expect = 2.0 * (1.0 - ndtr(z.abs()));
        assert_eq!(z_test_p(&c), expect);
        assert!((expect - 0.028_459_736_916_310_4).abs() < 1e-6);
    }
}
