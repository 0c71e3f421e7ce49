//! The exact two-sided p-value of the two-sample Kolmogorov-Smirnov statistic, P(D_{m,n} >= d),
//! as SciPy's `ks_2samp(method='auto')` computes it when both samples have at most 10,000
//! values. The statistic is a multiple of 1/lcm(m, n): `h = round(d lcm)`.
//!
//! * m = n: the reflection formula 2 Σ_k (-1)^(k+1) C(2n, n - k h) / C(2n, n), evaluated as a
//!   Horner-like nest of ratios (no cancellation, no huge binomials).
//! * m != n: the lattice-path recursion in Viehmann's (2021) form, which carries the
//!   probability of having left the band |x/m - y/n| < h/lcm directly, so small p-values keep
//!   their relative accuracy.
//!
//! Both are evaluated in the same order of floating-point operations as SciPy's, so the
//! results are the same doubles, down to the subnormal range.

/// `None` where SciPy's exact attempt gives up (a probability outside [0, 1]); the caller then
/// uses the asymptotic distribution with `d = h / lcm`.
pub fn exact_p(n1: u64, n2: u64, h: u64) -> Option<f64> {
    if h == 0 {
        return Some(1.0);
    }
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        prob_outside_band(n1, n2, h)
    };
    (0.0..=1.0).contains(&p).then_some(p)
}

/// P(D_{n,n} >= h/n) = 2 (A0 - A0 A1 + A0 A1 A2 - ...), with A_k the ratio
/// C(2n, n - k h) / C(2n, n - (k-1) h), nested as 2 A1' (1 - A2' (1 - A3' (...))) from the
/// innermost term out.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let mut p = 0.0f64;
    let mut k = n / h;
    loop {
        let mut ratio = 1.0f64;
        for j in 0..h {
            // (n - k h - j) / (n + k h + j + 1), as signed values: the numerator is <= 0 only
            // for the outermost k, where the whole ratio is 0.
            let num = n as f64 - (k * h) as f64 - j as f64;
            let den = (n + k * h + j + 1) as f64;
            ratio = num * ratio / den;
        }
        p = ratio * (1.0 - p);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * p
}

/// P(D_{m,n} >= h/lcm) for m != n by the column recursion over the lattice: column i holds,
/// for each y inside the band, the probability that a path to (i, y) has already touched the
/// band's edge; outside the band it is 1.
fn prob_outside_band(n1: u64, n2: u64, h: u64) -> f64 {
    let (m, n) = if n1 < n2 { (n2, n1) } else { (n1, n2) };
    let g = gcd(m, n);
    let mg = m / g;
    let ng = n / g;
    let (m, n, h, mg, ng) = (m as i64, n as i64, h as i64, mg as i64, ng as i64);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len];
    for v in a.iter_mut().take(maxj as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let lastminj = minj;
        let lastlen = curlen;
        minj = (floor_div(ng * i - h, mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let prev = a[(jj + minj - lastminj) as usize];
            val = (prev * fi + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for v in &mut a[from..to] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(D >= h/lcm) by enumerating every assignment of ranks (tiny m, n): the oracle.
    fn brute(m: usize, n: usize, h: u64) -> f64 {
        let total = m + n;
        let lcm = (m * n / gcd(m as u64, n as u64) as usize) as i64;
        let (mut hit, mut all) = (0u64, 0u64);
        for mask in 0u32..(1 << total) {
            if mask.count_ones() as usize != m {
                continue;
            }
            all += 1;
            let (mut x, mut y, mut dmax) = (0i64, 0i64, 0i64);
            for bit in 0..total {
                if mask & (1 << bit) != 0 {
                    x += 1;
                } else {
                    y += 1;
                }
                let diff = (x * (lcm / m as i64) - y * (lcm / n as i64)).abs();
                dmax = dmax.max(diff);
            }
            if dmax >= h as i64 {
                hit += 1;
            }
        }
        hit as f64 / all as f64
    }

    #[test]
    fn matches_enumeration_on_small_samples() {
        for (m, n) in [
            (3usize, 3usize),
            (4, 4),
            (5, 5),
            (3, 5),
            (4, 6),
            (2, 7),
            (6, 9),
            (5, 8),
        ] {
            let lcm = (m * n) as u64 / gcd(m as u64, n as u64);
            for h in 1..=lcm {
                let b = brute(m, n, h);
                // SciPy gives up (and goes asymptotic) when rounding lands just above 1, as
                // for m = n = 5, h = 1: the same happens here.
                let Some(p) = exact_p(m as u64, n as u64, h) else {
                    assert_eq!(b, 1.0, "m={m} n={n} h={h}");
                    continue;
                };
                assert!((p - b).abs() < 1e-12, "m={m} n={n} h={h}: {p} vs {b}");
            }
        }
    }
}
