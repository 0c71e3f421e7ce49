//! A scripted model for the layers' tests: answers each call with the next scripted outcome
//! (then with the last one, or the "always" one), after an optional delay, counting calls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ScoreCall, ScoreService};
use crate::batching::Scored;
use crate::inference::InferError;

#[derive(Clone, Default)]
pub(crate) struct Scripted {
    script: Arc<Mutex<VecDeque<Result<(), InferError>>>>,
    always: Arc<Mutex<Option<InferError>>>,
    delay: Arc<Mutex<Duration>>,
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Scripted {
    pub(crate) fn new(script: Vec<Result<(), InferError>>) -> Scripted {
        let s = Scripted::default();
        *s.script.lock().expect("test lock") = script.into();
        s
    }

    pub(crate) fn fail_always(&self, e: InferError) {
        *self.always.lock().expect("test lock") = Some(e);
    }

    pub(crate) fn heal(&self) {
        *self.always.lock().expect("test lock") = None;
        self.script.lock().expect("test lock").clear();
    }

    pub(crate) fn set_delay(&self, d: Duration) {
        *self.delay.lock().expect("test lock") = d;
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// One row of one input.
    pub(crate) fn call() -> ScoreCall {
        ScoreCall {
            rows: Arc::new(vec![1.0]),
        }
    }

    /// Answers each row with its value times two.
    pub(crate) fn service(&self) -> ScoreService {
        let me = self.clone();
        ScoreService::new(tower::service_fn(move |call: ScoreCall| {
            let me = me.clone();
            async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                let now = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let delay = *me.delay.lock().expect("test lock");
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                me.in_flight.fetch_sub(1, Ordering::SeqCst);
                let next = me.script.lock().expect("test lock").pop_front();
                let always = me.always.lock().expect("test lock").clone();
                match (always, next) {
                    (Some(e), _) | (None, Some(Err(e))) => Err(e),
                    (None, Some(Ok(()))) | (None, None) => Ok(Scored {
                        values: call.rows.iter().map(|v| v * 2.0).collect(),
                        queue_time: Duration::ZERO,
                        compute_time: Duration::ZERO,
                        batch_rows: call.rows.len(),
                        fallback: None,
                        cached: false,
                    }),
                }
            }
        }))
    }
}
