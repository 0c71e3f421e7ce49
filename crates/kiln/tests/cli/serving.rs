//! Serving beyond plain JSON inference, from a real `kiln serve`: the binary tensor extension,
//! the model repository extension, gRPC on the same port, the request size limit (413), the
//! bounded batching queue (429 with Retry-After), and a promotion under load with no failed
//! request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::common::*;

/// A project serving `driver_ranker.json` as model `ranker` (version 1, in production).
fn ranker_project() -> Project {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    register_ranker(&p);
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    p
}

/// The fixture's input rows and xgboost's predictions for them.
fn cases() -> (Vec<[f64; 3]>, Vec<f64>) {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(model_fixture("driver_ranker.cases.json")).expect("cases"),
    )
    .expect("json");
    let rows = cases["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|r| {
            let v: Vec<f64> = r
                .as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect();
            [v[0], v[1], v[2]]
        })
        .collect();
    let expected = cases["expected"]
        .as_array()
        .expect("expected")
        .iter()
        .map(|e| e[0].as_f64().expect("number"))
        .collect();
    (rows, expected)
}

fn close(got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= 1e-6, "row {i}: kiln {g}, xgboost {e}");
    }
}

/// A binary-extension request: JSON header, then the FP32 rows.
fn binary_request(rows: &[[f64; 3]], binary_output: bool) -> (String, Vec<u8>) {
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| (*x as f32).to_le_bytes())
        .collect();
    let mut head = json!({
        "inputs": [{
            "name": "input", "shape": [rows.len(), 3], "datatype": "FP32",
            "parameters": {"binary_data_size": data.len()},
        }],
    });
    if binary_output {
        head["outputs"] = json!([{"name": "predict", "parameters": {"binary_data": true}}]);
    }
    let head = head.to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(&data);
    (head.len().to_string(), body)
}

/// Posts a binary-extension request (`len`: its JSON part's length) to the ranker.
fn post_binary(addr: &str, len: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    http_raw(
        addr,
        "POST",
        "/v2/models/ranker/infer",
        &[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", len),
        ],
        body,
    )
}

