//! The Jensen-Shannon distance ("jensenshannon", Evidently's default for more than 1000
//! reference values when a categorical column, or a numerical one with at most 5 values, is
//! compared). Drift when the distance >= 0.1.
//!
//! `scipy.spatial.distance.jensenshannon(p, q)` with the natural log: each side normalized to
//! sum 1, m = (p + q)/2, distance = √((KL(p‖m) + KL(q‖m)) / 2). Evidently passes the shares of
//! each value of the union (zeros kept: 0 ln 0 = 0), or, for a forced JS on a numerical column
//! with more than 20 reference values, the shares of the PSI histogram bins.

use super::special::Sum;

/// `x ln(x / y)`, 0 for x = 0 (SciPy's `rel_entr` on the values that occur here).
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

pub fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let sp = p.iter().copied().collect::<Sum>().value();
    let sq = q.iter().copied().collect::<Sum>().value();
    let mut left = Sum::default();
    let mut right = Sum::default();
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        left.add(rel_entr(a, m));
        right.add(rel_entr(b, m));
    }
    ((left.value() + right.value()) / 2.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_supports_give_sqrt_ln_2() {
        let d = js_distance(&[1.0, 0.0], &[0.0, 1.0]);
        assert!((d - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn identical_is_zero() {
        assert_eq!(js_distance(&[0.2, 0.3, 0.5], &[0.2, 0.3, 0.5]), 0.0);
    }
}
