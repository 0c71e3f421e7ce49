//! Dynamic batching: one actor per loaded model version, fed through a bounded queue.
//!
//! Requests from every transport end up here as rows. The actor's worker threads (dedicated OS
//! threads, never the async workers) take the first waiting request, gather more until the
//! batch holds `max_batch_rows` rows or `max_queue_delay` has passed since the first one
//! arrived, score them in one `predict` call, and answer each request through its own oneshot
//! channel. A request that finds the queue full is refused at once with
//! [`InferError::Overloaded`] (429 with `Retry-After`) instead of queueing without bound.
//!
//! With a zero delay (the default) nothing waits: a batch is whatever queued up while the
//! previous batch was being scored, which is the batching that costs no latency.
//!
//! Each job carries its request's tracing spans ([`trace::JobSpans`]): the worker ends the
//! job's `queue` span when the batch's compute starts, and opens the `batch` span under the
//! batch's first request (linked to the others). With tracing off they are disabled spans.
//!
//! The actor lives as long as its [`Batcher`]: when the last handle to a loaded version is
//! dropped (a promotion or an unload), the queue closes, the workers finish what was queued and
//! exit. A request that already resolved a version keeps it until answered, which is what makes a
//! promotion switch without failed requests.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_models::Model;
use tokio::sync::oneshot;

use crate::inference::InferError;
use crate::metrics::BatchMetrics;
use crate::trace::{self, JobSpans};

/// How a model version's requests are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Rows scored together at most (a single larger request is scored alone, whole).
    pub max_batch_rows: usize,
    /// How long the first request of a batch may wait for others.
    pub max_queue_delay: Duration,
    /// Requests waiting at most; beyond it requests are refused (429).
    pub queue_capacity: usize,
    /// Worker threads per model version.
    pub workers: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_rows: 256,
            max_queue_delay: Duration::ZERO,
            queue_capacity: 1024,
            workers: 1,
        }
    }
}

/// A scored request: its outputs and where its time went.
#[derive(Debug, Clone)]
pub struct Scored {
    /// `n_outputs` values per row.
    pub values: Vec<f64>,
    /// From enqueueing to the start of the batch's compute.
    pub queue_time: Duration,
    /// The batch's compute time.
    pub compute_time: Duration,
    /// Rows in the batch this request was scored in.
    pub batch_rows: usize,
    /// Set when the model did not answer and its fallback chain did.
    pub fallback: Option<crate::resilience::FallbackUsed>,
    /// Whether the answer came from the version's prediction cache (no queue, no compute).
    pub cached: bool,
}

struct Job {
    rows: Arc<Vec<f64>>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Scored, InferError>>,
    spans: JobSpans,
}

/// The sending side of a model version's batching actor.
pub struct Batcher {
    tx: SyncSender<Job>,
    metrics: BatchMetrics,
    what: String,
    retry_after: Duration,
}

impl Batcher {
    /// Starts the actor's workers for `model`; `what` names it in errors and thread names;
    /// batch sizes and the queue depth are recorded into `metrics`.
    pub fn start(
        model: Arc<dyn Model>,
        what: String,
        config: BatchConfig,
        metrics: BatchMetrics,
    ) -> Batcher {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(config.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.workers.max(1) {
            let rx = rx.clone();
            let model = model.clone();
            let metrics = metrics.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-batch-{i}"))
                .spawn(move || worker(&*model, &rx, config, &metrics));
            if let Err(e) = spawned {
                tracing::error!(model = %what, error = %e, "cannot start a batching worker");
            }
        }
        Batcher {
            tx,
            metrics,
            what,
            // A full queue drains in about one batch time; a second is a conservative hint.
            retry_after: Duration::from_secs(1),
        }
    }

    /// Queues `rows` (whole rows of the model's inputs) and waits for their outputs.
    pub async fn submit(&self, rows: Arc<Vec<f64>>) -> Result<Scored, InferError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            rows,
            enqueued: Instant::now(),
            reply,
            spans: JobSpans::enqueued(),
        };
        // Counted before sending: the worker may take the job (and decrement) at once.
        self.metrics.queue_depth.increment(1.0);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.queue_depth.decrement(1.0);
                return Err(InferError::Overloaded {
                    message: format!(
                        "{}: the request queue is full; retry after {} s",
                        self.what,
                        self.retry_after.as_secs()
                    ),
                    retry_after: self.retry_after,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.decrement(1.0);
                return Err(InferError::Unavailable(format!(
                    "{}: its workers have stopped",
                    self.what
                )));
            }
        }
        answer.await.map_err(|_| {
            InferError::Internal(format!(
                "{}: the worker dropped the request (it panicked while scoring)",
                self.what
            ))
        })?
    }
}

