//! Kiln's registry: what is defined, as an append-only log of events plus the state derived
//! from them (CQRS).
//!
//! Nothing is ever updated in place. `kiln apply` appends events (an entity applied, a new view
//! version, a view deleted, ...) in one transaction; every reader replays the log into a
//! [`State`] projection. That gives the history (`kiln registry log`), immutable view versions
//! that stay usable for training sets, and lineage for free, and it makes concurrent writers
//! safe: an append names the sequence number it was planned against and fails with
//! [`RegistryError::Conflict`] if anyone appended in between.
//!
//! The log lives in SQLite by default and in PostgreSQL by URL, through the same code (sqlx's
//! `Any` driver with portable SQL).

mod error;
mod event;
mod lineage;
mod log;
mod state;

pub use error::RegistryError;
pub use event::{Event, EventRecord};
pub use lineage::{Lineage, LineageEdge, LineageNode, lineage};
pub use log::Registry;
pub use state::{MaterializationRecord, ModelState, ModelVersionState, State, ViewState};
