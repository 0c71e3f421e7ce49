//! Caching on the serving path: [`prediction`], a model version's answers kept in process,
//! and [`features`], the online-feature cache in front of the online store. (Not built yet,
//! issue #6: the prediction cache's second level in Redis.)

pub mod features;
pub mod prediction;
