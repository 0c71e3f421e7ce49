//! The operators Kiln evaluates itself: the ai.onnx.ml part of exported tabular models
//! (which tract does not run, or not all of) and the trivial standard ops around it.
//!
//! Every tensor here is `[N, width]`, row-major `f64`. ai.onnx.ml operators output float
//! tensors, so their results are rounded to f32 as onnxruntime's are; that keeps a
//! downstream tree split on exactly the same side as in the reference runtime.

use super::attrs::{Attrs, describe, unsupported};
use super::linear::Linear;
use super::post::f32r;
use super::trees::TreeEnsemble;
use crate::ModelError;

/// One natively evaluated operator.
#[derive(Debug)]
pub(super) enum NativeOp {
    /// `(x - offset) * scale`, per feature (or one value for all).
    Scaler {
        offset: Vec<f64>,
        scale: Vec<f64>,
    },
    Normalizer(Norm),
    Linear(Linear),
    Trees(Box<TreeEnsemble>),
    /// Identity, and Cast to double.
    Identity,
    /// Cast to float.
    ToF32,
    /// Concat along the feature axis.
    Concat,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Norm {
    Max,
    L1,
    L2,
}

/// The ONNX element type numbers Kiln handles.
pub(super) const FLOAT: i32 = 1;
pub(super) const DOUBLE: i32 = 11;

impl NativeOp {
    /// The native operator for a node, given its input widths; `None` when the node is not
    /// one Kiln evaluates itself (it then goes to tract, or is rejected).
    pub(super) fn for_node(
        a: &Attrs,
        widths: &[usize],
    ) -> Result<Option<(NativeOp, usize)>, ModelError> {
        let node = a.node();
        let ml = node.domain == "ai.onnx.ml";
        let std = node.domain.is_empty() || node.domain == "ai.onnx";
        let w0 = widths.first().copied().unwrap_or(0);
        let single = || -> Result<(), ModelError> {
            if widths.len() == 1 {
                Ok(())
            } else {
                Err(a.err(format!("expected one input, got {}", widths.len())))
            }
        };
        let op = match (ml, std, node.op_type.as_str()) {
            (true, _, "Scaler") => {
                single()?;
                let (offset, _) = a.reals("offset")?;
                let (scale, _) = a.reals("scale")?;
                for (what, v) in [("offset", &offset), ("scale", &scale)] {
                    if v.len() != 1 && v.len() != w0 {
                        return Err(a.err(format!("{} {what} values for {w0} features", v.len())));
                    }
                }
                (NativeOp::Scaler { offset, scale }, w0)
            }
            (true, _, "Normalizer") => {
                single()?;
                let norm = match a.string("norm").as_deref().unwrap_or("MAX") {
                    "MAX" => Norm::Max,
                    "L1" => Norm::L1,
                    "L2" => Norm::L2,
                    other => return Err(a.err(format!("unknown norm {other:?}"))),
                };
                (NativeOp::Normalizer(norm), w0)
            }
            (true, _, "LinearClassifier") => {
                single()?;
                let l = Linear::classifier(a, w0)?;
                let w = l.width();
                (NativeOp::Linear(l), w)
            }
            (true, _, "LinearRegressor") => {
                single()?;
                let l = Linear::regressor(a, w0)?;
                let w = l.width();
                (NativeOp::Linear(l), w)
            }
            (true, _, "TreeEnsembleClassifier" | "TreeEnsembleRegressor") => {
                single()?;
                let t = TreeEnsemble::new(a, w0)?;
                let w = t.width();
                (NativeOp::Trees(Box::new(t)), w)
            }
            (_, true, "Identity") => {
                single()?;
                (NativeOp::Identity, w0)
            }
            (_, true, "Cast") => {
                single()?;
                match a.int("to") {
                    Some(t) if t == i64::from(FLOAT) => (NativeOp::ToF32, w0),
                    Some(t) if t == i64::from(DOUBLE) => (NativeOp::Identity, w0),
                    _ => return Ok(None),
                }
            }
            (_, true, "Concat") => match a.int("axis") {
                Some(1 | -1) => (NativeOp::Concat, widths.iter().sum()),
                _ => return Ok(None),
            },
            (true, _, "ZipMap") => {
                // Only reached when a ZipMap feeds something else: Kiln reads the probability
                // tensor that goes *into* a ZipMap at the graph's end instead.
                return Err(unsupported(format!(
                    "{}: a ZipMap is supported only as a graph output",
                    describe(node)
                )));
            }
            _ => return Ok(None),
        };
        Ok(Some(op))
    }

    /// The number of trees, for a tree ensemble.
    pub(super) fn n_trees(&self) -> usize {
        match self {
            NativeOp::Trees(t) => t.n_trees(),
            _ => 0,
        }
    }

    /// Evaluates `n` rows: `inputs` are the input tensors with their widths.
    pub(super) fn eval(&self, inputs: &[(&[f64], usize)], n: usize, out: &mut Vec<f64>) {
        let (x, w) = inputs[0];
        match self {
            NativeOp::Scaler { offset, scale } => {
                out.clear();
                out.extend(x.iter().enumerate().map(|(i, v)| {
                    let j = i % w;
                    let o = offset.get(j).unwrap_or(&offset[0]);
                    let s = scale.get(j).unwrap_or(&scale[0]);
                    f32r(f32r(v - o) * s)
                }));
            }
            NativeOp::Normalizer(norm) => {
                out.clear();
                out.extend_from_slice(x);
                for row in out.chunks_mut(w) {
                    let d = match norm {
                        Norm::Max => row.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        Norm::L1 => row.iter().map(|v| v.abs()).sum(),
                        Norm::L2 => row.iter().map(|v| v * v).sum::<f64>().sqrt(),
                    };
                    if d != 0.0 {
                        row.iter_mut().for_each(|v| *v = f32r(*v / d));
                    }
                }
            }
            NativeOp::Linear(l) => l.eval(x, n, out),
            NativeOp::Trees(t) => t.eval(x, n, out),
            NativeOp::Identity => {
                out.clear();
                out.extend_from_slice(x);
            }
            NativeOp::ToF32 => {
                out.clear();
                out.extend(x.iter().map(|v| f32r(*v)));
            }
            NativeOp::Concat => {
                out.clear();
                for r in 0..n {
                    for (t, w) in inputs {
                        out.extend_from_slice(&t[r * w..(r + 1) * w]);
                    }
                }
            }
        }
    }
}
