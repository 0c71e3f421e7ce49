//! The embedded online store on redb: one file, ACID transactions, one table per feature view.
//!
//! The database is opened in redb's multi-writer mode so that `kiln serve` can keep reading
//! while `kiln materialize` writes from another process; each batch is one write transaction,
//! so a kill -9 leaves every batch either fully applied or not at all.
//!
//! In that mode every new read transaction locks and re-reads the file header (a mutex and a
//! few system calls), which would dominate a one-key read. Reads therefore share a *snapshot*:
//! one read transaction and its opened tables, reused for at most [`SNAPSHOT_MAX_AGE`] and
//! replaced at once after this process writes. Another process's writes become visible within
//! that age.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
};

use super::{BoxFuture, OnlineStore, StoredRow, ViewTable, WriteSummary, header};
use crate::StoreError;

/// Reads of at most this many keys run inline on the calling task: they are a few microseconds
/// of work on pages that are almost always cached. Larger batches go to the blocking pool so a
/// big request never stalls an async worker.
const INLINE_READ_KEYS: usize = 32;

/// How long reads may share one read transaction.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(5);

type Table = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// One read transaction and the tables opened in it (`None`: the table does not exist).
struct Snapshot {
    at: Instant,
    txn: ReadTransaction,
    tables: Mutex<HashMap<String, Option<Arc<Table>>>>,
}

/// The redb backend.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    snapshot: Arc<RwLock<Option<Arc<Snapshot>>>>,
    /// Bumped by every write of this process; a snapshot begun before a bump is not kept.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn table_def(view: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(view)
}

