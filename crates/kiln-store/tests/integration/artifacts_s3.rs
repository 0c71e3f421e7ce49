//! The artifact store against a real S3-compatible server. Runs when `KILN_TEST_S3_ENDPOINT`
//! is set (`.ci/run` starts s3s-fs and sets it, the `AWS_*` variables and
//! `KILN_TEST_S3_BUCKET`); otherwise each test says so and passes.

use kiln_store::artifacts::{ArtifactStore, sha256_hex};
use object_store::aws::AmazonS3Builder;

/// The test bucket, or `None` (with a note) when no server is configured.
fn bucket() -> Option<String> {
    if std::env::var("KILN_TEST_S3_ENDPOINT").is_err() {
        eprintln!("KILN_TEST_S3_ENDPOINT not set; skipping the S3 artifact store test");
        return None;
    }
    Some(std::env::var("KILN_TEST_S3_BUCKET").unwrap_or_else(|_| "kiln-test".to_string()))
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn round_trip_missing_key_and_prefix_on_a_real_server() {
    let Some(bucket) = bucket() else { return };
    let prefix = unique("roundtrip");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("s3://{bucket}/{prefix}");
    let store = ArtifactStore::open(&url, dir.path()).expect("opens from the AWS_* environment");
    assert_eq!(store.location(), url);

    let bytes: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    store
        .put("models/m/v1/model.bin", bytes.clone())
        .await
        .expect("put");
    let got = store.get("models/m/v1/model.bin").await.expect("get");
    assert_eq!(sha256_hex(&got), sha256_hex(&bytes));

    // Replacing is whole-object: the second version is read back entire.
    store
        .put("models/m/v1/model.bin", b"v2".to_vec())
        .await
        .expect("put again");
    assert_eq!(
        store.get("models/m/v1/model.bin").await.expect("get"),
        b"v2"
    );

    // The object is really under the prefix in the bucket.
    let root = ArtifactStore::open(&format!("s3://{bucket}"), dir.path()).expect("opens");
    assert_eq!(
        root.get(&format!("{prefix}/models/m/v1/model.bin"))
            .await
            .expect("under the prefix"),
        b"v2"
    );

    let missing = store
        .get("models/m/v2/model.bin")
        .await
        .expect_err("missing")
        .to_string();
    assert!(
        missing.contains(&url) && missing.contains("models/m/v2/model.bin"),
        "{missing}"
    );
}

#[tokio::test]
async fn a_missing_bucket_and_wrong_credentials_are_clear_errors() {
    let Some(bucket) = bucket() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // A read, not a write: s3s-fs creates a bucket's directory on PUT, where AWS refuses.
    let url = format!("s3://{}/p", unique("no-such-bucket"));
    let store = ArtifactStore::open(&url, dir.path()).expect("opening makes no request");
    let e = store
        .get("k.json")
        .await
        .expect_err("no bucket")
        .to_string();
    assert!(e.contains(&url) && e.contains("k.json"), "{e}");

    let url = format!("s3://{bucket}/p");
    let wrong = AmazonS3Builder::from_env().with_secret_access_key("not-the-secret-xyz");
    let store = ArtifactStore::open_s3_with(&url, wrong).expect("opens");
    let e = store
        .put("k.json", b"{}".to_vec())
        .await
        .expect_err("bad signature")
        .to_string();
    assert!(e.contains(&url) && e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    assert!(!e.contains("not-the-secret-xyz"), "{e}");
}
