//! Retries with exponential backoff, full jitter and a retry budget.
//!
//! A call that failed in a way another attempt may fix ([`InferError::Unavailable`]: a refused
//! connection, a 5xx from a remote model) is tried again after a pause drawn uniformly from
//! `[0, min(max_backoff, backoff * 2^n))` ("full jitter": callers that failed together do not
//! come back together). Timeouts are not retried (the caller has already waited the limit), nor
//! are refusals by the breaker or the bulkhead (retrying them only adds load).
//!
//! The budget bounds retries to a share of calls: every call deposits `ratio` of a token, every
//! retry withdraws a whole one, plus `min_per_second` retries each second whatever the traffic
//! (so a quiet model still retries). When the model is down, retries stay at `ratio` of the
//! traffic instead of multiplying it by the attempt count: no retry storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{Layer, Service};

use super::{ScoreCall, ScoreFuture, ScoreService};
use crate::batching::Scored;
use crate::inference::InferError;

/// How a model's failed calls are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Attempts after the first, at most.
    pub retries: u32,
    /// The first retry's backoff ceiling; doubled for each further one...
    pub backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// Retries as a share of calls (0.2: one retry per five calls, over time).
    pub ratio: f64,
    /// Retries allowed each second whatever the traffic.
    pub min_per_second: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            retries: 2,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            ratio: 0.2,
            min_per_second: 10,
        }
    }
}

impl RetrySettings {
    /// The pause before retry number `n` (0 for the first): uniform in
    /// `[0, min(max_backoff, backoff * 2^n))`.
    pub fn backoff(&self, n: u32, unit: f64) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1u32 << n.min(20))
            .min(self.max_backoff);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// One retry, in the budget's units.
const MILLI: u64 = 1000;

/// A model's retry budget (see the module docs), shared by all its calls.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry each call deposits (integers: 5 calls at 0.2 make exactly one).
    deposit: u64,
    min_per_second: u32,
    /// Thousandths kept at most: the retries a burst of failures may use at once.
    cap: u64,
    state: Mutex<BudgetState>,
    retried: AtomicU64,
    denied: AtomicU64,
}

#[derive(Debug)]
struct BudgetState {
    /// In thousandths of a retry.
    balance: u64,
    second_started: Instant,
    floor_left: u32,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        let deposit = (ratio * MILLI as f64).round().max(1.0) as u64;
        RetryBudget {
            deposit,
            min_per_second,
            cap: (deposit * 1000).max(MILLI),
            state: Mutex::new(BudgetState {
                balance: 0,
                second_started: Instant::now(),
                floor_left: min_per_second,
            }),
            retried: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // The state is two numbers, valid after any panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call was made.
    pub fn deposit(&self) {
        let mut s = self.lock();
        s.balance = (s.balance + self.deposit).min(self.cap);
    }

    /// Asks for one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    fn withdraw_at(&self, now: Instant) -> bool {
        let allowed = {
            let mut s = self.lock();
            if now.duration_since(s.second_started) >= Duration::from_secs(1) {
                s.second_started = now;
                s.floor_left = self.min_per_second;
            }
            if s.floor_left > 0 {
                s.floor_left -= 1;
                true
            } else if s.balance >= MILLI {
                s.balance -= MILLI;
                true
            } else {
                false
            }
        };
        let counter = if allowed { &self.retried } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        allowed
    }

    /// Retries made so far.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Retries refused because the budget was spent.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct RetryLayer {
    settings: Arc<RetrySettings>,
    budget: Arc<RetryBudget>,
}

impl RetryLayer {
    pub fn new(settings: RetrySettings, budget: Arc<RetryBudget>) -> RetryLayer {
        RetryLayer {
            settings: Arc::new(settings),
            budget,
        }
    }
}

impl Layer<ScoreService> for RetryLayer {
    type Service = Retry;

