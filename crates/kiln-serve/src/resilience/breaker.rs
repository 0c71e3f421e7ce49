//! A circuit breaker: stops calling a dependency that keeps failing, so requests fail in
//! microseconds with a clear error instead of each waiting out a timeout (and piling onto a
//! dependency that is trying to recover), then lets a few probes through after a pause to find
//! out whether it came back.
//!
//! - **Closed** (calls go through): outcomes are counted in buckets of a tenth of `window`. When
//!   at least `min_calls` calls finished within the last `window` and at least `failure_rate` of
//!   them failed, it opens.
//! - **Open** (calls refused): for `open_for`, then half-open.
//! - **Half-open**: up to `probes` calls at once go through; `probes` successes close it (with
//!   a fresh window), any failure opens it again.
//!
//! What counts as a failure is the caller's decision (a timeout or an unreachable server is; a
//! refused request is not). Calls admitted while closed that finish after it opened do not
//! count: only probes decide a half-open breaker.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub window: Duration,
    pub min_calls: u32,
    /// 0 < rate <= 1.
    pub failure_rate: f64,
    pub open_for: Duration,
    pub probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            probes: 3,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// A refused call: why, and when the next probe may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    pub retry_in: Duration,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "circuit open ({}); next probe in {:.1}s",
            self.reason,
            self.retry_in.as_secs_f64()
        )
    }
}

struct Inner {
    state: BreakerState,
    /// Closed: (bucket number, succeeded, failed), oldest first.
    buckets: VecDeque<(u64, u32, u32)>,
    opened_at: Instant,
    /// Why it opened, for messages.
    reason: String,
    probes_in_flight: u32,
    probe_successes: u32,
}

/// One breaker, shared by every caller of its dependency.
pub struct Breaker {
    name: String,
    settings: BreakerSettings,
    base: Instant,
    inner: Mutex<Inner>,
    refused: AtomicU64,
    opened: AtomicU64,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

/// A call let through; say how it went with [`Permit::record`]. Dropped unrecorded (the call
/// was cancelled), it counts as nothing.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Permit<'_> {
    /// The call ended; `failure` says why it failed, if it did.
    pub fn record(self, failure: Option<&dyn std::fmt::Display>) {
        self.record_at(Instant::now(), failure);
    }

    fn record_at(mut self, now: Instant, failure: Option<&dyn std::fmt::Display>) {
        self.recorded = true;
        self.breaker.finish(now, self.probe, failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut inner = self.breaker.lock();
            if inner.state == BreakerState::HalfOpen {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            }
        }
    }
}

const BUCKETS: u32 = 10;

