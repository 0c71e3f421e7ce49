//! `kiln.toml`, layered: compiled-in defaults, then the file, then `KILN__SECTION__KEY`
//! environment variables, then command-line flags. Every setting has a default, so a file with
//! only `project = "name"` (or an empty one) works. The environment is passed in explicitly, so
//! tests never touch the process environment.
//!
//! Every problem is reported at once, with the file line for file errors and the variable name
//! for environment errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod monitor;
mod resilience;
mod stream;

pub use crate::telemetry::TracingConfig;
pub use monitor::MonitorConfig;
pub use resilience::{BreakerConfig, RateLimitConfig, ResilienceConfig};
pub use stream::StreamConfig;

pub const CONFIG_FILE: &str = "kiln.toml";
const ENV_PREFIX: &str = "KILN__";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The project name; registries shared by several projects keep them apart by it.
    #[serde(default)]
    pub project: String,
    /// Directory of definition files (`*.toml`), relative to the project.
    #[serde(default = "default_definitions")]
    pub definitions: String,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub online_store: OnlineStoreConfig,
    #[serde(default)]
    pub offline_store: OfflineStoreConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Alert rules and their webhooks (docs/alerts.md).
    #[serde(default)]
    pub alerts: kiln_monitor::alerts::AlertsConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
    #[serde(default)]
    pub stream: StreamConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Where model files are kept: a directory, relative to the project.
    #[serde(default = "default_artifacts")]
    pub url: String,
}

fn default_artifacts() -> String {
    ".kiln/artifacts".into()
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            url: default_artifacts(),
        }
    }
}

fn default_definitions() -> String {
    "features".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `sqlite://PATH` (relative to the project) or `postgres://user:pass@host/db`.
    #[serde(default = "default_registry_url")]
    pub url: String,
}

