//! Resilience settings: the online store's circuit breaker, and how each model is called
//! (`[serve.resilience]`, `[serve.models.NAME.resilience]`; docs/configuration.md, "Model
//! resilience"). They build `kiln_serve::resilience` policies, checked with every error named.

use serde::{Deserialize, Serialize};

/// A circuit breaker (docs/configuration.md, "Circuit breaker").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(default = "breaker_enabled")]
    pub enabled: bool,
    /// Outcomes over this long decide whether it opens.
    #[serde(default = "default_breaker_window")]
    pub window: String,
    /// ...once at least this many calls ended in the window...
    #[serde(default = "default_breaker_min_calls")]
    pub min_calls: u32,
    /// ...and at least this share of them failed (0 < rate <= 1).
    #[serde(default = "default_breaker_failure_rate")]
    pub failure_rate: f64,
    /// Calls are refused this long, then probed.
    #[serde(default = "default_breaker_open_for")]
    pub open_for: String,
    /// Probes at once; this many successes close it again.
    #[serde(default = "default_breaker_probes")]
    pub probes: u32,
}

fn breaker_enabled() -> bool {
    true
}

fn default_breaker_window() -> String {
    "10s".into()
}

fn default_breaker_min_calls() -> u32 {
    20
}

fn default_breaker_failure_rate() -> f64 {
    0.5
}

fn default_breaker_open_for() -> String {
    "5s".into()
}

fn default_breaker_probes() -> u32 {
    3
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: breaker_enabled(),
            window: default_breaker_window(),
            min_calls: default_breaker_min_calls(),
            failure_rate: default_breaker_failure_rate(),
            open_for: default_breaker_open_for(),
            probes: default_breaker_probes(),
        }
    }
}

impl BreakerConfig {
    /// The breaker's settings (`None`: disabled); `at` names the section in errors.
    pub fn settings(
        &self,
        at: &str,
    ) -> Result<Option<kiln_serve::resilience::BreakerSettings>, Vec<String>> {
        let mut errors = Vec::new();
        let mut duration = |key: &str, text: &str| match kiln_core::time::parse_duration(text) {
            Ok(0) => {
                errors.push(format!("{at}.{key}: must be at least 1s"));
                std::time::Duration::ZERO
            }
            Ok(s) => std::time::Duration::from_secs(s),
            Err(e) => {
                errors.push(format!("{at}.{key}: {e}"));
                std::time::Duration::ZERO
            }
        };
        let window = duration("window", &self.window);
        let open_for = duration("open_for", &self.open_for);
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            errors.push(format!(
                "{at}.failure_rate {}: expected a share in (0, 1]",
                self.failure_rate
            ));
        }
        if self.min_calls == 0 || self.probes == 0 {
            errors.push(format!("{at}.min_calls and probes must be at least 1"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(self
            .enabled
            .then_some(kiln_serve::resilience::BreakerSettings {
                window,
                min_calls: self.min_calls,
                failure_rate: self.failure_rate,
                open_for,
                probes: self.probes,
            }))
    }
}

/// How a model is called. Every field is optional: in `[serve.resilience]` a missing one keeps
/// its default; in a model's own table it keeps the server's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Each attempt's time limit (default 10000; 0: none).
    pub timeout_ms: Option<u64>,
    /// Retries of a failed call (default 2; 0: none).
    pub retries: Option<u32>,
    /// The first retry's backoff ceiling, doubled each retry, with full jitter (default 20).
    pub retry_backoff_ms: Option<u64>,
    /// The longest backoff (default 1000).
    pub retry_max_backoff_ms: Option<u64>,
    /// Retries as a share of calls (default 0.2).
    pub retry_budget: Option<f64>,
    /// Retries allowed each second whatever the traffic (default 10).
    pub retry_min_per_second: Option<u32>,
    /// Calls to the model at once (default: no limit, no bulkhead).
    pub max_concurrency: Option<usize>,
    /// Calls waiting for a turn beyond those; more are shed with 429 (default: as many as
    /// max_concurrency).
    pub max_queue: Option<usize>,
    /// What answers when the model cannot: "cache", "model:NAME", "value:V" in order
    /// (default: none).
    pub fallback: Option<Vec<String>>,
    /// Rows whose last good prediction the cache fallback keeps (default 100000).
    pub cache_rows: Option<u64>,
    /// The model's circuit breaker (default: on, with the breaker defaults).
    pub breaker: Option<BreakerConfig>,
    /// The model's prediction cache (default: none).
    pub prediction_cache: Option<PredictionCacheConfig>,
}

/// `prediction_cache = { values = 100000, ttl = "5m" }`: a version's answers kept in process
/// by a hash of the request's rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionCacheConfig {
    /// Predicted values kept at most (rows of a one-output model; default 100000; 0: off).
    pub values: Option<u64>,
    /// How long an answer is kept (default 5m).
    pub ttl: Option<String>,
    /// A second level in the online store's Redis, shared by every server (default false).
    pub shared: Option<bool>,
}

