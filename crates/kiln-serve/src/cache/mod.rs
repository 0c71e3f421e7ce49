//! Caching on the serving path: [`prediction`], a model version's answers kept in process
//! (with a level in Redis shared by the fleet), and [`features`], the online-feature cache in
//! front of the online store.

pub mod features;
pub mod prediction;
