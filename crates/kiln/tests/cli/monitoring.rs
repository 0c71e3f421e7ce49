//! Monitoring from a real `kiln serve`: the prediction log keeps every answered prediction
//! through a graceful shutdown (SIGTERM), labels posted to `/v1/feedback` join the logged
//! predictions and add up to the performance the endpoint and `/metrics` report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Float64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::common::*;

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

/// Every logged row under `dir`: request id -> the rows' `avg_daily_trips` values.
fn logged(dir: &Path) -> BTreeMap<String, Vec<Option<f64>>> {
    let mut out: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for path in parquet_files(dir) {
        let file = std::fs::File::open(&path).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let ids = batch.column_by_name("request_id").expect("request_id");
            let ids = ids.as_any().downcast_ref::<StringArray>().expect("utf8");
            let trips = batch
                .column_by_name("avg_daily_trips")
                .expect("avg_daily_trips column");
            let trips = trips.as_any().downcast_ref::<Float64Array>().expect("f64");
            for i in 0..batch.num_rows() {
                out.entry(ids.value(i).to_string())
                    .or_default()
                    .push((!trips.is_null(i)).then(|| trips.value(i)));
            }
        }
    }
    out
}

fn ranker_project(monitor: &str) -> Project {
    let p = init(&[]);
    let config = p.read("kiln.toml");
    p.write("kiln.toml", &format!("{config}\n[monitor]\n{monitor}\n"));
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    register_ranker(&p);
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    p
}

#[test]
fn every_answered_prediction_is_logged_through_a_graceful_shutdown() {
    // Files roll every 40 rows; the rest is only written by the flush at shutdown.
    let p = ranker_project("roll_rows = 40\nroll_interval = \"1h\"");
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();
    // Four clients at once; each request has its id and one or two rows.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut answered = BTreeMap::new();
                for i in 0..25 {
                    let rows = 1 + (i % 2);
                    let data: Vec<Vec<f64>> = (0..rows)
                        .map(|r| vec![0.5, 0.25, (c * 100 + i * 2 + r) as f64])
                        .collect();
                    let id = format!("c{c}-{i}");
                    let (status, body) = post_to(
                        &addr,
                        "/v2/models/ranker/infer",
                        json!({"id": id, "inputs": [{"name": "x", "shape": [rows, 3],
                               "datatype": "FP64", "data": data}]}),
                    );
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["id"], json!(id));
                    answered.insert(id, data);
                }
                answered
            })
        })
        .collect();
    let mut answered: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for c in clients {
        answered.extend(c.join().expect("client"));
    }
    // Predict by entity answers with the request id it logged under; a request without an id
    // gets one.
    let (status, body) = post_to(
        &addr,
        "/v1/models/ranker/predict",
        json!({"entities": {"driver_id": [1001, 1002]}}),
    );
    assert_eq!(status, 200, "{body}");
    let entity_request = body["request_id"].as_str().expect("request_id").to_string();
    let (status, body) = post_to(
        &addr,
        "/v2/models/ranker/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
    );
    assert_eq!(status, 200, "{body}");
    let made_up = body["id"].as_str().expect("an id was given").to_string();

    assert!(server.stop(), "kiln serve exits cleanly on SIGTERM");
    let log = logged(&p.dir.join(".kiln/logs/predictions"));
    assert_eq!(
        log.len(),
        answered.len() + 2,
        "one entry per answered request"
    );
    for (id, rows) in &answered {
        let got = log
            .get(id)
            .unwrap_or_else(|| panic!("{id} was answered but not logged"));
        // The input `avg_daily_trips` is the third column the client sent, row by row.
        let want: Vec<Option<f64>> = rows.iter().map(|r| Some(r[2])).collect();
        let mut got = got.clone();
        got.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
        assert_eq!(got, want, "{id}");
    }
    assert_eq!(log[&entity_request].len(), 2);
    assert_eq!(log[&made_up], vec![Some(3.0)]);
    // Rolled files and the shutdown flush: more than one file.
    assert!(parquet_files(&p.dir.join(".kiln/logs/predictions")).len() > 1);
}

