//! The survival function of the one-sample two-sided Kolmogorov-Smirnov statistic D_n, which
//! SciPy's `ks_2samp` uses for its 'asymp' p-value (`kstwo.sf(d, round(m n / (m + n)))`).
//!
//! The branch structure is Simard & L'Ecuyer's (2011), with the cut-offs SciPy uses, so the
//! same formula answers each (n, x) here as there:
//!
//! * x >= 1: 0; n x <= 1/2: 1; 1/2 < n x <= 1: Ruben-Gambino, n!/n^n (2nx - 1)^n;
//!   n x >= n - 1: 2 (1 - x)^n;
//! * x >= 1/2: twice the one-sided (Smirnov) tail, which is exact there;
//! * n <= 140: Durbin's matrix (n x² <= 4; SciPy switches to Pomeranz's recursion above
//!   0.754693, which computes the same exact CDF), else twice the Smirnov tail;
//! * n > 140: n x² >= 370: 0; n x² >= 2.2: twice the Smirnov tail; else 1 - CDF with the CDF
//!   from Durbin's matrix (n <= 100000 and n x^1.5 <= 1.4) or the Pelz-Good expansion.
//!
//! Below 2.2 in n x² the survival function is above 0.02, so "1 - CDF" loses nothing that a
//! relative 1e-9 would see; above it every formula is computed in log space and keeps its
//! relative accuracy down to subnormal results.

use super::special::{PI_SQUARED, SQRT_2PI, Sum, ln_factorial_over_power, ln_gamma};

/// P(D_n >= x) for the two-sided one-sample statistic.
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    if x.is_nan() || n == 0 {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            // n!/n^n (2t - 1)^n as the running product SciPy forms.
            let c = 2.0 * t - 1.0;
            let inv = 1.0 / nf;
            (1..=n).fold(1.0, |p, i| p * (i as f64 * inv * c))
        } else {
            (ln_factorial_over_power(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - cdf);
    }
    if t >= nf - 1.0 {
        return clip(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let nxx = t * x;
    if n <= 140 {
        if nxx <= 4.0 {
            return clip(1.0 - durbin_cdf(n, x));
        }
        return clip(2.0 * smirnov_sf(n, x));
    }
    if nxx >= 370.0 {
        return 0.0;
    }
    if nxx >= 2.2 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let cdf = if nxx >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    clip(1.0 - cdf)
}

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// The one-sided tail P(D_n+ >= x) by the Birnbaum-Tingey sum
/// `x Σ_{j=0}^{⌊n(1-x)⌋} C(n, j) (1 - x - j/n)^(n-j) (x + j/n)^(j-1)`.
/// Every term is positive, so the sum is taken in log space (log-sum-exp) and keeps its
/// relative accuracy however small the result.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if n == 1 {
        return 1.0 - x;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let last = (nf * (1.0 - x)).floor() as u64;
    let ln_n_fact = ln_gamma(nf + 1.0);
    let mut logs = Vec::with_capacity(last as usize + 1);
    for j in 0..=last.min(n) {
        let jf = j as f64;
        let lower = (nf - jf) / nf - x;
        if lower <= 0.0 {
            continue;
        }
        let upper = jf / nf + x;
        let ln_binom = ln_n_fact - ln_gamma(jf + 1.0) - ln_gamma(nf - jf + 1.0);
        logs.push(ln_binom + (nf - jf) * lower.ln() + (jf - 1.0) * upper.ln());
    }
    let Some(max) = logs.iter().copied().reduce(f64::max) else {
        return 0.0;
    };
    let s: Sum = logs.iter().map(|l| (l - max).exp()).collect();
    (x.ln() + max + s.value().ln()).exp()
}

/// P(D_n < d) by Durbin's matrix method as Marsaglia, Tsang and Wang (2003) compute it:
/// the (k, k) element of H^n times n!/n^n, where k = ⌈n d⌉ and H is (2k-1)².
pub fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut inv_fact = vec![1.0f64; m + 1];
    for j in 1..=m {
        inv_fact[j] = inv_fact[j - 1] / j as f64;
    }
    let mut hm = Matrix::zeros(m);
    for i in 0..m {
        for j in 0..m {
            if i + 1 >= j {
                hm.set(i, j, inv_fact[i + 1 - j]);
            }
        }
    }
    for i in 0..m {
        let first = hm.get(i, 0) - h.powi((i + 1) as i32) * inv_fact[i + 1];
        hm.set(i, 0, first);
        let last = hm.get(m - 1, i) - h.powi((m - i) as i32) * inv_fact[m - i];
        hm.set(m - 1, i, last);
    }
    if 2.0 * h - 1.0 > 0.0 {
        let corner = hm.get(m - 1, 0) + (2.0 * h - 1.0).powi(m as i32) * inv_fact[m];
        hm.set(m - 1, 0, corner);
    }
    // Square-and-multiply, each matrix carrying a power-of-two scale so nothing overflows.
    let mut result = Matrix::identity(m);
    let mut result_exp = 0i64;
    let mut base = hm;
    let mut base_exp = 0i64;
    let mut e = n;
    while e > 0 {
        if e & 1 == 1 {
            result = result.mul(&base);
            result_exp += base_exp;
            result_exp += result.normalize();
        }
        e >>= 1;
        if e > 0 {
            base = base.mul(&base);
            base_exp *= 2;
            base_exp += base.normalize();
        }
    }
    let p = result.get(k - 1, k - 1);
    if p <= 0.0 {
        return 0.0;
    }
    let ln_p = p.ln() + result_exp as f64 * std::f64::consts::LN_2 + ln_factorial_over_power(nf);
    ln_p.exp().clamp(0.0, 1.0)
}

