//! The evaluators against their reference libraries: every fixture written by
//! `tests/fixtures/generate.py` (models trained by xgboost 2.x/3.x and lightgbm, with the
//! libraries' own predictions) must be reproduced to 1e-5, probabilities and raw margins alike.

use std::path::{Path, PathBuf};

mod pipeline;

use kiln_models::{Format, ModelError, load};
use serde_json::Value;

mod onnx;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The `*.cases.json` files of a fixture directory, sorted; at least `min` of them.
fn case_files(dir: &Path, min: usize) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".cases.json"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= min,
        "expected at least {min} generated fixtures in {}, found {}",
        dir.display(),
        cases.len()
    );
    cases
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .collect()
}

#[test]
fn every_fixture_matches_its_reference_library() {
    let cases = case_files(&fixtures(), 8);
    let mut failures = Vec::new();
    for path in &cases {
        let case: Value =
            serde_json::from_slice(&std::fs::read(path).expect("read case")).expect("case JSON");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let format: Format = case["format"]
            .as_str()
            .expect("format")
            .parse()
            .expect("known format");
        let model_bytes = std::fs::read(fixtures().join(case["model"].as_str().expect("model")))
            .expect("model file");
        let model = match load(format, &model_bytes) {
            Ok(m) => m,
            Err(e @ ModelError::Unsupported { .. }) if case.get("expect_unsupported").is_some() => {
                eprintln!("{name}: rejected as expected: {e}");
                continue;
            }
            Err(e) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        let inputs = rows(&case["inputs"]);
        let nf = model.info().n_features();
        assert_eq!(
            nf,
            case["n_features"].as_u64().expect("n_features") as usize,
            "{name}"
        );
        let flat: Vec<f64> = inputs.iter().flatten().copied().collect();
        for (what, expected, margin) in [
            ("prediction", &case["expected"], false),
            ("margin", &case["expected_margin"], true),
        ] {
            if expected.is_null() {
                continue;
            }
            let expected = rows(expected);
            let per_row = expected[0].len();
            let mut out = vec![0.0; inputs.len() * per_row];
            let result = if margin {
                model.predict_margin(&flat, &mut out)
            } else {
                model.predict(&flat, &mut out)
            };
            if let Err(e) = result {
                failures.push(format!("{name}: {what}: {e}"));
                continue;
            }
            // Row by row (batch 1) must agree with the batch path exactly.
            for (r, row) in inputs.iter().enumerate() {
                let mut one = vec![0.0; per_row];
                if margin {
                    model.predict_margin(row, &mut one)
                } else {
                    model.predict(row, &mut one)
                }
                .expect("one row");
                assert_eq!(
                    one,
                    out[r * per_row..(r + 1) * per_row],
                    "{name}: row {r} alone differs from the batch"
                );
            }
            let worst = expected
                .iter()
                .flatten()
                .zip(&out)
                .map(|(e, g)| (e - g).abs())
                .fold(0.0f64, f64::max);
            if worst > 1e-5 || worst.is_nan() {
                let (i, _) = expected
                    .iter()
                    .flatten()
                    .zip(&out)
                    .enumerate()
                    .map(|(i, (e, g))| (i, (e - g).abs()))
                    .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
                failures.push(format!(
                    "{name}: {what}: max abs difference {worst:e} (row {}, output {}: expected {}, got {}; input {:?})",
                    i / per_row,
                    i % per_row,
                    expected.iter().flatten().nth(i).copied().unwrap_or(f64::NAN),
                    out[i],
                    inputs[i / per_row]
                ));
            } else {
                eprintln!(
                    "{name}: {what}: {} rows, max abs difference {worst:.2e}",
                    inputs.len()
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_files_get_clear_errors() {
    let e = load(Format::Xgboost, b"not json")
        .err()
        .expect("garbage")
        .to_string();
    assert!(
        e.contains("invalid xgboost model") && e.contains("not JSON"),
        "{e}"
    );
    let e = load(Format::Xgboost, br#"{"version": [2, 1, 0]}"#)
        .err()
        .expect("no learner")
        .to_string();
    assert!(e.contains("learner"), "{e}");
    let e = load(Format::Lightgbm, b"hello\nworld\n")
        .err()
        .expect("garbage")
        .to_string();
    assert!(
        e.contains("invalid lightgbm model") && e.contains("header"),
        "{e}"
    );
    let e = load(Format::Lightgbm, b"tree\nversion=v4\nmax_feature_idx=1\nobjective=lambdarank_custom\n\nTree=0\nnum_leaves=1\nleaf_value=1\n").err().expect("objective").to_string();
    assert!(
        e.contains("unsupported") && e.contains("lambdarank_custom"),
        "{e}"
    );
    assert!("tflite".parse::<Format>().is_err());
    assert_eq!("onnx".parse::<Format>(), Ok(Format::Onnx));
}

#[test]
fn shapes_are_checked() {
    let text = b"tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nmax_feature_idx=1\nobjective=regression\n\nTree=0\nnum_leaves=2\nsplit_feature=1\nthreshold=0.5\ndecision_type=2\nleft_child=-1\nright_child=-2\nleaf_value=1 2\n\nend of trees\n";
    let m = load(Format::Lightgbm, text).expect("tiny model");
    let mut out = [0.0; 2];
    m.predict(&[0.0, 0.0, 0.0, 1.0], &mut out)
        .expect("two rows");
    assert_eq!(out, [1.0, 2.0]);
    // NaN with missing type none becomes 0 and goes left.
    m.predict(&[0.0, f64::NAN, 0.0, 0.7], &mut out)
        .expect("two rows");
    assert_eq!(out, [1.0, 2.0]);
    assert!(m.predict(&[0.0, 0.0, 0.0], &mut out).is_err());
    assert!(m.predict(&[0.0, 0.0], &mut out).is_err());
}
