//! The `kiln` binary end to end, as a user runs it: on temporary projects, with real processes,
//! a real HTTP server, a real OTLP collector, real kill -9s, PostgreSQL when
//! `KILN_TEST_POSTGRES_URL` is set, Redis (and a Redis Cluster) when `KILN_TEST_REDIS_URL` is
//! set, and an S3-compatible server when `KILN_TEST_S3_ENDPOINT` is set.

mod aggregations;
mod alerts;
mod brokers;
mod common;
mod dataset;
mod definitions;
mod deploy;
mod drift;
mod feature_cache;
mod inference;
mod live_drift;
mod materialize;
mod metrics;
mod models;
mod monitoring;
mod pipeline;
#[cfg(feature = "redis")]
mod redis;
mod resilience;
#[cfg(feature = "s3")]
mod s3;
mod serve;
mod serving;
mod streaming;
mod tracing;
