//! kiln-stream's integration tests: one binary (see STYLE.md).

mod common;
mod connectors;
mod operator;
mod pipeline;
