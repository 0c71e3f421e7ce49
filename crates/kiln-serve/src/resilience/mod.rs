//! Resilience for what `kiln serve` depends on, each concern in its own module: a circuit
//! breaker ([`breaker`]) and the online store guarded by one ([`GuardedStore`]).

pub mod breaker;
mod store;

pub use breaker::{Breaker, BreakerSettings, BreakerState, Refused};
pub use store::GuardedStore;
