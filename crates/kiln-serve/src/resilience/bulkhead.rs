//! A model's bulkhead: at most `max_concurrent` calls to it at once and `max_queue` waiting for
//! a turn; past that, calls are shed at once with 429 and a `Retry-After` (load shedding), so a
//! slow model holds a bounded share of the server and other models keep answering. Waiting in
//! the queue counts toward the model's timeout (the timeout layer sits outside this one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::{ScoreCall, ScoreFuture, ScoreService};
use crate::batching::Scored;
use crate::inference::InferError;

/// A model's concurrency limit and queue.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkheadSettings {
    pub max_concurrent: usize,
    pub max_queue: usize,
}

/// How long a shed caller is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    settings: BulkheadSettings,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    what: Arc<str>,
}

impl BulkheadLayer {
    /// `what` names the model in the error.
    pub fn new(what: &str, settings: BulkheadSettings) -> BulkheadLayer {
        BulkheadLayer {
            permits: Arc::new(Semaphore::new(settings.max_concurrent)),
            waiting: Arc::new(AtomicUsize::new(0)),
            settings,
            what: Arc::from(what),
        }
    }
}

impl Layer<ScoreService> for BulkheadLayer {
    type Service = Bulkhead;

    fn layer(&self, inner: ScoreService) -> Bulkhead {
        Bulkhead {
            inner,
            shared: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Bulkhead {
    inner: ScoreService,
    shared: BulkheadLayer,
}

/// Leaves the queue however the wait ends (a turn, or the caller gave up).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<ScoreCall> for Bulkhead {
    type Response = Scored;
    type Error = InferError;
    type Future = ScoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InferError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ScoreCall) -> ScoreFuture {
        let mut inner = self.inner.clone();
        let b = self.shared.clone();
        Box::pin(async move {
            let _turn = match b.permits.clone().try_acquire_owned() {
                Ok(turn) => turn,
                Err(_) => {
                    if b.waiting.fetch_add(1, Ordering::SeqCst) >= b.settings.max_queue {
                        b.waiting.fetch_sub(1, Ordering::SeqCst);
                        return Err(InferError::Overloaded {
                            message: format!(
                                "{}: {} calls in flight and {} waiting (its bulkhead is full); retry after {} s",
                                b.what,
                                b.settings.max_concurrent,
                                b.settings.max_queue,
                                RETRY_AFTER.as_secs()
                            ),
                            retry_after: RETRY_AFTER,
                        });
                    }
                    let _waiting = Waiting(b.waiting.clone());
                    // The semaphore is never closed: it lives as long as the layer.
                    b.permits.clone().acquire_owned().await.map_err(|_| {
                        InferError::Internal(format!("{}: its bulkhead was closed", b.what))
                    })?
                }
            };
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::testing::Scripted;

    #[tokio::test]
    async fn calls_beyond_the_limit_and_queue_are_shed() {
        let model = Scripted::new(vec![]);
        model.set_delay(Duration::from_millis(100));
        let svc = BulkheadLayer::new(
            "m@v1",
            BulkheadSettings {
                max_concurrent: 2,
                max_queue: 3,
            },
        )
        .layer(model.service());
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let mut svc = svc.clone();
                tokio::spawn(async move { svc.call(Scripted::call()).await })
            })
            .collect();
        let mut answered = 0;
        let mut shed = Vec::new();
        for c in calls {
            match c.await.expect("task") {
                Ok(_) => answered += 1,
                Err(e) => shed.push(e),
            }
        }
        assert_eq!(answered, 5, "2 in flight + 3 queued");
        assert_eq!(shed.len(), 3);
        for e in &shed {
            assert!(matches!(e, InferError::Overloaded { .. }), "{e}");
            assert!(
                e.to_string().contains("2 calls in flight and 3 waiting"),
                "{e}"
            );
        }
        assert_eq!(model.max_in_flight(), 2);
        assert_eq!(model.calls(), 5);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_leaves_the_queue() {
        let model = Scripted::new(vec![]);
        model.set_delay(Duration::from_millis(200));
        let layer = BulkheadLayer::new(
            "m@v1",
            BulkheadSettings {
                max_concurrent: 1,
                max_queue: 1,
            },
        );
        let svc = layer.layer(model.service());
        let mut first = svc.clone();
        let busy = tokio::spawn(async move { first.call(Scripted::call()).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut second = svc.clone();
        let waited =
            tokio::time::timeout(Duration::from_millis(20), second.call(Scripted::call())).await;
        assert!(waited.is_err(), "still queued when it gave up");
        assert_eq!(layer.waiting.load(Ordering::SeqCst), 0);
        // The queue has room again.
        let mut third = svc.clone();
        let queued = tokio::spawn(async move { third.call(Scripted::call()).await });
        busy.await.expect("task").expect("answers");
        queued.await.expect("task").expect("answers after its turn");
    }
}