fn default_registry_url() -> String {
    "sqlite://.kiln/registry.db".into()
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: default_registry_url(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnlineStoreType {
    /// Embedded, ACID, one file (the default).
    Redb,
    /// In the process only; gone when it exits. For demos and tests.
    Memory,
    /// One Redis server (`url`).
    Redis,
    /// A Redis Cluster (`nodes`: any of its nodes; the rest are discovered).
    #[serde(rename = "redis-cluster")]
    RedisCluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineStoreConfig {
    #[serde(default = "default_online_type", rename = "type")]
    pub kind: OnlineStoreType,
    /// The redb file, relative to the project.
    #[serde(default = "default_online_path")]
    pub path: String,
    /// Materialization writes at most this many keys per atomic batch (see
    /// [`OnlineStoreConfig::write_batch`] for the default).
    #[serde(default)]
    pub write_batch: Option<usize>,
    /// Redis: `redis://[user:password@]host:port[/db]`.
    #[serde(default)]
    pub url: String,
    /// Redis Cluster: `redis://host:port` of one or more of its nodes.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Redis keys start with `PREFIX:` (default `kiln:PROJECT`).
    #[serde(default)]
    pub key_prefix: String,
    /// Redis: a command unanswered after this many milliseconds fails.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Redis: connecting gives up after this many milliseconds.
    #[serde(default = "default_redis_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// `kiln serve`'s circuit breaker in front of the store.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// `kiln serve`'s cache of online rows in front of the store (none when absent).
    #[serde(default)]
    pub cache: Option<OnlineCacheConfig>,
}

/// `[online_store.cache]`: rows read by `kiln serve` kept in process (docs/configuration.md,
/// "Online feature cache").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineCacheConfig {
    /// Rows (or absences) kept at most, over all views (default 1000000; 0: no cache).
    pub rows: Option<u64>,
    /// The longest a row is used, and never longer than its view's ttl (default 5s).
    pub ttl: Option<String>,
    /// A row read later than this after it was read from the store is re-read in the
    /// background (default: three quarters of `ttl`; "0": never).
    pub refresh_after: Option<String>,
    /// A filter of each view's known entities, so unknown ones cost no store read (default
    /// true).
    pub known_entities: Option<bool>,
}

impl OnlineCacheConfig {
    /// The cache's settings and whether to keep filters of known entities; `None` when
    /// `rows` is 0.
    pub fn settings(
        &self,
    ) -> Result<Option<(kiln_store::online::CacheSettings, bool)>, Vec<String>> {
        use std::time::Duration;
        let mut errors = Vec::new();
        let mut seconds = |key: &str, text: &str| match kiln_core::time::parse_duration(text) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("online_store.cache.{key}: {e}"));
                None
            }
        };
        let ttl = seconds("ttl", self.ttl.as_deref().unwrap_or("5s"));
        let refresh = self
            .refresh_after
            .as_deref()
            .map(|text| seconds("refresh_after", text));
        if ttl == Some(0) {
            errors.push("online_store.cache.ttl: must be at least 1s".into());
        }
        if let (Some(ttl), Some(Some(refresh))) = (ttl, refresh)
            && refresh >= ttl
        {
            errors.push(format!(
                "online_store.cache.refresh_after: {refresh}s is not shorter than ttl ({ttl}s); \
                 a row is re-read before it expires, or never (\"0\")"
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ttl = Duration::from_secs(ttl.unwrap_or(5));
        let refresh_after = match refresh {
            None => Some(ttl * 3 / 4),
            Some(Some(0)) => None,
            Some(s) => s.map(Duration::from_secs),
        };
        Ok(match self.rows.unwrap_or(1_000_000) {
            0 => None,
            rows => Some((
                kiln_store::online::CacheSettings {
                    rows,
                    ttl,
                    refresh_after,
                },
                self.known_entities.unwrap_or(true),
            )),
        })
    }
}

fn default_redis_timeout_ms() -> u64 {
    1_000
}

fn default_redis_connect_timeout_ms() -> u64 {
    2_000
}

fn default_online_type() -> OnlineStoreType {
    OnlineStoreType::Redb
}

fn default_online_path() -> String {
    ".kiln/online.redb".into()
}

impl OnlineStoreConfig {
    /// Keys per atomic materialization write: as set, or 262,144 for the embedded stores and
    /// 4,096 for Redis (a batch is one `MULTI`/`EXEC` there, and Redis answers no reader while
    /// it runs).
    pub fn write_batch(&self) -> usize {
        self.write_batch.unwrap_or(match self.kind {
            OnlineStoreType::Redb | OnlineStoreType::Memory => 262_144,
            OnlineStoreType::Redis | OnlineStoreType::RedisCluster => 4_096,
        })
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let redis_url = |what: &str, url: &str| {
            (!url.starts_with("redis://")).then(|| {
                format!(
                    "online_store.{what} {url:?}: expected redis://[user:password@]host:port[/db]"
                )
            })
        };
        match self.kind {
            OnlineStoreType::Redb if self.path.trim().is_empty() => {
                errors.push("online_store.path: the redb backend needs a file path".to_string());
            }
            OnlineStoreType::Redis if self.url.trim().is_empty() => errors.push(
                "online_store.url: the redis backend needs redis://host:port[/db]".to_string(),
            ),
            OnlineStoreType::Redis => errors.extend(redis_url("url", &self.url)),
            OnlineStoreType::RedisCluster if self.nodes.is_empty() => errors.push(
                "online_store.nodes: the redis-cluster backend needs one or more node addresses \
                 (redis://host:port)"
                    .to_string(),
            ),
            OnlineStoreType::RedisCluster => {
                errors.extend(self.nodes.iter().filter_map(|n| redis_url("nodes", n)));
            }
            OnlineStoreType::Redb | OnlineStoreType::Memory => {}
        }
        if self.write_batch == Some(0) {
            errors.push("online_store.write_batch must be at least 1".to_string());
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            errors.push(
                "online_store.timeout_ms and connect_timeout_ms must be at least 1".to_string(),
            );
        }
        if let Err(e) = self.breaker.settings("online_store.breaker") {
            errors.extend(e);
        }
        if let Some(Err(e)) = self.cache.as_ref().map(OnlineCacheConfig::settings) {
            errors.extend(e);
        }
    }
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        OnlineStoreConfig {
            kind: default_online_type(),
            path: default_online_path(),
            write_batch: None,
            url: String::new(),
            nodes: Vec::new(),
            key_prefix: String::new(),
            timeout_ms: default_redis_timeout_ms(),
            connect_timeout_ms: default_redis_connect_timeout_ms(),
            breaker: BreakerConfig::default(),
            cache: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineStoreConfig {
    /// Where the point-in-time join spills partitions; the system temporary directory if unset.
    #[serde(default)]
    pub spill_dir: Option<String>,
    /// Memory the join may use for buffered feature rows before spilling, in MiB.
    #[serde(default = "default_memory_budget")]
    pub memory_budget_mb: u64,
}

fn default_memory_budget() -> u64 {
    1024
}

impl Default for OfflineStoreConfig {
    fn default() -> Self {
        OfflineStoreConfig {
            spill_dir: None,
            memory_budget_mb: default_memory_budget(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Listen address. 6566 is Feast's feature-server port.
    #[serde(default = "default_addr")]
    pub addr: String,
    /// How often the server looks for registry changes.
    #[serde(default = "default_refresh")]
    pub registry_refresh: String,
    /// Larger request bodies are refused with 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Dynamic batching, per model version: rows scored together at most.
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: usize,
    /// How long a batch's first request may wait for others (0: never wait; a batch is what
    /// queued while the previous one was scored).
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Requests waiting per model version; beyond it they are refused with 429.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Scoring threads per model version.
    #[serde(default = "default_batch_workers")]
    pub batch_workers: usize,
    /// How every model is called: timeout, retries, breaker, bulkhead, fallbacks.
    #[serde(default)]
    pub resilience: ResilienceConfig,
    /// Per-key rate limits (`[serve.rate_limit]`); none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// On shutdown, readiness answers 503 this long before the listener closes.
    #[serde(default = "default_drain_delay")]
    pub drain_delay: String,
    /// Then requests in flight get at most this long to finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
    /// Batching and resilience settings of one model (`[serve.models.NAME]`), over the ones
    /// above.
    #[serde(default)]
    pub models: BTreeMap<String, ModelServeConfig>,
}

/// A model's own batching settings; what it leaves out comes from `[serve]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelServeConfig {
    pub max_batch_rows: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
    pub queue_capacity: Option<usize>,
    pub batch_workers: Option<usize>,
    /// Over `[serve.resilience]`, field by field.
    #[serde(default)]
    pub resilience: ResilienceConfig,
}

fn default_max_request_bytes() -> usize {
    kiln_serve::ServeOptions::default().max_request_bytes
}

fn default_max_batch_rows() -> usize {
    kiln_serve::BatchConfig::default().max_batch_rows
}

fn default_queue_capacity() -> usize {
    kiln_serve::BatchConfig::default().queue_capacity
}

fn default_batch_workers() -> usize {
    kiln_serve::BatchConfig::default().workers
}

fn default_drain_delay() -> String {
    "0s".into()
}

fn default_drain_timeout() -> String {
    "30s".into()
}

fn default_addr() -> String {
    "127.0.0.1:6566".into()
}

fn default_refresh() -> String {
    "2s".into()
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: default_addr(),
            registry_refresh: default_refresh(),
            max_request_bytes: default_max_request_bytes(),
            max_batch_rows: default_max_batch_rows(),
            max_queue_delay_us: 0,
            queue_capacity: default_queue_capacity(),
            batch_workers: default_batch_workers(),
            resilience: ResilienceConfig::default(),
            rate_limit: None,
            drain_delay: default_drain_delay(),
            drain_timeout: default_drain_timeout(),
            models: BTreeMap::new(),
        }
    }
}

impl ServeConfig {
    /// The batching of `model`: its own settings over the server's.
    pub fn batching(&self, model: Option<&str>) -> kiln_serve::BatchConfig {
        let own = model
            .and_then(|m| self.models.get(m))
            .cloned()
            .unwrap_or_default();
        kiln_serve::BatchConfig {
            max_batch_rows: own.max_batch_rows.unwrap_or(self.max_batch_rows),
            max_queue_delay: std::time::Duration::from_micros(
                own.max_queue_delay_us.unwrap_or(self.max_queue_delay_us),
            ),
            queue_capacity: own.queue_capacity.unwrap_or(self.queue_capacity),
            workers: own.batch_workers.unwrap_or(self.batch_workers),
        }
    }

    /// How `model` is called (every model when `None`): its own resilience settings over the
    /// server's, checked; errors name the setting.
    pub fn resilience(
        &self,
        model: Option<&str>,
    ) -> Result<kiln_serve::resilience::ModelPolicy, Vec<String>> {
        match model.and_then(|m| self.models.get(m).map(|c| (m, c))) {
            Some((m, own)) => own
                .resilience
                .over(&self.resilience)
                .policy(&format!("serve.models.{m}.resilience")),
            None => self.resilience.policy("serve.resilience"),
        }
    }

    /// Whether `model`'s prediction cache (every model's when `None`) has the shared level.
    pub fn shared_prediction_cache(&self, model: Option<&str>) -> bool {
        let own = model.and_then(|m| self.models.get(m));
        let merged = own.map_or_else(
            || self.resilience.clone(),
            |c| c.resilience.over(&self.resilience),
        );
        merged
            .prediction_cache
            .is_some_and(|c| c.shared == Some(true) && c.values != Some(0))
    }

    /// The models (`None`: the server's default) whose prediction cache is shared.
    pub fn shared_prediction_caches(&self) -> Vec<Option<&str>> {
        std::iter::once(None)
            .chain(self.models.keys().map(|m| Some(m.as_str())))
            .filter(|m| self.shared_prediction_cache(*m))
            .collect()
    }
}

impl Config {
    /// Loads `path` with environment overrides from `env` (pairs of name and value).
    pub fn load(path: &Path, env: &[(String, String)]) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        let mut errors = Vec::new();
        // Parse the file alone first, so its errors carry line numbers.
        let mut table: toml::Table = match toml::from_str::<toml::Table>(&text) {
            Ok(t) => t,
            Err(e) => anyhow::bail!("{}", located(path, &text, &e)),
        };
        if let Err(e) = Config::deserialize(toml::Value::Table(table.clone())) {
            if let Err(e2) = toml::from_str::<Config>(&text) {
                errors.push(located(path, &text, &e2));
            } else {
                errors.push(format!("{}: {e}", path.display()));
            }
        }
        // Each variable is checked against the file alone, so one bad value is reported once
        // (and not again for every variable after it).
        let file_table = errors.is_empty().then(|| table.clone());
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.iter().any(String::is_empty) {
                errors.push(format!("environment variable {name}: empty key segment"));
                continue;
            }
            set_path(&mut table, &keys, parse_env_value(value));
            if let Some(mut single) = file_table.clone() {
                set_path(&mut single, &keys, parse_env_value(value));
                if let Err(e) = Config::deserialize(toml::Value::Table(single)) {
                    errors.push(format!(
                        "environment variable {name}={value:?}: {}",
                        e.message().trim()
                    ));
                }
            }
        }
        if !errors.is_empty() {
            anyhow::bail!("invalid configuration:\n  {}", errors.join("\n  "));
        }
        let mut config = Config::deserialize(toml::Value::Table(table))?;
        // The standard OpenTelemetry variable, below Kiln's own settings.
        let mut env_errors = Vec::new();
        config.tracing.apply_env(env, &mut env_errors);
        if config.project.is_empty() {
            config.project = path
                .parent()
                .and_then(|d| d.canonicalize().ok())
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
                .unwrap_or_else(|| "default".into());
        }
        config.validate(path, env_errors)?;
        Ok(config)
    }

    /// Checks values that parse but cannot work, all at once (with `errors` found earlier).
    pub fn validate(&self, path: &Path, mut errors: Vec<String>) -> anyhow::Result<()> {
        let url = &self.registry.url;
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "registry.url {url:?}: expected sqlite://PATH or postgres://..."
            ));
        }
        self.online_store.validate(&mut errors);
        if self.serve.addr.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "serve.addr {:?}: expected HOST:PORT like 127.0.0.1:6566",
                self.serve.addr
            ));
        }
        let mut counts = vec![
            (
                "max_request_bytes".to_string(),
                self.serve.max_request_bytes,
            ),
            ("max_batch_rows".to_string(), self.serve.max_batch_rows),
            ("queue_capacity".to_string(), self.serve.queue_capacity),
            ("batch_workers".to_string(), self.serve.batch_workers),
        ];
        for (name, m) in &self.serve.models {
            for (key, value) in [
                ("max_batch_rows", m.max_batch_rows),
                ("queue_capacity", m.queue_capacity),
                ("batch_workers", m.batch_workers),
            ] {
                if let Some(v) = value {
                    counts.push((format!("models.{name}.{key}"), v));
                }
            }
        }
        for (key, value) in counts {
            if value == 0 {
                errors.push(format!("serve.{key}: must be at least 1"));
            }
        }
        for model in std::iter::once(None).chain(self.serve.models.keys().map(|m| Some(m.as_str())))
        {
            if let Err(e) = self.serve.resilience(model) {
                errors.extend(e);
            }
        }
        if !self.serve.shared_prediction_caches().is_empty()
            && !matches!(
                self.online_store.kind,
                OnlineStoreType::Redis | OnlineStoreType::RedisCluster
            )
        {
            errors.push(format!(
                "prediction_cache.shared: the shared level lives in the online store's Redis, \
                 but online_store.type is {:?} (set it to \"redis\" or \"redis-cluster\", or \
                 leave shared out)",
                format!("{:?}", self.online_store.kind).to_lowercase()
            ));
        }
        if let Some(Err(e)) = self
            .serve
            .rate_limit
            .as_ref()
            .map(|r| r.settings("serve.rate_limit"))
        {
            errors.extend(e);
        }
        for (key, text) in [
            ("drain_delay", &self.serve.drain_delay),
            ("drain_timeout", &self.serve.drain_timeout),
        ] {
            if let Err(e) = kiln_core::time::parse_duration(text) {
                errors.push(format!("serve.{key}: {e}"));
            }
        }
        if let Err(e) = kiln_core::time::parse_duration(&self.serve.registry_refresh) {
            errors.push(format!("serve.registry_refresh: {e}"));
        }
        self.tracing.validate(&mut errors);
        if self.offline_store.memory_budget_mb == 0 {
            errors.push("offline_store.memory_budget_mb must be at least 1".to_string());
        }
        self.monitor.validate(&mut errors);
        self.stream.validate(&mut errors);
        if let Err(kiln_monitor::alerts::AlertError::InvalidConfig { problems }) =
            self.alerts.validate(&|k| std::env::var(k).ok())
        {
            errors.extend(problems);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "invalid configuration in {}:\n  {}",
                path.display(),
                errors.join("\n  ")
            )
        }
    }

    /// The registry URL with a relative SQLite path resolved against the project directory.
    pub fn registry_url(&self, project_dir: &Path) -> String {
        match self.registry.url.strip_prefix("sqlite://") {
            Some(p) if !Path::new(p.split('?').next().unwrap_or(p)).is_absolute() => {
                format!("sqlite://{}", project_dir.join(p).display())
            }
            _ => self.registry.url.clone(),
        }
    }
}

