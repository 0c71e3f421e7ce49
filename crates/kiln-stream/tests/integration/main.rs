//! kiln-stream's integration tests: one binary (see STYLE.md).

mod common;
mod operator;
mod pipeline;
