//! Model inference, transport-agnostic: which model version answers a request, loading it
//! from the artifact store (checked against its recorded SHA-256) once however many requests
//! ask at the same time, the model repository's load/unload state, and scoring rows through
//! the version's engine (its batching actor, `batching.rs`, off the async workers; or a remote
//! endpoint, `remote.rs`) under its resilience stack, with its fallback chain ([`score`]). REST
//! (`oip.rs`, `predict.rs`) and gRPC (`grpc.rs`) adapt their wire formats to these functions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::spec::{ModelVersion, Stage};
use kiln_models::{Format, Model};
use kiln_registry::ModelState;
use kiln_store::artifacts::{ArtifactStore, sha256_hex};
use tokio::sync::OnceCell;

use crate::batching::{BatchConfig, Batcher};
use crate::metrics::{ModelLabels, ServeMetrics};
use crate::resilience::fallback::LastGood;
use crate::resilience::policy::Stack;
use crate::resilience::{Breaker, Fallback, ModelPolicy, RetryBudget, ScoreCall, ScoreService};

mod score;

/// Why an inference request failed; each maps to one status in one place (`error.rs`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The model exists but cannot be served now (its artifact is missing or does not load).
    #[error("{0}")]
    Unavailable(String),
    /// The model was unloaded through the repository extension.
    #[error("{0}")]
    NotReady(String),
    /// No answer within the model's timeout.
    #[error("{0}")]
    Timeout(String),
    /// The model's circuit breaker is open: it was not called.
    #[error("{0}")]
    CircuitOpen(String),
    /// The model's queue is full: retry later.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    Internal(String),
}

impl InferError {
    /// The same error with `more` appended to its message.
    pub fn annotated(self, more: &str) -> InferError {
        match self {
            InferError::NotFound(m) => InferError::NotFound(m + more),
            InferError::BadRequest(m) => InferError::BadRequest(m + more),
            InferError::Unavailable(m) => InferError::Unavailable(m + more),
            InferError::NotReady(m) => InferError::NotReady(m + more),
            InferError::Timeout(m) => InferError::Timeout(m + more),
            InferError::CircuitOpen(m) => InferError::CircuitOpen(m + more),
            InferError::Overloaded {
                message,
                retry_after,
            } => InferError::Overloaded {
                message: message + more,
                retry_after,
            },
            InferError::Internal(m) => InferError::Internal(m + more),
        }
    }
}

/// A model version in memory: its engine (a batching actor over the loaded model, or a remote
/// endpoint) inside the resilience stack its policy builds.
pub struct LoadedModel {
    pub spec: ModelVersion,
    /// The spec's inputs and objective, shared with every monitoring event of this version.
    pub inputs: Arc<[String]>,
    pub objective: Arc<str>,
    stack: Stack,
    fallback: Vec<Fallback>,
    /// The last good predictions, when the chain has a `cache` step.
    last_good: Option<LastGood>,
}

impl LoadedModel {
    /// The version's circuit breaker, if its policy has one.
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.stack.breaker.as_ref()
    }

    /// The version's prediction cache, if its policy has one.
    pub fn prediction_cache(&self) -> Option<&Arc<crate::cache::prediction::PredictionCache>> {
        self.stack.prediction_cache.as_ref()
    }

    /// The version's retry budget, if its policy retries.
    pub fn retry_budget(&self) -> Option<&Arc<RetryBudget>> {
        self.stack.budget.as_ref()
    }
}

type Slot = Arc<OnceCell<Arc<LoadedModel>>>;

/// Loaded models by (name, version), loaded on first use (or on a repository `load`), each
/// once: concurrent first requests wait for the same load.
pub struct ModelHub {
    artifacts: Option<ArtifactStore>,
    batching: BatchConfig,
    model_batching: BTreeMap<String, BatchConfig>,
    policy: ModelPolicy,
    model_policy: BTreeMap<String, ModelPolicy>,
    metrics: Arc<ServeMetrics>,
    loaded: Mutex<HashMap<(String, u32), Slot>>,
    /// Models unloaded through the repository extension: not served until loaded again.
    unloaded: Mutex<BTreeSet<String>>,
}

/// A model version's state in the repository index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    pub reason: String,
}

impl ModelHub {
    /// Where model files (and drift references) are read from.
    pub fn artifacts(&self) -> Option<&ArtifactStore> {
        self.artifacts.as_ref()
    }