impl ResilienceConfig {
    /// This table's values over `base`'s, field by field.
    pub fn over(&self, base: &ResilienceConfig) -> ResilienceConfig {
        ResilienceConfig {
            timeout_ms: self.timeout_ms.or(base.timeout_ms),
            retries: self.retries.or(base.retries),
            retry_backoff_ms: self.retry_backoff_ms.or(base.retry_backoff_ms),
            retry_max_backoff_ms: self.retry_max_backoff_ms.or(base.retry_max_backoff_ms),
            retry_budget: self.retry_budget.or(base.retry_budget),
            retry_min_per_second: self.retry_min_per_second.or(base.retry_min_per_second),
            max_concurrency: self.max_concurrency.or(base.max_concurrency),
            max_queue: self.max_queue.or(base.max_queue),
            fallback: self.fallback.clone().or_else(|| base.fallback.clone()),
            cache_rows: self.cache_rows.or(base.cache_rows),
            breaker: self.breaker.clone().or_else(|| base.breaker.clone()),
            prediction_cache: self
                .prediction_cache
                .clone()
                .or_else(|| base.prediction_cache.clone()),
        }
    }

    /// The policy these settings make; `at` names the table in errors.
    pub fn policy(&self, at: &str) -> Result<kiln_serve::resilience::ModelPolicy, Vec<String>> {
        use kiln_serve::resilience::{BulkheadSettings, ModelPolicy, RetrySettings};
        use std::time::Duration;
        let defaults = ModelPolicy::default();
        let retry_defaults = RetrySettings::default();
        let mut errors = Vec::new();
        let ms = Duration::from_millis;
        let timeout = match self.timeout_ms {
            Some(0) => None,
            Some(t) => Some(ms(t)),
            None => defaults.timeout,
        };
        let retries = self.retries.unwrap_or(retry_defaults.retries);
        let ratio = self.retry_budget.unwrap_or(retry_defaults.ratio);
        if !(ratio > 0.0 && ratio <= 1.0) {
            errors.push(format!(
                "{at}.retry_budget {ratio}: expected a share of calls in (0, 1]"
            ));
        }
        let retry = (retries > 0).then(|| RetrySettings {
            retries,
            backoff: self.retry_backoff_ms.map_or(retry_defaults.backoff, ms),
            max_backoff: self
                .retry_max_backoff_ms
                .map_or(retry_defaults.max_backoff, ms),
            ratio,
            min_per_second: self
                .retry_min_per_second
                .unwrap_or(retry_defaults.min_per_second),
        });
        let bulkhead = match (self.max_concurrency, self.max_queue) {
            (Some(0), _) => {
                errors.push(format!("{at}.max_concurrency: must be at least 1"));
                None
            }
            (Some(n), queue) => Some(BulkheadSettings {
                max_concurrent: n,
                max_queue: queue.unwrap_or(n),
            }),
            (None, Some(_)) => {
                errors.push(format!(
                    "{at}.max_queue: set max_concurrency too (the queue is for calls past it)"
                ));
                None
            }
            (None, None) => None,
        };
        let mut fallback = Vec::new();
        for (i, step) in self.fallback.iter().flatten().enumerate() {
            match step.parse() {
                Ok(f) => fallback.push(f),
                Err(e) => errors.push(format!("{at}.fallback[{i}] {e}")),
            }
        }
        let breaker = match &self.breaker {
            Some(b) => b.settings(&format!("{at}.breaker")).unwrap_or_else(|e| {
                errors.extend(e);
                None
            }),
            None => defaults.breaker.clone(),
        };
        let cache_rows = self.cache_rows.unwrap_or(defaults.cache_rows);
        if cache_rows == 0 && fallback.contains(&kiln_serve::resilience::Fallback::Cache) {
            errors.push(format!(
                "{at}.cache_rows: must be at least 1 with a \"cache\" fallback"
            ));
        }
        let prediction_cache = match &self.prediction_cache {
            None
            | Some(PredictionCacheConfig {
                values: Some(0), ..
            }) => None,
            Some(c) => {
                let ttl = c.ttl.as_deref().unwrap_or("5m");
                match kiln_core::time::parse_duration(ttl) {
                    Ok(0) => {
                        errors.push(format!("{at}.prediction_cache.ttl: must be at least 1s"));
                        None
                    }
                    // The shared level is a connection: `kiln serve` adds it (Project::shared_cache).
                    Ok(secs) => Some(kiln_serve::cache::prediction::PredictionCacheSettings {
                        values: c.values.unwrap_or(100_000),
                        ttl: Duration::from_secs(secs),
                        shared: None,
                    }),
                    Err(e) => {
                        errors.push(format!("{at}.prediction_cache.ttl: {e}"));
                        None
                    }
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ModelPolicy {
            timeout,
            retry,
            breaker,
            bulkhead,
            fallback,
            cache_rows,
            prediction_cache,
        })
    }
}

/// Per-key rate limits (`[serve.rate_limit]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The request header naming the caller.
    #[serde(default = "default_rate_header")]
    pub header: String,
    /// Each key's requests per second...
    pub per_second: u32,
    /// ...and the burst above it (default: per_second).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Keys with their own rate: `keys.gold = { per_second = 1000 }`.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, KeyRate>,
}

/// One key's own rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRate {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_rate_header() -> String {
    "x-api-key".into()
}

