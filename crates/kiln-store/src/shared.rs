//! A byte cache shared by every server of a fleet: the prediction cache's second level. Each
//! `kiln serve` keeps its own first level in process; on a miss there it asks this one before
//! calling the model, so a prediction one replica computed serves all of them.
//!
//! Implemented by the Redis online store's connection (standalone or Cluster), under its key
//! prefix; entries expire by themselves.

use std::time::Duration;

use crate::StoreError;
use crate::online::BoxFuture;

pub trait SharedCache: Send + Sync {
    /// The value under `key`, if one is there.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Keeps `value` under `key` for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// For messages: which server.
    fn describe(&self) -> String;
}