/// A worker: gathers a batch while holding the queue, releases it, scores, answers.
fn worker(
    model: &dyn Model,
    rx: &Mutex<Receiver<Job>>,
    config: BatchConfig,
    metrics: &BatchMetrics,
) {
    let n_features = model.info().n_features().max(1);
    let per_row = model.info().n_outputs;
    let mut batch: Vec<Job> = Vec::new();
    let mut rows: Vec<f64> = Vec::new();
    // A request too big to join the batch being gathered starts the next one.
    let mut carry: Option<Job> = None;
    loop {
        {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let first = match carry.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => {
                        metrics.queue_depth.decrement(1.0);
                        job
                    }
                    Err(_) => return, // every Batcher handle is gone and the queue is drained
                },
            };
            let deadline = first.enqueued + config.max_queue_delay;
            let mut n_rows = first.rows.len() / n_features;
            batch.push(first);
            while n_rows < config.max_batch_rows {
                let next = match rx.try_recv() {
                    Ok(job) => {
                        metrics.queue_depth.decrement(1.0);
                        job
                    }
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match rx.recv_timeout(deadline - now) {
                            Ok(job) => {
                                metrics.queue_depth.decrement(1.0);
                                job
                            }
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break;
                            }
                        }
                    }
                };
                let r = next.rows.len() / n_features;
                if n_rows + r > config.max_batch_rows {
                    carry = Some(next);
                    break;
                }
                n_rows += r;
                batch.push(next);
            }
        }
        let batch_rows: usize = batch.iter().map(|j| j.rows.len() / n_features).sum();
        metrics.rows.record(batch_rows as f64);
        score(
            model,
            std::mem::take(&mut batch),
            &mut rows,
            n_features,
            per_row,
        );
    }
}

/// Scores a batch in one call and answers each of its requests; with tracing on, under the
/// subscriber of the batch's requests.
fn score(
    model: &dyn Model,
    batch: Vec<Job>,
    rows: &mut Vec<f64>,
    n_features: usize,
    per_row: usize,
) {
    match batch.first().and_then(|j| j.spans.dispatch()) {
        Some(dispatch) => tracing::dispatcher::with_default(&dispatch, || {
            score_batch(model, batch, rows, n_features, per_row);
        }),
        None => score_batch(model, batch, rows, n_features, per_row),
    }
}

