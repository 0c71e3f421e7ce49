//! Alert rules in a real `kiln serve`: an accuracy-drop rule over posted labels fires when the
//! labels say the model is wrong, notifies a local webhook receiver once, shows as firing in
//! `GET /v1/alerts` and `/metrics`, and resolves (notifying again) when corrected labels come in.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// A webhook receiver on 127.0.0.1:0 that answers 200 and keeps every JSON body.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                kept.lock().expect("lock").push(v);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, bodies)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_accuracy_drop_fires_notifies_and_resolves() {
    let (hook, bodies) = receiver();
    let p = init(&[]);
    let config = p.read("kiln.toml");
    p.write(
        "kiln.toml",
        &format!(
            "{config}\n[alerts]\ninterval = \"1s\"\n\n[alerts.webhooks.team]\nkind = \"generic\"\nurl = \"http://{hook}/hook\"\n\n\
             [[alerts.rules]]\nname = \"ranker-accuracy\"\nkind = \"accuracy_drop\"\nmodels = [\"ranker\"]\nthreshold = 0.2\nmin_samples = 4\n"
        ),
    );
    ok(p.run(&["apply"]));
    ok(p.run(&[
        "models",
        "register",
        "ranker",
        "--path",
        &model_fixture("driver_ranker.json"),
        "--format",
        "xgboost",
        "--metrics",
        "accuracy=0.95",
    ]));
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();

    // Four predictions, then labels that contradict each of them: accuracy 0.
    let mut positive = Vec::new();
    for i in 0..4 {
        let (status, body) = post_to(
            &addr,
            "/v2/models/ranker/infer",
            json!({"id": format!("a{i}"), "inputs": [{"name": "x", "shape": [1, 3],
                   "datatype": "FP64", "data": [0.2 * i as f64, 0.5, 3 + 4 * i]}]}),
        );
        assert_eq!(status, 200, "{body}");
        positive.push(body["outputs"][0]["data"][0].as_f64().expect("score") >= 0.5);
    }
    let label = |i: usize, right: bool| {
        let truth = if positive[i] == right { 1 } else { 0 };
        json!({"model": "ranker", "request_id": format!("a{i}"), "label": truth})
    };
    let wrong: Vec<Value> = (0..4).map(|i| label(i, false)).collect();
    let (status, body) = post_to(&addr, "/v1/feedback", json!({"labels": wrong}));
    assert_eq!((status, &body["matched"]), (200, &json!(4)), "{body}");

    wait_for("the firing notification", || {
        bodies
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b["state"] == "firing")
    });
    let (status, text) = http(&addr, "GET", "/v1/alerts", None);
    assert_eq!(status, 200);
    let alerts: Value = serde_json::from_str(&text).expect("json");
    let ranker = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["rule"] == "ranker-accuracy")
        .unwrap_or_else(|| panic!("{alerts}"));
    assert_eq!(ranker["state"], "firing", "{alerts}");
    assert_eq!(ranker["subject"], "model=ranker", "{alerts}");
    let (_, metrics) = http(&addr, "GET", "/metrics", None);
    assert!(metrics.contains("kiln_alerts_firing 1"), "{metrics}");

    // Corrected labels replace the wrong ones: accuracy 1, the alert resolves.
    let right: Vec<Value> = (0..4).map(|i| label(i, true)).collect();
    let (status, body) = post_to(&addr, "/v1/feedback", json!({"labels": right}));
    assert_eq!(status, 200, "{body}");
    wait_for("the resolve notification", || {
        bodies
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b["state"] == "resolved")
    });
    let sent = bodies.lock().expect("lock").clone();
    let firing: Vec<&Value> = sent.iter().filter(|b| b["state"] == "firing").collect();
    assert_eq!(firing.len(), 1, "one notification per change: {sent:?}");
    assert_eq!(firing[0]["rule"], "ranker-accuracy");
    assert!(server.stop());
}
