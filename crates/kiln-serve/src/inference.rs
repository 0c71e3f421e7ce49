//! Model inference, transport-agnostic: which model version answers a request, loading it
//! from the artifact store (checked against its recorded SHA-256), and scoring rows off the
//! async workers. REST (`oip.rs`, `predict.rs`) and, later, gRPC adapt their wire formats to
//! these functions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kiln_core::spec::{ModelVersion, Stage};
use kiln_models::{Format, Model};
use kiln_registry::ModelState;
use kiln_store::artifacts::{ArtifactStore, sha256_hex};

/// Why an inference request failed; each maps to one status in one place (`error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The model exists but cannot be served now (its artifact is missing or does not load).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// A model version in memory.
pub struct LoadedModel {
    pub spec: ModelVersion,
    pub model: Box<dyn Model>,
}

/// Loaded models by (name, version), loaded on first use.
pub struct ModelHub {
    artifacts: Option<ArtifactStore>,
    loaded: Mutex<HashMap<(String, u32), Arc<LoadedModel>>>,
}

impl ModelHub {
    pub fn new(artifacts: Option<ArtifactStore>) -> ModelHub {
        ModelHub {
            artifacts,
            loaded: Mutex::new(HashMap::new()),
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

    /// The loaded model for a version, loading it if needed.
    pub async fn get(&self, spec: &ModelVersion) -> Result<Arc<LoadedModel>, InferError> {
        let key = (spec.name.clone(), spec.version);
        if let Some(m) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(m.clone());
        }
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
        let model = tokio::task::spawn_blocking(move || kiln_models::load(format, &bytes))
            .await
            .map_err(|e| InferError::Internal(format!("{what}: loading failed: {e}")))?
            .map_err(|e| InferError::Unavailable(format!("{what}: {e}")))?;
        let loaded = Arc::new(LoadedModel {
            spec: spec.clone(),
            model,
        });
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded.clone());
        tracing::info!(model = %what, "model loaded");
        Ok(loaded)
    }
}

/// Scores `rows` (row-major, `n_features` wide) on a blocking thread; returns `n_outputs` values
/// per row.
pub async fn score(model: Arc<LoadedModel>, rows: Vec<f64>) -> Result<Vec<f64>, InferError> {
    tokio::task::spawn_blocking(move || {
        let info = model.model.info();
        let n = rows.len() / info.n_features().max(1);
        let mut out = vec![0.0; n * info.n_outputs];
        model
            .model
            .predict(&rows, &mut out)
            .map(|_| out)
            .map_err(|e| InferError::BadRequest(e.to_string()))
    })
    .await
    .map_err(|e| InferError::Internal(format!("scoring failed: {e}")))?
}
