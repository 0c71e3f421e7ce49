//! Pipelines against an independent oracle: every case written by
//! `tests/fixtures/generate_pipeline.py` (sklearn transformations, models trained by xgboost and
//! lightgbm on the transformed data, numpy for the ensembles) must be reproduced: the
//! preprocessed rows exactly, the predictions to 1e-5.

use std::path::PathBuf;

use kiln_models::{Format, Model, PipelineModel, build_bundle, load};
use serde_json::Value;

use super::{case_files, fixtures, rows};

fn dir() -> PathBuf {
    fixtures().join("pipeline")
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

#[test]
fn every_pipeline_fixture_matches_sklearn_and_the_libraries() {
    let cases = case_files(&dir(), 5);
    let mut failures = Vec::new();
    for path in &cases {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let case: Value =
            serde_json::from_slice(&std::fs::read(path).expect("read")).expect("case JSON");
        let bundle = build_bundle(&dir().join(case["definition"].as_str().expect("definition")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The factory, as serving loads it.
        let model: Box<dyn Model> = load(Format::Pipeline, &bundle).expect("bundle loads");
        let names: Vec<String> =
            serde_json::from_value(case["inputs_names"].clone()).expect("names");
        assert_eq!(model.info().feature_names, names, "{name}");
        let inputs = rows(&case["inputs"]);
        let flat: Vec<f64> = inputs.iter().flatten().copied().collect();

        // Preprocessing: exactly sklearn's / numpy's values.
        let p = PipelineModel::from_bundle(&bundle).expect("loads");
        let columns: Vec<String> = serde_json::from_value(case["columns"].clone()).expect("cols");
        assert_eq!(p.preprocessed_columns(), columns, "{name}");
        let want = rows(&case["expected_preprocessed"]);
        let mut pre = vec![0.0; inputs.len() * columns.len()];
        p.preprocess(&flat, &mut pre).expect("preprocess");
        for (r, (w, g)) in want.iter().zip(pre.chunks(columns.len())).enumerate() {
            if !w.iter().zip(g).all(|(a, b)| same(*a, *b)) {
                failures.push(format!(
                    "{name}: row {r} {:?} preprocesses to {g:?}; sklearn gives {w:?}",
                    inputs[r]
                ));
            }
        }

        let expected = rows(&case["expected"]);
        let k = expected[0].len();
        assert_eq!(model.info().n_outputs, k, "{name}");
        let mut out = vec![0.0; inputs.len() * k];
        model.predict(&flat, &mut out).expect("predict");
        let mut worst = 0.0f64;
        for (r, (e, g)) in expected.iter().zip(out.chunks(k)).enumerate() {
            let mut one = vec![0.0; k];
            model.predict(&inputs[r], &mut one).expect("one row");
            assert_eq!(one, g, "{name}: row {r} alone differs from the batch");
            for (e, g) in e.iter().zip(g) {
                let d = (e - g).abs();
                if d > 1e-5 || d.is_nan() {
                    failures.push(format!(
                        "{name}: row {r} {:?}: expected {e}, got {g}",
                        inputs[r]
                    ));
                }
                worst = worst.max(d);
            }
        }
        eprintln!(
            "{name}: {} rows, {} ({}), max abs difference {worst:.2e}",
            inputs.len(),
            model.info().objective,
            columns.join(", ")
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
