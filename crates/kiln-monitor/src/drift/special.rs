//! The special functions behind the p-values, accurate to a relative 1e-9 or better down to the
//! smallest normal double: the standard normal CDF formed the way SciPy's `ndtr` forms it (the
//! Z-test subtracts it from 1, so it has to be the same double), ln Γ, the regularized upper
//! incomplete gamma function Q(a, x) (the chi-square survival function) and a compensated sum.
//!
//! Where SciPy flushes a result to zero (Q's prefactor below e^-709.78) we do the same, so a
//! p-value that is exactly 0.0 there is 0.0 here.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// ln(2π) / 2.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;
/// Cephes' MAXLOG: `exp` of anything below -MAXLOG is flushed to 0 by `igamc`.
const MAXLOG: f64 = 709.782_712_893_384;

/// The standard normal CDF, Φ(a), as SciPy's `ndtr` forms it: `0.5 + 0.5 erf(a/√2)` near 0,
/// else `0.5 erfc(|a|/√2)` (subtracted from 1 for positive `a`).
pub fn ndtr(a: f64) -> f64 {
    let x = a * FRAC_1_SQRT_2;
    let z = x.abs();
    if z < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        let y = 0.5 * libm::erfc(z);
        if x > 0.0 { 1.0 - y } else { y }
    }
}

/// ln Γ(a) for a > 0: Stirling's series from 10 up, the recurrence below.
pub fn ln_gamma(a: f64) -> f64 {
    if a < 10.0 {
        let mut shift = 1.0;
        let mut b = a;
        while b < 10.0 {
            shift *= b;
            b += 1.0;
        }
        return ln_gamma(b) - shift.ln();
    }
    (a - 0.5) * a.ln() - a + HALF_LN_2PI + stirling_correction(a)
}

/// ln Γ(a) - [(a - 1/2) ln a - a + ln √(2π)] for a >= 10 (Stirling's series, 7 terms: the
/// next term is below 1e-17 there).
fn stirling_correction(a: f64) -> f64 {
    let r = 1.0 / a;
    let r2 = r * r;
    // B_2k / (2k (2k - 1)) for k = 1..7
    const C: [f64; 7] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
    ];
    let mut acc = 0.0;
    for c in C.iter().rev() {
        acc = acc * r2 + c;
    }
    acc * r
}

/// ln(1 + u) - u, without the cancellation of the naive form for small |u|.
fn ln1p_minus(u: f64) -> f64 {
    if u.abs() < 0.5 {
        // -u^2/2 + u^3/3 - u^4/4 + ...
        let mut term = -u;
        let mut sum = 0.0;
        let mut k = 2.0;
        loop {
            term *= -u;
            let add = term / k;
            sum += add;
            if add.abs() <= sum.abs() * 1e-17 || k > 200.0 {
                break;
            }
            k += 1.0;
        }
        -sum
    } else {
        u.ln_1p() - u
    }
}

/// ln(x^a e^-x / Γ(a)), the prefactor of both incomplete gamma functions.
fn ln_gamma_prefactor(a: f64, x: f64) -> f64 {
    if a >= 10.0 {
        // a ln x - x - ln Γ(a) = a (ln(1+u) - u) + ln(a)/2 - ln √(2π) - correction, u = (x-a)/a:
        // no cancellation between two large terms when x is close to a.
        let u = (x - a) / a;
        a * ln1p_minus(u) + 0.5 * a.ln() - HALF_LN_2PI - stirling_correction(a)
    } else {
        a * x.ln() - x - ln_gamma(a)
    }
}

/// The regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a), a > 0, x >= 0.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x.is_nan() || a.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    let ln_pre = ln_gamma_prefactor(a, x);
    if x < a + 1.0 {
        // P by its power series, Q = 1 - P (Q is not small here).
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut n = 1.0;
        while n < 100_000.0 {
            term *= x / (a + n);
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
            n += 1.0;
        }
        return 1.0 - sum * ln_pre.exp();
    }
    if ln_pre < -MAXLOG {
        // SciPy (cephes `igam_fac`) flushes the prefactor, and so Q, to 0 here.
        return 0.0;
    }
    // Q by its continued fraction (modified Lentz).
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    let mut i = 1.0;
    while i < 100_000.0 {
        let an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
        i += 1.0;
    }
    ln_pre.exp() * h
}

/// The chi-square survival function (SciPy's `chdtrc`): Q(df/2, x/2).
pub fn chi2_sf(df: f64, x: f64) -> f64 {
    if x < 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// ln n! / n^n (for the Ruben-Gambino tail of the Kolmogorov distribution).
pub fn ln_factorial_over_power(n: f64) -> f64 {
    ln_gamma(n + 1.0) - n * n.ln()
}

/// Neumaier's compensated sum: the result is within about one rounding of the exact sum,
/// whatever the order, so it agrees with NumPy's pairwise sum to its own rounding error.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sum {
    sum: f64,
    comp: f64,
}

impl Sum {
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

impl FromIterator<f64> for Sum {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Sum {
        let mut s = Sum::default();
        for x in iter {
            s.add(x);
        }
        s
    }
}

/// √(2π).
pub const SQRT_2PI: f64 = 2.506_628_274_631_000_7;
/// π².
pub const PI_SQUARED: f64 = PI * PI;

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        if a == b { 0.0 } else { (a - b).abs() / b.abs() }
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0f64;
        for n in 1..60u32 {
            // Γ(n + 1) = n!
            f *= f64::from(n);
            let (got, want) = (ln_gamma(f64::from(n) + 1.0), f.ln());
            assert!((got - want).abs() < 1e-14 * want.abs().max(1.0), "n = {n}");
        }
        // Γ(1/2) = √π
        assert!(rel(ln_gamma(0.5), 0.5 * PI.ln()) < 1e-14);
    }

    #[test]
    fn gamma_q_closed_forms() {
        // Q(1, x) = e^-x; Q(1/2, x) = erfc(√x).
        for &x in &[0.01, 0.5, 1.0, 3.0, 10.0, 50.0, 300.0, 700.0] {
            assert!(rel(gamma_q(1.0, x), (-x).exp()) < 1e-13, "Q(1, {x})");
            assert!(
                rel(gamma_q(0.5, x), libm::erfc(x.sqrt())) < 1e-12,
                "Q(1/2, {x})"
            );
        }
        // Q(n, x) = e^-x sum_{k<n} x^k / k! for integer n.
        for &(n, x) in &[(5u32, 2.0), (5, 20.0), (30, 25.0), (30, 60.0), (200, 250.0)] {
            let mut term = 1.0f64;
            let mut s = 1.0;
            for k in 1..n {
                term *= x / f64::from(k);
                s += term;
            }
            let expect = (s.ln() - x).exp();
            assert!(rel(gamma_q(f64::from(n), x), expect) < 1e-11, "Q({n}, {x})");
        }
    }

    #[test]
    fn ndtr_tails() {
        assert_eq!(ndtr(0.0), 0.5);
        assert!(rel(ndtr(-10.0), 7.619_853_024_160_526e-24) < 1e-13);
        assert!((ndtr(1.959_963_984_540_054) - 0.975).abs() < 1e-15);
    }

    #[test]
    fn compensated_sum_is_exact_on_cancellation() {
        let s: Sum = [1e16, 1.0, -1e16, 1.0].into_iter().collect();
        assert_eq!(s.value(), 2.0);
    }
}
