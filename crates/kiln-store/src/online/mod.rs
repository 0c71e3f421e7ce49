//! The online store port: the latest row per (feature view, entity key), read in batches at
//! serving time and written in batches by materialization.
//!
//! The trait is asynchronous and batched because its production backends are networked (Redis,
//! standalone or Cluster): one round trip per batch, not per key. The embedded backends implement the same
//! contract, and one conformance suite (`tests/integration`) runs against every backend.
//!
//! Writes are *newer-wins*: a row replaces the stored one only if its (event timestamp,
//! created timestamp) is not older. That makes materialization idempotent and order-free: a
//! re-run, an overlapping window or a crash followed by a retry all converge on the same state.

mod cached;
mod memory;
mod redb_store;
#[cfg(feature = "redis")]
mod redis_store;

use std::future::Future;
use std::pin::Pin;

use kiln_core::Value;
use kiln_core::time::Micros;
use kiln_core::value::{ValueReader, ValueWriter};

pub use cached::{CacheCounts, CacheSettings, CachedStore, ViewPolicy};
pub use memory::MemoryStore;
pub use redb_store::RedbStore;
#[cfg(feature = "redis")]
pub use redis_store::{RedisOptions, RedisStore};

use crate::StoreError;

/// A boxed, sendable future, so the trait can be used as `dyn OnlineStore`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One stored row: when its values were observed and written, and the encoded values
/// (`kiln_core::value` codec, with the view version in front, see [`StoredRow::payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub event_ts: Micros,
    pub created_ts: Micros,
    /// The view version that wrote the row (u32 little-endian) followed by the encoded values.
    pub payload: Vec<u8>,
}

const HEADER: usize = 16;

impl StoredRow {
    /// The stored byte form: event timestamp, created timestamp, payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        self.write_to(&mut out);
        out
    }

    /// Appends the stored byte form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.event_ts.to_le_bytes());
        out.extend_from_slice(&self.created_ts.to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<StoredRow, String> {
        let (event_ts, created_ts) = header(bytes)?;
        Ok(StoredRow {
            event_ts,
            created_ts,
            payload: bytes[HEADER..].to_vec(),
        })
    }

    /// A payload: `version` (u32 little-endian), then `values` in the value codec.
    pub fn encode_payload(version: u32, values: &[Value]) -> Vec<u8> {
        let mut payload = Vec::with_capacity(4 + 9 * values.len());
        payload.extend_from_slice(&version.to_le_bytes());
        let mut w = ValueWriter::new(&mut payload);
        for v in values {
            w.put(v);
        }
        payload
    }

    /// The view version and the values of this row's payload.
    pub fn decode_payload(&self) -> Result<(u32, Vec<Value>), String> {
        let Some((version, rest)) = self.payload.split_first_chunk::<4>() else {
            return Err("payload shorter than its version header".into());
        };
        let mut reader = ValueReader::new(rest);
        let mut values = Vec::new();
        while !reader.is_empty() {
            values.push(reader.next_value().map_err(|e| e.to_string())?);
        }
        Ok((u32::from_le_bytes(*version), values))
    }

    /// Whether this row may replace one stored with the given timestamps (newer-wins; an
    /// identical timestamp pair replaces, so re-running a materialization is a no-op).
    pub fn supersedes(&self, stored: (Micros, Micros)) -> bool {
        (self.event_ts, self.created_ts) >= stored
    }
}

fn header(bytes: &[u8]) -> Result<(Micros, Micros), String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "{} bytes is shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    let event = i64::from_le_bytes(a);
    a.copy_from_slice(&bytes[8..16]);
    Ok((event, i64::from_le_bytes(a)))
}

/// Where a batch of rows goes: the view's table and its ttl (networked backends may expire keys
/// physically after it; every backend's reads are TTL-checked by the caller either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewTable {
    pub name: String,
    pub ttl_seconds: u64,
}

/// What a batched write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows stored (new keys or newer values).
    pub written: u64,
    /// Rows not stored because the store already held a newer value for the key.
    pub kept_newer: u64,
}

impl std::ops::AddAssign for WriteSummary {
    fn add_assign(&mut self, rhs: Self) {
        self.written += rhs.written;
        self.kept_newer += rhs.kept_newer;
    }
}

/// The online store port.
pub trait OnlineStore: Send + Sync {
    /// Writes rows newer-wins, atomically per batch: after a crash either all of the batch is
    /// visible or none of it.
    fn write_batch<'a>(
        &'a self,
        table: &'a ViewTable,
        rows: Vec<(Vec<u8>, StoredRow)>,
    ) -> BoxFuture<'a, Result<WriteSummary, StoreError>>;

    /// Reads the rows for `keys` of `view`, in the order of `keys` (`None` where absent).
    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>>;

    /// Removes everything stored for a view.
    fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Counts the rows stored for a view.
    fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Every entity key stored for a view, in no particular order: a walk of the whole view
    /// (to build the serving cache's filter of known entities), never a per-request call.
    fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>>;

    /// For messages: which backend and where (`redb at .kiln/online.redb`).
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_newer_wins() {
        let r = StoredRow {
            event_ts: 5,
            created_ts: -1,
            payload: vec![1, 2, 3],
        };
        assert_eq!(StoredRow::from_bytes(&r.to_bytes()), Ok(r.clone()));
        assert!(StoredRow::from_bytes(&[0; 15]).is_err());
        assert!(r.supersedes((5, -1)));
        assert!(r.supersedes((4, 100)));
        assert!(!r.supersedes((5, 0)));
        assert!(!r.supersedes((6, -10)));
        let values = [Value::Int64(3), Value::Null, Value::String("x".into())];
        let row = StoredRow {
            payload: StoredRow::encode_payload(7, &values),
            ..r
        };
        assert_eq!(row.decode_payload(), Ok((7, values.to_vec())));
        let short = StoredRow {
            payload: vec![1, 2],
            ..row
        };
        assert!(short.decode_payload().is_err());
    }
}
