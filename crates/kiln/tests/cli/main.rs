//! The `kiln` binary end to end, as a user runs it: on temporary projects, with real processes,
//! a real HTTP server, real kill -9s, and PostgreSQL when `KILN_TEST_POSTGRES_URL` is set.

mod common;
mod dataset;
mod definitions;
mod inference;
mod materialize;
mod models;
mod pipeline;
mod serve;
mod serving;
