//! The ONNX runtime against onnxruntime: every fixture in `tests/fixtures/onnx/` (written by
//! `generate_onnx.py`: sklearn via skl2onnx, XGBoost / LightGBM via onnxmltools) must be
//! reproduced to 1e-5, and a model with an operator Kiln does not run must be rejected with
//! an error naming it.

use std::path::PathBuf;

use kiln_models::{Format, ModelError, load};
use serde_json::Value;

use super::{case_files, fixtures, rows};

fn onnx_dir() -> PathBuf {
    fixtures().join("onnx")
}

#[test]
fn every_onnx_fixture_matches_onnxruntime() {
    let cases = case_files(&onnx_dir(), 15);
    let mut failures = Vec::new();
    let mut rejected = 0;
    for path in &cases {
        let case: Value =
            serde_json::from_slice(&std::fs::read(path).expect("read case")).expect("case JSON");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let bytes = std::fs::read(onnx_dir().join(case["model"].as_str().expect("model")))
            .expect("model file");
        let model = match (
            load(Format::Onnx, &bytes),
            case["expect_unsupported"].as_str(),
        ) {
            (Err(e @ ModelError::Unsupported { .. }), Some(op)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(op) && msg.contains("ai.onnx.ml"),
                    "{name}: {msg}"
                );
                eprintln!("{name}: rejected as expected: {msg}");
                rejected += 1;
                continue;
            }
            (Ok(_), Some(op)) => {
                failures.push(format!(
                    "{name}: loads, but uses {op}, which is unsupported"
                ));
                continue;
            }
            (Ok(m), None) => m,
            (Err(e), _) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        let inputs = rows(&case["inputs"]);
        let expected = rows(&case["expected"]);
        let info = model.info();
        assert_eq!(info.format, Format::Onnx);
        assert_eq!(
            info.n_features(),
            case["n_features"].as_u64().expect("n") as usize,
            "{name}"
        );
        assert_eq!(
            info.n_outputs,
            case["n_outputs"].as_u64().expect("k") as usize,
            "{name}"
        );
        let k = info.n_outputs;
        let flat: Vec<f64> = inputs.iter().flatten().copied().collect();
        let mut out = vec![0.0; inputs.len() * k];
        if let Err(e) = model.predict(&flat, &mut out) {
            failures.push(format!("{name}: {e}"));
            continue;
        }
        // Row by row (batch 1, a different batch size for tract's symbolic N) agrees with the
        // batch. tract may pick other kernels for one row, so not necessarily bit for bit.
        for (r, row) in inputs.iter().enumerate() {
            let mut one = vec![0.0; k];
            model.predict(row, &mut one).expect("one row");
            for (a, b) in one.iter().zip(&out[r * k..(r + 1) * k]) {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "{name}: row {r} alone: {one:?} vs batch"
                );
            }
        }
        let (mut worst, mut at) = (0.0f64, 0);
        for (i, (e, g)) in expected.iter().flatten().zip(&out).enumerate() {
            let d = (e - g).abs();
            if d > worst || d.is_nan() {
                (worst, at) = (if d.is_nan() { f64::INFINITY } else { d }, i);
            }
        }
        if worst > 1e-5 {
            failures.push(format!(
                "{name}: max abs difference {worst:e} at row {} output {}: expected {}, got {}; input {:?}",
                at / k,
                at % k,
                expected.iter().flatten().nth(at).copied().unwrap_or(f64::NAN),
                out[at],
                inputs[at / k]
            ));
        } else {
            eprintln!(
                "{name}: {} ({}), {} rows, max abs difference {worst:.2e}",
                info.objective,
                info.n_trees,
                inputs.len()
            );
        }
    }
    assert!(rejected >= 1, "no unsupported-operator fixture was checked");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn onnx_errors_are_clear() {
    let e = load(Format::Onnx, b"definitely not protobuf \xff\xff")
        .err()
        .expect("garbage");
    assert!(e.to_string().contains("invalid onnx model"), "{e}");
    // ONNX models have no separate margins.
    let bytes = std::fs::read(onnx_dir().join("linreg.onnx")).expect("linreg");
    let m = load(Format::Onnx, &bytes).expect("linreg loads");
    let mut out = vec![0.0; 1];
    let e = m
        .predict_margin(&[0.0; 6], &mut out)
        .expect_err("no margins");
    assert!(e.to_string().contains("margins"), "{e}");
    // Shapes are checked.
    assert!(m.predict(&[0.0; 5], &mut out).is_err());
}
