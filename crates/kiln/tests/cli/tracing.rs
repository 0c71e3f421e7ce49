//! Traces from a real `kiln serve`, received by a real OTLP collector: a tonic `TraceService`
//! on 127.0.0.1:0 in the test process records every exported span. The server is stopped with
//! SIGTERM before the spans are read, so its shutdown flush has delivered them all (no waiting
//! on the batch processor's timer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Value, json};

use crate::common::*;

/// A span as the collector received it; ids in lowercase hex, attributes as JSON values.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server.
    kind: i32,
    attrs: BTreeMap<String, Value>,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_of(v: &Option<AnyValue>) -> Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        other => json!(format!("{other:?}")),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), json_of(&kv.value)))
        .collect()
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Exported>>>);

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            let service = resource
                .get("service.name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Exported {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attrs: attrs(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
        self.0.lock().expect("not poisoned").extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC collector on 127.0.0.1:0, serving until dropped.
struct Collector {
    url: String,
    spans: Recorder,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let spans = Recorder::default();
        let router =
            tonic::service::Routes::new(TraceServiceServer::new(spans.clone())).into_axum_router();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        rt.spawn(async move { axum::serve(listener, router).await });
        Collector {
            url: format!("http://{addr}"),
            spans,
            _rt: rt,
        }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.0.lock().expect("not poisoned").clone()
    }
}

/// The spans of one trace, by name (each name once).
#[track_caller]
fn trace(spans: &[Exported], trace_id: &str) -> BTreeMap<String, Exported> {
    let mut by_name = BTreeMap::new();
    for s in spans.iter().filter(|s| s.trace_id == trace_id) {
        assert!(
            by_name.insert(s.name.clone(), s.clone()).is_none(),
            "two {:?} spans in trace {trace_id}: {spans:#?}",
            s.name
        );
    }
    by_name
}

/// Asserts `child` is a child of `parent`.
#[track_caller]
fn child_of(child: &Exported, parent: &Exported) {
    assert_eq!(
        child.parent, parent.span_id,
        "{} should be a child of {}",
        child.name, parent.name
    );
}

/// Checks the inference subtree of one request: inference under the server span, queue and
/// batch under inference, with the model's attributes.
#[track_caller]
fn check_inference(t: &BTreeMap<String, Exported>, server: &str, protocol: &str, rows: i64) {
    let server = &t[server];
    let inference = &t["inference"];
    child_of(inference, server);
    assert_eq!(inference.kind, 1, "internal");
    // Exactly the documented attributes (docs/tracing.md), nothing the layer adds on its own.
    let keys = |s: &Exported| s.attrs.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(inference),
        [
            "kiln.model.name",
            "kiln.model.version",
            "kiln.outcome",
            "kiln.protocol",
            "kiln.rows"
        ]
    );
    assert_eq!(
        keys(&t["batch"]),
        ["kiln.batch.requests", "kiln.batch.rows"]
    );
    assert!(keys(&t["queue"]).is_empty(), "{:?}", t["queue"]);
    assert_eq!(inference.attrs["kiln.model.name"], json!("ranker"));
    assert_eq!(inference.attrs["kiln.model.version"], json!("1"));
    assert_eq!(inference.attrs["kiln.rows"], json!(rows));
    assert_eq!(inference.attrs["kiln.protocol"], json!(protocol));
    assert_eq!(inference.attrs["kiln.outcome"], json!("ok"));
    child_of(&t["queue"], inference);
    let batch = &t["batch"];
    child_of(batch, inference);
    // One request at a time: each batch scored this request alone.
    assert_eq!(batch.attrs["kiln.batch.rows"], json!(rows));
    assert_eq!(batch.attrs["kiln.batch.requests"], json!(1));
    assert!(batch.links.is_empty(), "{batch:?}");
}

/// The trace id of a `traceparent` header value.
fn trace_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).expect("a traceparent")
}

