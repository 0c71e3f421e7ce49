//! The artifact store: model files and other blobs, addressed by key, through `object_store`
//! so that the backend is configuration.
//!
//! - A directory (the embedded default, `.kiln/artifacts`, or `file:///abs`): writes go to a
//!   temporary file renamed into place, so a crash never leaves a half-written artifact under
//!   its key.
//! - `s3://bucket/prefix` (cargo feature `s3`): AWS S3 or any S3-compatible server, configured
//!   from the standard `AWS_*` environment variables (see [`s3`]). A PUT is atomic per object:
//!   readers see the old object, the new one, or none, never a part.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::StoreError;

#[cfg(feature = "s3")]
pub mod s3;

/// Blobs by key.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    location: String,
    /// Added to errors other than "not found", e.g. where the credentials came from.
    hint: Option<String>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("location", &self.location)
            .finish()
    }
}

pub(crate) fn err(location: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Artifact {
        location: location.to_string(),
        message: message.to_string(),
    }
}

impl ArtifactStore {
    /// Opens the store at `url`: a directory (relative to `base_dir`), `file:///abs`, or
    /// `s3://bucket/prefix` (with the `s3` cargo feature; configured from `AWS_*` variables).
    /// Opening an S3 store makes no request: a wrong bucket, endpoint or credentials show on
    /// the first `put` or `get`, in an error that names the URL.
    pub fn open(url: &str, base_dir: &Path) -> Result<ArtifactStore, StoreError> {
        match url.split_once("://") {
            None => Self::open_dir(&base_dir.join(url)),
            Some(("file", path)) => Self::open_dir(&base_dir.join(path)),
            Some(("s3", _)) => Self::open_s3(url),
            Some((scheme, _)) => Err(err(
                url,
                format!(
                    "unsupported scheme {scheme}://; use a directory, file:///absolute/path or s3://bucket/prefix"
                ),
            )),
        }
    }

    fn open_dir(dir: &Path) -> Result<ArtifactStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| err(&dir.display().to_string(), e))?;
        Ok(ArtifactStore {
            inner: Arc::new(fs),
            location: dir.display().to_string(),
            hint: None,
        })
    }

    #[cfg(feature = "s3")]
    fn open_s3(url: &str) -> Result<ArtifactStore, StoreError> {
        Self::open_s3_with(url, object_store::aws::AmazonS3Builder::from_env())
    }

    /// Opens `s3://bucket/prefix` with an explicit S3 configuration instead of the `AWS_*`
    /// environment (the bucket comes from the URL).
    #[cfg(feature = "s3")]
    pub fn open_s3_with(
        url: &str,
        builder: object_store::aws::AmazonS3Builder,
    ) -> Result<ArtifactStore, StoreError> {
        let opened = s3::open(url, builder)?;
        Ok(ArtifactStore {
            inner: opened.store,
            location: opened.location,
            hint: opened.hint,
        })
    }

    #[cfg(not(feature = "s3"))]
    fn open_s3(url: &str) -> Result<ArtifactStore, StoreError> {
        Err(err(
            url,
            "this kiln was built without S3 support; rebuild with the `s3` cargo feature \
             (cargo build --release -p kiln --features s3) or use a directory",
        ))
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn key(&self, key: &str) -> Result<Key, StoreError> {
        Key::parse(key).map_err(|e| err(&self.location, format!("invalid key {key:?}: {e}")))
    }

    /// An object-store error as a message naming the store, the key and, where it helps, what
    /// to check.
    fn error(&self, key: &str, e: object_store::Error) -> StoreError {
        match (&e, &self.hint) {
            (object_store::Error::NotFound { .. }, _) | (_, None) => {
                err(&self.location, format!("{key}: {e}"))
            }
            (_, Some(hint)) => err(&self.location, format!("{key}: {e} ({hint})")),
        }
    }

    /// Stores `bytes` under `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let k = self.key(key)?;
        self.inner
            .put(&k, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    /// The bytes under `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let k = self.key(key)?;
        let got = self.inner.get(&k).await.map_err(|e| self.error(key, e))?;
        let bytes = got.bytes().await.map_err(|e| self.error(key, e))?;
        Ok(bytes.to_vec())
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_names_the_feature() {
        let e = super::ArtifactStore::open("s3://bucket/x", std::path::Path::new("."))
            .expect_err("no s3");
        let text = e.to_string();
        assert!(
            text.contains("s3://bucket/x") && text.contains("`s3` cargo feature"),
            "{text}"
        );
    }

    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_unknown_schemes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::open("artifacts", dir.path()).expect("opens");
        store
            .put("models/m/v1/model.json", b"{}".to_vec())
            .await
            .expect("put");
        assert_eq!(
            store.get("models/m/v1/model.json").await.expect("get"),
            b"{}"
        );
        assert!(
            dir.path()
                .join("artifacts/models/m/v1/model.json")
                .is_file()
        );
        let missing = store
            .get("models/m/v2/model.json")
            .await
            .expect_err("missing");
        assert!(
            missing.to_string().contains("models/m/v2/model.json"),
            "{missing}"
        );
        assert!(
            ArtifactStore::open("gs://bucket/x", dir.path())
                .expect_err("gs")
                .to_string()
                .contains("gs://")
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
