//! The artifact store: model files and other blobs, addressed by key, through `object_store`
//! so that the backend is configuration. The embedded default is a directory
//! (`.kiln/artifacts`); writes go to a temporary file renamed into place, so a crash never
//! leaves a half-written artifact under its key.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Blobs by key.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    location: String,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("location", &self.location)
            .finish()
    }
}

fn err(location: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Artifact {
        location: location.to_string(),
        message: message.to_string(),
    }
}

impl ArtifactStore {
    /// Opens the store at `url`: a directory (relative to `base_dir`, or `file:///abs`).
    /// Object-store URLs (`s3://...`) are refused for now with a clear message.
    pub fn open(url: &str, base_dir: &Path) -> Result<ArtifactStore, StoreError> {
        if let Some((scheme, _)) = url.split_once("://")
            && scheme != "file"
        {
            return Err(err(
                url,
                format!(
                    "{scheme}:// artifact stores are not available in this build yet; use a directory"
                ),
            ));
        }
        let dir = base_dir.join(url.strip_prefix("file://").unwrap_or(url));
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| err(&dir.display().to_string(), e))?;
        Ok(ArtifactStore {
            inner: Arc::new(fs),
            location: dir.display().to_string(),
        })
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn key(&self, key: &str) -> Result<Key, StoreError> {
        Key::parse(key).map_err(|e| err(&self.location, format!("invalid key {key:?}: {e}")))
    }

    /// Stores `bytes` under `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let k = self.key(key)?;
        self.inner
            .put(&k, PutPayload::from(bytes))
            .await
            .map_err(|e| err(&self.location, format!("{key}: {e}")))?;
        Ok(())
    }

    /// The bytes under `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let k = self.key(key)?;
        let got = self
            .inner
            .get(&k)
            .await
            .map_err(|e| err(&self.location, format!("{key}: {e}")))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| err(&self.location, format!("{key}: {e}")))?;
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
            ArtifactStore::open("s3://bucket/x", dir.path())
                .expect_err("s3")
                .to_string()
                .contains("s3://")
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
