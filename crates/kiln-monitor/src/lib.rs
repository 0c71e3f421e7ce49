//! Kiln's monitoring, in the serving process: what happened (events), what was predicted and
//! what the truth turned out to be (prediction log, feedback, performance), whether the inputs
//! moved (drift), and who gets told (alerts).
//!
//! Everything here hangs off the [`bus::EventBus`]: the serving path publishes an event and
//! moves on; each consumer (prediction log writer, live drift, alert evaluator) reads from its
//! own bounded queue, so a slow consumer drops and counts its own events and never slows a
//! request.
//!
//! [`drift`] compares a current sample of features with a reference (the training set) column
//! by column, with Evidently's default rules; the CLI's `kiln drift` and live drift share it.

pub mod alerts;
pub mod bus;
pub mod drift;
pub mod error;
pub mod events;
pub mod feedback;
pub mod live;
pub mod performance;
pub mod predlog;
pub mod window;

pub use bus::{EventBus, Subscription};
pub use error::{MonitorError, Side};
pub use events::{Event, PredictionEvent};

/// An HTTP client (alert webhooks, remote models): reqwest over rustls with *ring* (as
/// kiln-store's S3 client), certificates checked against the platform's roots.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a default crypto provider; install ring's for the process. An
    // Err means one is installed already (kiln-store's S3 client installs the same), which
    // serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
}
