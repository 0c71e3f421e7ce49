//! Delivery, off the evaluation path. Each webhook has its own bounded queue and sender task:
//! evaluation only `try_send`s (a full queue drops the notification and counts it), and a
//! webhook that hangs or fails holds up nobody but itself. Within one webhook, notifications go
//! out in order, so PagerDuty never sees a resolve before its trigger.
//!
//! Each attempt has a timeout; connection errors, timeouts, 408, 429 and 5xx are retried with
//! exponential back-off and jitter (each delay between half and all of `backoff * 2^n`, capped
//! at `max_backoff`), up to `max_attempts`; other answers are final. A 429 or 503 with
//! `Retry-After` (seconds or an HTTP date) waits at least that long (at most
//! [`MAX_RETRY_AFTER`]) before the next attempt. Counts of sent, failed, dropped and retried
//! notifications are kept per webhook for `/metrics`. [`Notifiers::close`] lets the queues
//! drain at shutdown.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::WebhookKind;
use super::error::AlertError;
use super::evaluator::Transition;
use super::payload;
use super::rule::Webhook;

/// One webhook's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    pub webhook: String,
    pub kind: &'static str,
    /// Delivered (a 2xx answer).
    pub sent: u64,
    /// Given up on: attempts exhausted or a final error answer.
    pub failed: u64,
    /// Never queued: the webhook's queue was full.
    pub dropped: u64,
    /// Attempts after the first.
    pub retried: u64,
    /// Waiting in the queue now.
    pub queued: usize,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
    queued: AtomicU64,
}

/// A body ready to send, and what it is about (for logs).
struct Outgoing {
    body: Vec<u8>,
    what: String,
}

/// A receiver's `Retry-After` is honoured up to this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

struct Target {
    webhook: Arc<Webhook>,
    /// `None` once closed.
    tx: Mutex<Option<mpsc::Sender<Outgoing>>>,
    counters: Arc<Counters>,
}

/// The webhooks' queues and counters. Dropping it (or [`Notifiers::close`]) closes the queues;
/// each sender task finishes what is queued (within its retry limits) and ends.
pub struct Notifiers {
    source: String,
    targets: Vec<Target>,
    senders: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifiers")
            .field("source", &self.source)
            .field("stats", &self.stats())
            .finish()
    }
}

/// An HTTP client for webhooks.
fn client() -> Result<reqwest::Client, AlertError> {
    crate::http_client().map_err(|e| AlertError::Client(e.to_string()))
}

impl Notifiers {
    /// Starts one sender task per webhook on the current tokio runtime.
    pub fn start(webhooks: &[Webhook], source: &str) -> Result<Notifiers, AlertError> {
        let client = if webhooks.is_empty() {
            None
        } else {
            Some(client()?)
        };
        let mut targets = Vec::new();
        let mut senders = Vec::new();
        for w in webhooks {
            let capacity = w.queue_capacity.max(1);
            let (tx, rx) = mpsc::channel(capacity);
            let counters = Arc::new(Counters::default());
            let webhook = Arc::new(w.clone());
            if let Some(client) = &client {
                senders.push(tokio::spawn(send_loop(
                    client.clone(),
                    webhook.clone(),
                    rx,
                    counters.clone(),
                )));
            }
            targets.push(Target {
                webhook,
                tx: Mutex::new(Some(tx)),
                counters,
            });
        }
        Ok(Notifiers {
            source: source.to_string(),
            targets,
            senders: Mutex::new(senders),
        })
    }

    /// Closes the queues (later notifications are dropped and counted) and waits up to
    /// `grace` for what is queued to be delivered. Returns the notifications still queued
    /// when it gave up (0: all delivered or given up on).
    pub async fn close(&self, grace: Duration) -> usize {
        for t in &self.targets {
            t.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        let senders = std::mem::take(&mut *self.senders.lock().unwrap_or_else(|p| p.into_inner()));
        let all = async {
            for s in senders {
                let _ = s.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_ok() {
            return 0;
        }
        let left: usize = self.stats().iter().map(|s| s.queued).sum();
        tracing::warn!(
            left,
            "alert notifications still queued at shutdown were not sent"
        );
        left
    }

    /// Queues `t` for each webhook its rule notifies, without waiting; a full queue drops it
    /// for that webhook (counted).
    pub fn enqueue(&self, t: &Transition) {
        for target in &self.targets {
            let w = &target.webhook;
            if !t.rule.notify.iter().any(|n| *n == w.name) {
                continue;
            }
            let body = match (w.kind, &w.routing_key) {
                (WebhookKind::Pagerduty, Some(key)) => {
                    payload::pagerduty(t, &self.source, key.expose())
                }
                _ => payload::generic(t, &self.source),
            };
            let msg = Outgoing {
                body: body.to_string().into_bytes(),
                what: format!("{} {} {}", t.rule.name, t.subject, t.change.as_str()),
            };
            target.counters.queued.fetch_add(1, Ordering::Relaxed);
            let sent = match &*target.tx.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(tx) => tx.try_send(msg),
                None => Err(mpsc::error::TrySendError::Closed(msg)),
            };
            if let Err(e) = sent {
                target.counters.queued.fetch_sub(1, Ordering::Relaxed);
                target.counters.dropped.fetch_add(1, Ordering::Relaxed);
                let what = match &e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => {
                        m.what.clone()
                    }
                };
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "the webhook's queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the server is shutting down",
                };
                tracing::warn!(webhook = %w.name, alert = %what, "alert notification dropped: {why}");
            }
        }
    }

