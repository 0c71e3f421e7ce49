//! ONNX runtime speed at batch 1 and 64: a tree ensemble evaluated natively (the `gb_binary`
//! fixture: sklearn GradientBoostingClassifier, 15 trees of depth 3, exported by skl2onnx) and
//! an MLP run by tract (`mlp_multiclass`: 5 -> 16 -> 8 -> 3, relu, softmax). Run with
//! `cargo bench -p kiln-models --bench onnx`.

use std::sync::OnceLock;

use divan::counter::ItemsCount;
use kiln_models::{Format, Model, load};

fn main() {
    divan::main();
}

fn fixture(name: &str) -> Box<dyn Model> {
    let path = format!(
        "{}/tests/fixtures/onnx/{name}.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).expect("ONNX fixture is readable");
    load(Format::Onnx, &bytes).expect("ONNX fixture loads")
}

fn trees() -> &'static dyn Model {
    static M: OnceLock<Box<dyn Model>> = OnceLock::new();
    M.get_or_init(|| fixture("gb_binary")).as_ref()
}

fn mlp() -> &'static dyn Model {
    static M: OnceLock<Box<dyn Model>> = OnceLock::new();
    M.get_or_init(|| fixture("mlp_multiclass")).as_ref()
}

fn rows(n: usize, nf: usize) -> Vec<f64> {
    let mut s = 11u64;
    (0..n * nf)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect()
}

fn run(bencher: divan::Bencher, m: &dyn Model, batch: usize) {
    let input = rows(batch, m.info().n_features());
    let mut out = vec![0.0; batch * m.info().n_outputs];
    bencher.counter(ItemsCount::new(batch)).bench_local(|| {
        m.predict(divan::black_box(&input), &mut out)
            .expect("predict");
        divan::black_box(&out);
    });
}

#[divan::bench(args = [1, 64])]
fn onnx_trees_gb_15x3(bencher: divan::Bencher, batch: usize) {
    run(bencher, trees(), batch);
}

#[divan::bench(args = [1, 64])]
fn onnx_mlp_16_8(bencher: divan::Bencher, batch: usize) {
    run(bencher, mlp(), batch);
}
