//! Kiln's streaming side: windowed aggregations kept current in the online store as events
//! arrive, computed with the same semantics as the batch backfill (`kiln dataset build`).
//!
//! Data flow, from event to online store:
//! - [`event`]: an event is one row of its source's columns, checked on arrival (the push API
//!   names the event and field that is wrong) and stored in the value codec.
//! - [`log`]: the embedded event log, one append-only, checksummed file per source; appends
//!   are durable before they are acknowledged, offsets are byte positions.
//! - [`push`]: the push API's core (`POST /v1/push/{source}` in `kiln serve`);
//!   [`connector`]: Kafka and NATS JetStream sources, read into the same log;
//!   [`appender`]: the log shared by both in one process, with group commit.
//! - [`pipeline`]: reads a source's log from its checkpoint, routes events later than the
//!   allowed lateness to the dead-letter file, applies the rest to each view's operator,
//!   writes changed rows to the online store after every batch, and at checkpoints writes the
//!   events to the offline store and saves the state ([`checkpoint`], [`sink`]).
//! - [`operator`]: one view's keyed state, event-time timers for events leaving windows, and
//!   the changed rows of each batch ([`timers`]: the timers by second); [`window`]: one key's
//!   events and tiles, and the exact window values as of a time.

pub mod appender;
mod checkpoint;
pub mod connector;
mod error;
pub mod event;
pub mod log;
pub mod operator;
pub mod pipeline;
pub mod push;
pub mod sink;
mod timers;
pub mod window;

pub use checkpoint::Checkpoint;
pub use error::StreamError;
