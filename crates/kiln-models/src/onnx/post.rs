//! The `post_transform` of ai.onnx.ml classifiers and regressors, as onnxruntime applies it.

/// How raw scores become an operator's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Post {
    None,
    Logistic,
    Softmax,
    /// Softmax that leaves (near-)zero scores out of the sum.
    SoftmaxZero,
}

impl Post {
    pub(crate) fn parse(s: &str) -> Option<Post> {
        Some(match s {
            "NONE" => Post::None,
            "LOGISTIC" => Post::Logistic,
            "SOFTMAX" => Post::Softmax,
            "SOFTMAX_ZERO" => Post::SoftmaxZero,
            _ => return None,
        })
    }

    /// Applies the transform to all scores of one row.
    pub(crate) fn apply(self, scores: &mut [f64]) {
        match self {
            Post::None => {}
            Post::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            Post::Softmax => {
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                scores.iter_mut().for_each(|s| *s /= sum);
            }
            Post::SoftmaxZero => {
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exp_neg_max = (-max).exp();
                let mut sum = 0.0;
                for s in scores.iter_mut() {
                    if s.abs() > 1e-7 {
                        *s = (*s - max).exp();
                        sum += *s;
                    } else {
                        *s *= exp_neg_max;
                    }
                }
                scores.iter_mut().for_each(|s| *s /= sum);
            }
        }
    }
}

/// onnxruntime's `ComputeLogistic`: symmetric, so large negative inputs do not overflow.
pub(crate) fn logistic(x: f64) -> f64 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// Rounds to f32 precision (ai.onnx.ml operators output float tensors).
pub(crate) fn f32r(x: f64) -> f64 {
    f64::from(x as f32)
}
