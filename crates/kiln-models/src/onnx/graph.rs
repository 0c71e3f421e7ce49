//! Reading an exported graph: its inputs, the output that holds the scores, and the nodes
//! that output depends on.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{GraphProto, NodeProto, ValueInfoProto, type_proto};

use super::Inputs;
use super::attrs::unsupported;
use super::native::{DOUBLE, FLOAT};
use crate::ModelError;

/// Element type and dimensions (`None` when symbolic or unknown) of a tensor value.
fn tensor_type(v: &ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some((
            t.elem_type,
            t.shape.as_ref().map_or_else(Vec::new, |s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(v)) if v >= 0 => Some(v),
                        _ => None,
                    })
                    .collect()
            }),
        )),
    }
}

/// The graph's real inputs (initializers excluded).
pub(super) struct GraphInputs {
    pub inputs: Inputs,
    pub feature_names: Vec<String>,
    pub names: Vec<String>,
    pub widths: Vec<usize>,
    pub doubles: Vec<bool>,
}

/// One `[N, F]` float/double tensor, or F tensors of `[N, 1]` (named after their features).
pub(super) fn inputs(graph: &GraphProto) -> Result<GraphInputs, ModelError> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let real: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let (mut widths, mut doubles) = (Vec::new(), Vec::new());
    for i in &real {
        let (t, shape) = tensor_type(i)
            .ok_or_else(|| unsupported(format!("input {:?} is not a tensor", i.name)))?;
        if t != FLOAT && t != DOUBLE {
            return Err(unsupported(format!(
                "input {:?} has element type {t}; only float and double inputs are supported",
                i.name
            )));
        }
        let [_, Some(w)] = shape[..] else {
            return Err(unsupported(format!(
                "input {:?} must be [N, F] with F known, has shape {shape:?}",
                i.name
            )));
        };
        widths.push(w as usize);
        doubles.push(t == DOUBLE);
    }
    let names: Vec<String> = real.iter().map(|i| i.name.clone()).collect();
    let (inputs, feature_names) = match real.len() {
        0 => return Err(unsupported("the graph has no inputs")),
        1 => (
            Inputs::Packed { double: doubles[0] },
            (0..widths[0]).map(|i| format!("f{i}")).collect(),
        ),
        _ if widths.iter().all(|&w| w == 1) => (
            Inputs::PerFeature {
                double: doubles.clone(),
            },
            names.clone(),
        ),
        _ => {
            return Err(unsupported(format!(
                "{} inputs of widths {widths:?}: expected one [N, F] input or one [N, 1] input \
                 per feature",
                real.len()
            )));
        }
    };
    Ok(GraphInputs {
        inputs,
        feature_names,
        names,
        widths,
        doubles,
    })
}

/// The tensor Kiln reads scores from.
pub(super) struct ScoreOutput {
    pub name: String,
    pub double: bool,
    /// The graph also has a label output (or a ZipMap): it is a classifier.
    pub classifier: bool,
}

/// A float graph output, or the probability tensor a final ZipMap reads; with several, the
/// one named like probabilities.
pub(super) fn score_output(graph: &GraphProto) -> Result<ScoreOutput, ModelError> {
    let producer: HashMap<&str, &NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut classifier = false;
    let mut candidates: Vec<(String, bool)> = Vec::new();
    for o in &graph.output {
        match producer.get(o.name.as_str()) {
            Some(n) if n.op_type == "ZipMap" => {
                classifier = true;
                candidates.push((n.input[0].clone(), false));
            }
            _ => match tensor_type(o) {
                Some((t, _)) if t == FLOAT || t == DOUBLE => {
                    candidates.push((o.name.clone(), t == DOUBLE));
                }
                _ => classifier = true, // a label output
            },
        }
    }
    let (name, double) = match candidates.len() {
        0 => {
            return Err(unsupported(
                "the graph has no float output to read scores from",
            ));
        }
        1 => candidates.remove(0),
        _ => candidates
            .iter()
            .find(|(n, _)| n.contains("prob"))
            .cloned()
            .ok_or_else(|| {
                unsupported(format!(
                    "several float outputs ({:?}) and none is named like probabilities",
                    candidates.iter().map(|c| &c.0).collect::<Vec<_>>()
                ))
            })?,
    };
    Ok(ScoreOutput {
        name,
        double,
        classifier,
    })
}

/// Which nodes `output` depends on (by index), and every tensor it needs.
pub(super) fn needed_nodes<'g>(
    graph: &'g GraphProto,
    output: &'g str,
) -> (Vec<bool>, HashSet<&'g str>) {
    let mut needed: HashSet<&str> = [output].into();
    let mut keep = vec![false; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o.as_str())) {
            keep[i] = true;
            needed.extend(n.input.iter().map(String::as_str).filter(|s| !s.is_empty()));
        }
    }
    (keep, needed)
}