fn located(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(l) => format!("{}:{l}: {}", path.display(), e.message().trim()),
        None => format!("{}: {}", path.display(), e.message().trim()),
    }
}

/// Environment values are TOML values when they parse as one (`1024`, `true`), else strings.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        // Just made sure it is a table.
        let Some(next) = entry.as_table_mut() else {
            return;
        };
        t = next;
    }
    t.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(CONFIG_FILE);
        std::fs::write(&p, text).expect("write");
        (dir, p)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let (_d, p) = write("project = \"demo\"\n");
        let c = Config::load(&p, &[]).expect("loads");
        assert_eq!(c.project, "demo");
        assert_eq!(c.online_store.kind, OnlineStoreType::Redb);
        assert_eq!(c.serve.addr, "127.0.0.1:6566");
        let (d, p) = write("");
        let c = Config::load(&p, &[]).expect("empty loads");
        assert_eq!(
            c.project,
            d.path()
                .canonicalize()
                .expect("canon")
                .file_name()
                .expect("name")
                .to_string_lossy()
        );
    }

    #[test]
    fn env_overrides_file() {
        let (_d, p) = write("project = \"demo\"\n[serve]\naddr = \"127.0.0.1:1\"\n");
        let env = vec![
            ("KILN__SERVE__ADDR".to_string(), "0.0.0.0:9000".to_string()),
            (
                "KILN__OFFLINE_STORE__MEMORY_BUDGET_MB".to_string(),
                "64".to_string(),
            ),
            ("KILN__ONLINE_STORE__TYPE".to_string(), "memory".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(&p, &env).expect("loads");
        assert_eq!(c.serve.addr, "0.0.0.0:9000");
        assert_eq!(c.offline_store.memory_budget_mb, 64);
        assert_eq!(c.online_store.kind, OnlineStoreType::Memory);
    }

    #[test]
    fn a_model_batches_with_its_own_settings_over_the_servers() {
        let (_d, p) = write(
            "project = \"demo\"\n[serve]\nmax_batch_rows = 32\n[serve.models.ranker]\nmax_queue_delay_us = 500\n",
        );
        let env = vec![(
            "KILN__SERVE__MODELS__RANKER__BATCH_WORKERS".to_string(),
            "2".to_string(),
        )];
        let c = Config::load(&p, &env).expect("loads");
        let ranker = c.serve.batching(Some("ranker"));
        assert_eq!(ranker.max_batch_rows, 32);
        assert_eq!(
            ranker.max_queue_delay,
            std::time::Duration::from_micros(500)
        );
        assert_eq!(ranker.workers, 2);
        assert_eq!(c.serve.batching(Some("other")), c.serve.batching(None));
        let (_d, p) = write("project = \"demo\"\n[serve.models.ranker]\nqueue_capacity = 0\n");
        let e = Config::load(&p, &[]).expect_err("zero").to_string();
        assert!(e.contains("serve.models.ranker.queue_capacity"), "{e}");
    }

    #[test]
    fn redis_online_stores_need_addresses_and_batch_smaller() {
        let (_d, p) = write(
            "project = \"demo\"\n[online_store]\ntype = \"redis\"\nurl = \"redis://h:1/2\"\n",
        );
        let c = Config::load(&p, &[]).expect("loads");
        assert_eq!(c.online_store.kind, OnlineStoreType::Redis);
        assert_eq!(c.online_store.write_batch(), 4_096);
        let env = [
            (
                "KILN__ONLINE_STORE__TYPE".to_string(),
                "redis-cluster".to_string(),
            ),
            (
                "KILN__ONLINE_STORE__NODES".to_string(),
                "[\"redis://a:1\", \"redis://b:2\"]".to_string(),
            ),
            (
                "KILN__ONLINE_STORE__WRITE_BATCH".to_string(),
                "7".to_string(),
            ),
        ];
        let c = Config::load(&p, &env).expect("loads");
        assert_eq!(c.online_store.kind, OnlineStoreType::RedisCluster);
        assert_eq!(c.online_store.nodes, ["redis://a:1", "redis://b:2"]);
        assert_eq!(c.online_store.write_batch(), 7);
        let (_d, p) = write(
            "[online_store.breaker]\nwindow = \"soon\"\nfailure_rate = 1.5\nopen_for = \"0\"\n",
        );
        let e = Config::load(&p, &[]).expect_err("bad breaker").to_string();
        for named in [
            "online_store.breaker.window",
            "online_store.breaker.failure_rate 1.5",
            "online_store.breaker.open_for: must be at least 1s",
        ] {
            assert!(e.contains(named), "{named}: {e}");
        }
        let (_d, p) = write("[online_store]\ntype = \"redis\"\n");
        let e = Config::load(&p, &[]).expect_err("no url").to_string();
        assert!(e.contains("online_store.url"), "{e}");
        let (_d, p) =
            write("[online_store]\ntype = \"redis-cluster\"\nnodes = [\"127.0.0.1:7000\"]\n");
        let e = Config::load(&p, &[]).expect_err("no scheme").to_string();
        assert!(
            e.contains("online_store.nodes \"127.0.0.1:7000\"") && e.contains("redis://"),
            "{e}"
        );
    }

    #[test]
    fn the_online_cache_has_defaults_and_its_errors_are_named() {
        use std::time::Duration;
        let settings = |text: &str| {
            let (_d, p) = write(&format!("[online_store.cache]\n{text}"));
            Config::load(&p, &[]).map(|c| {
                c.online_store
                    .cache
                    .expect("a cache")
                    .settings()
                    .expect("valid")
            })
        };
        let (s, known) = settings("").expect("valid").expect("on");
        assert_eq!(
            (s.rows, s.ttl, s.refresh_after, known),
            (
                1_000_000,
                Duration::from_secs(5),
                Some(Duration::from_millis(3_750)),
                true
            )
        );
        let (s, known) = settings("ttl = \"1m\"\nrefresh_after = \"0\"\nknown_entities = false")
            .expect("valid")
            .expect("on");
        assert_eq!(
            (s.ttl, s.refresh_after, known),
            (Duration::from_secs(60), None, false)
        );
        assert!(settings("rows = 0").expect("valid").is_none());
        let e = settings("ttl = \"0\"\nrefresh_after = \"soon\"")
            .expect_err("bad")
            .to_string();
        assert!(
            e.contains("online_store.cache.ttl: must be at least 1s")
                && e.contains("online_store.cache.refresh_after"),
            "{e}"
        );
        let (_d, p) = write("[serve.resilience]\nprediction_cache = { shared = true }\n");
        let e = Config::load(&p, &[]).expect_err("no redis").to_string();
        assert!(e.contains("prediction_cache.shared"), "{e}");
        let (_d, p) = write(
            "[online_store]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\
             [serve.models.a.resilience]\nprediction_cache = { shared = true }\n",
        );
        let c = Config::load(&p, &[]).expect("valid");
        assert_eq!(c.serve.shared_prediction_caches(), [Some("a")]);
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let (_d, p) = write("project = \"demo\"\n[serve]\nadr = \"x\"\n");
        let e = Config::load(&p, &[]).expect_err("typo").to_string();
        assert!(e.contains("kiln.toml:3") && e.contains("adr"), "{e}");
        let (_d, p) = write("[registry]\nurl = \"mysql://x\"\n[serve]\naddr = \"nope\"\n");
        let e = Config::load(
            &p,
            &[("KILN__ONLINE_STORE__TYPE".into(), "cassandra".into())],
        )
        .expect_err("bad")
        .to_string();
        assert!(e.contains("KILN__ONLINE_STORE__TYPE"), "{e}");
        let (_d, p) = write("[registry]\nurl = \"mysql://x\"\n[serve]\naddr = \"nope\"\n");
        let e = Config::load(&p, &[]).expect_err("bad").to_string();
        assert!(
            e.contains("registry.url") && e.contains("serve.addr"),
            "{e}"
        );
    }

    #[test]
    fn the_log_settings_are_checked_and_reach_the_stream() {
        let (_d, p) =
            write("[stream]\nsegment_bytes = 0\nretention = \"a week\"\nidle_tick = \"0s\"\n");
        let e = Config::load(&p, &[]).expect_err("bad").to_string();
        for key in [
            "stream.segment_bytes",
            "stream.retention",
            "stream.idle_tick",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let (_d, p) = write("[stream]\nretention = \"7d\"\nidle_tick = \"2s\"\n");
        let c = Config::load(&p, &[]).expect("valid");
        assert_eq!(
            c.stream.options().retention,
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        let log = c.stream.log_options();
        assert_eq!(log.tick_when_idle, Some(std::time::Duration::from_secs(2)));
        assert_eq!(log.segment_bytes, kiln_stream::log::DEFAULT_SEGMENT_BYTES);
    }
}
