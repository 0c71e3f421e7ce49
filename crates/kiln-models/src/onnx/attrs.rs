//! Reading ONNX node attributes, with errors that name the node.

use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

use crate::ModelError;

pub(super) fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        format: "onnx",
        message: message.into(),
    }
}

pub(super) fn unsupported(message: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        format: "onnx",
        message: message.into(),
    }
}

/// `Scaler node "name" (domain ai.onnx.ml)`: how errors point at a node.
pub(super) fn describe(node: &NodeProto) -> String {
    let domain = if node.domain.is_empty() {
        "ai.onnx"
    } else {
        node.domain.as_str()
    };
    format!(
        "operator {} (domain {domain}, node {:?})",
        node.op_type, node.name
    )
}

/// The attributes of one node.
pub(super) struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(node: &'a NodeProto) -> Self {
        Attrs { node }
    }

    pub(super) fn node(&self) -> &'a NodeProto {
        self.node
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub(super) fn err(&self, what: impl std::fmt::Display) -> ModelError {
        invalid(format!("{}: {what}", describe(self.node)))
    }

    pub(super) fn ints(&self, name: &str) -> &'a [i64] {
        self.get(name).map_or(&[], |a| a.ints.as_slice())
    }

    pub(super) fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub(super) fn strings(&self, name: &str) -> Vec<String> {
        self.get(name).map_or_else(Vec::new, |a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    /// A float list attribute, or its `NAME_as_tensor` double variant (ai.onnx.ml opset 3).
    /// The flag says whether the values are doubles (then the op computes in double).
    pub(super) fn reals(&self, name: &str) -> Result<(Vec<f64>, bool), ModelError> {
        if let Some(t) = self
            .get(&format!("{name}_as_tensor"))
            .and_then(|a| a.t.as_ref())
        {
            return Ok((
                tensor_reals(t).map_err(|e| self.err(format!("{name}_as_tensor: {e}")))?,
                true,
            ));
        }
        Ok((
            self.get(name).map_or_else(Vec::new, |a| {
                a.floats.iter().map(|&x| f64::from(x)).collect()
            }),
            false,
        ))
    }

    /// The post transform applied to scores (`post_transform`, default NONE).
    pub(super) fn post_transform(&self) -> Result<super::post::Post, ModelError> {
        let name = self
            .string("post_transform")
            .unwrap_or_else(|| "NONE".into());
        super::post::Post::parse(&name).ok_or_else(|| {
            unsupported(format!(
                "{}: post_transform {name:?} is not supported (NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO are)",
                describe(self.node)
            ))
        })
    }
}

/// The values of a float or double tensor attribute.
fn tensor_reals(t: &TensorProto) -> Result<Vec<f64>, String> {
    const FLOAT: i32 = 1;
    const DOUBLE: i32 = 11;
    match t.data_type {
        DOUBLE if !t.double_data.is_empty() => Ok(t.double_data.clone()),
        DOUBLE => Ok(t
            .raw_data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()),
        FLOAT if !t.float_data.is_empty() => {
            Ok(t.float_data.iter().map(|&x| f64::from(x)).collect())
        }
        FLOAT => Ok(t
            .raw_data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        other => Err(format!("element type {other} (expected float or double)")),
    }
}
