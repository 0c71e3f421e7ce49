//! What the model resilience stack costs per call: one row scored through a model version's
//! engine called bare (`off`), through the default stack (retry with its budget, breaker,
//! timeout: `default`), and with a bulkhead too (`bulkhead`). Two engines: an immediate answer
//! (the layers' own cost) and the XGBoost fixture behind its batching actor (the path a local
//! model's request takes).
//!
//! `cargo bench -p kiln-serve --bench resilience`

use std::sync::Arc;
use std::time::Duration;

use kiln_serve::batching::{BatchConfig, Batcher, Scored};
use kiln_serve::metrics::{ModelLabels, ServeMetrics};
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
        })
    }))
}

fn xgboost() -> ScoreService {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kiln-models/tests/fixtures/driver_ranker.json"
    );
    let bytes = std::fs::read(path).expect("the fixture model");
    let model = kiln_models::load(kiln_models::Format::Xgboost, &bytes).expect("it loads");
    let metrics = ServeMetrics::new();
    let batcher = Arc::new(Batcher::start(
        Arc::from(model),
        "ranker@v1".into(),
        BatchConfig::default(),
        metrics.batch_handles(&ModelLabels::new("ranker", 1)),
    ));
    ScoreService::new(tower::service_fn(move |call: ScoreCall| {
        let batcher = batcher.clone();
        async move { batcher.submit(call.rows).await }
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

#[divan::bench(args = ["off", "default", "bulkhead"])]
fn xgboost_batcher(bencher: divan::Bencher, stack: &str) {
    run(bencher, xgboost(), stack);
}
