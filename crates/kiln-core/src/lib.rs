//! Kiln's shared vocabulary.
//!
//! Every other crate speaks in these terms: the [`ValueType`]s a feature can have and their
//! Arrow equivalents, the [`Value`]s that travel through the online path and their compact
//! binary codec, entity keys, `view:feature` references, the definition specs that the
//! registry versions, and the one representation of time (microseconds since the Unix epoch,
//! UTC) used by the point-in-time join, materialization and TTL checks alike.
//!
//! Keeping these in one small crate with no I/O means the registry, the stores and the
//! feature engine cannot disagree about what a feature value or a timestamp is.

pub mod deploy;
pub mod error;
pub mod key;
pub mod refs;
pub mod spec;
pub mod time;
pub mod types;
pub mod value;

pub use error::CoreError;
pub use refs::FeatureRef;
pub use types::ValueType;
pub use value::Value;