impl RedbStore {
    /// Opens the store at `path`, creating the file (and its directory) if needed.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        if !path.exists() {
            create_atomically(path)?;
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.to_path_buf(),
                },
                other => StoreError::Online {
                    path: path.to_path_buf(),
                    message: other.to_string(),
                },
            })?;
        let store = RedbStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
            snapshot: Arc::new(RwLock::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
        };
        release_idle_snapshots(Arc::downgrade(&store.snapshot));
        Ok(store)
    }

    /// The current read snapshot, renewed when older than [`SNAPSHOT_MAX_AGE`].
    fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let current = self
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(s) = current.filter(|s| s.at.elapsed() < SNAPSHOT_MAX_AGE) {
            return Ok(s);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = Arc::new(Snapshot {
            at: Instant::now(),
            txn: self.db.begin_read().map_err(|e| self.err(e))?,
            tables: Mutex::new(HashMap::new()),
        });
        let mut slot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        // A write committed while this snapshot was being taken may not be in it: use it for
        // this read (which overlapped the write), but do not keep it for later ones.
        if self.generation.load(Ordering::Acquire) == generation {
            *slot = Some(fresh.clone());
        }
        Ok(fresh)
    }

    /// Forgets the snapshot so the next read sees this process's latest commit.
    fn invalidate(&self) {
        let mut slot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        *slot = None;
    }

    fn table(&self, snap: &Snapshot, view: &str) -> Result<Option<Arc<Table>>, StoreError> {
        let mut tables = snap.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables.get(view) {
            return Ok(t.clone());
        }
        let t = match snap.txn.open_table(table_def(view)) {
            Ok(t) => Some(Arc::new(t)),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        tables.insert(view.to_string(), t.clone());
        Ok(t)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Online {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write_sync(
        &self,
        table: &ViewTable,
        rows: &[(Vec<u8>, StoredRow)],
    ) -> Result<WriteSummary, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut summary = WriteSummary::default();
        {
            let mut t = txn
                .open_table(table_def(&table.name))
                .map_err(|e| self.err(e))?;
            let mut buf = Vec::new();
            for (key, row) in rows {
                let keep_old = match t.get(key.as_slice()).map_err(|e| self.err(e))? {
                    Some(old) => {
                        let stored = header(old.value())
                            .map_err(|reason| self.corrupt(&table.name, key, reason))?;
                        !row.supersedes(stored)
                    }
                    None => false,
                };
                if keep_old {
                    summary.kept_newer += 1;
                    continue;
                }
                buf.clear();
                row.write_to(&mut buf);
                t.insert(key.as_slice(), buf.as_slice())
                    .map_err(|e| self.err(e))?;
                summary.written += 1;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.invalidate();
        Ok(summary)
    }

    fn get_sync(&self, view: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<StoredRow>>, StoreError> {
        let snap = self.snapshot()?;
        let Some(t) = self.table(&snap, view)? else {
            return Ok(vec![None; keys.len()]);
        };
        keys.iter()
            .map(|k| match t.get(k.as_slice()).map_err(|e| self.err(e))? {
                Some(v) => StoredRow::from_bytes(v.value())
                    .map(Some)
                    .map_err(|reason| self.corrupt(view, k, reason)),
                None => Ok(None),
            })
            .collect()
    }

    fn corrupt(&self, view: &str, key: &[u8], reason: String) -> StoreError {
        let key = kiln_core::value::decode_values(key)
            .map(|vs| {
                vs.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|_| format!("{key:?}"));
        StoreError::CorruptRow {
            view: view.to_string(),
            key,
            reason,
        }
    }
}

/// Drops a snapshot nobody has renewed for a while, so an idle server does not pin old pages
/// that writers in other processes could otherwise reuse. Ends when the store is dropped.
fn release_idle_snapshots(slot: Weak<RwLock<Option<Arc<Snapshot>>>>) {
    let spawned = std::thread::Builder::new()
        .name("kiln-redb-snapshots".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(slot) = slot.upgrade() else { return };
                let mut s = slot.write().unwrap_or_else(|p| p.into_inner());
                if s.as_ref()
                    .is_some_and(|s| s.at.elapsed() >= SNAPSHOT_MAX_AGE)
                {
                    *s = None;
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread, snapshots are still renewed on every read after SNAPSHOT_MAX_AGE;
        // only an idle process keeps its last one.
        tracing::warn!(error = %e, "cannot start the thread that releases idle redb snapshots");
    }
}

async fn blocking<T: Send + 'static>(
    store: &RedbStore,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| store.err(format!("storage task failed: {e}")))?
}

impl OnlineStore for RedbStore {
    fn write_batch<'a>(
        &'a self,
        table: &'a ViewTable,
        rows: Vec<(Vec<u8>, StoredRow)>,
    ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
        let me = self.clone();
        let table = table.clone();
        Box::pin(async move { blocking(self, move || me.write_sync(&table, &rows)).await })
    }

    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
        Box::pin(async move {
            if keys.len() <= INLINE_READ_KEYS {
                return self.get_sync(view, keys);
            }
            let me = self.clone();
            let (view, keys) = (view.to_string(), keys.to_vec());
            blocking(self, move || me.get_sync(&view, &keys)).await
        })
    }

    fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let me = self.clone();
        let view = view.to_string();
        Box::pin(async move {
            blocking(self, move || {
                let txn = me.db.begin_write().map_err(|e| me.err(e))?;
                txn.delete_table(table_def(&view)).map_err(|e| me.err(e))?;
                txn.commit().map_err(|e| me.err(e))?;
                me.invalidate();
                Ok(())
            })
            .await
        })
    }

    fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            match txn.open_table(table_def(view)) {
                Ok(t) => t.len().map_err(|e| self.err(e)),
                Err(TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(self.err(e)),
            }
        })
    }

    fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
        let me = self.clone();
        let view = view.to_string();
        Box::pin(async move {
            blocking(self, move || {
                let txn = me.db.begin_read().map_err(|e| me.err(e))?;
                let table = match txn.open_table(table_def(&view)) {
                    Ok(t) => t,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(me.err(e)),
                };
                let mut out = Vec::with_capacity(table.len().map_err(|e| me.err(e))? as usize);
                for entry in table.iter().map_err(|e| me.err(e))? {
                    let (key, _) = entry.map_err(|e| me.err(e))?;
                    out.push(key.value().to_vec());
                }
                Ok(out)
            })
            .await
        })
    }

    fn describe(&self) -> String {
        format!("redb at {}", self.path.display())
    }
}
/// Creates a new, empty database at `path` so that a crash at any moment leaves either no file
/// or a complete one: redb initialises the file in place, and a process killed halfway (a
/// `kill -9` of `kiln stream run` right after start, say) left a file no later open accepted.
/// The database is made under a temporary name and hard-linked into place, which fails if
/// another process got there first; then its database is the one used.
fn create_atomically(path: &Path) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.new-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    let _ = std::fs::remove_file(&tmp);
    drop(
        Builder::new()
            .create(&tmp)
            .map_err(|e| StoreError::Online {
                path: tmp.clone(),
                message: e.to_string(),
            })?,
    );
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp).map_err(io(&tmp))?;
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(path)(e)),
        _ => Ok(()),
    }
}
