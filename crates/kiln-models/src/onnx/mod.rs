//! ONNX models (`.onnx`) as skl2onnx and onnxmltools export tabular models: linear models,
//! scalers, tree ensembles (sklearn, XGBoost, LightGBM) and MLPs.
//!
//! Why this module exists: tract runs the standard ONNX operators well (an MLP's MatMul, Add,
//! Relu, Softmax) but not all of the ai.onnx.ml domain that these exporters emit (Scaler,
//! ZipMap, TreeEnsembleRegressor are missing), and a graph-level tree walk would not be the
//! flat-array evaluator the rest of Kiln uses. So a loaded graph is split in two:
//!
//! 1. **native head** ([`native`]): the ai.onnx.ml operators and the trivial ops around them
//!    (Identity, Cast, Concat), evaluated here with onnxruntime's semantics;
//! 2. **tract tail** ([`tail`]): whatever standard-domain operators come after (or the whole
//!    graph, for an MLP), cut out as a sub-model and run by tract with a symbolic batch size.
//!
//! Only the nodes that the model's score output depends on are kept; the label branch
//! (ArgMax, ArrayFeatureExtractor, Cast of labels) is dropped, and a final ZipMap is skipped by
//! reading the probability tensor that feeds it. Any other operator is rejected at load with
//! an error naming the operator, its domain and its node.
//!
//! Output convention, as for the tree runtimes: regressors give one value per row; binary
//! classifiers the probability of the second (positive) class; multiclass classifiers the K
//! class probabilities.

mod attrs;
mod graph;
mod linear;
mod native;
mod post;
mod tail;
mod trees;

use std::collections::HashMap;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::Framework;

use crate::{Format, Link, Model, ModelError, ModelInfo, check_shape};
use attrs::{Attrs, describe, invalid, unsupported};
use native::NativeOp;
use tail::{Tail, TailInput};

/// A natively evaluated node: operator, input slots, output slot.
#[derive(Debug)]
struct Step {
    op: NativeOp,
    inputs: Vec<usize>,
    output: usize,
}

/// How rows reach the graph.
#[derive(Debug)]
enum Inputs {
    /// One `[N, F]` tensor.
    Packed { double: bool },
    /// One `[N, 1]` tensor per feature, named after it.
    PerFeature { double: Vec<bool> },
}

/// An ONNX model: native head, optional tract tail, and how its output maps to Kiln's.
#[derive(Debug)]
pub struct OnnxModel {
    info: ModelInfo,
    inputs: Inputs,
    steps: Vec<Step>,
    n_slots: usize,
    widths: Vec<usize>,
    tail: Option<Tail>,
    /// The slot holding the output when there is no tail.
    output: usize,
    /// Width of the graph's output tensor.
    width: usize,
    /// A two-class classifier: only the second column is returned.
    positive_only: bool,
}

impl OnnxModel {
    /// Loads a model from the bytes of an `.onnx` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let proto: ModelProto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| invalid(format!("not an ONNX protobuf: {e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| invalid("the model has no graph"))?;
        let graph::GraphInputs {
            inputs,
            feature_names,
            names,
            mut widths,
            doubles,
        } = graph::inputs(graph)?;
        let mut slots: HashMap<String, usize> =
            names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        let graph::ScoreOutput {
            name: output,
            double: output_double,
            mut classifier,
        } = graph::score_output(graph)?;
        let (keep, needed) = graph::needed_nodes(graph, &output);

