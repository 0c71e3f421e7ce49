//! A model's resilience policy (config as data) and the stack of layers it builds.

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::bulkhead::BulkheadLayer;
use super::circuit::CircuitLayer;
use super::retry::RetryLayer;
use super::timeout::TimeoutLayer;
use super::{
    Breaker, BreakerSettings, BulkheadSettings, Fallback, RetryBudget, RetrySettings, ScoreService,
};
use crate::cache::prediction::{PredictionCache, PredictionCacheLayer, PredictionCacheSettings};

/// How one model is called. `None` leaves a layer out.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPolicy {
    /// Each attempt's time limit.
    pub timeout: Option<Duration>,
    pub retry: Option<RetrySettings>,
    pub breaker: Option<BreakerSettings>,
    pub bulkhead: Option<BulkheadSettings>,
    /// Tried in order when the model cannot answer.
    pub fallback: Vec<Fallback>,
    /// Rows whose last good prediction is kept for a `cache` fallback.
    pub cache_rows: u64,
    /// The version's prediction cache, outermost (default: none).
    pub prediction_cache: Option<PredictionCacheSettings>,
}

impl Default for ModelPolicy {
    /// A timeout, retries within a budget and a breaker; no bulkhead (a local model's batch
    /// queue bounds it already) and no fallback.
    fn default() -> Self {
        ModelPolicy {
            timeout: Some(Duration::from_secs(10)),
            retry: Some(RetrySettings::default()),
            breaker: Some(BreakerSettings::default()),
            bulkhead: None,
            fallback: Vec::new(),
            cache_rows: 100_000,
            prediction_cache: None,
        }
    }
}

/// A model version's stack, with the parts `/metrics` reads.
pub struct Stack {
    pub service: ScoreService,
    pub breaker: Option<Arc<Breaker>>,
    pub budget: Option<Arc<RetryBudget>>,
    pub prediction_cache: Option<Arc<PredictionCache>>,
}

impl ModelPolicy {
    /// Every layer off: the model is called as it is (the baseline of the overhead benchmark).
    pub fn none() -> ModelPolicy {
        ModelPolicy {
            timeout: None,
            retry: None,
            breaker: None,
            bulkhead: None,
            fallback: Vec::new(),
            cache_rows: 0,
            prediction_cache: None,
        }
    }

    /// Wraps `engine` (the model itself) in the policy's layers; `what` names the model
    /// version (`fraud@v3`) in errors and metrics.
    pub fn build(&self, what: &str, engine: ScoreService) -> Stack {
        let mut service = engine;
        if let Some(b) = &self.bulkhead {
            service = ScoreService::new(BulkheadLayer::new(what, b.clone()).layer(service));
        }
        if let Some(limit) = self.timeout {
            service = ScoreService::new(TimeoutLayer::new(what, limit).layer(service));
        }
        let breaker = self
            .breaker
            .as_ref()
            .map(|settings| Arc::new(Breaker::new(&format!("model:{what}"), settings.clone())));
        if let Some(b) = &breaker {
            service = ScoreService::new(CircuitLayer::new(what, b.clone()).layer(service));
        }
        let budget = self
            .retry
            .as_ref()
            .filter(|r| r.retries > 0)
            .map(|r| Arc::new(RetryBudget::new(r.ratio, r.min_per_second)));
        if let (Some(r), Some(b)) = (&self.retry, &budget) {
            service = ScoreService::new(RetryLayer::new(r.clone(), b.clone()).layer(service));
        }
        let prediction_cache = self
            .prediction_cache
            .as_ref()
            .map(|s| Arc::new(PredictionCache::new(s, what)));
        if let Some(c) = &prediction_cache {
            service = ScoreService::new(PredictionCacheLayer::new(c.clone()).layer(service));
        }
        Stack {
            service,
            breaker,
            budget,
            prediction_cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{Service, ServiceExt};

    use super::*;
    use crate::inference::InferError;
    use crate::resilience::BreakerState;
    use crate::resilience::testing::Scripted;

    #[tokio::test]
    async fn a_hung_model_times_out_opens_its_breaker_and_is_not_called_again() {
        let model = Scripted::new(vec![]);
        model.set_delay(Duration::from_secs(30));
        let policy = ModelPolicy {
            timeout: Some(Duration::from_millis(20)),
            breaker: Some(BreakerSettings {
                min_calls: 3,
                open_for: Duration::from_secs(60),
                ..BreakerSettings::default()
            }),
            ..ModelPolicy::default()
        };
        let stack = policy.build("m@v1", model.service());
        for _ in 0..3 {
            let e = stack
                .service
                .clone()
                .oneshot(Scripted::call())
                .await
                .expect_err("times out");
            assert!(matches!(e, InferError::Timeout(_)), "{e}");
            assert!(e.to_string().contains("no answer within 20 ms"), "{e}");
        }
        let breaker = stack.breaker.expect("a breaker");
        assert_eq!(breaker.state(), BreakerState::Open);
        let e = stack
            .service
            .clone()
            .oneshot(Scripted::call())
            .await
            .expect_err("refused");
        assert!(matches!(e, InferError::CircuitOpen(_)), "{e}");
        assert_eq!(
            model.calls(),
            3,
            "timeouts are not retried; open means not called"
        );
    }

    #[tokio::test]
    async fn no_policy_is_the_model_itself() {
        let model = Scripted::new(vec![Err(InferError::Unavailable("down".into())), Ok(())]);
        let stack = ModelPolicy::none().build("m@v1", model.service());
        assert!(stack.breaker.is_none() && stack.budget.is_none());
        let mut svc = stack.service;
        let e = svc.call(Scripted::call()).await.expect_err("no retry");
        assert_eq!(e.to_string(), "down");
        let ok = svc.call(Scripted::call()).await.expect("answers");
        assert_eq!(ok.values, [2.0]);
    }
}
