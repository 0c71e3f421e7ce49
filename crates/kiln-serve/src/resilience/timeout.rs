//! A per-model time limit on each attempt: one without an answer in time fails with 504
//! ([`InferError::Timeout`]) and counts against the model's breaker, so a hung model costs its
//! callers the limit, not their patience. The attempt's future is dropped: a remote call's
//! connection is closed; a local batch still finishes on its thread and its answer is
//! discarded.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::{ScoreCall, ScoreFuture, ScoreService};
use crate::batching::Scored;
use crate::inference::InferError;

#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    limit: Duration,
    what: Arc<str>,
}

impl TimeoutLayer {
    /// `what` names the model in the error.
    pub fn new(what: &str, limit: Duration) -> TimeoutLayer {
        TimeoutLayer {
            limit,
            what: Arc::from(what),
        }
    }
}

impl Layer<ScoreService> for TimeoutLayer {
    type Service = Timeout;

    fn layer(&self, inner: ScoreService) -> Timeout {
        Timeout {
            inner,
            limit: self.limit,
            what: self.what.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Timeout {
    inner: ScoreService,
    limit: Duration,
    what: Arc<str>,
}

impl Service<ScoreCall> for Timeout {
    type Response = Scored;
    type Error = InferError;
    type Future = ScoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InferError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ScoreCall) -> ScoreFuture {
        let attempt = self.inner.call(call);
        let (limit, what) = (self.limit, self.what.clone());
        Box::pin(async move {
            tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(InferError::Timeout(format!(
                        "{what}: no answer within {} ms (its timeout)",
                        limit.as_millis()
                    )))
                })
        })
    }
}