#[test]
fn binary_tensors_and_the_model_repository() {
    let p = ranker_project();
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();
    let (rows, expected) = cases();

    // Binary in, binary out: the JSON header says where the FP64 output bytes are.
    let (len, body) = binary_request(&rows, true);
    let (status, head, resp) = post_binary(&addr, &len, &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let json_len: usize = header(&head, "Inference-Header-Content-Length")
        .expect("the response says how long its JSON part is")
        .parse()
        .expect("a number");
    let meta: Value = serde_json::from_slice(&resp[..json_len]).expect("json header");
    let out = &meta["outputs"][0];
    assert_eq!(out["datatype"], "FP64");
    assert_eq!(out["shape"], json!([rows.len(), 1]));
    assert_eq!(out["parameters"]["binary_data_size"], json!(rows.len() * 8));
    let got: Vec<f64> = resp[json_len..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    // The rows went over the wire as FP32, as a client would send them: compare with the
    // JSON path on the same FP32 values.
    let rows32: Vec<[f64; 3]> = rows
        .iter()
        .map(|r| r.map(|x| f64::from(x as f32)))
        .collect();
    let (status, by_json) = post_to(
        &addr,
        "/v2/models/ranker/infer",
        json!({"inputs": [{"name": "input", "shape": [rows.len(), 3], "datatype": "FP64", "data": rows32}]}),
    );
    assert_eq!(status, 200);
    let json_scores: Vec<f64> = by_json["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    assert_eq!(got, json_scores);
    close(&got, &expected);

    // Binary in, JSON out.
    let (len, body) = binary_request(&rows[..2], false);
    let (status, _, resp) = post_binary(&addr, &len, &body);
    assert_eq!(status, 200);
    let resp: Value = serde_json::from_slice(&resp).expect("json");
    assert_eq!(resp["outputs"][0]["data"], json!(json_scores[..2].to_vec()));

    // A binary part of the wrong size is named.
    let (len, mut body) = binary_request(&rows[..2], false);
    body.truncate(body.len() - 4);
    let (status, _, resp) = post_binary(&addr, &len, &body);
    assert_eq!(status, 400);
    let resp: Value = serde_json::from_slice(&resp).expect("json");
    assert!(
        resp["error"].as_str().expect("error").contains("\"input\""),
        "{resp}"
    );

    // The repository: the served version is loaded at start.
    let (status, index) = post_to(&addr, "/v2/repository/index", json!({}));
    assert_eq!(status, 200);
    assert_eq!(
        index,
        json!([{"name": "ranker", "version": "1", "state": "READY", "reason": ""}])
    );
    let (status, _) = post_to(&addr, "/v2/repository/models/ranker/unload", json!({}));
    assert_eq!(status, 200);
    let (status, body) = post_to(
        &addr,
        "/v2/models/ranker/infer",
        json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().expect("error").contains("unloaded"));
    assert_eq!(http(&addr, "GET", "/v2/models/ranker/ready", None).0, 400);
    let (_, index) = post_to(&addr, "/v2/repository/index", json!({}));
    assert_eq!(index[0]["state"], "UNAVAILABLE");
    assert_eq!(index[0]["reason"], "unloaded");
    let (_, ready_only) = post_to(&addr, "/v2/repository/index", json!({"ready": true}));
    assert_eq!(ready_only, json!([]));
    let (status, _) = post_to(&addr, "/v2/repository/models/ranker/load", json!({}));
    assert_eq!(status, 200);
    assert_eq!(http(&addr, "GET", "/v2/models/ranker/ready", None).0, 200);
    let (status, body) = post_to(&addr, "/v2/repository/models/nope/load", json!({}));
    assert_eq!(status, 404, "{body}");
    let (_, server_meta) = http(&addr, "GET", "/v2", None);
    assert!(server_meta.contains("binary_tensor_data") && server_meta.contains("model_repository"));
}

#[test]
fn grpc_on_the_same_port() {
    use kiln_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use kiln_serve::grpc::proto::model_infer_request::InferInputTensor;
    use kiln_serve::grpc::proto::*;

    let p = ranker_project();
    let server = Server::start(&p.dir, &[]);
    let (rows, expected) = cases();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut c = GrpcInferenceServiceClient::new(channel);
        assert!(
            c.server_live(ServerLiveRequest {})
                .await
                .expect("live")
                .into_inner()
                .live
        );
        assert!(
            c.server_ready(ServerReadyRequest {})
                .await
                .expect("ready")
                .into_inner()
                .ready
        );
        let meta = c
            .server_metadata(ServerMetadataRequest {})
            .await
            .expect("metadata")
            .into_inner();
        assert_eq!(meta.name, "kiln");
        let model = c
            .model_metadata(ModelMetadataRequest {
                name: "ranker".into(),
                version: String::new(),
            })
            .await
            .expect("model metadata")
            .into_inner();
        assert_eq!(model.inputs[0].shape, vec![-1, 3]);
        assert!(
            c.model_ready(ModelReadyRequest {
                name: "ranker".into(),
                version: "1".into()
            })
            .await
            .expect("model ready")
            .into_inner()
            .ready
        );

        // Raw contents (what tritonclient sends) come back raw.
        let n = rows.len();
        let raw: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let input = |contents| InferInputTensor {
            name: "input".into(),
            datatype: "FP64".into(),
            shape: vec![n as i64, 3],
            contents,
            ..Default::default()
        };
        let resp = c
            .model_infer(ModelInferRequest {
                model_name: "ranker".into(),
                id: "g-1".into(),
                inputs: vec![input(None)],
                raw_input_contents: vec![raw],
                ..Default::default()
            })
            .await
            .expect("infer")
            .into_inner();
        assert_eq!(resp.id, "g-1");
        assert_eq!(resp.model_version, "1");
        assert_eq!(resp.outputs[0].shape, vec![n as i64, 1]);
        let got: Vec<f64> = resp.raw_output_contents[0]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        close(&got, &expected);

        // Typed contents come back typed.
        let typed = InferTensorContents {
            fp64_contents: rows.iter().flatten().copied().collect(),
            ..Default::default()
        };
        let resp = c
            .model_infer(ModelInferRequest {
                model_name: "ranker".into(),
                inputs: vec![input(Some(typed))],
                ..Default::default()
            })
            .await
            .expect("infer")
            .into_inner();
        let contents = resp.outputs[0].contents.clone().expect("contents");
        assert_eq!(contents.fp64_contents, got);

        // Errors carry the status that fits and name what was wrong.
        let e = c
            .model_infer(ModelInferRequest {
                model_name: "nope".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown model");
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = c
            .model_infer(ModelInferRequest {
                model_name: "ranker".into(),
                inputs: vec![input(None)],
                raw_input_contents: vec![vec![0; 10]],
                ..Default::default()
            })
            .await
            .expect_err("short raw input");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("\"input\""), "{}", e.message());

        // The repository extension over gRPC.
        c.repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "ranker".into(),
            ..Default::default()
        })
        .await
        .expect("unload");
        let index = c
            .repository_index(RepositoryIndexRequest::default())
            .await
            .expect("index")
            .into_inner();
        assert_eq!(index.models[0].state, "UNAVAILABLE");
        c.repository_model_load(RepositoryModelLoadRequest {
            model_name: "ranker".into(),
            ..Default::default()
        })
        .await
        .expect("load");
        let index = c
            .repository_index(RepositoryIndexRequest {
                ready: true,
                ..Default::default()
            })
            .await
            .expect("index")
            .into_inner();
        assert_eq!(index.models.len(), 1);
    });
}

