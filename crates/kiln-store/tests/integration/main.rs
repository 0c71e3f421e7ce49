//! Storage backends against their contracts: one conformance suite for every online store
//! (memory, redb, Redis and a Redis Cluster), Parquet scans with pruning on real files, and the
//! S3 artifact store against a real server.

#[cfg(feature = "s3")]
mod artifacts_s3;
mod offline;
mod online;
#[cfg(feature = "redis")]
mod online_redis;
#[cfg(feature = "redis")]
mod redis_cluster;
