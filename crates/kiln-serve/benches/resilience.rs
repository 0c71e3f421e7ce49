//! What the model resilience stack itself costs per call: one row through an engine that answers
//! at once, called bare (`off`), through the default stack (retry with its budget, breaker,
//! timeout: `default`), and with a bulkhead too (`bulkhead`). The end-to-end effect on a served
//! model is measured over HTTP with `kiln bench http` (BENCHMARKS.md).
//!
//! `cargo bench -p kiln-serve --bench resilience`

use std::sync::Arc;
use std::time::Duration;

use kiln_serve::batching::Scored;
use kiln_serve::resilience::{BulkheadSettings, ModelPolicy, ScoreCall, ScoreService};
use tower::ServiceExt;

fn main() {
    divan::main();
}

fn immediate() -> ScoreService {
    ScoreService::new(tower::service_fn(|call: ScoreCall| async move {
        Ok(Scored {
            values: vec![call.rows[0]],
            queue_time: Duration::ZERO,
            compute_time: Duration::ZERO,
            batch_rows: 1,
            fallback: None,
            cached: false,
        })
    }))
}

fn policy(stack: &str) -> ModelPolicy {
    match stack {
        "off" => ModelPolicy::none(),
        "default" => ModelPolicy::default(),
        _ => ModelPolicy {
            bulkhead: Some(BulkheadSettings {
                max_concurrent: 64,
                max_queue: 64,
            }),
            ..ModelPolicy::default()
        },
    }
}

fn run(bencher: divan::Bencher, engine: ScoreService, stack: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let service = policy(stack).build("ranker@v1", engine).service;
    let call = ScoreCall {
        rows: Arc::new(vec![0.5, 0.25, 10.0]),
    };
    bencher.bench_local(|| {
        rt.block_on(service.clone().oneshot(call.clone()))
            .expect("scores")
    });
}

#[divan::bench(args = ["off", "default", "bulkhead"])]
fn immediate_engine(bencher: divan::Bencher, stack: &str) {
    run(bencher, immediate(), stack);
}