impl Breaker {
    pub fn new(name: &str, settings: BreakerSettings) -> Breaker {
        let now = Instant::now();
        Breaker {
            name: name.to_string(),
            settings,
            base: now,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                buckets: VecDeque::new(),
                opened_at: now,
                reason: String::new(),
                probes_in_flight: 0,
                probe_successes: 0,
            }),
            refused: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// The dependency it guards (a metrics label).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Times it opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Lets a call through, or refuses it.
    pub fn admit(&self) -> Result<Permit<'_>, Refused> {
        self.admit_at(Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the state consistent before anything can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit_at(&self, now: Instant) -> Result<Permit<'_>, Refused> {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            let open = now.saturating_duration_since(inner.opened_at);
            if open < self.settings.open_for {
                return Err(self.refuse(&inner, self.settings.open_for - open));
            }
            inner.state = BreakerState::HalfOpen;
            inner.probes_in_flight = 0;
            inner.probe_successes = 0;
            tracing::info!(dependency = %self.name, "circuit half-open: probing");
        }
        let probe = inner.state == BreakerState::HalfOpen;
        if probe {
            if inner.probes_in_flight >= self.settings.probes {
                return Err(self.refuse(&inner, Duration::ZERO));
            }
            inner.probes_in_flight += 1;
        }
        Ok(Permit {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    fn refuse(&self, inner: &Inner, retry_in: Duration) -> Refused {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Refused {
            reason: inner.reason.clone(),
            retry_in,
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        let width = (self.settings.window / BUCKETS).max(Duration::from_millis(1));
        (now.saturating_duration_since(self.base).as_nanos() / width.as_nanos()) as u64
    }

    fn finish(&self, now: Instant, probe: bool, failure: Option<&dyn std::fmt::Display>) {
        let mut inner = self.lock();
        match (inner.state, probe) {
            (BreakerState::HalfOpen, true) => {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                match failure {
                    Some(e) => self.open(&mut inner, now, format!("a probe failed: {e}")),
                    None => {
                        inner.probe_successes += 1;
                        if inner.probe_successes >= self.settings.probes {
                            inner.state = BreakerState::Closed;
                            inner.buckets.clear();
                            tracing::info!(dependency = %self.name, "circuit closed: the probes succeeded");
                        }
                    }
                }
            }
            (BreakerState::Closed, _) => {
                let b = self.bucket(now);
                if inner.buckets.back().is_none_or(|(n, _, _)| *n != b) {
                    inner.buckets.push_back((b, 0, 0));
                }
                if let Some(last) = inner.buckets.back_mut() {
                    if failure.is_some() {
                        last.2 += 1;
                    } else {
                        last.1 += 1;
                    }
                }
                let oldest = b.saturating_sub(u64::from(BUCKETS) - 1);
                while inner.buckets.front().is_some_and(|(n, _, _)| *n < oldest) {
                    inner.buckets.pop_front();
                }
                let (ok, failed) = inner
                    .buckets
                    .iter()
                    .fold((0u64, 0u64), |(o, f), (_, a, b)| {
                        (o + u64::from(*a), f + u64::from(*b))
                    });
                let total = ok + failed;
                if let Some(e) = failure
                    && total >= u64::from(self.settings.min_calls)
                    && failed as f64 >= self.settings.failure_rate * total as f64
                {
                    let reason = format!(
                        "{failed} of {total} calls failed in the last {:?}, the latest: {e}",
                        self.settings.window
                    );
                    self.open(&mut inner, now, reason);
                }
            }
            // Calls let through before it opened: too late to count.
            (BreakerState::Open | BreakerState::HalfOpen, _) => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, reason: String) {
        tracing::warn!(dependency = %self.name, %reason, "circuit open");
        inner.state = BreakerState::Open;
        inner.opened_at = now;
        inner.reason = reason;
        inner.buckets.clear();
        self.opened.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            probes: 2,
        }
    }

    const ERR: &dyn std::fmt::Display = &"timed out";

    fn call(b: &Breaker, at: Instant, fails: bool) -> Result<(), Refused> {
        let permit = b.admit_at(at)?;
        permit.record_at(at, fails.then_some(ERR));
        Ok(())
    }

    #[test]
    fn opens_on_the_failure_rate_only_with_enough_calls() {
        let t = Instant::now();
        let b = Breaker::new("store", settings());
        // Three failures alone are fewer than min_calls.
        for i in 0..3 {
            call(&b, t + Duration::from_millis(i), true).expect("closed");
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // The fourth: 4 of 4 failed.
        call(&b, t + Duration::from_millis(3), true).expect("closed");
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened(), 1);
        let refused = call(&b, t + Duration::from_secs(1), false).expect_err("open");
        assert!(refused.reason.contains("4 of 4 calls failed"), "{refused}");
        assert!(refused.reason.contains("timed out"), "{refused}");
        // Opened at 3 ms; five seconds from then.
        assert_eq!(refused.retry_in, Duration::from_millis(4_003));
        assert_eq!(b.refused(), 1);
    }

    #[test]
    fn a_failure_rate_below_the_threshold_keeps_it_closed() {
        let t = Instant::now();
        let b = Breaker::new("store", settings());
        for i in 0..100u64 {
            // One failure in three (the second of each three): under 50% at every point.
            call(&b, t + Duration::from_millis(i * 10), i % 3 == 1).expect("closed");
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let t = Instant::now();
        let b = Breaker::new("store", settings());
        for i in 0..3 {
            call(&b, t + Duration::from_millis(i), true).expect("closed");
        }
        // Eleven seconds later those three are out of the 10 s window: one more failure is
        // 1 of 1, fewer than min_calls.
        call(&b, t + Duration::from_secs(11), true).expect("closed");
        assert_eq!(b.state(), BreakerState::Closed);
        for i in 1..4 {
            call(
                &b,
                t + Duration::from_secs(11) + Duration::from_millis(i),
                true,
            )
            .expect("closed");
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn half_open_closes_after_successful_probes_and_reopens_on_a_failed_one() {
        let t = Instant::now();
        let b = Breaker::new("store", settings());
        for i in 0..4 {
            call(&b, t + Duration::from_millis(i), true).expect("closed");
        }
        let later = t + Duration::from_secs(6);
        // Two probes at once at most.
        let p1 = b.admit_at(later).expect("probe");
        let p2 = b.admit_at(later).expect("probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let refused = b.admit_at(later).expect_err("probes busy");
        assert_eq!(refused.retry_in, Duration::ZERO);
        p1.record_at(later, None);
        // A probe dropped without an outcome frees its slot.
        drop(p2);
        let p3 = b.admit_at(later).expect("probe");
        p3.record_at(later, Some(ERR));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened(), 2);
        let refused = b.admit_at(later).expect_err("open again");
        assert!(refused.reason.contains("a probe failed"), "{refused}");

        let later = later + Duration::from_secs(5);
        call(&b, later, false).expect("probe");
        call(&b, later, false).expect("probe");
        assert_eq!(b.state(), BreakerState::Closed);
        // Closed with a fresh window: one failure does not reopen it.
        call(&b, later, true).expect("closed");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn calls_from_before_it_opened_do_not_count_when_they_finish() {
        let t = Instant::now();
        let b = Breaker::new("store", settings());
        let slow = b.admit_at(t).expect("closed");
        for i in 0..4 {
            call(&b, t + Duration::from_millis(i), true).expect("closed");
        }
        let later = t + Duration::from_secs(6);
        let probe = b.admit_at(later).expect("probe");
        // The slow call from before ends now, failed: the half-open breaker ignores it.
        slow.record_at(later, Some(ERR));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.record_at(later, None);
        call(&b, later, false).expect("probe");
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
