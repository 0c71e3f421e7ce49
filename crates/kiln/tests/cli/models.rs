//! `kiln models`: registering real model files against a feature service, stages, lineage.

use crate::common::*;

#[test]
fn register_promote_archive_and_lineage() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let ranker = model_fixture("driver_ranker.json");
    let v1 = json(p.run(&[
        "models",
        "register",
        "ranker",
        "--path",
        &ranker,
        "--format",
        "xgboost",
        "--feature-service",
        "driver_activity",
        "--metrics",
        "auc=0.91,logloss=0.31",
        "--output",
        "json",
    ]));
    assert_eq!(v1["version"], 1);
    assert_eq!(
        v1["inputs"],
        serde_json::json!(["conv_rate", "acc_rate", "avg_daily_trips"])
    );
    assert_eq!(v1["metrics"]["auc"], 0.91);
    let artifact = p
        .dir
        .join(".kiln/artifacts")
        .join(v1["artifact"].as_str().expect("artifact"));
    assert_eq!(
        std::fs::read(&artifact).expect("artifact copied"),
        std::fs::read(&ranker).expect("fixture")
    );

    let v2 = json(p.run(&[
        "models", "register", "ranker", "--path", &ranker, "--format", "xgboost", "--output",
        "json",
    ]));
    assert_eq!(v2["version"], 2);
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    let out = ok(p.run(&["models", "promote", "ranker", "--version", "2"]));
    assert!(out.contains("ranker@v1: production -> archived"), "{out}");
    let versions = json(p.run(&["models", "list", "ranker", "--output", "json"]));
    let stages: Vec<&str> = versions
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["stage"].as_str().expect("stage"))
        .collect();
    assert_eq!(stages, ["archived", "production"]);
    let shown = json(p.run(&["models", "show", "ranker"]));
    assert_eq!(
        shown["version"], 2,
        "show defaults to the production version"
    );
    ok(p.run(&["models", "archive", "ranker", "--version", "2"]));
    let all = json(p.run(&["models", "list", "--output", "json"]));
    assert_eq!(all[0]["name"], "ranker");
    assert!(ok(p.run(&["models", "list"])).contains("ranker"));

    let lineage = json(p.run(&["lineage", "ranker", "--output", "json"]));
    let edges: Vec<String> = lineage["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            format!(
                "{} -> {}",
                e["from"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "service:driver_activity -> model:ranker@v1",
        "view:driver_hourly_stats@v1 -> service:driver_activity",
        "source:driver_stats -> view:driver_hourly_stats@v1",
    ] {
        assert!(
            edges.iter().any(|e| e == want),
            "missing {want} in {edges:?}"
        );
    }
    let log = json(p.run(&["registry", "log", "--output", "json"]));
    let kinds: Vec<&str> = log
        .as_array()
        .expect("log")
        .iter()
        .map(|e| e["event"]["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "model_stage_changed")
            .count(),
        3,
        "{kinds:?}"
    );
}

#[test]
fn mismatches_are_refused_at_registration() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let ranker = model_fixture("driver_ranker.json");
    // Inputs in another order than the service's.
    let e = fails(p.run(&[
        "models",
        "register",
        "ranker",
        "--path",
        &ranker,
        "--format",
        "xgboost",
        "--feature-service",
        "driver_activity",
        "--features",
        "acc_rate,conv_rate,avg_daily_trips",
    ]));
    assert!(
        e.contains("input 0: model \"acc_rate\", service \"conv_rate\""),
        "{e}"
    );
    // A model with another number of inputs.
    let e = fails(p.run(&[
        "models",
        "register",
        "other",
        "--path",
        &model_fixture("lgbm4_binary.txt"),
        "--format",
        "lightgbm",
        "--feature-service",
        "driver_activity",
    ]));
    assert!(
        e.contains("takes 8 inputs") && e.contains("provides 3"),
        "{e}"
    );
    // Not a model of that format.
    let e = fails(p.run(&[
        "models",
        "register",
        "bad",
        "--path",
        &model_fixture("driver_ranker.json"),
        "--format",
        "lightgbm",
    ]));
    assert!(e.contains("does not load as a lightgbm model"), "{e}");
    let e = fails(p.run(&[
        "models",
        "register",
        "bad",
        "--path",
        "nope.json",
        "--format",
        "xgboost",
    ]));
    assert!(e.contains("nope.json"), "{e}");
    let e = fails(p.run(&[
        "models", "register", "ranker", "--path", &ranker, "--format", "tflite",
    ]));
    assert!(e.contains("unknown model format \"tflite\""), "{e}");
    // An XGBoost file is not an ONNX model.
    let e = fails(p.run(&[
        "models", "register", "ranker", "--path", &ranker, "--format", "onnx",
    ]));
    assert!(e.contains("does not load as a onnx model"), "{e}");
    let e = fails(p.run(&[
        "models",
        "register",
        "ranker",
        "--path",
        &ranker,
        "--format",
        "xgboost",
        "--feature-service",
        "nope",
    ]));
    assert!(e.contains("feature service \"nope\""), "{e}");
    let e = fails(p.run(&["models", "promote", "ranker", "--version", "1"]));
    assert!(e.contains("model \"ranker\" is not in the registry"), "{e}");
    // Nothing was registered by any of these.
    assert_eq!(
        json(p.run(&["models", "list", "--output", "json"])),
        serde_json::json!([])
    );
}

#[test]
fn register_and_serve_an_onnx_model() {
    let p = init(&[]);
    let path = model_fixture("onnx/mlp_binary.onnx");
    let v = json(p.run(&[
        "models",
        "register",
        "mlp",
        "--path",
        &path,
        "--format",
        "onnx",
        "--features",
        "a,b,c,d,e",
        "--output",
        "json",
    ]));
    assert_eq!(v["version"], 1);
    assert_eq!(v["format"], "onnx");
    assert_eq!(v["inputs"], serde_json::json!(["a", "b", "c", "d", "e"]));
    assert!(
        v["artifact"]
            .as_str()
            .expect("artifact")
            .ends_with("model.onnx"),
        "{v}"
    );
    ok(p.run(&["models", "promote", "mlp", "--version", "1"]));

    // Scored over OIP: onnxruntime's probabilities of the positive class.
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_fixture("onnx/mlp_binary.cases.json")).expect("cases"),
    )
    .expect("json");
    let inputs = cases["inputs"].as_array().expect("inputs");
    let n = inputs.len();
    let server = Server::start(&p.dir, &[]);
    let (status, out) = post_to(
        &server.addr,
        "/v2/models/mlp/infer",
        serde_json::json!({
            "inputs": [{"name": "input", "shape": [n, 5], "datatype": "FP64", "data": inputs}],
        }),
    );
    assert_eq!(status, 200, "{out}");
    let got = out["outputs"][0]["data"].as_array().expect("data");
    assert_eq!(got.len(), n);
    for (i, (g, e)) in got
        .iter()
        .zip(cases["expected"].as_array().expect("expected"))
        .enumerate()
    {
        let (g, e) = (g.as_f64().expect("number"), e[0].as_f64().expect("number"));
        assert!((g - e).abs() <= 1e-5, "row {i}: kiln {g}, onnxruntime {e}");
    }
}
