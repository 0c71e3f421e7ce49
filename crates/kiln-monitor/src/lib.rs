//! Kiln's monitoring, in the serving process: what happened (events), what was predicted and
//! what the truth turned out to be (prediction log, feedback, performance), whether the inputs
//! moved (drift), and who gets told (alerts).
//!
//! Everything here hangs off the [`bus::EventBus`]: the serving path publishes an event and
//! moves on; each consumer (prediction log writer, live drift, alert evaluator) reads from its
//! own bounded queue, so a slow consumer drops and counts its own events and never slows a
//! request.

pub mod alerts;
pub mod bus;
pub mod events;
pub mod feedback;
pub mod performance;
pub mod predlog;
pub mod window;

pub use bus::{EventBus, Subscription};
pub use events::{Event, PredictionEvent};
