//! Link functions: how summed tree scores become predictions.

use serde::Serialize;

/// The transformation from margins to outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Link {
    /// The margin itself (regression, ranking, raw logits).
    Identity,
    /// `1 / (1 + exp(-scale * x))` (binary classification).
    Sigmoid { scale: f64 },
    /// Softmax over the classes (multiclass probabilities).
    Softmax,
    /// The index of the largest margin (`multi:softmax`), as a number.
    ArgMax,
    /// `exp(x)` (Poisson, gamma, Tweedie).
    Exp,
    /// Sigmoid per class, independently (one-vs-all).
    SigmoidPerClass { scale: f64 },
}

impl Link {
    /// How many outputs per row for `n_margins` margins.
    pub fn n_outputs(self, n_margins: usize) -> usize {
        match self {
            Link::ArgMax => 1,
            _ => n_margins,
        }
    }

    /// Applies the link in f64 (LightGBM's arithmetic).
    pub(crate) fn apply_f64(self, margins: &[f64], out: &mut [f64]) {
        match self {
            Link::Identity => out.copy_from_slice(margins),
            Link::Sigmoid { scale } | Link::SigmoidPerClass { scale } => {
                for (o, m) in out.iter_mut().zip(margins) {
                    *o = 1.0 / (1.0 + (-scale * m).exp());
                }
            }
            Link::Exp => {
                for (o, m) in out.iter_mut().zip(margins) {
                    *o = m.exp();
                }
            }
            Link::Softmax => {
                let max = margins.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for (o, m) in out.iter_mut().zip(margins) {
                    *o = (m - max).exp();
                    sum += *o;
                }
                for o in out.iter_mut() {
                    *o /= sum;
                }
            }
            Link::ArgMax => out[0] = argmax(margins) as f64,
        }
    }

    /// Applies the link in f32, as XGBoost computes it, widening the results.
    pub(crate) fn apply_f32(self, margins: &[f32], out: &mut [f64]) {
        match self {
            Link::Identity => {
                for (o, m) in out.iter_mut().zip(margins) {
                    *o = f64::from(*m);
                }
            }
            Link::Sigmoid { scale } | Link::SigmoidPerClass { scale } => {
                let scale = scale as f32;
                for (o, m) in out.iter_mut().zip(margins) {
                    // XGBoost: 1 / (expf(min(-x, 88.7)) + 1), clamped against overflow.
                    *o = f64::from(1.0f32 / ((-scale * m).min(88.7).exp() + 1.0f32));
                }
            }
            Link::Exp => {
                for (o, m) in out.iter_mut().zip(margins) {
                    *o = f64::from(m.exp());
                }
            }
            Link::Softmax => {
                // XGBoost: f32 exponentials of x - max, summed in f64, divided by the f32 sum.
                let max = margins.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = margins.iter().map(|m| f64::from((m - max).exp())).sum();
                let sum = sum as f32;
                for (o, m) in out.iter_mut().zip(margins) {
                    *o = f64::from((m - max).exp() / sum);
                }
            }
            Link::ArgMax => out[0] = argmax(margins) as f64,
        }
    }
}

fn argmax<T: PartialOrd>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}
