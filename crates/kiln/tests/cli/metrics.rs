//! `GET /metrics` from a real `kiln serve`: after a known set of requests (scored, refused with
//! a 4xx, predicted by entity, features read), the Prometheus exposition's counters and histogram
//! counts have moved by exactly the right amounts, under the right labels.

use std::collections::BTreeMap;

use serde_json::json;

use crate::common::*;

/// One sample of the text exposition: name, labels, value.
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (the subset Kiln writes: no escapes in label values, no
/// timestamps).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample: {l}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value: {l}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("labels: {l}"));
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) =
                                p.split_once("=\"").unwrap_or_else(|| panic!("label: {l}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// The value of the one series `name` whose labels are exactly `labels`; 0 if absent.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} appears twice");
    found.first().copied().unwrap_or(0.0)
}

pub(crate) fn scrape(addr: &str) -> (String, Vec<Sample>) {
    let (status, head, body) = http_raw(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type").is_some_and(|c| c.starts_with("text/plain")),
        "{head}"
    );
    let text = String::from_utf8(body).expect("UTF-8");
    let samples = parse(&text);
    (text, samples)
}

#[test]
fn metrics_count_requests_outcomes_batches_and_feature_lookups() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    register_ranker(&p);
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();

    let (_, before) = scrape(&addr);
    let rv = [("model", "ranker"), ("version", "1")];
    assert_eq!(
        value(
            &before,
            "kiln_inference_requests_total",
            &[rv[0], rv[1], ("protocol", "rest"), ("outcome", "ok")]
        ),
        0.0
    );

    // Three scored requests of two rows each, one after the other (so one batch each).
    for _ in 0..3 {
        let (status, body) = post_to(
            &addr,
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64",
                               "data": [[0.5, 0.9, 10], [0.1, 0.2, 3]]}]}),
        );
        assert_eq!(status, 200, "{body}");
    }
    // One refused: four columns for a three-input model.
    let (status, body) = post_to(
        &addr,
        "/v2/models/ranker/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
    );
    assert_eq!(status, 400, "{body}");
    // Predict by entity: one driver present, one unknown, one expired (3 features each), one
    // batch of three rows.
    let (status, body) = post_to(
        &addr,
        "/v1/models/ranker/predict",
        json!({"entities": {"driver_id": [1001, 99999, 1050]}}),
    );
    assert_eq!(status, 200, "{body}");
    // A Feast read: one feature for a present and an unknown driver.
    let (status, body) = post(
        &addr,
        json!({"features": ["driver_hourly_stats:conv_rate"],
               "entities": {"driver_id": [1001, 99999]}}),
    );
    assert_eq!(status, 200, "{body}");

    let (text, after) = scrape(&addr);
    let requests = |protocol, outcome| {
        value(
            &after,
            "kiln_inference_requests_total",
            &[rv[0], rv[1], ("protocol", protocol), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("rest", "ok"), 3.0, "{text}");
    assert_eq!(requests("rest", "client_error"), 1.0, "{text}");
    assert_eq!(requests("predict", "ok"), 1.0, "{text}");
    assert_eq!(requests("rest", "overloaded"), 0.0, "{text}");
    assert_eq!(
        value(
            &after,
            "kiln_inference_request_duration_seconds_count",
            &[rv[0], rv[1], ("protocol", "rest")]
        ),
        4.0,
        "{text}"
    );
    // Queue and compute time for every scored request (the refused one never queued).
    for name in [
        "kiln_inference_queue_duration_seconds_count",
        "kiln_inference_compute_duration_seconds_count",
    ] {
        assert_eq!(value(&after, name, &rv), 4.0, "{name}: {text}");
    }
    // Four batches: three of two rows, one of three.
    assert_eq!(value(&after, "kiln_inference_batch_rows_count", &rv), 4.0);
    assert_eq!(value(&after, "kiln_inference_batch_rows_sum", &rv), 9.0);
    let bucket = |le| {
        value(
            &after,
            "kiln_inference_batch_rows_bucket",
            &[rv[0], rv[1], ("le", le)],
        )
    };
    assert_eq!(bucket("1"), 0.0, "{text}");
    assert_eq!(bucket("2"), 3.0, "{text}");
    assert_eq!(bucket("4"), 4.0, "{text}");
    assert_eq!(bucket("+Inf"), 4.0, "{text}");
    assert!(
        text.contains("# TYPE kiln_inference_batch_rows histogram"),
        "{text}"
    );
    // Nothing is in flight or queued once every answer is back.
    assert_eq!(value(&after, "kiln_inference_requests_in_flight", &rv), 0.0);
    assert_eq!(value(&after, "kiln_inference_queue_depth", &rv), 0.0);
    assert!(text.contains("kiln_inference_queue_depth{"), "{text}");
    // Feature look-ups: predict read 3 features x 3 rows, the Feast read 1 x 2.
    let lookups = |status| {
        value(
            &after,
            "kiln_feature_lookups_total",
            &[("view", "driver_hourly_stats"), ("status", status)],
        )
    };
    assert_eq!(lookups("present"), 4.0, "{text}");
    assert_eq!(lookups("not_found"), 4.0, "{text}");
    assert_eq!(lookups("expired"), 3.0, "{text}");
    // HTTP requests by route template, not raw path.
    let http_requests = |route, status| {
        value(
            &after,
            "kiln_http_requests_total",
            &[("route", route), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(
        http_requests("/v2/models/{name}/infer", "200"),
        3.0,
        "{text}"
    );
    assert_eq!(
        http_requests("/v2/models/{name}/infer", "400"),
        1.0,
        "{text}"
    );
    assert_eq!(
        http_requests("/v1/models/{name}/predict", "200"),
        1.0,
        "{text}"
    );
    assert!(server.stop());
}