/// A small dense square matrix (row-major).
struct Matrix {
    m: usize,
    a: Vec<f64>,
}

impl Matrix {
    fn zeros(m: usize) -> Matrix {
        Matrix {
            m,
            a: vec![0.0; m * m],
        }
    }

    fn identity(m: usize) -> Matrix {
        let mut r = Matrix::zeros(m);
        for i in 0..m {
            r.set(i, i, 1.0);
        }
        r
    }

    fn get(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.m + j]
    }

    fn set(&mut self, i: usize, j: usize, v: f64) {
        self.a[i * self.m + j] = v;
    }

    fn mul(&self, other: &Matrix) -> Matrix {
        let m = self.m;
        let mut r = Matrix::zeros(m);
        for i in 0..m {
            for l in 0..m {
                let x = self.a[i * m + l];
                if x == 0.0 {
                    continue;
                }
                for j in 0..m {
                    r.a[i * m + j] += x * other.a[l * m + j];
                }
            }
        }
        r
    }

    /// Scales by a power of two so the largest |element| is in [1, 2); returns the exponent
    /// taken out.
    fn normalize(&mut self) -> i64 {
        let max = self.a.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        if max == 0.0 || !max.is_finite() {
            return 0;
        }
        let e = max.log2().floor() as i32;
        if e == 0 {
            return 0;
        }
        let scale = 2.0f64.powi(-e);
        for v in &mut self.a {
            *v *= scale;
        }
        i64::from(e)
    }
}

