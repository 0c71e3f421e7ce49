//! Storage backends against their contracts: one conformance suite for every online store,
//! Parquet scans with pruning on real files, and the S3 artifact store against a real server.

#[cfg(feature = "s3")]
mod artifacts_s3;
mod offline;
mod online;
