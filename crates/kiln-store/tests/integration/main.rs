//! Storage backends against their contracts: one conformance suite for every online store, and
//! Parquet scans with pruning on real files.

mod offline;
mod online;
