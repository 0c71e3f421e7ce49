//! Kiln's feature engine.
//!
//! - [`definitions`]: the TOML a user writes (entities, sources, feature views, feature
//!   services), parsed with source locations and validated against the Parquet data, every
//!   error reported at once with file, line and field.
//! - [`plan`]: the difference between the definitions and the registry, as the events that
//!   `kiln apply` appends (new view versions when data-defining fields change).
//! - [`pit`]: point-in-time correct training sets: a partitioned sort-merge join on Arrow
//!   arrays that spills to disk to stay within a memory budget, with a brute-force oracle.
//! - [`window`]: windowed aggregations, batch side: each aggregated feature's exact value as of
//!   each entity row, computed inside the point-in-time join by a sort-merge kernel, with a
//!   brute-force oracle. The streaming side, which keeps them online, is `kiln-stream`.
//! - [`materialize`]: the latest row per entity of a time window, streamed from the source into
//!   the online store.
//! - [`online`]: online retrieval by entity key with TTL enforced on read.

mod arrow_values;
pub mod definitions;
mod error;
pub mod example;
pub mod materialize;
pub mod online;
pub mod pit;
pub mod plan;
mod progress;
mod source;
pub mod window;

pub use arrow_values::value_at;
pub use error::{FeatureError, NotFoundKind};
pub use progress::{NoProgress, Progress};
pub use source::cast_to;
