//! Tree-ensemble evaluation speed: a 100-tree, depth-6 XGBoost binary:logistic model on 20
//! features, at batch 1, 64 and 1024 rows. Run with `cargo bench -p kiln-models --bench trees`.
//!
//! The model is synthesised in XGBoost's JSON format (full trees, random splits), so the bench
//! runs anywhere; set `KILN_BENCH_XGB_MODEL` to a real model file (e.g. the one written by
//! `bench/models/peer_bench.py`, which also times xgboost and onnxruntime on it) to time that.

use std::sync::OnceLock;

use divan::counter::ItemsCount;
use kiln_models::{Format, Model, load};

fn main() {
    divan::main();
}

const FEATURES: usize = 20;
const TREES: usize = 100;
const DEPTH: u32 = 6;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn synthetic_model() -> String {
    let mut rng = Lcg(7);
    let internal = (1usize << DEPTH) - 1;
    let total = (1usize << (DEPTH + 1)) - 1;
    let trees: Vec<serde_json::Value> = (0..TREES)
        .map(|_| {
            let left: Vec<i64> = (0..total).map(|i| if i < internal { 2 * i as i64 + 1 } else { -1 }).collect();
            let right: Vec<i64> = (0..total).map(|i| if i < internal { 2 * i as i64 + 2 } else { -1 }).collect();
            let feature: Vec<usize> = (0..total).map(|i| if i < internal { (rng.next() * FEATURES as f64) as usize } else { 0 }).collect();
            let cond: Vec<f64> = (0..total).map(|i| if i < internal { rng.next() } else { rng.next() * 0.2 - 0.1 }).collect();
            let default_left: Vec<u8> = (0..total).map(|_| u8::from(rng.next() < 0.5)).collect();
            serde_json::json!({
                "left_children": left, "right_children": right, "split_indices": feature,
                "split_conditions": cond, "default_left": default_left, "split_type": vec![0; total],
            })
        })
        .collect();
    serde_json::json!({
        "learner": {
            "learner_model_param": {"base_score": "[5E-1]", "num_class": "0", "num_feature": FEATURES.to_string(), "num_target": "1"},
            "objective": {"name": "binary:logistic"},
            "gradient_booster": {"name": "gbtree", "model": {"tree_info": vec![0; TREES], "trees": trees}},
        },
        "version": [3, 0, 0],
    })
    .to_string()
}

fn model() -> &'static dyn Model {
    static MODEL: OnceLock<Box<dyn Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let json = match std::env::var("KILN_BENCH_XGB_MODEL") {
                Ok(path) => {
                    std::fs::read_to_string(path).expect("KILN_BENCH_XGB_MODEL is readable")
                }
                Err(_) => synthetic_model(),
            };
            load(Format::Xgboost, json.as_bytes()).expect("bench model loads")
        })
        .as_ref()
}

fn rows(n: usize) -> Vec<f64> {
    let mut rng = Lcg(11);
    let nf = model().info().n_features();
    (0..n * nf)
        .map(|_| {
            if rng.next() < 0.02 {
                f64::NAN
            } else {
                rng.next()
            }
        })
        .collect()
}

#[divan::bench(args = [1, 64, 1024])]
fn xgboost_100_trees_depth_6(bencher: divan::Bencher, batch: usize) {
    let m = model();
    let input = rows(batch);
    let mut out = vec![0.0; batch * m.info().n_outputs];
    bencher.counter(ItemsCount::new(batch)).bench_local(|| {
        m.predict(divan::black_box(&input), &mut out)
            .expect("predict");
        divan::black_box(&out);
    });
}
