//! The feature engine end to end on real files: definitions and plans, the point-in-time join
//! against its brute-force oracle, materialization into real stores, online retrieval.

mod aggregation_defs;
mod common;
mod online;
mod pit;
mod window;