fn rate(
    at: &str,
    per_second: u32,
    burst: Option<u32>,
    errors: &mut Vec<String>,
) -> Option<kiln_serve::resilience::Rate> {
    use std::num::NonZeroU32;
    let Some(per) = NonZeroU32::new(per_second) else {
        errors.push(format!("{at}.per_second: must be at least 1"));
        return None;
    };
    let Some(burst) = NonZeroU32::new(burst.unwrap_or(per_second)) else {
        errors.push(format!("{at}.burst: must be at least 1"));
        return None;
    };
    Some(kiln_serve::resilience::Rate {
        per_second: per,
        burst,
    })
}

impl RateLimitConfig {
    /// The limiter's settings; `at` names the table in errors.
    pub fn settings(
        &self,
        at: &str,
    ) -> Result<kiln_serve::resilience::RateLimitSettings, Vec<String>> {
        let mut errors = Vec::new();
        let header = kiln_serve::resilience::ratelimit::header_name(&self.header);
        if header.is_none() {
            errors.push(format!(
                "{at}.header {:?}: not an HTTP header name",
                self.header
            ));
        }
        let default = rate(at, self.per_second, self.burst, &mut errors);
        let mut keys = std::collections::BTreeMap::new();
        for (k, r) in &self.keys {
            if let Some(r) = rate(
                &format!("{at}.keys.{k}"),
                r.per_second,
                r.burst,
                &mut errors,
            ) {
                keys.insert(k.clone(), r);
            }
        }
        match (header, default) {
            (Some(header), Some(default)) if errors.is_empty() => {
                Ok(kiln_serve::resilience::RateLimitSettings {
                    header,
                    default,
                    keys,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use kiln_serve::resilience::{Fallback, ModelPolicy};

    fn table(text: &str) -> ResilienceConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn nothing_set_is_the_default_policy() {
        assert_eq!(
            ResilienceConfig::default().policy("serve.resilience"),
            Ok(ModelPolicy::default())
        );
    }

    #[test]
    fn a_model_table_overrides_the_server_field_by_field() {
        let server = table("timeout_ms = 300\nretries = 1\nfallback = [\"cache\"]");
        let own =
            table("timeout_ms = 50\nmax_concurrency = 4\nfallback = [\"cache\", \"value:0.5\"]");
        let p = own.over(&server).policy("x").expect("valid");
        assert_eq!(p.timeout, Some(Duration::from_millis(50)));
        assert_eq!(p.retry.expect("retries").retries, 1);
        let b = p.bulkhead.expect("a bulkhead");
        assert_eq!((b.max_concurrent, b.max_queue), (4, 4));
        assert_eq!(p.fallback, [Fallback::Cache, Fallback::Value(vec![0.5])]);
        let cached = table("prediction_cache = { values = 500 }").over(&server);
        let c = cached
            .policy("x")
            .expect("valid")
            .prediction_cache
            .expect("a cache");
        assert_eq!((c.values, c.ttl), (500, Duration::from_secs(300)));
        let none = table("prediction_cache = { values = 0 }").over(&cached);
        assert_eq!(none.policy("x").expect("valid").prediction_cache, None);
        let off = table("timeout_ms = 0\nretries = 0\nbreaker = { enabled = false }");
        let p = off.policy("x").expect("valid");
        assert_eq!((p.timeout, p.retry, p.breaker), (None, None, None));
    }

    #[test]
    fn every_bad_setting_is_named() {
        let bad = table(
            "retry_budget = 1.5\nmax_concurrency = 0\nfallback = [\"cache\", \"later\"]\ncache_rows = 0\nbreaker = { failure_rate = 2.0 }\nprediction_cache = { ttl = \"soon\" }",
        );
        let errors = bad
            .policy("serve.models.fraud.resilience")
            .expect_err("invalid");
        let all = errors.join("\n");
        for needle in [
            "serve.models.fraud.resilience.retry_budget 1.5",
            "serve.models.fraud.resilience.max_concurrency",
            "serve.models.fraud.resilience.fallback[1] \"later\"",
            "serve.models.fraud.resilience.cache_rows",
            "serve.models.fraud.resilience.breaker.failure_rate 2",
            "serve.models.fraud.resilience.prediction_cache.ttl",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
        let e = table("max_queue = 3")
            .policy("serve.resilience")
            .expect_err("queue alone");
        assert!(e[0].contains("serve.resilience.max_queue"), "{e:?}");
    }

    #[test]
    fn rate_limits_read_with_their_keys_and_bad_ones_are_named() {
        let c: RateLimitConfig =
            toml::from_str("per_second = 5\nkeys.gold = { per_second = 100, burst = 300 }")
                .expect("parses");
        let s = c.settings("serve.rate_limit").expect("valid");
        assert_eq!(s.header.as_str(), "x-api-key");
        assert_eq!((s.default.per_second.get(), s.default.burst.get()), (5, 5));
        assert_eq!(s.keys["gold"].burst.get(), 300);
        let bad: RateLimitConfig = toml::from_str(
            "header = \"x key\"\nper_second = 0\nkeys.a = { per_second = 1, burst = 0 }",
        )
        .expect("parses");
        let all = bad
            .settings("serve.rate_limit")
            .expect_err("invalid")
            .join("\n");
        for needle in [
            "serve.rate_limit.header \"x key\"",
            "serve.rate_limit.per_second",
            "serve.rate_limit.keys.a.burst",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
    }
}
