//! A project on disk: its directory, its configuration, and the stores it names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kiln_registry::Registry;
use kiln_store::online::{MemoryStore, OnlineStore, RedbStore};
#[cfg(feature = "redis")]
use kiln_store::online::{RedisOptions, RedisStore};

use crate::config::{CONFIG_FILE, Config, OnlineStoreType};

pub struct Project {
    pub dir: PathBuf,
    pub config: Config,
}

impl Project {
    /// The project at `dir` (or the current directory or the nearest parent holding a
    /// `kiln.toml`).
    pub fn discover(dir: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Project> {
        let start = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_dir().context("cannot read the current directory")?,
        };
        let mut here = start.as_path();
        loop {
            let candidate = here.join(CONFIG_FILE);
            if candidate.is_file() {
                let config = Config::load(&candidate, env)?;
                return Ok(Project {
                    dir: here.to_path_buf(),
                    config,
                });
            }
            match (dir, here.parent()) {
                (None, Some(parent)) => here = parent,
                _ => anyhow::bail!(
                    "no {CONFIG_FILE} in {}{}; create a project with `kiln init DIR` or point at one with --project DIR",
                    start.display(),
                    if dir.is_none() { " or its parents" } else { "" }
                ),
            }
        }
    }

    // Paths in the configuration are relative to the project directory (`Path::join` keeps
    // absolute ones as they are).
    pub fn definitions_dir(&self) -> PathBuf {
        self.dir.join(&self.config.definitions)
    }

    pub async fn registry(&self) -> anyhow::Result<Registry> {
        Ok(Registry::open(&self.config.registry_url(&self.dir), &self.config.project).await?)
    }

    pub async fn online_store(&self) -> anyhow::Result<Arc<dyn OnlineStore>> {
        let c = &self.config.online_store;
        Ok(match c.kind {
            OnlineStoreType::Redb => Arc::new(RedbStore::open(&self.dir.join(&c.path))?),
            OnlineStoreType::Memory => Arc::new(MemoryStore::new()),
            #[cfg(feature = "redis")]
            OnlineStoreType::Redis => {
                Arc::new(RedisStore::connect(&c.url, &self.redis_options()).await?)
            }
            #[cfg(feature = "redis")]
            OnlineStoreType::RedisCluster => {
                Arc::new(RedisStore::connect_cluster(&c.nodes, &self.redis_options()).await?)
            }
            #[cfg(not(feature = "redis"))]
            OnlineStoreType::Redis | OnlineStoreType::RedisCluster => anyhow::bail!(
                "online_store.type {:?}: this kiln was built without the `redis` feature",
                c.kind
            ),
        })
    }

    /// The prediction cache's shared level, on its own connection to the online store's Redis,
    /// when a model's `prediction_cache` asks for it (the configuration checked that the
    /// online store is on Redis).
    pub async fn shared_cache(
        &self,
    ) -> anyhow::Result<Option<kiln_serve::cache::prediction::SharedLevel>> {
        if self.config.serve.shared_prediction_caches().is_empty() {
            return Ok(None);
        }
        #[cfg(feature = "redis")]
        {
            let c = &self.config.online_store;
            let options = self.redis_options();
            let store = match c.kind {
                OnlineStoreType::RedisCluster => {
                    RedisStore::connect_cluster(&c.nodes, &options).await?
                }
                _ => RedisStore::connect(&c.url, &options).await?,
            };
            Ok(Some(kiln_serve::cache::prediction::SharedLevel(Arc::new(
                store,
            ))))
        }
        #[cfg(not(feature = "redis"))]
        anyhow::bail!("prediction_cache.shared: this kiln was built without the `redis` feature")
    }

    #[cfg(feature = "redis")]
    fn redis_options(&self) -> RedisOptions {
        let c = &self.config.online_store;
        RedisOptions {
            key_prefix: if c.key_prefix.is_empty() {
                format!("kiln:{}", self.config.project)
            } else {
                c.key_prefix.clone()
            },
            connect_timeout: std::time::Duration::from_millis(c.connect_timeout_ms),
            response_timeout: std::time::Duration::from_millis(c.timeout_ms),
        }
    }

    pub fn artifacts(&self) -> anyhow::Result<kiln_store::artifacts::ArtifactStore> {
        Ok(kiln_store::artifacts::ArtifactStore::open(
            &self.config.artifacts.url,
            &self.dir,
        )?)
    }

    /// How `kiln serve` serves models, from `[serve]` and `[artifacts]`.
    pub fn serve_options(&self) -> anyhow::Result<kiln_serve::ServeOptions> {
        let s = &self.config.serve;
        Ok(kiln_serve::ServeOptions {
            artifacts: Some(self.artifacts()?),
            batching: s.batching(None),
            model_batching: s
                .models
                .keys()
                .map(|m| (m.clone(), s.batching(Some(m))))
                .collect(),
            resilience: s
                .resilience(None)
                .map_err(|e| anyhow::anyhow!(e.join("; ")))?,
            model_resilience: s
                .models
                .keys()
                .map(|m| Ok((m.clone(), s.resilience(Some(m))?)))
                .collect::<Result<_, Vec<String>>>()
                .map_err(|e| anyhow::anyhow!(e.join("; ")))?,
            max_request_bytes: s.max_request_bytes,
            monitor: self.config.monitor.options(&self.dir)?,
            alerts: if self.config.alerts.rules.is_empty() {
                None
            } else {
                let mut plan = self
                    .config
                    .alerts
                    .validate(&|k| std::env::var(k).ok())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                plan.state_file = match self.config.alerts.state_file.as_deref() {
                    Some("") => None,
                    f => Some(self.dir.join(f.unwrap_or(".kiln/alerts/state.json"))),
                };
                Some(plan)
            },
            push: None,
            breakers: Vec::new(),
            rate_limit: s
                .rate_limit
                .as_ref()
                .map(|r| r.settings("serve.rate_limit"))
                .transpose()
                .map_err(|e| anyhow::anyhow!(e.join("; ")))?,
            drain_delay: std::time::Duration::from_secs(kiln_core::time::parse_duration(
                &s.drain_delay,
            )?),
            drain_timeout: std::time::Duration::from_secs(kiln_core::time::parse_duration(
                &s.drain_timeout,
            )?),
            feature_cache: None, // wraps the store: `kiln serve` sets it up with the store
        })
    }

    pub fn spill_dir(&self) -> PathBuf {
        match &self.config.offline_store.spill_dir {
            Some(d) => self.dir.join(d),
            None => std::env::temp_dir(),
        }
    }
}
