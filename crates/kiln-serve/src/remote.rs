//! The engine of a remote model: rows go to the model's HTTP endpoint (Open Inference Protocol
//! or a plain JSON API, as its descriptor says) and its answer comes back as the version's
//! outputs. It sits under the same resilience stack as a local model's batching actor, so
//! timeouts, retries, the breaker and the fallbacks apply to it unchanged.
//!
//! A 5xx, a 429, a refused or reset connection are [`InferError::Unavailable`] (retried, and
//! counted by the breaker); a 4xx is the request's fault ([`InferError::BadRequest`]); an
//! answer of the wrong shape is the remote model's fault ([`InferError::Internal`]).

use std::time::{Duration, Instant};

use kiln_models::remote::{Protocol, RemoteSpec};
use serde_json::{Value, json};

use crate::batching::Scored;
use crate::inference::InferError;

pub struct RemoteModel {
    client: reqwest::Client,
    spec: RemoteSpec,
    /// `fraud@v3 (remote http://...)`, for errors.
    what: String,
    n_inputs: usize,
    n_outputs: usize,
}

/// The longest a remote call may take whatever the model's policy: a backstop for servers
/// run without a timeout layer.
const BACKSTOP: Duration = Duration::from_secs(120);

/// How much of an error body is quoted.
const QUOTED: usize = 300;

impl RemoteModel {
    /// `n_inputs` and `n_outputs` are the registered version's (its inputs may come from a
    /// feature service rather than the descriptor).
    pub fn new(
        spec: RemoteSpec,
        what: &str,
        n_inputs: usize,
        n_outputs: usize,
    ) -> Result<RemoteModel, InferError> {
        let client = kiln_monitor::http_client()
            .map_err(|e| InferError::Unavailable(format!("{what}: no HTTP client: {e}")))?;
        Ok(RemoteModel {
            client,
            what: format!("{what} (remote {})", spec.url),
            n_inputs,
            n_outputs,
            spec,
        })
    }

    fn body(&self, rows: &[f64], n: usize) -> Value {
        // JSON has no NaN: a missing input goes as null.
        let num = |v: &f64| if v.is_nan() { Value::Null } else { json!(v) };
        match self.spec.protocol {
            Protocol::Oip => json!({
                "inputs": [{
                    "name": self.spec.input_name,
                    "shape": [n, self.n_inputs],
                    "datatype": "FP64",
                    "data": rows.iter().map(num).collect::<Vec<_>>(),
                }]
            }),
            Protocol::Json => json!({
                "instances": rows
                    .chunks(self.n_inputs.max(1))
                    .map(|r| r.iter().map(num).collect::<Vec<_>>())
                    .collect::<Vec<_>>(),
            }),
        }
    }

    /// The outputs in an answer, `n_outputs` per row, flattened.
    fn outputs(&self, answer: &Value, n: usize) -> Result<Vec<f64>, String> {
        let values = match self.spec.protocol {
            Protocol::Oip => answer
                .pointer("/outputs/0/data")
                .ok_or("no outputs[0].data in the answer")?,
            Protocol::Json => answer
                .get("predictions")
                .ok_or("no \"predictions\" in the answer")?,
        };
        let mut out = Vec::with_capacity(n * self.n_outputs);
        flatten(values, &mut out)?;
        if out.len() != n * self.n_outputs {
            return Err(format!(
                "{} values for {n} rows of {} outputs",
                out.len(),
                self.n_outputs
            ));
        }
        Ok(out)
    }

    /// Scores whole rows at the remote endpoint.
    pub async fn score(&self, rows: &[f64]) -> Result<Scored, InferError> {
        let n = rows.len() / self.n_inputs.max(1);
        let started = Instant::now();
        let what = &self.what;
        let resp = self
            .client
            .post(&self.spec.url)
            .timeout(BACKSTOP)
            .json(&self.body(rows, n))
            .send()
            .await
            .map_err(|e| InferError::Unavailable(format!("{what}: {}", chain(&e))))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            InferError::Unavailable(format!("{what}: reading the answer: {}", chain(&e)))
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let quoted: String = text.chars().take(QUOTED).collect();
            let message = format!("{what} answered {status}: {quoted}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                InferError::Unavailable(message)
            } else {
                InferError::BadRequest(message)
            });
        }
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| InferError::Internal(format!("{what}: the answer is not JSON: {e}")))?;
        let values = self
            .outputs(&answer, n)
            .map_err(|e| InferError::Internal(format!("{what}: {e}")))?;
        Ok(Scored {
            values,
            queue_time: Duration::ZERO,
            compute_time: started.elapsed(),
            batch_rows: n,
            fallback: None,
            cached: false,
        })
    }
}

fn flatten(v: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(x) => {
            out.push(x.as_f64().ok_or_else(|| format!("{x} is not a number"))?);
            Ok(())
        }
        Value::Null => {
            out.push(f64::NAN);
            Ok(())
        }
        other => Err(format!("{other} is not a number")),
    }
}

/// An error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(protocol: &str, outputs: usize) -> RemoteModel {
        model_at("http://127.0.0.1:9/infer", protocol, outputs)
    }

    fn model_at(url: &str, protocol: &str, outputs: usize) -> RemoteModel {
        let spec = RemoteSpec::parse(
            format!(
                "url = \"{url}\"\nprotocol = \"{protocol}\"\ninputs = [\"a\", \"b\"]\noutputs = {outputs}\n"
            )
            .as_bytes(),
        )
        .expect("descriptor");
        RemoteModel::new(spec, "m@v1", 2, outputs).expect("client")
    }

    #[test]
    fn requests_carry_the_rows_in_each_protocol() {
        let rows = [1.0, f64::NAN, 3.0, 4.0];
        assert_eq!(
            model("oip", 1).body(&rows, 2),
            json!({"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1.0, null, 3.0, 4.0]}]})
        );
        assert_eq!(
            model("json", 1).body(&rows, 2),
            json!({"instances": [[1.0, null], [3.0, 4.0]]})
        );
    }

    #[test]
    fn answers_are_read_and_checked_for_shape() {
        let m = model("oip", 2);
        let answer =
            json!({"outputs": [{"name": "y", "shape": [2, 2], "data": [0.1, 0.9, 0.3, 0.7]}]});
        assert_eq!(m.outputs(&answer, 2), Ok(vec![0.1, 0.9, 0.3, 0.7]));
        let e = m.outputs(&answer, 3).expect_err("3 rows need 6");
        assert_eq!(e, "4 values for 3 rows of 2 outputs");
        let j = model("json", 1);
        assert_eq!(
            j.outputs(&json!({"predictions": [0.5, [0.25]]}), 2),
            Ok(vec![0.5, 0.25])
        );
        assert!(
            j.outputs(&json!({"outputs": []}), 1)
                .expect_err("missing")
                .contains("predictions")
        );
        assert!(
            j.outputs(&json!({"predictions": ["x"]}), 1)
                .expect_err("a string")
                .contains("not a number")
        );
    }

    #[tokio::test]
    async fn an_unreachable_model_is_unavailable_and_named() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("http://127.0.0.1:{port}/infer");
        let e = model_at(&url, "oip", 1)
            .score(&[1.0, 2.0])
            .await
            .expect_err("refused");
        assert!(matches!(e, InferError::Unavailable(_)), "{e}");
        assert!(
            e.to_string().starts_with(&format!("m@v1 (remote {url}): ")),
            "{e}"
        );
    }
}
