//! Kiln's storage: the ports the feature engine writes to and reads from, and their backends.
//!
//! - [`online`]: the online store, one latest row per (view, entity), read at serving time.
//!   The [`online::OnlineStore`] trait is shaped for networked backends (batched multi-get and
//!   batched writes, a per-view ttl handed to the backend), with an embedded ACID backend on
//!   redb (the default) and an in-memory one.
//! - [`offline`]: Parquet files on disk, read with projection and row-group pruning on the
//!   event-timestamp statistics, timestamps normalised to UTC microseconds.
//! - [`artifacts`]: model files and other blobs by key, through `object_store` (a directory
//!   by default).

pub mod artifacts;
mod error;
pub mod offline;
pub mod online;
pub mod shared;

pub use error::StoreError;