/// The Pelz-Good (1976) expansion of P(D_n <= x):
/// K0(z) + K1(z)/√n + K2(z)/n + K3(z)/n^1.5 with z = x √n, each K written, through the Jacobi
/// theta functional equation, as sums over odd m of polynomial(m²) e^(-π² m² / (8 z²)) plus,
/// for K2 and K3, sums over k of polynomial(k²) e^(-π² k² / (2 z²)).
pub fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let z = n.sqrt() * x;
    let z2 = z * z;
    let z4 = z2 * z2;
    let z6 = z4 * z2;
    let z8 = z4 * z4;
    let qlog = -PI_SQUARED / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let pi4 = PI_SQUARED * PI_SQUARED;
    let pi6 = pi4 * PI_SQUARED;
    let c1 = (-z2, PI_SQUARED / 4.0);
    let c2 = (
        6.0 * z6 + 2.0 * z4,
        (2.0 * z4 - 5.0 * z2) * PI_SQUARED / 4.0,
        pi4 * (1.0 - 2.0 * z2) / 16.0,
    );
    let c3 = (
        -30.0 * z6 - 90.0 * z8,
        PI_SQUARED * (135.0 * z4 - 96.0 * z6) / 4.0,
        pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0,
        pi6 * (5.0 - 30.0 * z2) / 64.0,
    );
    let terms = (16.0 * z / std::f64::consts::PI).ceil() as i64;
    let (mut s0, mut s1, mut s2, mut s3) = (
        Sum::default(),
        Sum::default(),
        Sum::default(),
        Sum::default(),
    );
    for k in 1..=terms {
        let mf = (2 * k - 1) as f64;
        let m2 = mf * mf;
        let m4 = m2 * m2;
        let q = (qlog * m2).exp();
        s0.add(q);
        s1.add((c1.0 + c1.1 * m2) * q);
        s2.add((c2.0 + c2.1 * m2 + c2.2 * m4) * q);
        s3.add((c3.0 + c3.1 * m2 + c3.2 * m4 + c3.3 * m4 * m2) * q);
    }
    let mut k0 = s0.value() * SQRT_2PI / z;
    let k1 = s1.value() * SQRT_2PI / (6.0 * z4);
    let mut k2 = s2.value() * SQRT_2PI / (72.0 * z6 * z);
    let mut k3 = s3.value() * SQRT_2PI / (6480.0 * z8 * z2);
    let qlog2 = -PI_SQUARED / 2.0 / z2;
    let (mut e2, mut e3) = (Sum::default(), Sum::default());
    for k in 1..=terms {
        let kf = k as f64;
        let k2f = kf * kf;
        let q = (qlog2 * k2f).exp();
        e2.add(k2f * q);
        e3.add((3.0 * z2 - PI_SQUARED * k2f) * k2f * q);
    }
    k2 += e2.value() * PI_SQUARED * SQRT_2PI / (-36.0 * z2 * z);
    k3 += e3.value() * PI_SQUARED * SQRT_2PI / (216.0 * z6);
    k0 += k1 / n.sqrt() + k2 / n + k3 / (n * n.sqrt());
    k0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smirnov_known_values() {
        // n = 1: P(D+ >= x) = 1 - x.
        assert!((smirnov_sf(1, 0.3) - 0.7).abs() < 1e-15);
        // For x >= 1 - 1/n only the j = 0 term remains: (1 - x)^n.
        let (n, x) = (10u64, 0.95);
        assert!(((smirnov_sf(n, x) - (1.0f64 - x).powi(10)) / (1.0f64 - x).powi(10)).abs() < 1e-12);
    }

    #[test]
    fn durbin_and_pelz_good_agree_where_both_apply() {
        // Both are accurate far beyond 1e-6 for moderate n and x.
        for &(n, x) in &[(1000u64, 0.03), (2000, 0.02), (5000, 0.012)] {
            let a = durbin_cdf(n, x);
            let b = pelz_good_cdf(n as f64, x);
            assert!((a - b).abs() < 1e-6, "n={n} x={x}: {a} vs {b}");
        }
    }

    #[test]
    fn durbin_cdf_matches_ruben_gambino() {
        // For 1/2 < n x <= 1 the CDF has the closed form n!/n^n (2nx - 1)^n.
        let n = 3u64;
        let x = 0.3; // n x = 0.9
        let expect = 6.0 / 27.0 * (2.0f64 * 0.9 - 1.0).powi(3);
        assert!((durbin_cdf(n, x) - expect).abs() < 1e-14);
    }
}
