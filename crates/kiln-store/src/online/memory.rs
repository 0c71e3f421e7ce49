//! An in-memory online store: for tests, demos and ephemeral serving. Nothing survives the
//! process.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{BoxFuture, OnlineStore, StoredRow, ViewTable, WriteSummary};
use crate::StoreError;

type Tables = HashMap<String, HashMap<Vec<u8>, StoredRow>>;

/// The in-memory backend. Locks are never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // A poisoned lock means a writer panicked mid-update; the map itself is still a valid
        // map (each insert is a single call), so keep serving it.
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl OnlineStore for MemoryStore {
    fn write_batch<'a>(
        &'a self,
        table: &'a ViewTable,
        rows: Vec<(Vec<u8>, StoredRow)>,
    ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
        Box::pin(async move {
            let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
            let t = tables.entry(table.name.clone()).or_default();
            let mut summary = WriteSummary::default();
            for (key, row) in rows {
                match t.get(&key) {
                    Some(old) if !row.supersedes((old.event_ts, old.created_ts)) => {
                        summary.kept_newer += 1;
                    }
                    _ => {
                        t.insert(key, row);
                        summary.written += 1;
                    }
                }
            }
            Ok(summary)
        })
    }

    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
        Box::pin(async move {
            let tables = self.read();
            let t = tables.get(view);
            Ok(keys
                .iter()
                .map(|k| t.and_then(|t| t.get(k)).cloned())
                .collect())
        })
    }

    fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.tables
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(view);
            Ok(())
        })
    }

    fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.read().get(view).map_or(0, |t| t.len() as u64)) })
    }

    fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .read()
                .get(view)
                .map_or_else(Vec::new, |t| t.keys().cloned().collect()))
        })
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}
