//! Resilience for what `kiln serve` depends on, each concern in its own module.
//!
//! The online store is guarded by a circuit breaker ([`breaker`], [`GuardedStore`]). Every model
//! version is called through a stack of tower layers built from its [`ModelPolicy`] (config as
//! data): from the outside in,
//!
//! - [`retry`]: a failed call is tried again after a full-jitter backoff, while the model's
//!   retry budget allows (so an outage cannot multiply the load by the retry count);
//! - [`circuit`]: the model's breaker; while open, calls fail at once without reaching it;
//! - [`timeout`]: an attempt without an answer in time fails (504) and counts against the
//!   breaker;
//! - [`bulkhead`]: the model's own concurrency limit and queue; beyond the queue, calls are shed
//!   with 429, so one slow model cannot take every worker;
//!
//! and, around the stack, the model's fallback chain ([`fallback`]): the last good prediction
//! for the same rows, another model, a fixed value, and only then the error.
//!
//! In front of every route, [`ratelimit`] gives each API key (or tenant) its own rate.
//!
//! Every service in the stack is always ready: back-pressure is the bulkhead's explicit 429,
//! never a `poll_ready` that parks the caller.

pub mod breaker;
pub mod bulkhead;
pub mod circuit;
pub mod fallback;
pub mod policy;
pub mod ratelimit;
pub mod retry;
mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod timeout;

use std::sync::Arc;

pub use breaker::{Breaker, BreakerSettings, BreakerState, Refused};
pub use bulkhead::BulkheadSettings;
pub use fallback::{Fallback, FallbackUsed};
pub use policy::ModelPolicy;
pub use ratelimit::{Rate, RateLimitSettings, RateLimits};
pub use retry::{RetryBudget, RetrySettings};
pub use store::GuardedStore;

use crate::batching::Scored;
use crate::inference::InferError;

/// One scoring call: whole rows of the model's inputs, row-major, shared so that a retry or a
/// fallback does not copy them.
#[derive(Debug, Clone)]
pub struct ScoreCall {
    pub rows: Arc<Vec<f64>>,
}

/// A model's stack of layers over its engine, type-erased: cloned once per call.
pub type ScoreService = tower::util::BoxCloneSyncService<ScoreCall, Scored, InferError>;

/// The future every layer returns.
pub type ScoreFuture = futures_util::future::BoxFuture<'static, Result<Scored, InferError>>;

/// Whether a failure says the model is unwell (it counts against the breaker and may be
/// retried), rather than that the request was wrong or the server is shedding load.
pub(crate) fn is_failure(e: &InferError) -> bool {
    matches!(e, InferError::Unavailable(_) | InferError::Timeout(_))
}