    /// Every webhook's counts.
    pub fn stats(&self) -> Vec<NotifierStats> {
        self.targets
            .iter()
            .map(|t| NotifierStats {
                webhook: t.webhook.name.clone(),
                kind: t.webhook.kind.as_str(),
                sent: t.counters.sent.load(Ordering::Relaxed),
                failed: t.counters.failed.load(Ordering::Relaxed),
                dropped: t.counters.dropped.load(Ordering::Relaxed),
                retried: t.counters.retried.load(Ordering::Relaxed),
                queued: t.counters.queued.load(Ordering::Relaxed) as usize,
            })
            .collect()
    }
}

async fn send_loop(
    client: reqwest::Client,
    w: Arc<Webhook>,
    mut rx: mpsc::Receiver<Outgoing>,
    counters: Arc<Counters>,
) {
    while let Some(msg) = rx.recv().await {
        let result = deliver(&client, &w, &msg, &counters).await;
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(webhook = %w.name, alert = %msg.what, "alert notification sent");
            }
            Err(why) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = %w.name, url = %w.url, alert = %msg.what, "alert notification failed: {why}");
            }
        }
    }
}

/// Whether an answer is worth trying again.
fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

async fn deliver(
    client: &reqwest::Client,
    w: &Webhook,
    msg: &Outgoing,
    counters: &Counters,
) -> Result<(), String> {
    let mut last = String::new();
    // What the receiver asked for with `Retry-After`, if anything.
    let mut asked: Option<Duration> = None;
    for attempt in 1..=w.max_attempts.max(1) {
        if attempt > 1 {
            counters.retried.fetch_add(1, Ordering::Relaxed);
            let delay = backoff(w, attempt - 1).max(asked.take().unwrap_or_default());
            tokio::time::sleep(delay).await;
        }
        let mut req = client
            .post(w.url.expose())
            .timeout(w.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(msg.body.clone());
        for (name, value) in &w.headers {
            req = req.header(name.as_str(), value.expose());
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                {
                    asked = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
                }
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                last = format!("HTTP {status} after {attempt} attempt(s): {text}");
                if !retryable(status) {
                    return Err(last);
                }
            }
            // reqwest's error text carries the URL; show the origin only.
            Err(e) => {
                let kind = if e.is_timeout() {
                    format!("no answer within {:?}", w.timeout)
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    e.without_url().to_string()
                };
                last = format!("{kind} after {attempt} attempt(s)");
            }
        }
    }
    Err(last)
}

/// A `Retry-After` value (delay-seconds or an HTTP date) as a wait from `now`, at most
/// [`MAX_RETRY_AFTER`]; `None` when it cannot be read.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The delay before retry `n` (1-based): `backoff * 2^(n-1)` capped at `max_backoff`, then
/// jittered to between half and all of it so that many instances do not retry in step.
fn backoff(w: &Webhook, n: u32) -> Duration {
    let exp = w
        .backoff
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
        .min(w.max_backoff);
    let half = exp / 2;
    let jitter = (exp - half).mul_f64(random_unit());
    half + jitter
}

/// A random number in [0, 1) from the standard library's randomly keyed hasher (no RNG
/// dependency for jitter).
fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::types::WebhookUrl;

    fn webhook(backoff_ms: u64, max_ms: u64) -> Webhook {
        Webhook {
            name: "w".into(),
            kind: WebhookKind::Generic,
            url: WebhookUrl::new("http://127.0.0.1:9/"),
            routing_key: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            max_attempts: 5,
            backoff: Duration::from_millis(backoff_ms),
            max_backoff: Duration::from_millis(max_ms),
            queue_capacity: 1,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_within_half_to_all() {
        let w = webhook(100, 1000);
        for (n, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            for _ in 0..50 {
                let d = backoff(&w, n).as_millis() as u64;
                assert!(
                    d >= full / 2 && d <= full,
                    "retry {n}: {d} ms not in [{}, {full}]",
                    full / 2
                );
            }
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(&w, 3)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        // 21 Oct 2015 07:28:00 GMT is `now`; one minute later:
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn only_transient_answers_are_retried() {
        for s in [500, 502, 503, 429, 408] {
            assert!(
                retryable(reqwest::StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(
                !retryable(reqwest::StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
    }

    #[tokio::test]
    async fn the_tls_client_builds_with_the_ring_provider() {
        client().expect("client");
    }
}