#[test]
fn oversized_requests_get_413_and_a_full_queue_429() {
    let p = ranker_project();
    let server = Server::start(
        &p.dir,
        &[
            ("KILN__SERVE__MAX_REQUEST_BYTES", "4000000"),
            ("KILN__SERVE__QUEUE_CAPACITY", "1"),
            ("KILN__SERVE__MAX_BATCH_ROWS", "1"),
        ],
    );
    let addr = server.addr.clone();
    let big = vec![0u8; 5_000_000];
    let (status, _, body) = http_raw(
        &addr,
        "POST",
        "/v2/models/ranker/infer",
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(status, 413);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("serve.max_request_bytes"),
        "{body}"
    );

    // Requests of 300,000 rows (3.6 MB of FP32) take far longer to score than to send, so with
    // one queue slot some of six concurrent ones must be refused, at once, with Retry-After.
    let rows: Vec<[f64; 3]> = (0..300_000)
        .map(|i| [f64::from(i % 7) / 7.0, 0.5, f64::from(i % 100)])
        .collect();
    let (len, body) = binary_request(&rows, true);
    let body = Arc::new(body);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (addr, len, body) = (addr.clone(), len.clone(), body.clone());
            std::thread::spawn(move || {
                let (status, head, _) = post_binary(&addr, &len, &body);
                (status, header(&head, "Retry-After").map(String::from))
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(results.iter().any(|(s, _)| *s == 200), "{results:?}");
    assert!(
        results
            .iter()
            .any(|(s, after)| *s == 429 && after.as_deref() == Some("1")),
        "{results:?}"
    );
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{results:?}"
    );
}

#[test]
fn promotion_under_load_fails_no_request() {
    let p = ranker_project();
    let server = Server::start(&p.dir, &[("KILN__SERVE__REGISTRY_REFRESH", "1s")]);
    let addr = server.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = post_to(
                        &addr,
                        "/v2/models/ranker/infer",
                        json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [0.5, 0.5, 10]}]}),
                    );
                    assert_eq!(status, 200, "{body}");
                    let v = body["model_version"].as_str().expect("version").to_string();
                    if seen.last() != Some(&v) {
                        seen.push(v);
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    register_ranker(&p);
    ok(p.run(&["models", "promote", "ranker", "--version", "2"]));
    // Wait until the server answers with version 2, then a little more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, body) = post_to(
            &addr,
            "/v2/models/ranker/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [0.5, 0.5, 10]}]}),
        );
        if body["model_version"] == "2" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "version 2 never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        // Every request answered 200 (asserted in the thread), and each client saw the switch
        // once: version 1, then version 2, never back.
        let seen = c.join().expect("no failed request");
        assert_eq!(seen, vec!["1".to_string(), "2".to_string()]);
    }
}
