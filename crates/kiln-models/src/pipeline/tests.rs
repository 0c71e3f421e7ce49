//! Pipelines over tiny hand-written LightGBM models: composition, member column matching,
//! ensembles, bundles, and every validation error.

use serde_json::{Value, json};

use super::definition::{Definition, Embedded};
use super::*;

/// A one-split LightGBM regression: `x[feature] <= 0.5 ? lo : hi`, over `names` (generic
/// names when `None`).
fn lgbm(n: usize, names: Option<&[&str]>, feature: usize, lo: f64, hi: f64) -> String {
    let names = names
        .map(|v| format!("feature_names={}\n", v.join(" ")))
        .unwrap_or_default();
    format!(
        "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nmax_feature_idx={}\nobjective=regression\n{names}\nTree=0\nnum_leaves=2\nsplit_feature={feature}\nthreshold=0.5\ndecision_type=2\nleft_child=-1\nright_child=-2\nleaf_value={lo} {hi}\n\nend of trees\n",
        n - 1
    )
}

fn member(text: &str) -> Value {
    json!({"path": "m.txt", "format": "lightgbm", "data": {"encoding": "utf8", "bytes": text}})
}

fn load_json(def: Value) -> Result<PipelineModel, String> {
    let def: Definition = serde_json::from_value(def).map_err(|e| e.to_string())?;
    PipelineModel::from_definition(def, "p.toml").map_err(|e| e.to_string())
}

fn predict(m: &PipelineModel, rows: &[f64]) -> Vec<f64> {
    let n = rows.len() / m.info().n_features();
    let mut out = vec![0.0; n * m.info().n_outputs];
    m.predict(rows, &mut out).expect("predict");
    out
}

#[test]
fn a_single_model_sees_the_preprocessed_columns() {
    // Positional: 3 columns after one-hot of b into b=1, b=2.
    let m = load_json(json!({
        "inputs": ["a", "b"],
        "preprocess": [
            {"impute": {"column": "a", "value": 1.0}},
            {"one_hot": {"column": "b", "categories": [1, 2]}},
        ],
        "model": member(&lgbm(3, None, 2, 10.0, 20.0)),
    }))
    .expect("loads");
    assert_eq!(m.info().feature_names, ["a", "b"]);
    assert_eq!(m.info().format, Format::Pipeline);
    assert_eq!(m.preprocessed_columns(), ["a", "b=1", "b=2"]);
    assert_eq!(
        predict(&m, &[0.0, 2.0, 0.0, 1.0, 0.0, f64::NAN]),
        [20.0, 10.0, 10.0]
    );
    let mut pre = vec![0.0; 3];
    m.preprocess(&[f64::NAN, 2.0], &mut pre).expect("shape");
    assert_eq!(pre, [1.0, 0.0, 1.0]);
}

#[test]
fn named_members_take_their_columns_by_name() {
    // The model's feature order differs from the pipeline's, and it uses a subset.
    let m = load_json(json!({
        "inputs": ["a", "b", "c"],
        "model": member(&lgbm(2, Some(&["c", "a"]), 1, 1.0, 2.0)),
    }))
    .expect("loads");
    assert_eq!(predict(&m, &[0.0, 9.0, 9.0, 1.0, 0.0, 0.0]), [1.0, 2.0]);
    // `features = [...]` names an unnamed model's inputs.
    let mut mem = member(&lgbm(1, None, 0, 1.0, 2.0));
    mem["features"] = json!(["b"]);
    let m = load_json(json!({"inputs": ["a", "b"], "model": mem})).expect("loads");
    assert_eq!(predict(&m, &[9.0, 0.0, 0.0, 9.0]), [1.0, 2.0]);
}

#[test]
fn ensembles_combine_member_outputs() {
    let a = lgbm(1, None, 0, 1.0, 3.0);
    let b = lgbm(1, None, 0, 5.0, 7.0);
    let mean = load_json(json!({"inputs": ["x"], "ensemble": {"combine": "mean", "members": [member(&a), member(&b)]}})).expect("mean");
    assert_eq!(predict(&mean, &[0.0, 1.0]), [3.0, 5.0]);
    assert!(
        mean.info()
            .objective
            .starts_with("mean of 2 (lightgbm regression"),
        "{}",
        mean.info().objective
    );
    let (mut wa, mut wb) = (member(&a), member(&b));
    wa["weight"] = json!(3);
    wb["weight"] = json!(1);
    let weighted = load_json(
        json!({"inputs": ["x"], "ensemble": {"combine": "weighted", "members": [wa, wb]}}),
    )
    .expect("weighted");
    assert_eq!(predict(&weighted, &[0.0, 1.0]), [2.0, 4.0]);
    let stack = load_json(json!({"inputs": ["x"], "ensemble": {"combine": "stack", "members": [member(&a), member(&b)],
        "stack": {"weights": [0.5, -0.25], "bias": 1.0, "link": "logistic"}}}))
    .expect("stack");
    // x = 0: z = 1 + 0.5 - 1.25 = 0.25.
    let mut z = [0.0];
    stack.predict_margin(&[0.0], &mut z).expect("margin");
    assert_eq!(z, [0.25]);
    assert_eq!(predict(&stack, &[0.0]), [1.0 / (1.0 + (-0.25f64).exp())]);
    assert_eq!(stack.info().link, Link::Sigmoid { scale: 1.0 });
}