fn score_batch(
    model: &dyn Model,
    mut batch: Vec<Job>,
    rows: &mut Vec<f64>,
    n_features: usize,
    per_row: usize,
) {
    let Some((first, others)) = batch.split_first() else {
        return;
    };
    let batch_rows = batch.iter().map(|j| j.rows.len() / n_features).sum();
    let span = trace::start_batch(
        &first.spans,
        others.iter().map(|j| &j.spans),
        batch_rows,
        batch.len(),
    );
    for job in &mut batch {
        job.spans.end();
    }
    let started = Instant::now();
    // A lone request is scored from its own buffer; a batch is concatenated once.
    let input: &[f64] = if let [job] = batch.as_slice() {
        &job.rows
    } else {
        rows.clear();
        for job in &batch {
            rows.extend_from_slice(&job.rows);
        }
        rows
    };
    let mut out = vec![0.0; input.len() / n_features * per_row];
    // A panicking model must not take the worker (and every later request) down with it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.predict(input, &mut out)
    }))
    .map_err(|_| InferError::Internal("the model panicked while scoring".into()))
    .and_then(|r| {
        // Inputs are checked before queueing, so this is the model's own refusal.
        r.map(|()| out)
            .map_err(|e| InferError::BadRequest(e.to_string()))
    });
    let compute_time = started.elapsed();
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    drop(span);
    match result {
        Ok(out) if batch.len() == 1 => {
            let job = batch.into_iter().next().expect("one job");
            let _ = job.reply.send(Ok(Scored {
                values: out,
                queue_time: started - job.enqueued,
                compute_time,
                batch_rows,
                fallback: None,
                cached: false,
            }));
        }
        Ok(out) => {
            let mut at = 0;
            for job in batch {
                let len = job.rows.len() / n_features * per_row;
                let _ = job.reply.send(Ok(Scored {
                    values: out[at..at + len].to_vec(),
                    queue_time: started - job.enqueued,
                    compute_time,
                    batch_rows,
                    fallback: None,
                    cached: false,
                }));
                at += len;
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_models::{Format, Link, ModelError, ModelInfo};

    /// Sums each row; sleeps per call so a queue builds up behind it.
    struct SumModel {
        info: ModelInfo,
        pause: Duration,
        calls: Mutex<Vec<usize>>,
    }

    impl SumModel {
        fn new(pause: Duration) -> SumModel {
            SumModel {
                info: ModelInfo {
                    format: Format::Xgboost,
                    objective: "sum".into(),
                    feature_names: vec!["a".into(), "b".into()],
                    n_outputs: 1,
                    link: Link::Identity,
                    n_trees: 0,
                },
                pause,
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl Model for SumModel {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn predict(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
            std::thread::sleep(self.pause);
            self.calls.lock().expect("ok").push(rows.len() / 2);
            for (r, o) in rows.chunks(2).zip(out.iter_mut()) {
                *o = r[0] + r[1];
            }
            Ok(())
        }
        fn predict_margin(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
            self.predict(rows, out)
        }
        fn n_margins(&self) -> usize {
            1
        }
    }

    fn config(max_batch_rows: usize, delay_ms: u64, capacity: usize) -> BatchConfig {
        BatchConfig {
            max_batch_rows,
            max_queue_delay: Duration::from_millis(delay_ms),
            queue_capacity: capacity,
            workers: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_gets_its_own_rows_back_when_batched() {
        let _serial = crate::trace::tests::SERIAL.lock().await;
        let model = Arc::new(SumModel::new(Duration::from_millis(2)));
        let batcher = Arc::new(Batcher::start(
            model.clone(),
            "sum@v1".into(),
            config(8, 20, 64),
            BatchMetrics::noop(),
        ));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move {
                let n = 1 + i % 3;
                let rows: Vec<f64> = (0..n).flat_map(|r| [f64::from(i), f64::from(r)]).collect();
                let scored = b.submit(Arc::new(rows)).await.expect("ok");
                let want: Vec<f64> = (0..n).map(|r| f64::from(i) + f64::from(r)).collect();
                assert_eq!(scored.values, want, "request {i}");
                assert!(scored.batch_rows <= 8);
            }));
        }
        for t in tasks {
            t.await.expect("ok");
        }
        let calls = model.calls.lock().expect("ok").clone();
        assert_eq!(
            calls.iter().sum::<usize>(),
            (0..40usize).map(|i| 1 + i % 3).sum::<usize>()
        );
        assert!(calls.iter().all(|&n| n <= 8), "{calls:?}");
        assert!(calls.len() < 40, "requests were batched: {calls:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once() {
        let _serial = crate::trace::tests::SERIAL.lock().await;
        let model = Arc::new(SumModel::new(Duration::from_millis(200)));
        let batcher = Arc::new(Batcher::start(
            model,
            "slow@v1".into(),
            config(1, 0, 2),
            BatchMetrics::noop(),
        ));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move {
                b.submit(Arc::new(vec![1.0, 2.0])).await
            }));
        }
        let mut overloaded = 0;
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("ok") {
                Ok(s) => {
                    assert_eq!(s.values, vec![3.0]);
                    ok += 1;
                }
                Err(InferError::Overloaded { retry_after, .. }) => {
                    assert!(retry_after >= Duration::from_secs(1));
                    overloaded += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // One in compute, two queued; the rest are refused.
        assert!(
            ok >= 1 && overloaded >= 1,
            "ok {ok}, overloaded {overloaded}"
        );
        assert_eq!(ok + overloaded, 8);
    }

    #[test]
    fn a_batch_is_traced_under_its_first_request_and_linked_to_the_others() {
        let _serial = crate::trace::tests::SERIAL.blocking_lock();
        use crate::metrics::Protocol;
        use crate::trace::tests::{Collector, attr};
        use opentelemetry::Value;
        use tracing::Instrument;

        let (collector, dispatch, provider) = Collector::subscriber();
        let model = Arc::new(SumModel::new(Duration::ZERO));
        // Two one-row requests fill a batch of two; the long delay makes the worker wait
        // for the second.
        let batcher = Batcher::start(
            model,
            "sum@v1".into(),
            config(2, 60_000, 8),
            BatchMetrics::noop(),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let a = batcher
                    .submit(Arc::new(vec![1.0, 2.0]))
                    .instrument(crate::trace::inference_span(Protocol::Rest));
                let b = batcher
                    .submit(Arc::new(vec![3.0, 4.0]))
                    .instrument(crate::trace::inference_span(Protocol::Grpc));
                let (a, b) = tokio::join!(a, b);
                assert_eq!(a.expect("scored").batch_rows, 2);
                assert_eq!(b.expect("scored").values, [7.0]);
            });
        });
        provider.force_flush().expect("flushed");

        let spans = collector.spans();
        let batch = collector.one(crate::trace::BATCH);
        assert_eq!(attr(&batch, "kiln.batch.rows"), Some(Value::I64(2)));
        assert_eq!(attr(&batch, "kiln.batch.requests"), Some(Value::I64(2)));
        let inference: Vec<_> = spans
            .iter()
            .filter(|s| s.name == crate::trace::INFERENCE)
            .collect();
        assert_eq!(inference.len(), 2);
        // Two requests, two traces; the batch is in the first one's, under its span.
        let (first, other) = match inference
            .iter()
            .position(|s| s.span_context.span_id() == batch.parent_span_id)
        {
            Some(0) => (inference[0], inference[1]),
            Some(_) => (inference[1], inference[0]),
            None => panic!("the batch's parent is an inference span: {spans:#?}"),
        };
        assert_ne!(first.span_context.trace_id(), other.span_context.trace_id());
        assert_eq!(batch.span_context.trace_id(), first.span_context.trace_id());
        let linked: Vec<_> = batch.links.iter().map(|l| l.span_context.clone()).collect();
        assert_eq!(linked, vec![other.span_context.clone()]);
        // Each request waited in a queue span of its own; the other's links to the batch.
        for request in [first, other] {
            let queue: Vec<_> = spans
                .iter()
                .filter(|s| {
                    s.name == crate::trace::QUEUE
                        && s.span_context.trace_id() == request.span_context.trace_id()
                })
                .collect();
            assert_eq!(queue.len(), 1, "{spans:#?}");
            assert_eq!(queue[0].parent_span_id, request.span_context.span_id());
        }
        let other_queue = spans
            .iter()
            .find(|s| {
                s.name == crate::trace::QUEUE
                    && s.span_context.trace_id() == other.span_context.trace_id()
            })
            .expect("the other queue span");
        let back: Vec<_> = other_queue
            .links
            .iter()
            .map(|l| l.span_context.clone())
            .collect();
        assert_eq!(back, vec![batch.span_context.clone()]);
    }

    #[tokio::test]
    async fn workers_exit_when_the_batcher_is_dropped() {
        let _serial = crate::trace::tests::SERIAL.lock().await;
        let model = Arc::new(SumModel::new(Duration::ZERO));
        let batcher = Batcher::start(
            model.clone(),
            "m@v1".into(),
            config(4, 0, 4),
            BatchMetrics::noop(),
        );
        assert_eq!(
            batcher
                .submit(Arc::new(vec![1.0, 1.0]))
                .await
                .expect("ok")
                .values,
            [2.0]
        );
        drop(batcher);
        // The worker holds the last other reference to the model until it exits.
        for _ in 0..200 {
            if Arc::strong_count(&model) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the worker did not exit");
    }
}
