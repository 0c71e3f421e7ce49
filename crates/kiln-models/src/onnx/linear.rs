//! ai.onnx.ml `LinearClassifier` and `LinearRegressor` (sklearn's LogisticRegression,
//! LinearRegression, Ridge, ... as skl2onnx exports them).

use super::attrs::{Attrs, unsupported};
use super::post::{Post, f32r};
use crate::ModelError;

/// `scores = x · coefficientsᵀ + intercepts`, then the post transform.
#[derive(Debug)]
pub(super) struct Linear {
    /// `targets × features`, row-major.
    coefficients: Vec<f64>,
    intercepts: Vec<f64>,
    post: Post,
    /// A binary classifier stored with one coefficient row: the output has two columns,
    /// the negative class first (onnxruntime's "add second class").
    second_class: bool,
    n_features: usize,
}

impl Linear {
    pub(super) fn classifier(a: &Attrs, n_features: usize) -> Result<Self, ModelError> {
        let n_labels = a
            .ints("classlabels_ints")
            .len()
            .max(a.strings("classlabels_strings").len());
        let mut m = Self::build(a, n_features)?;
        m.second_class = m.intercepts.len() == 1 && n_labels == 2;
        Ok(m)
    }

    pub(super) fn regressor(a: &Attrs, n_features: usize) -> Result<Self, ModelError> {
        let m = Self::build(a, n_features)?;
        if let Some(t) = a.int("targets")
            && t as usize != m.intercepts.len()
        {
            return Err(a.err(format!("targets={t} but {} intercepts", m.intercepts.len())));
        }
        Ok(m)
    }

    fn build(a: &Attrs, n_features: usize) -> Result<Self, ModelError> {
        let (coefficients, _) = a.reals("coefficients")?;
        let (mut intercepts, _) = a.reals("intercepts")?;
        if intercepts.is_empty() {
            // LinearRegressor may leave intercepts out: one zero per target.
            let targets = a.int("targets").unwrap_or(1).max(1) as usize;
            intercepts = vec![0.0; targets];
        }
        if coefficients.len() != intercepts.len() * n_features {
            return Err(a.err(format!(
                "{} coefficients for {} targets of {n_features} features",
                coefficients.len(),
                intercepts.len()
            )));
        }
        let post = a.post_transform()?;
        if post != Post::None && post != Post::Logistic && post != Post::Softmax {
            return Err(unsupported(format!(
                "{}: post_transform {post:?}",
                super::attrs::describe(a.node())
            )));
        }
        Ok(Linear {
            coefficients,
            intercepts,
            post,
            second_class: false,
            n_features,
        })
    }

    pub(super) fn width(&self) -> usize {
        if self.second_class {
            2
        } else {
            self.intercepts.len()
        }
    }

    pub(super) fn eval(&self, x: &[f64], n: usize, out: &mut Vec<f64>) {
        let w = self.width();
        out.clear();
        out.resize(n * w, 0.0);
        let t = self.intercepts.len();
        for (row, o) in x.chunks(self.n_features).zip(out.chunks_mut(w)) {
            for (k, s) in o[..t].iter_mut().enumerate() {
                let c = &self.coefficients[k * self.n_features..(k + 1) * self.n_features];
                let dot: f64 = row.iter().zip(c).map(|(a, b)| a * b).sum();
                *s = f32r(dot + self.intercepts[k]);
            }
            if self.second_class {
                let p = match self.post {
                    Post::Logistic => super::post::logistic(o[0]),
                    _ => o[0],
                };
                o[1] = f32r(p);
                o[0] = f32r(if self.post == Post::Logistic {
                    1.0 - p
                } else {
                    -p
                });
            } else {
                self.post.apply(o);
                o.iter_mut().for_each(|v| *v = f32r(*v));
            }
        }
    }
}
