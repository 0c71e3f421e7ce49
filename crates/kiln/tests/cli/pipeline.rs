//! Pipelines end to end: a TOML definition registered as one bundle, scored offline from a
//! Parquet file with `kiln models score`, and served over OIP by `kiln serve`; offline and
//! online scores must be the same numbers, and both the reference libraries' (sklearn
//! preprocessing + xgboost/lightgbm, from `generate_pipeline.py`).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};

use crate::common::*;

fn cases(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(model_fixture(&format!("pipeline/{name}.cases.json")))
            .expect("cases"),
    )
    .expect("json")
}

/// Writes the cases' raw input rows as a Parquet file with a `driver_id` key column; JSON
/// nulls become Parquet nulls.
fn write_inputs(path: &Path, case: &Value) -> usize {
    let names: Vec<String> = serde_json::from_value(case["inputs_names"].clone()).expect("names");
    let rows = case["inputs"].as_array().expect("inputs");
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "driver_id".into(),
        Arc::new(Int64Array::from_iter_values(1000..1000 + rows.len() as i64)),
    )];
    for (j, n) in names.iter().enumerate() {
        let values: Float64Array = rows.iter().map(|r| r[j].as_f64()).collect();
        columns.push((n.clone(), Arc::new(values)));
    }
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let mut w = ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    rows.len()
}

