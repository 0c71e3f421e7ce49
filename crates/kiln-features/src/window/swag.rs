//! Sliding-window aggregation without an inverse ("two stacks"): amortised O(1) per push, pop
//! and query for any associative combine, so min, max and the float moments need neither a
//! rescan of the window nor subtraction.
//!
//! Why not running sums with subtraction for floats: removing a value from a float sum leaves
//! its rounding error behind, so a window's sum would carry residue from every event the key
//! ever had (one evicted 1e12 leaves an error near 1e-4 in a window of small amounts), and
//! sum-of-squares variance cancels catastrophically at large offsets. Here each answer combines
//! only the values in the window: a suffix aggregate of the older part and a prefix aggregate
//! of the newer part, each built left to right or right to left over the window alone.

/// An associative combine with an identity. `combine(a, b)` has `a` older than `b`.
pub trait Monoid: Copy {
    const IDENTITY: Self;
    fn combine(self, newer: Self) -> Self;
}

/// A FIFO window of monoid values.
pub(crate) struct TwoStacks<M: Monoid> {
    /// Aggregates of the older part: `front[k]` covers elements k..=bottom of the stack, so the
    /// last entry covers the whole front, oldest first.
    front: Vec<M>,
    /// The newer part, oldest first, and its aggregate.
    back: Vec<M>,
    back_agg: M,
}

impl<M: Monoid> TwoStacks<M> {
    pub(crate) fn new() -> Self {
        TwoStacks {
            front: Vec::new(),
            back: Vec::new(),
            back_agg: M::IDENTITY,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.front.clear();
        self.back.clear();
        self.back_agg = M::IDENTITY;
    }

    pub(crate) fn push(&mut self, v: M) {
        self.back.push(v);
        self.back_agg = self.back_agg.combine(v);
    }

    /// Removes the oldest value (no-op on an empty window).
    pub(crate) fn pop(&mut self) {
        if self.front.is_empty() {
            // Flip: build suffix aggregates of the back, newest first, so each entry covers
            // itself and everything newer that was in the back.
            let mut acc = M::IDENTITY;
            while let Some(v) = self.back.pop() {
                acc = v.combine(acc);
                self.front.push(acc);
            }
            self.back_agg = M::IDENTITY;
        }
        self.front.pop();
    }

    /// The aggregate of the window, oldest to newest.
    pub(crate) fn query(&self) -> M {
        self.front
            .last()
            .copied()
            .unwrap_or(M::IDENTITY)
            .combine(self.back_agg)
    }
}

/// Minimum of integers (`i64::MAX` when empty: callers check the count).
#[derive(Debug, Clone, Copy)]
pub struct MinI(pub i64);
impl Monoid for MinI {
    const IDENTITY: Self = MinI(i64::MAX);
    fn combine(self, b: Self) -> Self {
        MinI(self.0.min(b.0))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MaxI(pub i64);
impl Monoid for MaxI {
    const IDENTITY: Self = MaxI(i64::MIN);
    fn combine(self, b: Self) -> Self {
        MaxI(self.0.max(b.0))
    }
}

/// Minimum of finite floats (`+inf` when empty).
#[derive(Debug, Clone, Copy)]
pub struct MinF(pub f64);
impl Monoid for MinF {
    const IDENTITY: Self = MinF(f64::INFINITY);
    fn combine(self, b: Self) -> Self {
        MinF(self.0.min(b.0))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MaxF(pub f64);
impl Monoid for MaxF {
    const IDENTITY: Self = MaxF(f64::NEG_INFINITY);
    fn combine(self, b: Self) -> Self {
        MaxF(self.0.max(b.0))
    }
}

/// A compensated float sum: the value is `hi + lo`, where `lo` collects the rounding errors of
/// the additions (Neumaier / TwoSum), so sums of values of very different sizes stay accurate.
#[derive(Debug, Clone, Copy)]
pub struct SumF {
    hi: f64,
    lo: f64,
}
impl SumF {
    pub fn of(v: f64) -> Self {
        SumF { hi: v, lo: 0.0 }
    }
    pub fn value(self) -> f64 {
        self.hi + self.lo
    }
}
impl Monoid for SumF {
    const IDENTITY: Self = SumF { hi: 0.0, lo: 0.0 };
    fn combine(self, b: Self) -> Self {
        let s = self.hi + b.hi;
        let bb = s - self.hi;
        let err = (self.hi - (s - bb)) + (b.hi - bb);
        SumF {
            hi: s,
            lo: self.lo + b.lo + err,
        }
    }
}

/// Count, mean and sum of squared deviations, merged with Chan et al.'s pairwise update: stable
/// at large offsets (values near 1e9 with a spread of 1 keep their variance), unlike
/// `E[x^2] - E[x]^2`.
#[derive(Debug, Clone, Copy)]
pub struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}
impl Moments {
    pub fn of(v: f64) -> Self {
        Moments {
            n: 1.0,
            mean: v,
            m2: 0.0,
        }
    }
    /// Population standard deviation; `None` when empty.
    pub fn stddev(self) -> Option<f64> {
        (self.n > 0.0).then(|| (self.m2 / self.n).max(0.0).sqrt())
    }
}
impl Monoid for Moments {
    const IDENTITY: Self = Moments {
        n: 0.0,
        mean: 0.0,
        m2: 0.0,
    };
    fn combine(self, b: Self) -> Self {
        if self.n == 0.0 {
            return b;
        }
        if b.n == 0.0 {
            return self;
        }
        let n = self.n + b.n;
        let delta = b.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * (b.n / n),
            m2: self.m2 + b.m2 + delta * delta * (self.n * b.n / n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_min_matches_rescan() {
        let vals = [5, 3, 8, 1, 9, 2, 7, 7, 0, 4];
        let mut w = TwoStacks::<MinI>::new();
        let (mut lo, mut hi) = (0, 0);
        // Windows of width 3 sliding over the values, with a shrink to 1 in the middle.
        for (new_lo, new_hi) in [(0, 3), (1, 4), (2, 5), (4, 5), (4, 8), (5, 8), (7, 10)] {
            while hi < new_hi {
                w.push(MinI(vals[hi]));
                hi += 1;
            }
            while lo < new_lo {
                w.pop();
                lo += 1;
            }
            let want = vals[lo..hi]
                .iter()
                .copied()
                .min()
                .expect("non-empty window");
            assert_eq!(w.query().0, want, "window {lo}..{hi}");
        }
    }

    #[test]
    fn moments_are_stable_at_large_offsets() {
        let xs = [1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0, 1e9 + 4.0];
        let mut w = TwoStacks::<Moments>::new();
        for x in xs {
            w.push(Moments::of(x));
        }
        // Population stddev of 1, 2, 3, 4 is sqrt(1.25).
        let sd = w.query().stddev().expect("non-empty");
        assert!((sd - 1.25f64.sqrt()).abs() < 1e-6, "{sd}");
        // The textbook shortcut loses everything here.
        let n = xs.len() as f64;
        let naive = (xs.iter().map(|x| x * x).sum::<f64>() / n
            - (xs.iter().sum::<f64>() / n).powi(2))
        .max(0.0)
        .sqrt();
        assert!((naive - 1.25f64.sqrt()).abs() > 0.1, "{naive}");
    }

    #[test]
    fn compensated_sum_keeps_small_values_next_to_large_ones() {
        let mut w = TwoStacks::<SumF>::new();
        w.push(SumF::of(1e16));
        w.push(SumF::of(1.0));
        w.push(SumF::of(1.0));
        w.pop();
        assert_eq!(w.query().value(), 2.0);
    }
}