        // Native head, then the tail.
        let mut steps = Vec::new();
        let mut tail_nodes = Vec::new();
        let mut model_op: Option<String> = None;
        for (n, _) in graph.node.iter().zip(&keep).filter(|(_, k)| **k) {
            if n.domain == "ai.onnx.ml" && n.op_type.contains("Classifier") {
                classifier = true;
            }
            let ins: Option<Vec<usize>> = n
                .input
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| slots.get(s).copied())
                .collect();
            let native = match &ins {
                Some(ins) if !ins.is_empty() => {
                    let w: Vec<usize> = ins.iter().map(|&s| widths[s]).collect();
                    NativeOp::for_node(&Attrs::new(n), &w)?
                }
                _ => None,
            };
            match (native, ins) {
                (Some((op, w)), Some(ins)) => {
                    if n.op_type.starts_with("Linear") || n.op_type.starts_with("TreeEnsemble") {
                        model_op = Some(n.op_type.clone());
                    }
                    // ai.onnx.ml classifiers: output 1 is the score tensor (0 is the label).
                    let out_idx = usize::from(n.op_type.ends_with("Classifier"));
                    let name = n.output.get(out_idx).ok_or_else(|| {
                        invalid(format!("{} has no output {out_idx}", describe(n)))
                    })?;
                    if n.output
                        .iter()
                        .enumerate()
                        .any(|(j, o)| j != out_idx && !o.is_empty() && needed.contains(o.as_str()))
                    {
                        return Err(unsupported(format!(
                            "{}: its label output is used by the scores",
                            describe(n)
                        )));
                    }
                    slots.insert(name.clone(), widths.len());
                    widths.push(w);
                    steps.push(Step {
                        op,
                        inputs: ins,
                        output: widths.len() - 1,
                    });
                }
                _ => tail_nodes.push(n.clone()),
            }
        }
        let n_trees = steps.iter().map(|s| s.op.n_trees()).sum();

        let (tail, width, out_slot) = if tail_nodes.is_empty() {
            let &s = slots.get(&output).ok_or_else(|| {
                invalid(format!("output {output:?} is not produced by the graph"))
            })?;
            (None, widths[s], s)
        } else {
            // The tail reads the native tensors (and graph inputs) its nodes name.
            let mut tail_inputs: Vec<(String, TailInput)> = Vec::new();
            for n in &tail_nodes {
                for s in &n.input {
                    if let Some(&slot) = slots.get(s)
                        && !tail_inputs.iter().any(|(t, _)| t == s)
                    {
                        let double = slot < doubles.len() && doubles[slot];
                        tail_inputs.push((
                            s.clone(),
                            TailInput {
                                slot,
                                width: widths[slot],
                                double,
                            },
                        ));
                    }
                }
            }
            let tail = Tail::build(&proto, tail_nodes, tail_inputs, &output, output_double)?;
            let w = tail.width;
            (Some(tail), w, 0)
        };

        let positive_only = classifier && width == 2;
        let producer = if proto.producer_name.is_empty() {
            String::new()
        } else {
            format!(" ({} {})", proto.producer_name, proto.producer_version)
        };
        let info = ModelInfo {
            format: Format::Onnx,
            objective: format!(
                "onnx:{}{producer}",
                model_op.unwrap_or_else(|| if classifier {
                    "classifier graph"
                } else {
                    "graph"
                }
                .into())
            ),
            feature_names,
            n_outputs: if positive_only { 1 } else { width },
            link: Link::Identity,
            n_trees,
        };
        Ok(OnnxModel {
            info,
            inputs,
            steps,
            n_slots: widths.len(),
            widths,
            tail,
            output: out_slot,
            width,
            positive_only,
        })
    }

    fn run(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        let nf = self.info.n_features();
        let n = check_shape(rows, out, nf, self.info.n_outputs)?;
        let mut slots: Vec<Vec<f64>> = vec![Vec::new(); self.n_slots];
        match &self.inputs {
            Inputs::Packed { double } => {
                slots[0] = if *double {
                    rows.to_vec()
                } else {
                    rows.iter().map(|&x| post::f32r(x)).collect()
                };
            }
            Inputs::PerFeature { double } => {
                for (f, d) in double.iter().enumerate() {
                    slots[f] = rows
                        .iter()
                        .skip(f)
                        .step_by(nf)
                        .map(|&x| if *d { x } else { post::f32r(x) })
                        .collect();
                }
            }
        }
        for step in &self.steps {
            let mut buf = std::mem::take(&mut slots[step.output]);
            {
                let ins: Vec<(&[f64], usize)> = step
                    .inputs
                    .iter()
                    .map(|&s| (slots[s].as_slice(), self.widths[s]))
                    .collect();
                step.op.eval(&ins, n, &mut buf);
            }
            slots[step.output] = buf;
        }
        let owned;
        let result: &[f64] = match &self.tail {
            Some(t) => {
                owned = t.run(&slots, n)?;
                &owned
            }
            None => &slots[self.output],
        };
        if result.len() != n * self.width {
            return Err(invalid(format!(
                "the graph gave {} values for {n} rows of width {}",
                result.len(),
                self.width
            )));
        }
        if self.positive_only {
            for (o, r) in out.iter_mut().zip(result.chunks(2)) {
                *o = r[1];
            }
        } else {
            out.copy_from_slice(result);
        }
        Ok(())
    }
}

impl Model for OnnxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        self.run(rows, out)
    }

    /// ONNX graphs apply their own post transform; there are no separate margins.
    fn predict_margin(&self, _rows: &[f64], _out: &mut [f64]) -> Result<(), ModelError> {
        Err(unsupported(
            "ONNX models give their graph's outputs only; raw margins are not available",
        ))
    }

    fn n_margins(&self) -> usize {
        self.info.n_outputs
    }
}
