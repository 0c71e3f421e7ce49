//! A model served elsewhere, over HTTP: what Kiln records about it at registration. The
//! descriptor (a small TOML file, stored and hashed like any model artifact) says where the
//! model answers and in which protocol; `kiln serve` calls it there, behind the same resilience
//! stack as a local model. Nothing is evaluated here: [`RemoteSpec`] implements [`Model`] only
//! so registration reads its signature the way it reads any model's, and scoring it outside a
//! server says where it runs instead.
//!
//! ```toml
//! url = "http://10.0.0.7:8000/v2/models/fraud/infer"
//! protocol = "oip"          # Open Inference Protocol (REST, JSON tensors), or "json"
//! inputs = ["amount", "n_tx_1h"]
//! outputs = 1
//! objective = "binary:logistic"
//! ```
//!
//! `protocol = "json"` posts `{"instances": [[...], ...]}` and reads `{"predictions": [...]}`
//! (one number, or a list of `outputs` numbers, per row), the form TF Serving and KServe's V1
//! protocol use.

use serde::Deserialize;

use crate::{Format, Link, Model, ModelError, ModelInfo};

/// How a remote model is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Open Inference Protocol over REST: one `[rows, inputs]` FP64 tensor in, the first
    /// output tensor back.
    Oip,
    /// `{"instances": rows}` in, `{"predictions": [...]}` out.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Descriptor {
    url: String,
    #[serde(default = "default_protocol")]
    protocol: Protocol,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default = "default_outputs")]
    outputs: usize,
    #[serde(default = "default_objective")]
    objective: String,
    /// The name of the input tensor sent with `protocol = "oip"`.
    #[serde(default = "default_input_name")]
    input_name: String,
}

fn default_protocol() -> Protocol {
    Protocol::Oip
}

fn default_outputs() -> usize {
    1
}

fn default_objective() -> String {
    "remote".into()
}

fn default_input_name() -> String {
    "input-0".into()
}

/// A remote model's descriptor, checked.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub url: String,
    pub protocol: Protocol,
    /// The name of the input tensor (`protocol = "oip"`).
    pub input_name: String,
    info: ModelInfo,
}

fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        format: "remote",
        message: message.into(),
    }
}

impl RemoteSpec {
    /// Reads a descriptor; every field it gets wrong is named.
    pub fn parse(bytes: &[u8]) -> Result<RemoteSpec, ModelError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| invalid("the descriptor is not UTF-8 text"))?;
        let d: Descriptor =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        let host = d
            .url
            .strip_prefix("http://")
            .or_else(|| d.url.strip_prefix("https://"));
        if host.is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "url {:?}: expected an http:// or https:// address",
                d.url
            )));
        }
        if d.outputs == 0 {
            return Err(invalid("outputs: must be at least 1"));
        }
        if let Some(dup) = d
            .inputs
            .iter()
            .enumerate()
            .find_map(|(i, n)| d.inputs[..i].contains(n).then_some(n))
        {
            return Err(invalid(format!("inputs: {dup:?} is listed twice")));
        }
        Ok(RemoteSpec {
            url: d.url,
            protocol: d.protocol,
            input_name: d.input_name,
            info: ModelInfo {
                format: Format::Remote,
                objective: d.objective,
                feature_names: d.inputs,
                n_outputs: d.outputs,
                link: Link::Identity,
                n_trees: 0,
            },
        })
    }
}

impl Model for RemoteSpec {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&self, _rows: &[f64], _out: &mut [f64]) -> Result<(), ModelError> {
        Err(ModelError::Unsupported {
            format: "remote",
            message: format!(
                "the model answers at {}; kiln serve calls it there, it is not evaluated in this process",
                self.url
            ),
        })
    }

    fn predict_margin(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        self.predict(rows, out)
    }

    fn n_margins(&self) -> usize {
        self.info.n_outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_reads_with_its_defaults() {
        let s = RemoteSpec::parse(
            b"url = \"http://127.0.0.1:9/v2/models/m/infer\"\ninputs = [\"a\", \"b\"]\n",
        )
        .expect("parses");
        assert_eq!(s.protocol, Protocol::Oip);
        assert_eq!(s.input_name, "input-0");
        assert_eq!(s.info().feature_names, ["a", "b"]);
        assert_eq!(s.info().n_outputs, 1);
        assert_eq!(s.info().format, Format::Remote);
        let e = s
            .predict(&[1.0, 2.0], &mut [0.0])
            .expect_err("not evaluated here");
        assert!(
            e.to_string()
                .contains("http://127.0.0.1:9/v2/models/m/infer"),
            "{e}"
        );
    }

    #[test]
    fn bad_descriptors_name_the_field() {
        for (text, needle) in [
            ("url = \"ftp://x/y\"", "url \"ftp://x/y\""),
            ("url = \"http://x\"\noutputs = 0", "outputs"),
            ("url = \"http://x\"\nprotocol = \"grpc\"", "protocol"),
            (
                "url = \"http://x\"\ninputs = [\"a\", \"a\"]",
                "\"a\" is listed twice",
            ),
            ("url = \"http://x\"\nheaders = 1", "headers"),
            ("inputs = []", "url"),
        ] {
            let e = RemoteSpec::parse(text.as_bytes()).expect_err(text);
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }
}