/// A gRPC ModelInfer of two rows with `traceparent` metadata; returns the response's
/// `traceparent`.
fn grpc_infer(addr: &str, traceparent: &str) -> String {
    use kiln_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use kiln_serve::grpc::proto::model_infer_request::InferInputTensor;
    use kiln_serve::grpc::proto::*;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut client = GrpcInferenceServiceClient::new(channel);
        let mut req = tonic::Request::new(ModelInferRequest {
            model_name: "ranker".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP64".into(),
                shape: vec![2, 3],
                contents: Some(InferTensorContents {
                    fp64_contents: vec![0.5, 0.9, 10.0, 0.1, 0.2, 3.0],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        req.metadata_mut()
            .insert("traceparent", traceparent.parse().expect("ascii metadata"));
        let resp = client.model_infer(req).await.expect("scored");
        resp.metadata()
            .get("traceparent")
            .expect("a traceparent in the response metadata")
            .to_str()
            .expect("ascii")
            .to_string()
    })
}

const INFER_BODY: &str = r#"{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[0.5, 0.9, 10], [0.1, 0.2, 3]]}]}"#;

/// POSTs a JSON body with extra headers, expecting 200; returns the response's `traceparent`
/// and `tracestate`.
fn post_traced(
    addr: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (Option<String>, Option<String>) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let (status, head, body) = http_raw(addr, "POST", path, &all, body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let get = |name| header(&head, name).map(str::to_string);
    (get("traceparent"), get("tracestate"))
}

#[test]
fn rest_predict_and_grpc_requests_are_traced_and_exported_over_otlp() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    register_ranker(&p);
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    let collector = Collector::start();
    let config = p.read("kiln.toml");
    p.write(
        "kiln.toml",
        &format!(
            "{config}\n[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"kiln-test\"\n",
            collector.url
        ),
    );
    let server = Server::start(&p.dir, &[]);
    let addr = server.addr.clone();

    // Three callers, three traces; each names its own span as the parent.
    let rest_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let predict_tp = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203332-01";
    let grpc_tp = "00-2cf7651916cd43dd8448eb211c80319c-d7ad6b7169203333-01";
    let (rest_back, rest_state) = post_traced(
        &addr,
        "/v2/models/ranker/infer",
        INFER_BODY,
        &[("traceparent", rest_tp), ("tracestate", "vendor=1")],
    );
    let (predict_back, _) = post_traced(
        &addr,
        "/v1/models/ranker/predict",
        r#"{"entities": {"driver_id": [1001, 99999, 1050]}}"#,
        &[("traceparent", predict_tp)],
    );
    let grpc_back = grpc_infer(&addr, grpc_tp);
    assert!(server.stop(), "kiln serve stopped cleanly");

    let spans = collector.spans();
    assert!(spans.iter().all(|s| s.service == "kiln-test"), "{spans:#?}");

    // REST: the server span continues the caller's trace under the caller's span.
    let rest = trace(&spans, trace_of(rest_tp));
    let name = "POST /v2/models/{name}/infer";
    assert_eq!(
        rest.keys().collect::<Vec<_>>(),
        [
            "POST /v2/models/{name}/infer",
            "batch",
            "inference",
            "queue"
        ],
        "{spans:#?}"
    );
    let server_span = &rest[name];
    assert_eq!(server_span.parent, "b7ad6b7169203331");
    assert_eq!(server_span.kind, 2, "server");
    assert_eq!(server_span.attrs["http.request.method"], json!("POST"));
    assert_eq!(
        server_span.attrs["http.route"],
        json!("/v2/models/{name}/infer")
    );
    assert_eq!(server_span.attrs["http.response.status_code"], json!(200));
    check_inference(&rest, name, "rest", 2);
    // The response names the server span, in the caller's trace.
    let rest_back = rest_back.expect("a traceparent in the REST response");
    assert_eq!(
        rest_back,
        format!("00-{}-{}-01", trace_of(rest_tp), server_span.span_id)
    );
    assert_eq!(
        rest_state.as_deref(),
        Some("vendor=1"),
        "tracestate is kept"
    );

    // Predict by entity: the online store read is a child of inference.
    let predict = trace(&spans, trace_of(predict_tp));
    let name = "POST /v1/models/{name}/predict";
    assert_eq!(predict[name].parent, "c7ad6b7169203332");
    check_inference(&predict, name, "predict", 3);
    let fetch = &predict["feature_fetch"];
    child_of(fetch, &predict["inference"]);
    assert_eq!(
        fetch.attrs["kiln.feature_service"],
        json!("driver_activity")
    );
    assert_eq!(fetch.attrs["kiln.entity_rows"], json!(3));
    assert_eq!(
        trace_of(&predict_back.expect("a traceparent in the predict response")),
        trace_of(predict_tp)
    );

    // gRPC: same router, same server span, named by the RPC; traceparent came as metadata.
    let grpc = trace(&spans, trace_of(grpc_tp));
    let name = "inference.GRPCInferenceService/ModelInfer";
    let rpc = &grpc[name];
    assert_eq!(rpc.parent, "d7ad6b7169203333");
    assert_eq!(rpc.kind, 2, "server");
    assert_eq!(rpc.attrs["rpc.system"], json!("grpc"));
    assert_eq!(rpc.attrs["rpc.method"], json!("ModelInfer"));
    assert_eq!(rpc.attrs["rpc.grpc.status_code"], json!(0));
    check_inference(&grpc, name, "grpc", 2);
    assert_eq!(trace_of(&grpc_back), trace_of(grpc_tp));
    assert!(grpc_back.contains(&rpc.span_id), "{grpc_back}");

    // Nothing else was traced (the collector's own traffic and CLI commands are not).
    let ours = [trace_of(rest_tp), trace_of(predict_tp), trace_of(grpc_tp)];
    let strays: Vec<_> = spans
        .iter()
        .filter(|s| !ours.contains(&s.trace_id.as_str()))
        .collect();
    assert!(strays.is_empty(), "{strays:#?}");
}

#[test]
fn the_standard_endpoint_variable_works_and_sampling_follows_the_caller() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    register_ranker(&p);
    let collector = Collector::start();
    // No new trace is sampled, but a caller's sampled trace is (parent-based sampling).
    let server = Server::start(
        &p.dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("KILN__TRACING__SAMPLE_RATIO", "0"),
        ],
    );
    let sampled = "00-3df7651916cd43dd8448eb211c80319c-e7ad6b7169203334-01";
    let (back, _) = post_traced(
        &server.addr,
        "/v2/models/ranker/infer",
        INFER_BODY,
        &[("traceparent", sampled)],
    );
    assert!(back.expect("a traceparent").ends_with("-01"));
    let (unsampled, _) = post_traced(&server.addr, "/v2/models/ranker/infer", INFER_BODY, &[]);
    // A new trace, not recorded: the response still names it, with the sampled flag off.
    let unsampled = unsampled.expect("a traceparent");
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    assert!(server.stop());

    let spans = collector.spans();
    let t = trace(&spans, trace_of(sampled));
    assert_eq!(t["POST /v2/models/{name}/infer"].service, "kiln");
    check_inference(&t, "POST /v2/models/{name}/infer", "rest", 2);
    assert!(
        spans.iter().all(|s| s.trace_id == trace_of(sampled)),
        "only the caller's sampled trace: {spans:#?}"
    );
}

#[test]
fn with_no_endpoint_nothing_is_exported_and_requests_work() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    register_ranker(&p);
    let collector = Collector::start();
    let tp = "00-4ef7651916cd43dd8448eb211c80319c-f7ad6b7169203335-01";
    // Unset, and set empty over the standard variable: both mean no export.
    for env in [
        vec![],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("KILN__TRACING__OTLP_ENDPOINT", ""),
        ],
    ] {
        let server = Server::start(&p.dir, &env);
        let back = post_traced(
            &server.addr,
            "/v2/models/ranker/infer",
            INFER_BODY,
            &[("traceparent", tp)],
        );
        assert_eq!(
            back,
            (None, None),
            "no trace context in a response when tracing is off"
        );
        assert!(server.stop());
    }
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}
