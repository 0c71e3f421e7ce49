//! `s3://bucket/prefix` artifact stores: AWS S3 or any S3-compatible server (MinIO, Ceph,
//! R2, s3s-fs, ...), through `object_store`'s S3 client.
//!
//! Configuration is the standard AWS environment, read by
//! [`AmazonS3Builder::from_env`](object_store::aws::AmazonS3Builder::from_env):
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`
//! (default `us-east-1`), `AWS_ENDPOINT_URL` / `AWS_ENDPOINT` for a non-AWS server,
//! `AWS_ALLOW_HTTP=true` for a plain-http endpoint, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`,
//! `AWS_SKIP_SIGNATURE` for public buckets; without static keys, web identity (EKS), the ECS
//! container endpoint or the EC2 instance metadata service.
//!
//! TLS is rustls with *ring* as the crypto provider (installed as the process default if none
//! is), so the build needs no aws-lc C library. Retries are bounded (3 tries within 30 s) so a
//! wrong endpoint fails in seconds, not after object_store's default 3 minutes.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::RetryConfig;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;

use super::err;
use crate::StoreError;

/// An opened S3 store, its printable location and what to mention when a request fails.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub location: String,
    pub hint: Option<String>,
}

/// The bucket and key prefix of `s3://bucket/prefix` (the prefix may be empty).
pub fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| err(url, "not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') || bucket.contains(':') {
        // Never echo what may be a secret.
        return Err(err(
            "s3://<redacted>",
            "credentials and ports do not belong in an s3:// URL; set AWS_ACCESS_KEY_ID, \
             AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL instead",
        ));
    }
    if bucket.is_empty() {
        return Err(err(url, "no bucket name; expected s3://bucket/prefix"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// Opens `url` with `builder` (normally `AmazonS3Builder::from_env()`). Makes no request.
pub(crate) fn open(url: &str, builder: AmazonS3Builder) -> Result<Opened, StoreError> {
    let (bucket, prefix) = parse_url(url)?;
    let location = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    // reqwest is built without a default provider (see the module docs). An Err means a
    // provider is already installed, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let hint = describe(&builder);
    let store = builder
        .with_bucket_name(&bucket)
        .with_retry(RetryConfig {
            backoff: Default::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        })
        .build()
        .map_err(|e| err(&location, format!("{e} ({hint})")))?;
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(store)
    } else {
        let key = Key::parse(&prefix)
            .map_err(|e| err(&location, format!("invalid key prefix {prefix:?}: {e}")))?;
        Arc::new(PrefixStore::new(store, key))
    };
    Ok(Opened {
        store,
        location,
        hint: Some(hint),
    })
}

/// Where requests go and where credentials come from, without any secret.
fn describe(builder: &AmazonS3Builder) -> String {
    let get = |k: AmazonS3ConfigKey| builder.get_config_value(&k);
    let endpoint = get(AmazonS3ConfigKey::Endpoint).unwrap_or_else(|| "AWS S3".to_string());
    let region = get(AmazonS3ConfigKey::Region)
        .or_else(|| get(AmazonS3ConfigKey::DefaultRegion))
        .unwrap_or_else(|| "us-east-1".to_string());
    let credentials = if get(AmazonS3ConfigKey::SkipSignature).is_some_and(|v| v == "true") {
        "unsigned requests (AWS_SKIP_SIGNATURE)"
    } else if get(AmazonS3ConfigKey::AccessKeyId).is_some() {
        "credentials from AWS_ACCESS_KEY_ID"
    } else if get(AmazonS3ConfigKey::WebIdentityTokenFile).is_some() {
        "credentials from AWS_WEB_IDENTITY_TOKEN_FILE"
    } else if get(AmazonS3ConfigKey::ContainerCredentialsRelativeUri).is_some() {
        "credentials from the ECS container endpoint"
    } else {
        "no AWS_ACCESS_KEY_ID set, so credentials come from the EC2 instance metadata service"
    };
    format!("endpoint {endpoint}, region {region}, {credentials}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_bucket_and_prefix_and_never_echo_secrets() {
        assert_eq!(
            parse_url("s3://b/p/q/").expect("url"),
            ("b".to_string(), "p/q".to_string())
        );
        assert_eq!(
            parse_url("s3://b").expect("url"),
            ("b".to_string(), String::new())
        );
        assert!(
            parse_url("s3:///p")
                .expect_err("no bucket")
                .to_string()
                .contains("no bucket")
        );
        let e = parse_url("s3://AKIA:hunter2@b/p").expect_err("secret");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn the_description_names_endpoint_and_credential_source_but_no_secret() {
        let b = AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:9")
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("hunter2");
        let d = describe(&b);
        assert!(d.contains("http://127.0.0.1:9") && d.contains("AWS_ACCESS_KEY_ID"));
        assert!(!d.contains("hunter2") && !d.contains("AKIDEXAMPLE"), "{d}");
        assert!(describe(&AmazonS3Builder::new()).contains("instance metadata"));
    }
}

#[cfg(test)]
mod unreachable {
    use crate::artifacts::ArtifactStore;
    use object_store::aws::AmazonS3Builder;

    /// Nothing listens on port 1: the error comes quickly and names the store and endpoint.
    #[tokio::test]
    async fn an_unreachable_endpoint_fails_fast_naming_the_url() {
        let b = AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:1")
            .with_allow_http(true)
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("hunter2");
        let store = ArtifactStore::open_s3_with("s3://bkt/models", b).expect("opens");
        assert_eq!(store.location(), "s3://bkt/models");
        let e = store
            .put("m/v1/model.json", b"{}".to_vec())
            .await
            .expect_err("unreachable")
            .to_string();
        assert!(e.contains("s3://bkt/models"), "{e}");
        assert!(e.contains("m/v1/model.json"), "{e}");
        assert!(e.contains("127.0.0.1:1"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
