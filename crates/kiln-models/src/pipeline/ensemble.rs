//! Combining the outputs of an ensemble's members into the ensemble's output.
//!
//! Members are scored separately (each on its own columns of the preprocessed rows); this is
//! the one place their outputs meet. Arithmetic is f64, members summed in definition order.

use super::definition::{Combine, StackLink};

/// How member outputs combine, validated (see [`super::PipelineModel`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Combiner {
    /// One model: its outputs are the pipeline's.
    Single,
    /// `sum(w_i * y_i) / sum(w_i)`: `mean` has every weight 1.
    Weighted(Vec<f64>),
    /// `link(bias + sum(w_i * y_i))` over single-output members.
    Stack {
        weights: Vec<f64>,
        bias: f64,
        link: StackLink,
    },
}

impl Combiner {
    /// Outputs per row for members of `member_outputs` outputs each.
    pub fn n_outputs(&self, member_outputs: usize) -> usize {
        match self {
            Combiner::Stack { .. } => 1,
            _ => member_outputs,
        }
    }

    pub fn kind(&self) -> Option<Combine> {
        match self {
            Combiner::Single => None,
            Combiner::Weighted(w) if w.iter().all(|w| *w == 1.0) => Some(Combine::Mean),
            Combiner::Weighted(_) => Some(Combine::Weighted),
            Combiner::Stack { .. } => Some(Combine::Stack),
        }
    }

    /// Combines `outs[m]` (member `m`'s outputs, `k` per row, `n` rows) into `out`. With
    /// `margin`, a stack's link is left out.
    pub fn combine(&self, outs: &[Vec<f64>], k: usize, out: &mut [f64], margin: bool) {
        match self {
            Combiner::Single => out.copy_from_slice(&outs[0]),
            Combiner::Weighted(w) => {
                let total: f64 = w.iter().sum();
                for (j, o) in out.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for (w, y) in w.iter().zip(outs) {
                        acc += w * y[j];
                    }
                    *o = acc / total;
                }
            }
            Combiner::Stack {
                weights,
                bias,
                link,
            } => {
                debug_assert_eq!(k, 1, "stack members have one output each");
                for (j, o) in out.iter_mut().enumerate() {
                    let mut z = *bias;
                    for (w, y) in weights.iter().zip(outs) {
                        z += w * y[j];
                    }
                    *o = match (link, margin) {
                        (StackLink::Logistic, false) => 1.0 / (1.0 + (-z).exp()),
                        _ => z,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_normalises_weights() {
        let outs = vec![vec![1.0, 10.0], vec![3.0, 20.0]];
        let mut out = [0.0; 2];
        Combiner::Weighted(vec![1.0, 1.0]).combine(&outs, 1, &mut out, false);
        assert_eq!(out, [2.0, 15.0]);
        Combiner::Weighted(vec![3.0, 1.0]).combine(&outs, 1, &mut out, false);
        assert_eq!(out, [1.5, 12.5]);
        assert_eq!(
            Combiner::Weighted(vec![1.0, 1.0]).kind(),
            Some(Combine::Mean)
        );
    }

    #[test]
    fn stack_is_a_linear_model_with_a_link() {
        let outs = vec![vec![0.2], vec![0.6]];
        let mut out = [0.0];
        let s = Combiner::Stack {
            weights: vec![2.0, -1.0],
            bias: 0.5,
            link: StackLink::Logistic,
        };
        s.combine(&outs, 1, &mut out, true);
        assert!((out[0] - 0.3).abs() < 1e-15);
        s.combine(&outs, 1, &mut out, false);
        assert!((out[0] - 1.0 / (1.0 + (-0.3f64).exp())).abs() < 1e-15);
        assert_eq!(s.n_outputs(1), 1);
    }
}
