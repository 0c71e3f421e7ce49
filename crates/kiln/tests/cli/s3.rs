//! Model artifacts on a real S3-compatible server: `kiln models register` writes the model
//! into the bucket, `kiln serve` reads it back (SHA-256 checked) and scores it over OIP. Runs
//! when `KILN_TEST_S3_ENDPOINT` is set (`.ci/run` starts s3s-fs and sets it with the `AWS_*`
//! variables and `KILN_TEST_S3_BUCKET`).

use serde_json::{Value, json};

use crate::common::*;

#[test]
fn models_register_into_s3_and_serve_from_it() {
    if std::env::var("KILN_TEST_S3_ENDPOINT").is_err() {
        eprintln!("KILN_TEST_S3_ENDPOINT not set; skipping the S3 artifact store test");
        return;
    }
    let bucket = std::env::var("KILN_TEST_S3_BUCKET").unwrap_or_else(|_| "kiln-test".into());
    let prefix = unique("cli");
    let url = format!("s3://{bucket}/{prefix}");

    let p = init(&[]);
    let config = p.read("kiln.toml");
    assert!(config.contains("url = \".kiln/artifacts\""), "{config}");
    p.write(
        "kiln.toml",
        &config.replace("url = \".kiln/artifacts\"", &format!("url = {url:?}")),
    );
    ok(p.run(&["apply"]));
    let registered = register_ranker(&p);
    assert!(registered.contains(&url), "{registered}");
    ok(p.run(&["models", "promote", "ranker", "--version", "1"]));
    assert!(
        !p.dir.join(".kiln/artifacts").exists(),
        "nothing went to the local directory"
    );

    // The object is really in the bucket, byte for byte.
    let fixture = std::fs::read(model_fixture("driver_ranker.json")).expect("fixture");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stored = rt
        .block_on(async {
            kiln_store::artifacts::ArtifactStore::open(&format!("s3://{bucket}"), &p.dir)
                .expect("opens")
                .get(&format!("{prefix}/models/ranker/v1/model.json"))
                .await
        })
        .expect("the model is in the bucket");
    assert_eq!(stored, fixture);

    let server = Server::start(&p.dir, &[]);
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(model_fixture("driver_ranker.cases.json")).expect("cases"),
    )
    .expect("json");
    let inputs = cases["inputs"].as_array().expect("inputs");
    let flat: Vec<Value> = inputs
        .iter()
        .flat_map(|r| r.as_array().expect("row").clone())
        .collect();
    let (status, out) = post_to(
        &server.addr,
        "/v2/models/ranker/infer",
        json!({"inputs": [{"name": "input", "shape": [inputs.len(), 3], "datatype": "FP64", "data": flat}]}),
    );
    assert_eq!(status, 200, "{out}");
    let got = out["outputs"][0]["data"].as_array().expect("data");
    let expected = cases["expected"].as_array().expect("expected");
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let (g, e) = (g.as_f64().expect("number"), e[0].as_f64().expect("number"));
        assert!((g - e).abs() <= 1e-6, "row {i}: kiln {g}, xgboost {e}");
    }
}

#[test]
fn wrong_credentials_fail_registration_naming_the_url_not_the_secret() {
    if std::env::var("KILN_TEST_S3_ENDPOINT").is_err() {
        eprintln!("KILN_TEST_S3_ENDPOINT not set; skipping the S3 artifact store test");
        return;
    }
    let bucket = std::env::var("KILN_TEST_S3_BUCKET").unwrap_or_else(|_| "kiln-test".into());
    let url = format!("s3://{bucket}/{}", unique("denied"));
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let err = fails(kiln_env(
        &p.dir,
        &[
            "models",
            "register",
            "ranker",
            "--path",
            &model_fixture("driver_ranker.json"),
            "--format",
            "xgboost",
        ],
        &[
            ("KILN__ARTIFACTS__URL", &url),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret-xyz"),
        ],
    ));
    assert!(err.contains(&url), "{err}");
    assert!(!err.contains("not-the-secret-xyz"), "{err}");
    // Nothing was recorded for a model whose file could not be stored.
    let list = ok(p.run(&["models", "list"]));
    assert!(!list.contains("ranker"), "{list}");
}