    pub fn new(
        artifacts: Option<ArtifactStore>,
        batching: BatchConfig,
        model_batching: BTreeMap<String, BatchConfig>,
        policy: ModelPolicy,
        model_policy: BTreeMap<String, ModelPolicy>,
        metrics: Arc<ServeMetrics>,
    ) -> ModelHub {
        ModelHub {
            artifacts,
            batching,
            model_batching,
            policy,
            model_policy,
            metrics,
            loaded: Mutex::new(HashMap::new()),
            unloaded: Mutex::new(BTreeSet::new()),
        }
    }

    /// The version that answers for `name`: the one asked for, else the production version,
    /// else the latest version that is not archived. Archived versions are not served.
    pub fn pick<'a>(
        models: &'a BTreeMap<String, ModelState>,
        name: &str,
        version: Option<u32>,
    ) -> Result<&'a ModelVersion, InferError> {
        let model = models.get(name).ok_or_else(|| {
            let known: Vec<&str> = models.keys().map(String::as_str).collect();
            InferError::NotFound(format!(
                "model {name:?} is not registered ({})",
                if known.is_empty() {
                    "no models are".to_string()
                } else {
                    format!("registered: {}", known.join(", "))
                }
            ))
        })?;
        let v = match version {
            Some(n) => model.version(n).ok_or_else(|| {
                InferError::NotFound(format!(
                    "model {name:?} has no version {n} (it has 1 to {})",
                    model.versions.len()
                ))
            })?,
            None => model
                .production()
                .or_else(|| {
                    model
                        .versions
                        .iter()
                        .rev()
                        .find(|v| v.stage != Stage::Archived)
                })
                .ok_or_else(|| {
                    InferError::NotFound(format!("model {name:?} has only archived versions"))
                })?,
        };
        if v.stage == Stage::Archived {
            return Err(InferError::NotFound(format!(
                "{name}@v{} is archived; promote it to serve it",
                v.spec.version
            )));
        }
        Ok(&v.spec)
    }

    fn slot(&self, spec: &ModelVersion) -> Slot {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((spec.name.clone(), spec.version))
            .or_default()
            .clone()
    }

    fn is_unloaded(&self, name: &str) -> bool {
        self.unloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// The loaded model for a version, loading it if needed; refused while the model is
    /// unloaded.
    pub async fn get(&self, spec: &ModelVersion) -> Result<Arc<LoadedModel>, InferError> {
        if self.is_unloaded(&spec.name) {
            return Err(InferError::NotReady(format!(
                "model {:?} is unloaded; load it with POST /v2/repository/models/{}/load",
                spec.name, spec.name
            )));
        }
        self.load_slot(spec).await
    }

    async fn load_slot(&self, spec: &ModelVersion) -> Result<Arc<LoadedModel>, InferError> {
        let slot = self.slot(spec);
        slot.get_or_try_init(|| self.load(spec)).await.cloned()
    }

    async fn load(&self, spec: &ModelVersion) -> Result<Arc<LoadedModel>, InferError> {
        let what = format!("{}@v{}", spec.name, spec.version);
        let artifacts = self.artifacts.as_ref().ok_or_else(|| {
            InferError::Unavailable(format!("{what}: this server has no artifact store"))
        })?;
        let bytes = artifacts.get(&spec.artifact).await.map_err(|e| {
            InferError::Unavailable(format!("{what}: cannot read its artifact: {e}"))
        })?;
        let sha = sha256_hex(&bytes);
        if sha != spec.sha256 {
            return Err(InferError::Unavailable(format!(
                "{what}: artifact {} has SHA-256 {sha}, registered as {}; it was changed after registration",
                spec.artifact, spec.sha256
            )));
        }
        let format: Format = spec
            .format
            .parse()
            .map_err(|e| InferError::Unavailable(format!("{what}: {e}")))?;
        let policy = self.model_policy.get(&spec.name).unwrap_or(&self.policy);
        let engine = match format {
            Format::Remote => {
                let remote = kiln_models::remote::RemoteSpec::parse(&bytes)
                    .map_err(|e| InferError::Unavailable(format!("{what}: {e}")))?;
                let remote = Arc::new(crate::remote::RemoteModel::new(
                    remote,
                    &what,
                    spec.inputs.len(),
                    spec.n_outputs,
                )?);
                ScoreService::new(tower::service_fn(move |call: ScoreCall| {
                    let remote = remote.clone();
                    async move { remote.score(&call.rows).await }
                }))
            }
            _ => {
                let model = tokio::task::spawn_blocking(move || kiln_models::load(format, &bytes))
                    .await
                    .map_err(|e| InferError::Internal(format!("{what}: loading failed: {e}")))?
                    .map_err(|e| InferError::Unavailable(format!("{what}: {e}")))?;
                let model: Arc<dyn Model> = Arc::from(model);
                let batching = *self
                    .model_batching
                    .get(&spec.name)
                    .unwrap_or(&self.batching);
                let batcher = Arc::new(Batcher::start(
                    model,
                    what.clone(),
                    batching,
                    self.metrics
                        .batch_handles(&ModelLabels::new(&spec.name, spec.version)),
                ));
                ScoreService::new(tower::service_fn(move |call: ScoreCall| {
                    let batcher = batcher.clone();
                    async move { batcher.submit(call.rows).await }
                }))
            }
        };
        let last_good = policy
            .fallback
            .contains(&Fallback::Cache)
            .then(|| LastGood::new(policy.cache_rows, spec.inputs.len(), spec.n_outputs));
        tracing::info!(model = %what, "model loaded");
        Ok(Arc::new(LoadedModel {
            spec: spec.clone(),
            inputs: Arc::from(spec.inputs.clone()),
            objective: Arc::from(spec.objective.as_str()),
            stack: policy.build(&what, engine),
            fallback: policy.fallback.clone(),
            last_good,
        }))
    }

    /// The versions loaded now (`/metrics` reads their breakers and retry budgets).
    pub fn loaded_models(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|slot| slot.get().cloned())
            .collect()
    }

    /// Loads the versions that answer by default (a deployment's arms and shadows, else
    /// production, else the latest), so the first request after a start, a promotion or a
    /// routing change does not wait for a load. Failures are logged;
    /// requests for such a model get the load error.
    pub async fn preload(&self, models: &BTreeMap<String, ModelState>) {
        for spec in self.answering(models) {
            if let Err(e) = self.load_slot(spec).await {
                tracing::warn!(model = %spec.name, version = spec.version, error = %e, "model not loaded");
            }
        }
    }

    /// The versions that answer requests naming none (a deployment's arms and shadows, else
    /// production, else the latest) of the models not unloaded.
    fn answering<'a>(&self, models: &'a BTreeMap<String, ModelState>) -> Vec<&'a ModelVersion> {
        let mut out = Vec::new();
        for (name, model) in models {
            if self.is_unloaded(name) {
                continue;
            }
            let versions: Vec<Option<u32>> = match &model.deployment {
                Some(d) => d.versions().map(Some).collect(),
                None => vec![None],
            };
            out.extend(
                versions
                    .into_iter()
                    .filter_map(|v| Self::pick(models, name, v).ok()),
            );
        }
        out
    }

    /// Of the versions that answer by default, those not loaded (their load failed, or is
    /// under way), as `name@vN`: readiness waits for them.
    pub fn not_loaded(&self, models: &BTreeMap<String, ModelState>) -> Vec<String> {
        let answering = self.answering(models);
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        answering
            .into_iter()
            .filter(|s| {
                !loaded
                    .get(&(s.name.clone(), s.version))
                    .is_some_and(|slot| slot.initialized())
            })
            .map(|s| format!("{}@v{}", s.name, s.version))
            .collect()
    }

    /// Repository extension: loads the model's default version and serves it again.
    pub async fn load_model(
        &self,
        models: &BTreeMap<String, ModelState>,
        name: &str,
    ) -> Result<(), InferError> {
        let spec = Self::pick(models, name, None)?;
        self.load_slot(spec).await?;
        self.unloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    /// Repository extension: stops serving the model and frees every loaded version of it
    /// (requests already scoring finish first).
    pub fn unload_model(
        &self,
        models: &BTreeMap<String, ModelState>,
        name: &str,
    ) -> Result<(), InferError> {
        Self::pick(models, name, None).map(|_| ())?;
        self.unloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _), _| n != name);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }

    /// Repository extension: every registered version and whether it is loaded.
    pub fn index(&self, models: &BTreeMap<String, ModelState>) -> Vec<IndexEntry> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let unloaded = self.unloaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (name, model) in models {
            for v in &model.versions {
                let key = (name.clone(), v.spec.version);
                let is_loaded = loaded.get(&key).is_some_and(|s| s.initialized());
                let (state, reason) = if v.stage == Stage::Archived {
                    ("UNAVAILABLE", "archived".to_string())
                } else if unloaded.contains(name) {
                    ("UNAVAILABLE", "unloaded".to_string())
                } else if is_loaded {
                    ("READY", String::new())
                } else {
                    (
                        "UNAVAILABLE",
                        "not loaded yet (loads on first request)".to_string(),
                    )
                };
                out.push(IndexEntry {
                    name: name.clone(),
                    version: v.spec.version.to_string(),
                    state,
                    reason,
                });
            }
        }
        out
    }
}
