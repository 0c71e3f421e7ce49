//! The population stability index ("psi", chosen explicitly: Evidently's `method="psi"`):
//! Σ (ref - cur) ln(ref / cur) over the shares of [`super::binning`], zero shares replaced as
//! Evidently replaces them. Drift when PSI >= threshold (0.1).

use super::binning::fill_zeros;
use super::special::Sum;

pub fn psi(mut reference: Vec<f64>, mut current: Vec<f64>) -> f64 {
    fill_zeros(&mut reference);
    fill_zeros(&mut current);
    reference
        .iter()
        .zip(&current)
        .map(|(&r, &c)| (r - c) * (r / c).ln())
        .collect::<Sum>()
        .value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_zero_and_shift_is_positive() {
        assert_eq!(psi(vec![0.25; 4], vec![0.25; 4]), 0.0);
        let p = psi(vec![0.5, 0.5, 0.0], vec![0.0, 0.5, 0.5]);
        // zeros -> 1e-4 on each side: 2 * (0.5 - 1e-4) ln(0.5 / 1e-4)
        let expect = 2.0 * (0.5f64 - 1e-4) * (0.5f64 / 1e-4).ln();
        assert!((p - expect).abs() < 1e-12);
    }
}