    fn layer(&self, inner: ScoreService) -> Retry {
        Retry {
            inner,
            settings: self.settings.clone(),
            budget: self.budget.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Retry {
    inner: ScoreService,
    settings: Arc<RetrySettings>,
    budget: Arc<RetryBudget>,
}

impl Service<ScoreCall> for Retry {
    type Response = Scored;
    type Error = InferError;
    type Future = ScoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InferError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ScoreCall) -> ScoreFuture {
        let mut inner = self.inner.clone();
        let (settings, budget) = (self.settings.clone(), self.budget.clone());
        Box::pin(async move {
            budget.deposit();
            let mut n = 0;
            loop {
                match inner.call(call.clone()).await {
                    Err(InferError::Unavailable(m)) if n < settings.retries => {
                        if !budget.withdraw() {
                            return Err(InferError::Unavailable(format!(
                                "{m} (not retried: the retry budget is spent)"
                            )));
                        }
                        tokio::time::sleep(settings.backoff(n, fastrand::f64())).await;
                        n += 1;
                    }
                    Err(InferError::Unavailable(m)) if n > 0 => {
                        return Err(InferError::Unavailable(format!(
                            "{m} (after {} attempts)",
                            n + 1
                        )));
                    }
                    other => return other,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::testing::Scripted;

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let s = RetrySettings {
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..RetrySettings::default()
        };
        assert_eq!(s.backoff(0, 1.0), Duration::from_millis(10));
        assert_eq!(s.backoff(1, 1.0), Duration::from_millis(20));
        assert_eq!(s.backoff(2, 1.0), Duration::from_millis(40));
        assert_eq!(s.backoff(3, 1.0), Duration::from_millis(50));
        assert_eq!(s.backoff(40, 1.0), Duration::from_millis(50));
        assert_eq!(s.backoff(2, 0.0), Duration::ZERO);
        assert_eq!(s.backoff(2, 0.5), Duration::from_millis(20));
    }

    #[test]
    fn the_budget_allows_its_share_of_calls_plus_the_floor() {
        let b = RetryBudget::new(0.2, 3);
        let t0 = Instant::now();
        for _ in 0..100 {
            b.deposit();
        }
        // 3 from this second's floor, then 100 * 0.2 = 20 from deposits.
        let allowed = (0..50).filter(|_| b.withdraw_at(t0)).count();
        assert_eq!(allowed, 23);
        assert_eq!((b.retried(), b.denied()), (23, 27));
        // A new second brings the floor back, not the deposits.
        let later = t0 + Duration::from_millis(1100);
        assert_eq!((0..10).filter(|_| b.withdraw_at(later)).count(), 3);
    }

    #[test]
    fn deposits_are_capped() {
        let b = RetryBudget::new(0.5, 0);
        for _ in 0..10_000 {
            b.deposit();
        }
        let t0 = Instant::now();
        assert_eq!((0..1000).filter(|_| b.withdraw_at(t0)).count(), 500);
    }

    fn layer(retries: u32, budget: Arc<RetryBudget>) -> RetryLayer {
        RetryLayer::new(
            RetrySettings {
                retries,
                backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                ..RetrySettings::default()
            },
            budget,
        )
    }

    #[tokio::test]
    async fn unavailable_is_retried_until_it_answers() {
        let inner = Scripted::new(vec![
            Err(InferError::Unavailable("down".into())),
            Err(InferError::Unavailable("down".into())),
            Ok(()),
        ]);
        let mut svc = layer(2, Arc::new(RetryBudget::new(0.2, 10))).layer(inner.service());
        svc.call(Scripted::call())
            .await
            .expect("third attempt answers");
        assert_eq!(inner.calls(), 3);
    }

    #[tokio::test]
    async fn the_last_error_says_how_many_attempts_were_made() {
        let inner = Scripted::new(vec![Err(InferError::Unavailable("down".into())); 5]);
        let mut svc = layer(2, Arc::new(RetryBudget::new(0.2, 10))).layer(inner.service());
        let e = svc.call(Scripted::call()).await.expect_err("still down");
        assert_eq!(e.to_string(), "down (after 3 attempts)");
        assert_eq!(inner.calls(), 3);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        for e in [
            InferError::Timeout("slow".into()),
            InferError::CircuitOpen("open".into()),
            InferError::BadRequest("bad".into()),
            InferError::Overloaded {
                message: "full".into(),
                retry_after: Duration::from_secs(1),
            },
        ] {
            let inner = Scripted::new(vec![Err(e.clone()), Ok(())]);
            let mut svc = layer(3, Arc::new(RetryBudget::new(0.2, 10))).layer(inner.service());
            let got = svc.call(Scripted::call()).await.expect_err("not retried");
            assert_eq!(got.to_string(), e.to_string());
            assert_eq!(inner.calls(), 1, "{e}");
        }
    }

    #[tokio::test]
    async fn a_spent_budget_stops_retries() {
        // No floor and nothing deposited beyond 0.2 per call: the first failing call's retry
        // is refused.
        let inner = Scripted::new(vec![Err(InferError::Unavailable("down".into())); 3]);
        let mut svc = layer(2, Arc::new(RetryBudget::new(0.2, 0))).layer(inner.service());
        let e = svc.call(Scripted::call()).await.expect_err("down");
        assert!(e.to_string().contains("retry budget is spent"), "{e}");
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test]
    async fn an_outage_retries_about_ratio_of_calls() {
        // 200 calls against a dead model, budget 0.1 with no floor: about 20 retries, never
        // 200 x 3.
        let inner = Scripted::new(vec![]);
        inner.fail_always(InferError::Unavailable("down".into()));
        let budget = Arc::new(RetryBudget::new(0.1, 0));
        let mut svc = layer(3, budget.clone()).layer(inner.service());
        for _ in 0..200 {
            let _ = svc.call(Scripted::call()).await;
        }
        assert_eq!(budget.retried(), 20);
        assert_eq!(inner.calls() as u64, 200 + budget.retried());
    }
}
