//! Keyed rate limits: each API key (or tenant, whatever request header names the caller) gets
//! its own token bucket (GCRA, governor), so one busy caller is refused with 429 and a
//! `Retry-After` while the others keep their share. Keys with their own quota (a paying
//! tenant, an internal batch job) get their own limiter; every other key, and requests without
//! the header (one shared "anonymous" bucket), get the default quota. Health, readiness and
//! `/metrics` are never limited.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::ServeState;

/// Requests per second and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Who is limited, by which header, at what rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// The request header naming the caller (`x-api-key`, `x-tenant`).
    pub header: HeaderName,
    pub default: Rate,
    /// Keys with their own rate.
    pub keys: BTreeMap<String, Rate>,
}

/// A header name as configured (any case); `None` when it is not one.
pub fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()
}

/// The limiters of a server.
pub struct RateLimits {
    settings: RateLimitSettings,
    shared: DefaultKeyedRateLimiter<String>,
    own: BTreeMap<String, DefaultDirectRateLimiter>,
    clock: DefaultClock,
    limited: AtomicU64,
}

/// Paths never limited.
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics") || path.starts_with("/v2/health/")
}

impl RateLimits {
    pub fn new(settings: RateLimitSettings) -> RateLimits {
        RateLimits {
            shared: DefaultKeyedRateLimiter::keyed(settings.default.quota()),
            own: settings
                .keys
                .iter()
                .map(|(k, r)| (k.clone(), DefaultDirectRateLimiter::direct(r.quota())))
                .collect(),
            clock: DefaultClock::default(),
            limited: AtomicU64::new(0),
            settings,
        }
    }

    /// Takes one request from `key`'s bucket; when it is empty, how long until it is not.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let result = match self.own.get(key) {
            Some(limiter) => limiter.check(),
            None => self.shared.check_key(&key.to_string()),
        };
        result.map_err(|not_until| {
            self.limited.fetch_add(1, Ordering::Relaxed);
            not_until.wait_time_from(self.clock.now())
        })
    }

    /// Requests refused so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// Forgets keys whose buckets are full again (they would start full anyway), so many
    /// one-off keys do not grow memory without bound.
    pub fn forget_idle(&self) {
        self.shared.retain_recent();
        self.shared.shrink_to_fit();
    }

    fn rate_of(&self, key: &str) -> Rate {
        self.settings
            .keys
            .get(key)
            .copied()
            .unwrap_or(self.settings.default)
    }
}

/// A key as messages show it: enough to recognise, not enough to use.
fn masked(key: &str) -> String {
    if key.is_empty() {
        return "(none)".to_string();
    }
    let shown: String = key.chars().take(4).collect();
    if shown.len() < key.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// The axum middleware: refuses a request over its key's rate with 429.
pub(crate) async fn limit(State(state): State<ServeState>, req: Request, next: Next) -> Response {
    let Some(limits) = state.rate_limits() else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let header = &limits.settings.header;
    let key = req
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match limits.check(key) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let rate = limits.rate_of(key);
            let after = wait.as_secs_f64().ceil().max(1.0) as u64;
            let message = format!(
                "rate limit exceeded for {header} {}: {} requests/s (burst {}); retry after {after} s",
                masked(key),
                rate.per_second,
                rate.burst
            );
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, after.to_string())],
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
        }
    }

    #[test]
    fn each_key_has_its_own_bucket_and_own_rates_apply() {
        let limits = RateLimits::new(RateLimitSettings {
            header: HeaderName::from_static("x-api-key"),
            default: rate(1, 3),
            keys: BTreeMap::from([("gold".to_string(), rate(1, 10))]),
        });
        let allowed = |key: &str| (0..20).filter(|_| limits.check(key).is_ok()).count();
        assert_eq!(allowed("alice"), 3, "the burst, then refused");
        assert_eq!(allowed("bob"), 3, "bob's bucket is his own");
        assert_eq!(allowed(""), 3, "no key: the anonymous bucket");
        assert_eq!(allowed("gold"), 10);
        assert_eq!(limits.limited(), 17 * 3 + 10);
        let wait = limits.check("alice").expect_err("still empty");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn keys_are_masked_in_messages() {
        assert_eq!(masked("sk-live-123456"), "sk-l…");
        assert_eq!(masked("abc"), "abc");
        assert_eq!(masked(""), "(none)");
        assert!(exempt("/v2/health/ready") && exempt("/metrics"));
        assert!(!exempt("/v2/models/m/infer"));
    }
}