#[test]
fn batches_larger_than_a_chunk_match_row_by_row() {
    let m = load_json(json!({
        "inputs": ["x", "y"],
        "preprocess": [{"bucketize": {"column": "y", "boundaries": [0.25, 0.75]}}],
        "ensemble": {"combine": "mean", "members": [member(&lgbm(2, None, 0, 1.0, 3.0)), member(&lgbm(2, Some(&["y", "x"]), 0, 0.0, 4.0))]},
    }))
    .expect("loads");
    let rows: Vec<f64> = (0..2 * (CHUNK + 37))
        .map(|i| ((i * 7919) % 100) as f64 / 100.0)
        .collect();
    let batch = predict(&m, &rows);
    for (r, row) in rows.chunks(2).enumerate() {
        assert_eq!(predict(&m, row), [batch[r]], "row {r}");
    }
}

#[test]
fn bad_definitions_name_the_member_and_field() {
    let one = lgbm(1, None, 0, 1.0, 2.0);
    let two = lgbm(2, None, 0, 1.0, 2.0);
    let named = lgbm(1, Some(&["zzz"]), 0, 1.0, 2.0);
    let multi = "tree\nversion=v4\nnum_class=2\nnum_tree_per_iteration=2\nmax_feature_idx=0\nobjective=multiclass num_class:2\n\nTree=0\nnum_leaves=1\nleaf_value=1\n\nTree=1\nnum_leaves=1\nleaf_value=2\n\nend of trees\n";
    let with = |m: &str, k: &str, v: Value| {
        let mut x = member(m);
        x[k] = v;
        x
    };
    let cases = [
        (
            json!({"inputs": ["x"]}),
            "p.toml: no model: add a [model] table",
        ),
        (
            json!({"inputs": ["x"], "model": member(&one), "ensemble": {"combine": "mean", "members": [member(&one)]}}),
            "not both",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "mean", "members": []}}),
            "ensemble.members is empty",
        ),
        (
            json!({"inputs": ["x"], "model": with(&one, "format", json!("tflite"))}),
            "p.toml: [model] (m.txt): format \"tflite\" is not a model format",
        ),
        (
            json!({"inputs": ["x"], "model": with(&one, "format", json!("pipeline"))}),
            "cannot be a member of another pipeline",
        ),
        (
            json!({"inputs": ["x"], "model": with(&one, "data", Value::Null)}),
            "[model] (m.txt): the model file is not embedded",
        ),
        (
            json!({"inputs": ["x"], "model": member("garbage")}),
            "[model] (m.txt): does not load as a lightgbm model",
        ),
        (
            json!({"inputs": ["x"], "model": member(&two)}),
            "takes the 1 preprocessed columns by position, but it has 2 inputs (columns: x)",
        ),
        (
            json!({"inputs": ["x"], "model": member(&named)}),
            "[model] (m.txt): the model's feature \"zzz\" is not a column after preprocessing (columns: x)",
        ),
        (
            json!({"inputs": ["x"], "model": with(&one, "features", json!(["x", "y"]))}),
            "features lists 2 names but the model takes 1 inputs",
        ),
        (
            json!({"inputs": ["x"], "model": with(&one, "weight", json!(1))}),
            "[model]: weight is only used by ensemble members",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "mean", "members": [member(&one), member(multi)]}}),
            "ensemble.members[1] (m.txt): gives 2 outputs per row but ensemble.members[0] (m.txt) gives 1",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "mean", "members": [member(&one), with(&one, "weight", json!(2))]}}),
            "ensemble.members[1] (m.txt): weight is only used with combine = \"weighted\"",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "weighted", "members": [with(&one, "weight", json!(2)), member(&one)]}}),
            "ensemble.members[1] (m.txt): combine = \"weighted\" needs a weight on every member",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "weighted", "members": [with(&one, "weight", json!(-1))]}}),
            "weight must be a finite number >= 0, not -1",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "weighted", "members": [with(&one, "weight", json!(0))]}}),
            "the weights add up to 0",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "stack", "members": [member(&one)]}}),
            "needs an [ensemble.stack] table",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "stack", "members": [member(&one)], "stack": {"weights": [1, 2]}}}),
            "ensemble.stack.weights has 2 values but there are 1 members",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "mean", "members": [member(&one)], "stack": {"weights": [1]}}}),
            "[ensemble.stack] is only used with combine = \"stack\"",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "stack", "members": [member(multi)], "stack": {"weights": [1]}}}),
            "takes members with one output each; these give 2",
        ),
        (
            json!({"inputs": ["x"], "ensemble": {"combine": "stack", "members": [with(&one, "weight", json!(1))], "stack": {"weights": [1]}}}),
            "the weights are [ensemble.stack] weights",
        ),
        (
            json!({"inputs": ["x"], "preprocess": [{"clip": {"column": "q", "max": 1}}], "model": member(&one)}),
            "p.toml: preprocess[0] (clip): column \"q\" does not exist",
        ),
    ];
    for (def, needle) in cases {
        let e = load_json(def.clone())
            .err()
            .unwrap_or_else(|| panic!("{def} should fail"));
        assert!(e.contains(needle), "{e}\n  does not contain: {needle}");
    }
    let e = load_json(json!({"inputs": ["x"], "ensemble": {"combine": "median", "members": []}}))
        .expect_err("combine");
    assert!(e.contains("unknown variant `median`"), "{e}");
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn a_bundle_embeds_members_and_loads_through_the_factory() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("models")).expect("mkdir");
    write(
        dir.path(),
        "models/a.txt",
        &lgbm(2, Some(&["x", "y=1"]), 1, 1.0, 2.0),
    );
    let defn = write(
        dir.path(),
        "p.toml",
        r#"
inputs = ["x", "y"]
[[preprocess]]
one_hot = { column = "y", categories = [1] }
[model]
path = "models/a.txt"
format = "lightgbm"
"#,
    );
    let bytes = build_bundle(&defn).expect("bundle");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["kiln_pipeline"], 1);
    assert_eq!(v["model"]["path"], "models/a.txt");
    assert_eq!(v["model"]["data"]["encoding"], "utf8");
    let m = crate::load(Format::Pipeline, &bytes).expect("loads");
    let mut out = [0.0; 2];
    m.predict(&[0.0, 1.0, 0.0, 3.0], &mut out).expect("predict");
    assert_eq!(out, [2.0, 1.0]);
    assert_eq!(
        "pipeline".parse::<Format>().expect("format"),
        Format::Pipeline
    );
    assert_eq!(Format::Pipeline.to_string(), "pipeline");
}

