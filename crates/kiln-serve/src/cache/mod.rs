//! Caching on the serving path: [`prediction`], a model version's answers kept in process.
//! (Not built yet, issue #6: a second level in Redis, the online-feature cache with
//! refresh-ahead, and the negative cache of unknown entities.)

pub mod prediction;
