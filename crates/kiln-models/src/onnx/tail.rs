//! The standard-domain rest of a graph (an MLP's MatMul/Add/Relu/Softmax, arithmetic after a
//! tree ensemble), run by tract.
//!
//! The sub-graph is cut out of the original model: its inputs are the tensors it reads from
//! the natively evaluated part (or the graph inputs), declared `[N, width]` with a symbolic
//! batch dimension `N`, so one optimized plan serves any batch size.

use tract_onnx::pb::{
    ModelProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto,
    type_proto,
};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use super::attrs::{describe, invalid, unsupported};
use super::native::{DOUBLE, FLOAT};
use crate::ModelError;

/// One input of the tail: which slot feeds it, and whether it is a double tensor.
#[derive(Debug)]
pub(super) struct TailInput {
    pub slot: usize,
    pub width: usize,
    pub double: bool,
}

pub(super) struct Tail {
    plan: Arc<TypedRunnableModel>,
    pub inputs: Vec<TailInput>,
    pub width: usize,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("inputs", &self.inputs)
            .finish()
    }
}

fn value_info(name: &str, elem_type: i32, width: Option<usize>) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    let shape = width.map(|w| TensorShapeProto {
        dim: vec![
            Dimension {
                denotation: String::new(),
                value: Some(Value::DimParam("N".into())),
            },
            Dimension {
                denotation: String::new(),
                value: Some(Value::DimValue(w as i64)),
            },
        ],
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape,
            })),
        }),
        doc_string: String::new(),
    }
}

impl Tail {
    /// Builds the tract plan for `nodes`, reading `inputs` (tensor name, slot, width, double)
    /// and producing `output`.
    pub(super) fn build(
        model: &ModelProto,
        nodes: Vec<NodeProto>,
        inputs: Vec<(String, TailInput)>,
        output: &str,
        output_double: bool,
    ) -> Result<Tail, ModelError> {
        let framework = tract_onnx::onnx();
        for node in &nodes {
            let std = node.domain.is_empty() || node.domain == "ai.onnx";
            if !std || !framework.op_register.0.contains_key(&node.op_type) {
                return Err(unsupported(format!(
                    "{} is not supported (Kiln evaluates Scaler, Normalizer, LinearClassifier, \
                     LinearRegressor, TreeEnsembleClassifier/Regressor and ZipMap at the end; \
                     standard-domain operators run in tract)",
                    describe(node)
                )));
            }
        }
        let mut proto = model.clone();
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| invalid("the model has no graph"))?;
        graph.node = nodes;
        graph.input = inputs
            .iter()
            .map(|(name, i)| value_info(name, if i.double { DOUBLE } else { FLOAT }, Some(i.width)))
            .collect();
        graph.output = vec![value_info(
            output,
            if output_double { DOUBLE } else { FLOAT },
            None,
        )];
        graph.value_info.clear();
        let fail = |e: TractError| invalid(format!("tract cannot prepare the graph: {e:#}"));
        let typed = framework
            .model_for_proto_model(&proto)
            .map_err(fail)?
            .into_optimized()
            .map_err(fail)?;
        let fact = typed.output_fact(0).map_err(fail)?;
        let width = match fact.shape.rank() {
            1 => 1,
            2 => fact.shape[1]
                .to_usize()
                .map_err(|e| invalid(format!("output width is not fixed: {e:?}")))?,
            r => {
                return Err(unsupported(format!(
                    "output {output:?} has rank {r}; expected [N] or [N, K]"
                )));
            }
        };
        let plan = typed.into_runnable().map_err(fail)?;
        Ok(Tail {
            plan,
            inputs: inputs.into_iter().map(|(_, i)| i).collect(),
            width,
        })
    }

    /// Runs `n` rows; `slots` holds every tensor of the native part.
    pub(super) fn run(&self, slots: &[Vec<f64>], n: usize) -> Result<Vec<f64>, ModelError> {
        let fail = |e: TractError| invalid(format!("tract failed to run the graph: {e:#}"));
        let mut values: TVec<TValue> = tvec![];
        for i in &self.inputs {
            let data = &slots[i.slot];
            let t = if i.double {
                Tensor::from_shape(&[n, i.width], data)
            } else {
                let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
                Tensor::from_shape(&[n, i.width], &v)
            }
            .map_err(fail)?;
            values.push(t.into_tvalue());
        }
        let out = self.plan.run(values).map_err(fail)?;
        let t = out[0].cast_to::<f64>().map_err(fail)?;
        let plain = t.try_as_plain_ram().map_err(fail)?;
        Ok(plain.as_slice::<f64>().map_err(fail)?.to_vec())
    }
}