#[test]
fn bad_files_name_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = build_bundle(&dir.path().join("nope.toml"))
        .expect_err("missing")
        .to_string();
    assert!(
        missing.contains("nope.toml: cannot read the definition"),
        "{missing}"
    );
    let defn = write(
        dir.path(),
        "p.toml",
        "inputs = [\"x\"]\n[model]\npath = \"gone.json\"\nformat = \"xgboost\"\n",
    );
    let e = build_bundle(&defn).expect_err("member").to_string();
    assert!(
        e.contains("p.toml: [model] (gone.json): cannot read model file")
            && e.contains("gone.json"),
        "{e}"
    );
    let defn = write(dir.path(), "q.toml", "inputs = [\"x\"]\nmodle = 1\n");
    let e = build_bundle(&defn).expect_err("typo").to_string();
    assert!(
        e.contains("q.toml") && e.contains("unknown field `modle`") && e.contains("line 2"),
        "{e}"
    );
    let defn = write(
        dir.path(),
        "r.toml",
        "inputs = [\"x\"]\n[[preprocess]]\nclip = { column = \"x\", min = 3, max = 1 }\n[model]\npath = \"gone.json\"\nformat = \"xgboost\"\n",
    );
    let e = build_bundle(&defn).expect_err("member").to_string();
    // The member file is read first; fix that and the step error shows.
    assert!(e.contains("gone.json"), "{e}");
    write(dir.path(), "gone.json", &lgbm(1, None, 0, 1.0, 2.0));
    let defn = write(
        dir.path(),
        "r.toml",
        "inputs = [\"x\"]\n[[preprocess]]\nclip = { column = \"x\", min = 3, max = 1 }\n[model]\npath = \"gone.json\"\nformat = \"lightgbm\"\n",
    );
    let e = build_bundle(&defn).expect_err("step").to_string();
    assert!(
        e.contains("r.toml: preprocess[0] (clip): min 3 is greater than max 1"),
        "{e}"
    );
}

#[test]
fn bundles_are_checked_on_load() {
    let e = PipelineModel::from_bundle(b"{}")
        .expect_err("empty")
        .to_string();
    assert!(e.contains("not a pipeline bundle"), "{e}");
    let e = PipelineModel::from_bundle(br#"{"inputs": ["x"]}"#)
        .expect_err("no version")
        .to_string();
    assert!(e.contains("no kiln_pipeline version"), "{e}");
    let e = PipelineModel::from_bundle(br#"{"kiln_pipeline": 9, "inputs": ["x"]}"#)
        .expect_err("version")
        .to_string();
    assert!(e.contains("bundle version 9"), "{e}");
    assert_eq!(
        Embedded::new(vec![0xff, 0x00]).bytes().expect("b64"),
        [0xff, 0x00]
    );
    assert!(matches!(Embedded::new(vec![0xff]), Embedded::Base64(_)));
}