fn column(b: &RecordBatch, name: &str) -> Vec<f64> {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

#[test]
fn register_score_offline_and_serve_the_same_numbers() {
    let p = init(&[]);
    let v = json(p.run(&[
        "models",
        "register",
        "driver_pipe",
        "--path",
        &model_fixture("pipeline/stack.toml"),
        "--format",
        "pipeline",
        "--output",
        "json",
    ]));
    assert_eq!(v["format"], "pipeline");
    assert_eq!(
        v["inputs"],
        json!(["conv_rate", "acc_rate", "avg_daily_trips", "city_code"])
    );
    assert_eq!(v["artifact"], "models/driver_pipe/v1/model.kiln.json");
    // One self-contained artifact: the members are inside it.
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(
            p.dir
                .join(".kiln/artifacts/models/driver_pipe/v1/model.kiln.json"),
        )
        .expect("artifact"),
    )
    .expect("bundle is JSON");
    assert_eq!(bundle["ensemble"]["members"][1]["path"], "lgbm_binary.txt");
    assert_eq!(bundle["ensemble"]["members"][1]["data"]["encoding"], "utf8");

    // Offline.
    let case = cases("stack");
    let input = p.dir.join("rows.parquet");
    let out = p.dir.join("scores.parquet");
    let n = write_inputs(&input, &case);
    let done = json(p.run(&[
        "models",
        "score",
        "driver_pipe",
        "--input",
        input.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--batch-size",
        "16",
        "--output",
        "json",
    ]));
    assert_eq!(done["rows"], n);
    let scored = read_parquet(&out);
    let names: Vec<&str> = scored
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "conv_rate",
            "acc_rate",
            "avg_daily_trips",
            "city_code",
            "prediction"
        ]
    );
    let offline = column(&scored, "prediction");
    for (i, (g, e)) in offline
        .iter()
        .zip(case["expected"].as_array().expect("expected"))
        .enumerate()
    {
        let e = e[0].as_f64().expect("number");
        assert!((g - e).abs() <= 1e-5, "row {i}: kiln {g}, reference {e}");
    }

    // Online: the same rows over OIP give the same numbers, exactly.
    let server = Server::start(&p.dir, &[]);
    let (status, resp) = post_to(
        &server.addr,
        "/v2/models/driver_pipe/infer",
        json!({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP64", "data": case["inputs"]}]}),
    );
    assert_eq!(status, 200, "{resp}");
    let online: Vec<f64> = resp["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    assert_eq!(online, offline, "online and offline scores differ");
    let (status, meta) = get_json(&server.addr, "/v2/models/driver_pipe");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
    assert!(server.stop());
}

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (status, body) = http(addr, "GET", path, None);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn multiclass_pipelines_score_one_column_per_class() {
    let p = init(&[]);
    ok(p.run(&[
        "models",
        "register",
        "classes",
        "--path",
        &model_fixture("pipeline/mean_multiclass.toml"),
        "--format",
        "pipeline",
    ]));
    let case = cases("mean_multiclass");
    let input = p.dir.join("rows.parquet");
    let out = p.dir.join("scores.parquet");
    write_inputs(&input, &case);
    ok(p.run(&[
        "models",
        "score",
        "classes",
        "--version",
        "1",
        "--input",
        input.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--prediction-column",
        "p",
    ]));
    let scored = read_parquet(&out);
    let expected = case["expected"].as_array().expect("expected");
    let got: Vec<Vec<f64>> = (0..3).map(|k| column(&scored, &format!("p_{k}"))).collect();
    for (i, e) in expected.iter().enumerate() {
        for (k, g) in got.iter().enumerate() {
            let e = e[k].as_f64().expect("number");
            assert!(
                (g[i] - e).abs() <= 1e-5,
                "row {i} class {k}: kiln {}, reference {e}",
                g[i]
            );
        }
    }
}

#[test]
fn bad_pipelines_and_inputs_get_clear_errors() {
    let p = init(&[]);
    let dir = Path::new(&model_fixture("pipeline")).to_path_buf();
    let defn = p.dir.join("bad.toml");
    std::fs::write(
        &defn,
        format!(
            "inputs = [\"a\"]\n[[preprocess]]\nbucketize = {{ column = \"a\", boundaries = [100, 10] }}\n[model]\npath = \"{}\"\nformat = \"xgboost\"\n",
            dir.join("xgb_binary.json").display()
        ),
    )
    .expect("write");
    let e = fails(p.run(&[
        "models",
        "register",
        "bad",
        "--path",
        defn.to_str().expect("utf-8"),
        "--format",
        "pipeline",
    ]));
    assert!(
        e.contains("bad.toml: preprocess[0] (bucketize): boundaries must be strictly increasing"),
        "{e}"
    );

    ok(p.run(&[
        "models",
        "register",
        "pipe",
        "--path",
        &model_fixture("pipeline/single_lgbm.toml"),
        "--format",
        "pipeline",
    ]));
    // An input file without one of the pipeline's inputs.
    let input = p.dir.join("partial.parquet");
    let batch = RecordBatch::try_from_iter([(
        "conv_rate",
        Arc::new(Float64Array::from(vec![0.1])) as ArrayRef,
    )])
    .expect("batch");
    let mut w = ArrowWriter::try_new(File::create(&input).expect("create"), batch.schema(), None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let out = p.dir.join("never.parquet");
    let e = fails(p.run(&[
        "models",
        "score",
        "pipe",
        "--input",
        input.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        e.contains("no column \"acc_rate\", an input of pipe@v1 (columns: conv_rate)"),
        "{e}"
    );
    assert!(!out.exists(), "no output is left behind on failure");
}

#[test]
fn a_pipeline_on_a_feature_service_predicts_by_entity() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    let ranker = model_fixture("driver_ranker.json");
    // A member path may be absolute; relative ones are taken from the definition's directory.
    p.write(
        "ranker_pipeline.toml",
        &format!(
            r#"inputs = ["conv_rate", "acc_rate", "avg_daily_trips"]
[[preprocess]]
impute = {{ column = "acc_rate", value = 0.5 }}
[[preprocess]]
clip = {{ column = "avg_daily_trips", max = 40 }}
[model]
path = "{ranker}"
format = "xgboost"
"#
        ),
    );
    let defn = p.dir.join("ranker_pipeline.toml");
    for (name, path, format) in [
        ("piped", defn.to_str().expect("utf-8"), "pipeline"),
        ("plain", ranker.as_str(), "xgboost"),
    ] {
        ok(p.run(&[
            "models",
            "register",
            name,
            "--path",
            path,
            "--format",
            format,
            "--feature-service",
            "driver_activity",
        ]));
    }
    let server = Server::start(&p.dir, &[]);
    let (status, pred) = post_to(
        &server.addr,
        "/v1/models/piped/predict",
        json!({"entities": {"driver_id": [1001, 99999, 1050]}, "return_features": true}),
    );
    assert_eq!(status, 200, "{pred}");
    // The same preprocessing by hand, then the plain model over OIP.
    let f = &pred["features"];
    let rows: Vec<Value> = (0..3)
        .map(|r| {
            let acc = f["acc_rate"][r].as_f64().unwrap_or(0.5);
            let trips = f["avg_daily_trips"][r].as_f64().map(|t| t.min(40.0));
            json!([f["conv_rate"][r], acc, trips])
        })
        .collect();
    let (status, direct) = post_to(
        &server.addr,
        "/v2/models/plain/infer",
        json!({"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP64", "data": rows}]}),
    );
    assert_eq!(status, 200, "{direct}");
    let scores: Vec<Value> = pred["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .map(|s| s[0].clone())
        .collect();
    assert_eq!(Value::Array(scores), direct["outputs"][0]["data"]);
    // And the preprocessing mattered: the raw features score differently.
    let raw: Vec<Value> = (0..3)
        .map(|r| json!([f["conv_rate"][r], f["acc_rate"][r], f["avg_daily_trips"][r]]))
        .collect();
    let (_, unprocessed) = post_to(
        &server.addr,
        "/v2/models/plain/infer",
        json!({"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP64", "data": raw}]}),
    );
    assert_ne!(
        unprocessed["outputs"][0]["data"], direct["outputs"][0]["data"],
        "{f}"
    );
    assert!(server.stop());
}
