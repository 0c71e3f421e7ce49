//! What the HTML report draws per column: reference and current shares over the same bins
//! (numerical) or the same values (categorical). Display only; the tests never read these.

use serde::Serialize;

use super::binning::{bin_counts, linspace};
use super::sample::{KeyCounts, NumericSample};

/// At most this many bars; for values, the rest are summed into one "other" bar.
const MAX_BARS: usize = 40;
const MAX_VALUES: usize = 20;

/// Reference and current shares (each side sums to 1 over all its bars).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Histogram {
    /// Equal-width bins from the joint minimum to the joint maximum.
    Bins {
        edges: Vec<f64>,
        reference: Vec<f64>,
        current: Vec<f64>,
    },
    /// One bar per value (the most frequent ones when there are many).
    Values {
        labels: Vec<String>,
        reference: Vec<f64>,
        current: Vec<f64>,
    },
}

/// Sturges' bin count (at most [`MAX_BARS`]) over the joint range.
pub fn numeric(a: &NumericSample, b: &NumericSample) -> Histogram {
    let (Some(amin), Some(bmin), Some(amax), Some(bmax)) = (a.min(), b.min(), a.max(), b.max())
    else {
        return Histogram::Bins {
            edges: vec![],
            reference: vec![],
            current: vec![],
        };
    };
    let (mut lo, mut hi) = (amin.min(bmin), amax.max(bmax));
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let n = (a.len() + b.len()) as f64;
    let bins = ((n.log2() + 1.0).ceil() as usize).clamp(1, MAX_BARS);
    let edges = linspace(lo, hi, bins + 1);
    let share = |s: &NumericSample| -> Vec<f64> {
        let len = s.len() as f64;
        bin_counts(&s.sorted, &edges)
            .into_iter()
            .map(|c| c as f64 / len)
            .collect()
    };
    Histogram::Bins {
        reference: share(a),
        current: share(b),
        edges,
    }
}

/// One bar per value; with more than [`MAX_VALUES`] values, the most frequent (both sides
/// together) and one "other" bar.
pub fn values(k: &KeyCounts) -> Histogram {
    let (r, c) = k.shares();
    let mut order: Vec<usize> = (0..r.len()).collect();
    if order.len() > MAX_VALUES {
        order.sort_by(|&i, &j| (r[j] + c[j]).total_cmp(&(r[i] + c[i])));
        let rest = order.split_off(MAX_VALUES - 1);
        order.sort_unstable();
        let mut labels: Vec<String> = order.iter().map(|&i| k.keys.label(i)).collect();
        let mut reference: Vec<f64> = order.iter().map(|&i| r[i]).collect();
        let mut current: Vec<f64> = order.iter().map(|&i| c[i]).collect();
        labels.push(format!("({} other values)", rest.len()));
        reference.push(rest.iter().map(|&i| r[i]).sum());
        current.push(rest.iter().map(|&i| c[i]).sum());
        return Histogram::Values {
            labels,
            reference,
            current,
        };
    }
    Histogram::Values {
        labels: order.iter().map(|&i| k.keys.label(i)).collect(),
        reference: r,
        current: c,
    }
}
