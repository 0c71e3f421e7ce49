//! Model serving from a real `kiln serve`: Open Inference Protocol REST (metadata, readiness,
//! inference with a matrix or per-feature tensors) against the reference library's predictions,
//! and predict-by-entity against the online store.

use serde_json::{Value, json};

use crate::common::*;

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (status, body) = http(addr, "GET", path, None);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn oip_and_predict_by_entity() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    register_ranker(&p);
    ok(p.run(&[
        "models",
        "register",
        "strict",
        "--path",
        &model_fixture("driver_ranker.json"),
        "--format",
        "xgboost",
        "--feature-service",
        "driver_activity",
        "--on-missing",
        "reject",
    ]));
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();

    assert_eq!(http(&addr, "GET", "/v2/health/live", None).0, 200);
    assert_eq!(http(&addr, "GET", "/v2/health/ready", None).0, 200);
    assert_eq!(get_json(&addr, "/v2").1["name"], "kiln");
    let (status, meta) = get_json(&addr, "/v2/models/ranker");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 3]));
    assert_eq!(
        meta["parameters"]["feature_names"],
        json!(["conv_rate", "acc_rate", "avg_daily_trips"])
    );
    assert_eq!(http(&addr, "GET", "/v2/models/ranker/ready", None).0, 200);
    assert_eq!(
        http(&addr, "GET", "/v2/models/ranker/versions/1/ready", None).0,
        200
    );

    // Inference matches xgboost's own predictions (the fixture's reference values).
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(model_fixture("driver_ranker.cases.json")).expect("cases"),
    )
    .expect("json");
    let inputs = cases["inputs"].as_array().expect("inputs");
    let n = inputs.len();
    let (status, out) = post_to(
        &addr,
        "/v2/models/ranker/infer",
        json!({
            "id": "req-1",
            "inputs": [{"name": "input", "shape": [n, 3], "datatype": "FP64", "data": inputs}],
        }),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "req-1");
    assert_eq!(out["model_version"], "1");
    assert_eq!(out["outputs"][0]["shape"], json!([n, 1]));
    let got = out["outputs"][0]["data"].as_array().expect("data");
    for (i, (g, e)) in got
        .iter()
        .zip(cases["expected"].as_array().expect("expected"))
        .enumerate()
    {
        let (g, e) = (g.as_f64().expect("number"), e[0].as_f64().expect("number"));
        assert!((g - e).abs() <= 1e-6, "row {i}: kiln {g}, xgboost {e}");
    }
    // The same rows as one tensor per feature, against an explicit version.
    let column = |j: usize| inputs.iter().map(|r| r[j].clone()).collect::<Vec<_>>();
    let (status, by_column) = post_to(
        &addr,
        "/v2/models/ranker/versions/1/infer",
        json!({
            "inputs": [
                {"name": "avg_daily_trips", "shape": [n], "datatype": "FP32", "data": column(2)},
                {"name": "conv_rate", "shape": [n], "datatype": "FP32", "data": column(0)},
                {"name": "acc_rate", "shape": [n, 1], "datatype": "FP32", "data": column(1)},
            ],
        }),
    );
    assert_eq!(status, 200, "{by_column}");
    assert_eq!(by_column["outputs"][0]["data"], out["outputs"][0]["data"]);

    // Errors: {"error": ...} with the status that fits, naming what was wrong.
    for (path, body, code, needle) in [
        (
            "/v2/models/nope/infer",
            json!({"inputs": []}),
            404,
            "\"nope\"",
        ),
        (
            "/v2/models/ranker/versions/9/infer",
            json!({"inputs": []}),
            404,
            "no version 9",
        ),
        (
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
            400,
            "[N, 3]",
        ),
        (
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
            400,
            "has 6 elements but data has 3",
        ),
        (
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}),
            400,
            "not numeric",
        ),
        (
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}], "outputs": [{"name": "proba"}]}),
            400,
            "unknown output \"proba\"",
        ),
        (
            "/v2/models/ranker/infer",
            json!({"inputs": "x"}),
            400,
            "invalid inference request",
        ),
    ] {
        let (status, body) = post_to(&addr, path, body);
        assert_eq!(status, code, "{path}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains(needle),
            "{path}: {body}"
        );
    }

    // Predict by entity: features from the online store, then the model.
    let (status, pred) = post_to(
        &addr,
        "/v1/models/ranker/predict",
        json!({
            "entities": {"driver_id": [1001, 99999, 1050]},
            "return_features": true,
        }),
    );
    assert_eq!(status, 200, "{pred}");
    assert_eq!(pred["on_missing"], "missing");
    let missing: Vec<(u64, String)> = pred["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .map(|m| {
            (
                m["row"].as_u64().expect("row"),
                m["status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    assert!(
        missing.contains(&(1, "NOT_FOUND".into())) && missing.contains(&(2, "EXPIRED".into())),
        "{missing:?}"
    );
    // The scores are the model's on exactly the features it reports having used.
    let f = &pred["features"];
    let rows: Vec<Value> = (0..3)
        .map(|r| json!([f["conv_rate"][r], f["acc_rate"][r], f["avg_daily_trips"][r]]))
        .collect();
    let (_, direct) = post_to(
        &addr,
        "/v2/models/ranker/infer",
        json!({"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP64", "data": rows}]}),
    );
    let scores: Vec<Value> = pred["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .map(|s| s[0].clone())
        .collect();
    assert_eq!(Value::Array(scores), direct["outputs"][0]["data"]);
    // Request-time features take precedence; a model that rejects missing inputs says so.
    let (_, over) = post_to(
        &addr,
        "/v1/models/ranker/predict",
        json!({"entities": {"driver_id": [99999]}, "features": {"conv_rate": [0.9], "acc_rate": [0.9], "avg_daily_trips": [900]}}),
    );
    assert_eq!(over["missing"], json!([]), "{over}");
    let (status, strict) = post_to(
        &addr,
        "/v1/models/strict/predict",
        json!({"entities": {"driver_id": [99999]}, "version": 1}),
    );
    assert_eq!(status, 400, "{strict}");
    assert!(
        strict["error"]
            .as_str()
            .expect("error")
            .contains("rejects missing inputs"),
        "{strict}"
    );
    let (status, bad) = post_to(
        &addr,
        "/v1/models/ranker/predict",
        json!({"entities": {"rider_id": [1]}}),
    );
    assert_eq!(status, 400, "{bad}");

    // Promotion is picked up without a restart.
    ok(p.run(&[
        "models",
        "register",
        "ranker",
        "--path",
        &model_fixture("driver_ranker.json"),
        "--format",
        "xgboost",
        "--feature-service",
        "driver_activity",
    ]));
    ok(p.run(&["models", "promote", "ranker", "--version", "2"]));
    let mut version = Value::Null;
    for _ in 0..50 {
        let (_, meta) = get_json(&addr, "/v2/models/ranker");
        version = meta["parameters"]["version"].clone();
        if version == "2" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(version, "2");
    assert!(server.stop());
}
