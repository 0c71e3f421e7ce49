//! Scoring a loaded version: its resilience stack, then, when it cannot answer, its fallback
//! chain (`resilience/fallback.rs`), each step tried in order until one answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kiln_registry::ModelState;
use tower::ServiceExt;

use super::{InferError, LoadedModel, ModelHub};
use crate::batching::Scored;
use crate::metrics::ModelLabels;
use crate::resilience::fallback::falls_back;
use crate::resilience::{Fallback, FallbackUsed, ScoreCall};

impl ModelHub {
    /// Scores whole rows with a loaded version through its resilience stack; when the version
    /// cannot answer, its fallback chain may (the answer says so in [`Scored::fallback`]).
    pub async fn score(
        &self,
        models: &BTreeMap<String, ModelState>,
        model: &LoadedModel,
        rows: Vec<f64>,
    ) -> Result<Scored, InferError> {
        let call = ScoreCall {
            rows: Arc::new(rows),
        };
        let error = match model.stack.service.clone().oneshot(call.clone()).await {
            Ok(scored) => {
                if let Some(cache) = &model.last_good {
                    cache.remember(&call.rows, &scored.values);
                }
                return Ok(scored);
            }
            Err(e) if model.fallback.is_empty() || !falls_back(&e) => return Err(e),
            Err(e) => e,
        };
        let reason = error.to_string();
        let n = call.rows.len() / model.spec.inputs.len().max(1);
        let mut tried = Vec::new();
        for step in &model.fallback {
            let answered = match step {
                Fallback::Cache => {
                    match model.last_good.as_ref().and_then(|c| c.recall(&call.rows)) {
                        Some(values) => Ok(("cache".to_string(), values)),
                        None => Err("cache: not every row has a prediction yet".to_string()),
                    }
                }
                Fallback::Value(v) if v.len() == model.spec.n_outputs => {
                    Ok(("value".to_string(), v.repeat(n)))
                }
                Fallback::Value(v) => Err(format!(
                    "value: {} values given, the model has {} outputs",
                    v.len(),
                    model.spec.n_outputs
                )),
                Fallback::Model(name) => self
                    .score_fallback_model(models, model, name, &call)
                    .await
                    .map_err(|e| format!("model {name}: {e}")),
            };
            match answered {
                Ok((source, values)) => {
                    let used = FallbackUsed {
                        source,
                        reason: reason.clone(),
                    };
                    self.metrics.fallback(
                        &ModelLabels::new(&model.spec.name, model.spec.version),
                        used.kind(),
                    );
                    tracing::warn!(model = %model.spec.name, version = model.spec.version, fallback = %used.source, reason = %used.reason, "answered by a fallback");
                    return Ok(Scored {
                        batch_rows: n,
                        values,
                        queue_time: Duration::ZERO,
                        compute_time: Duration::ZERO,
                        fallback: Some(used),
                        cached: false,
                    });
                }
                Err(why) => tried.push(why),
            }
        }
        Err(error.annotated(&format!("; no fallback answered ({})", tried.join("; "))))
    }

    /// A fallback model's answer: its default version, through its own stack (not its own
    /// fallbacks), if it takes the same inputs.
    async fn score_fallback_model(
        &self,
        models: &BTreeMap<String, ModelState>,
        primary: &LoadedModel,
        name: &str,
        call: &ScoreCall,
    ) -> Result<(String, Vec<f64>), InferError> {
        let spec = Self::pick(models, name, None)?;
        if spec.inputs != primary.spec.inputs || spec.n_outputs != primary.spec.n_outputs {
            return Err(InferError::BadRequest(format!(
                "{name}@v{} takes {} and gives {} outputs; {}@v{} takes {} and gives {}",
                spec.version,
                spec.inputs.join(","),
                spec.n_outputs,
                primary.spec.name,
                primary.spec.version,
                primary.spec.inputs.join(","),
                primary.spec.n_outputs
            )));
        }
        let fallback = self.get(spec).await?;
        let scored = fallback.stack.service.clone().oneshot(call.clone()).await?;
        Ok((format!("model:{name}@v{}", spec.version), scored.values))
    }
}
