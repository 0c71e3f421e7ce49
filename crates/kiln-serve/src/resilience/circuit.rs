//! A model's circuit breaker as a layer: while the breaker is open the model is not called and
//! the call fails at once (503, [`InferError::CircuitOpen`]), which the fallback chain can
//! answer; timeouts and unavailability count as failures, bad requests and shed calls do not.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{Breaker, ScoreCall, ScoreFuture, ScoreService, is_failure};
use crate::batching::Scored;
use crate::inference::InferError;

#[derive(Debug, Clone)]
pub struct CircuitLayer {
    breaker: Arc<Breaker>,
    what: Arc<str>,
}

impl CircuitLayer {
    /// `what` names the model in the error.
    pub fn new(what: &str, breaker: Arc<Breaker>) -> CircuitLayer {
        CircuitLayer {
            breaker,
            what: Arc::from(what),
        }
    }
}

impl Layer<ScoreService> for CircuitLayer {
    type Service = Circuit;

    fn layer(&self, inner: ScoreService) -> Circuit {
        Circuit {
            inner,
            breaker: self.breaker.clone(),
            what: self.what.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Circuit {
    inner: ScoreService,
    breaker: Arc<Breaker>,
    what: Arc<str>,
}

impl Service<ScoreCall> for Circuit {
    type Response = Scored;
    type Error = InferError;
    type Future = ScoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InferError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ScoreCall) -> ScoreFuture {
        let mut inner = self.inner.clone();
        let (breaker, what) = (self.breaker.clone(), self.what.clone());
        Box::pin(async move {
            let permit = breaker.admit().map_err(|refused| {
                InferError::CircuitOpen(format!("{what}: not called, {refused}"))
            })?;
            let result = inner.call(call).await;
            match &result {
                Err(e) if is_failure(e) => permit.record(Some(e)),
                _ => permit.record(None),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resilience::{BreakerSettings, BreakerState, testing::Scripted};

    #[tokio::test]
    async fn an_open_circuit_does_not_call_the_model_and_probes_close_it() {
        let breaker = Arc::new(Breaker::new(
            "model:m@v1",
            BreakerSettings {
                window: Duration::from_secs(10),
                min_calls: 4,
                failure_rate: 0.5,
                open_for: Duration::from_millis(50),
                probes: 1,
            },
        ));
        let model = Scripted::new(vec![]);
        model.fail_always(InferError::Timeout("m@v1: no answer".into()));
        let mut svc = CircuitLayer::new("m@v1", breaker.clone()).layer(model.service());
        for _ in 0..4 {
            let e = svc.call(Scripted::call()).await.expect_err("fails");
            assert!(matches!(e, InferError::Timeout(_)));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let e = svc.call(Scripted::call()).await.expect_err("refused");
        assert!(matches!(e, InferError::CircuitOpen(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("m@v1: not called, circuit open (4 of 4 calls failed"),
            "{e}"
        );
        assert_eq!(model.calls(), 4, "not called while open");

        model.heal();
        tokio::time::sleep(Duration::from_millis(60)).await;
        svc.call(Scripted::call()).await.expect("the probe answers");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn refusals_and_bad_requests_do_not_open_it() {
        let breaker = Arc::new(Breaker::new(
            "model:m@v1",
            BreakerSettings {
                min_calls: 2,
                ..BreakerSettings::default()
            },
        ));
        let model = Scripted::new(vec![]);
        model.fail_always(InferError::BadRequest("wrong shape".into()));
        let mut svc = CircuitLayer::new("m@v1", breaker.clone()).layer(model.service());
        for _ in 0..10 {
            let _ = svc.call(Scripted::call()).await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(model.calls(), 10);
    }
}