/// The value of a sample in the Prometheus text `text`; `None` if absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn labels_join_logged_predictions_and_add_up_to_performance() {
    let p = ranker_project("");
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();

    // Eight scored rows: the first four by request id, the rest by entity.
    let mut scores = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let (status, body) = post_to(
            &addr,
            "/v2/models/ranker/infer",
            json!({"id": format!("q{i}"), "inputs": [{"name": "x", "shape": [1, 3],
                   "datatype": "FP64", "data": [0.1 * i as f64, 0.9 - 0.2 * i as f64, 5 + i]}]}),
        );
        assert_eq!(status, 200, "{body}");
        scores.push(body["outputs"][0]["data"][0].as_f64().expect("score"));
        ids.push(format!("q{i}"));
    }
    let (status, body) = post_to(
        &addr,
        "/v1/models/ranker/predict",
        json!({"entities": {"driver_id": [1001, 1002, 1003, 1004]}}),
    );
    assert_eq!(status, 200, "{body}");
    for s in body["scores"].as_array().expect("scores") {
        scores.push(s[0].as_f64().expect("score"));
    }

    // One label by request id, answered with its join.
    let (status, body) = post_to(
        &addr,
        "/v1/feedback",
        json!({"model": "ranker", "request_id": "q0", "label": 1}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"].as_f64(), Some(scores[0]));
    assert_eq!(body["model_version"], "1");
    // The rest in one batch: by id, by entity (and time), one for nothing.
    let labels = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let mut batch: Vec<Value> = (1..4)
        .map(|i| json!({"model": "ranker", "request_id": ids[i], "label": labels[i]}))
        .collect();
    for (k, driver) in [1001, 1002, 1003, 1004].iter().enumerate() {
        let mut label =
            json!({"model": "ranker", "entity": {"driver_id": driver}, "label": labels[4 + k]});
        if k == 0 {
            label["timestamp"] = json!("2100-01-01T00:00:00Z");
        }
        batch.push(label);
    }
    batch.push(json!({"model": "ranker", "request_id": "never-made", "label": 1}));
    let (status, body) = post_to(&addr, "/v1/feedback", json!({"labels": batch}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched"], 7, "{body}");
    assert_eq!(body["unmatched"], 1, "{body}");
    let last = &body["results"][7]["error"];
    assert!(
        last.as_str().is_some_and(|e| e.contains("never-made")),
        "{body}"
    );

    // Clear errors for bad labels, naming the field.
    for (bad, says) in [
        (json!({"model": "ranker", "label": 1}), "request_id"),
        (
            json!({"model": "ranker", "request_id": "q0", "label": "yes"}),
            "label",
        ),
        (
            json!({"model": "ranker", "entity": {"driver_id": 1001}, "timestamp": "soon", "label": 1}),
            "timestamp",
        ),
        (
            json!({"labels": [{"model": "ranker", "request_id": "q0", "label": 1, "colour": 2}]}),
            "labels[0]",
        ),
    ] {
        let (status, body) = post_to(&addr, "/v1/feedback", bad.clone());
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{bad}: {body}"
        );
    }
    let (status, body) = post_to(
        &addr,
        "/v1/feedback",
        json!({"model": "ranker", "request_id": "nope", "label": 1}),
    );
    assert_eq!(status, 404, "{body}");

    // Performance over the eight labels, as computed from the scores the client saw.
    let (status, text) = http(&addr, "GET", "/v1/models/ranker/performance", None);
    assert_eq!(status, 200, "{text}");
    let perf: Value = serde_json::from_str(&text).expect("json");
    let v = &perf["versions"][0];
    assert_eq!(v["version"], 1, "{perf}");
    assert_eq!(v["task"], "binary", "{perf}");
    assert_eq!(v["count"], 8, "{perf}");
    let correct = scores
        .iter()
        .zip(labels)
        .filter(|(s, y)| (**s >= 0.5) == (*y == 1.0))
        .count();
    assert_eq!(v["accuracy"].as_f64(), Some(correct as f64 / 8.0), "{perf}");
    let positive_rate = scores.iter().filter(|s| **s >= 0.5).count() as f64 / 8.0;
    assert_eq!(
        v["predicted_positive_rate"].as_f64(),
        Some(positive_rate),
        "{perf}"
    );
    assert!(v["auc"].is_number() && v["log_loss"].is_number(), "{perf}");
    let (status, _) = http(&addr, "GET", "/v1/models/nope/performance", None);
    assert_eq!(status, 404);
    let (status, _) = http(
        &addr,
        "GET",
        "/v1/models/ranker/performance?window=often",
        None,
    );
    assert_eq!(status, 400);

    // The same numbers in /metrics, with the feedback and log counters.
    let (status, metrics) = http(&addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let accuracy = sample(
        &metrics,
        "kiln_model_performance{model=\"ranker\",version=\"1\",metric=\"accuracy\"}",
    );
    assert_eq!(accuracy, Some(correct as f64 / 8.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "kiln_feedback_labels_total{outcome=\"matched\"}"),
        Some(8.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "kiln_feedback_labels_total{outcome=\"unmatched\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "kiln_events_dropped_total{subscriber=\"prediction_log\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    assert!(
        sample(
            &metrics,
            "kiln_materialization_lag_seconds{view=\"driver_hourly_stats\"}"
        )
        .is_some_and(|v| v > 0.0),
        "{metrics}"
    );

    // The joined labels are logged too, at shutdown at the latest.
    assert!(server.stop());
    let feedback = parquet_files(&p.dir.join(".kiln/logs/feedback"));
    assert!(!feedback.is_empty());
}
