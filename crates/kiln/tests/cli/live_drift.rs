//! Live drift in a real `kiln serve`: a model registered with its training data as the drift
//! reference is compared, on a schedule, with the traffic it serves. Traffic like the training
//! data does not drift; shifted traffic does, and shows in `GET /v1/models/{name}/drift`,
//! `kiln drift --model`, `/metrics` and a drift-share alert; pinning the current window makes
//! it the reference.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// Row `i` of the model's three inputs (conv_rate, acc_rate, avg_daily_trips), spread evenly.
fn row(i: usize) -> [f64; 3] {
    let frac = |x: f64| x - x.floor();
    [
        frac(i as f64 * 0.618_033_988_75),
        frac(i as f64 * 0.414_213_562_37),
        ((i * 7) % 30) as f64,
    ]
}

/// Scores `rows` in requests of 20 rows.
fn send(addr: &str, rows: &[[f64; 3]]) {
    for chunk in rows.chunks(20) {
        let data: Vec<f64> = chunk.iter().flatten().copied().collect();
        let (status, body) = post_to(
            addr,
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "x", "shape": [chunk.len(), 3], "datatype": "FP64", "data": data}]}),
        );
        assert_eq!(status, 200, "{body}");
    }
}

/// Polls the drift endpoint until `done` accepts an evaluation.
fn drift_until(addr: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = http(addr, "GET", "/v1/models/ranker/drift", None);
        if status == 200 {
            let v: Value = serde_json::from_str(&text).expect("json");
            if done(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status} {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drifted(v: &Value, column: &str) -> bool {
    v["report"]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == column)
        .unwrap_or_else(|| panic!("no column {column} in {v}"))["drifted"]
        .as_bool()
        .expect("bool")
}

#[test]
fn shifted_traffic_drifts_against_the_training_data_recorded_at_registration() {
    let p = init(&[]);
    // The training set: 2000 rows, with a label column the model does not take.
    let mut csv = String::from("conv_rate,acc_rate,avg_daily_trips,label\n");
    for i in 0..2000 {
        let [a, b, c] = row(i);
        csv.push_str(&format!("{a},{b},{c},{}\n", i % 2));
    }
    p.write("train.csv", &csv);
    p.write("bad.csv", "conv_rate,acc_rate\n0.1,0.2\n");
    let config = p.read("kiln.toml");
    p.write(
        "kiln.toml",
        &format!(
            "{config}\n[monitor]\ndrift_interval = \"1s\"\ndrift_window = 200\ndrift_min_rows = 50\n\n\
             [alerts]\ninterval = \"1s\"\n\n[[alerts.rules]]\nname = \"ranker-drift\"\nkind = \"drift_share\"\n\
             models = [\"ranker\"]\nthreshold = 0.5\n"
        ),
    );
    ok(p.run(&["apply"]));
    let register = |reference: &str| {
        p.run(&[
            "models",
            "register",
            "ranker",
            "--path",
            &model_fixture("driver_ranker.json"),
            "--format",
            "xgboost",
            "--reference",
            reference,
        ])
    };
    // A reference without one of the model's inputs is refused by name; nothing is recorded.
    let err = fails(register(p.dir.join("bad.csv").to_str().expect("path")));
    assert!(err.contains("avg_daily_trips"), "{err}");
    let listed = json(p.run(&["models", "list", "-o", "json"]));
    assert_eq!(listed, json!([]), "nothing registered: {listed}");
    let out = ok(register(p.dir.join("train.csv").to_str().expect("path")));
    assert!(out.contains("Drift reference: 2000 rows"), "{out}");
    let versions = ok(p.run(&["models", "list", "ranker"]));
    assert!(versions.contains("2000 rows"), "{versions}");

    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();
    let (status, text) = http(&addr, "GET", "/v1/models/ranker/drift", None);
    assert_eq!(status, 404, "{text}");
    assert!(
        text.contains("no drift evaluation of ranker v1 yet"),
        "{text}"
    );

    // Traffic like the training data: its first 200 rows (spread evenly too).
    let like: Vec<[f64; 3]> = (0..200).map(row).collect();
    send(&addr, &like);
    let v = drift_until(&addr, "a full window", |v| v["rows_seen"] == 200);
    assert_eq!(v["reference"]["kind"], "registered", "{v}");
    assert_eq!(v["reference"]["rows"], 2000, "{v}");
    assert_eq!(v["window_rows"], 200, "{v}");
    // The three inputs and the model's output, typed and tested as the file report would.
    assert_eq!(v["report"]["number_of_columns"], 4, "{v}");
    assert_eq!(v["report"]["dataset_drift"], false, "{v}");
    for c in ["conv_rate", "acc_rate", "avg_daily_trips", "prediction"] {
        assert!(!drifted(&v, c), "{c} drifted: {v}");
    }

    // Shifted traffic: two inputs moved up by one.
    let shifted: Vec<[f64; 3]> = like
        .iter()
        .map(|r| [r[0] + 1.0, r[1] + 1.0, r[2]])
        .collect();
    send(&addr, &shifted);
    let v = drift_until(&addr, "the shifted window", |v| v["rows_seen"] == 400);
    assert_eq!(v["report"]["dataset_drift"], true, "{v}");
    assert!(drifted(&v, "conv_rate") && drifted(&v, "acc_rate"), "{v}");
    assert!(!drifted(&v, "avg_daily_trips"), "{v}");

    // The same evaluation from the command line, and in /metrics.
    let url = format!("http://{addr}");
    let table = ok(p.run(&["drift", "--model", "ranker", "--server", &url]));
    assert!(table.contains("ranker v1: DATASET DRIFT"), "{table}");
    assert!(table.contains("conv_rate"), "{table}");
    let out = json(p.run(&["drift", "--model", "ranker", "--server", &url, "-o", "json"]));
    assert_eq!(out["report"]["dataset_drift"], true, "{out}");
    let status = p.run(&[
        "drift",
        "--model",
        "ranker",
        "--server",
        &url,
        "--fail-on-drift",
    ]);
    assert_eq!(status.status.code(), Some(2));
    let html = ok(p.run(&["drift", "--model", "ranker", "--server", &url, "-o", "html"]));
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("conv_rate"),
        "{html}"
    );
    let (_, metrics) = http(&addr, "GET", "/metrics", None);
    assert!(
        metrics.contains("kiln_drift_detected{model=\"ranker\",version=\"1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kiln_drift_feature_drifted{model=\"ranker\",version=\"1\",feature=\"conv_rate\"} 1"
        ),
        "{metrics}"
    );

    // The drift-share alert fires.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = http(&addr, "GET", "/v1/alerts", None);
        let alerts: Value = serde_json::from_str(&text).expect("json");
        let firing = alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a["rule"] == "ranker-drift" && a["state"] == "firing");
        if firing {
            break;
        }
        assert!(Instant::now() < deadline, "no firing drift alert: {alerts}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Pinning the shifted window makes it the baseline: no drift against itself.
    let (status, body) = post_to(&addr, "/v1/models/ranker/drift/pin", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reference_rows"], 200, "{body}");
    let v = drift_until(&addr, "the pinned reference", |v| {
        v["reference"]["kind"] == "pinned"
    });
    assert_eq!(v["report"]["dataset_drift"], false, "{v}");

    // Unknown models and versions are named.
    let (status, text) = http(&addr, "GET", "/v1/models/nope/drift", None);
    assert_eq!(status, 404, "{text}");
    let (status, text) = http(&addr, "GET", "/v1/models/ranker/drift?version=9", None);
    assert_eq!(status, 404, "{text}");
    let (status, text) = http(&addr, "GET", "/v1/models/ranker/drift?format=xml", None);
    assert_eq!(status, 400, "{text}");
    assert!(server.stop());
}
