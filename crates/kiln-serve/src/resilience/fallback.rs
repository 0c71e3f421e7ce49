//! A model's fallback chain: what answers when the model cannot (its breaker is open, it timed
//! out, it is unavailable, or its bulkhead shed the call), tried in the configured order:
//!
//! - `cache`: the last good prediction for the very same rows (per row, by a hash of its
//!   inputs), when every row of the request has one: stale but real;
//! - `model:NAME`: another registered model (rules, a simpler or older one) taking the same
//!   inputs, called through its own stack;
//! - `value:V` (or `value:V1,V2` for several outputs): a fixed answer for every row;
//!
//! and, when none of them answers, the model's own error with what each fallback said. A bad
//! request never falls back: another model would refuse it too.

use std::str::FromStr;
use std::sync::Arc;

use crate::inference::InferError;

/// One step of a fallback chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    Cache,
    Model(String),
    Value(Vec<f64>),
}

impl FromStr for Fallback {
    type Err = String;

    fn from_str(s: &str) -> Result<Fallback, String> {
        let s = s.trim();
        if s == "cache" {
            return Ok(Fallback::Cache);
        }
        if let Some(name) = s.strip_prefix("model:") {
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{s:?}: name the model after model:"));
            }
            return Ok(Fallback::Model(name.to_string()));
        }
        if let Some(values) = s.strip_prefix("value:") {
            let values = values
                .split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| format!("{s:?}: {:?} is not a finite number", v.trim()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Fallback::Value(values));
        }
        Err(format!(
            "{s:?}: expected \"cache\", \"model:NAME\" or \"value:NUMBER[,NUMBER...]\""
        ))
    }
}

/// Whether an error is one the fallback chain answers.
pub(crate) fn falls_back(e: &InferError) -> bool {
    matches!(
        e,
        InferError::Unavailable(_)
            | InferError::Timeout(_)
            | InferError::CircuitOpen(_)
            | InferError::Overloaded { .. }
    )
}

/// What answered instead of the model, and why; responses and `/metrics` say so.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FallbackUsed {
    /// `cache`, `model:NAME@vN` or `value`.
    pub source: String,
    /// The model's error.
    pub reason: String,
}

impl FallbackUsed {
    /// The metric label: `cache`, `model` or `value`.
    pub fn kind(&self) -> &'static str {
        match self.source.as_str() {
            "cache" => "cache",
            "value" => "value",
            _ => "model",
        }
    }
}

/// The last good prediction of each recently scored row, for the `cache` fallback. Keyed by
/// a 64-bit hash of the row's input bits (xxh3 with a fixed seed); bounded by rows, least
/// recently used first out.
pub struct LastGood {
    rows: moka::sync::Cache<u64, Arc<[f64]>>,
    n_inputs: usize,
    n_outputs: usize,
}

impl LastGood {
    pub fn new(capacity: u64, n_inputs: usize, n_outputs: usize) -> LastGood {
        LastGood {
            rows: moka::sync::Cache::new(capacity),
            n_inputs: n_inputs.max(1),
            n_outputs: n_outputs.max(1),
        }
    }

    fn key(row: &[f64]) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(0x6b69_6c6e);
        for v in row {
            // Every NaN is the same missing value.
            let bits = if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            };
            h.update(&bits.to_le_bytes());
        }
        h.digest()
    }

    /// Keeps the outputs of scored rows.
    pub fn remember(&self, rows: &[f64], outputs: &[f64]) {
        for (row, out) in rows
            .chunks(self.n_inputs)
            .zip(outputs.chunks(self.n_outputs))
        {
            self.rows.insert(Self::key(row), Arc::from(out));
        }
    }

    /// The outputs of every row, if each was scored before.
    pub fn recall(&self, rows: &[f64]) -> Option<Vec<f64>> {
        let mut out = Vec::with_capacity(rows.len() / self.n_inputs * self.n_outputs);
        for row in rows.chunks(self.n_inputs) {
            out.extend_from_slice(&self.rows.get(&Self::key(row))?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_steps_parse_and_bad_ones_are_named() {
        assert_eq!("cache".parse(), Ok(Fallback::Cache));
        assert_eq!(
            "model: fraud-rules".parse(),
            Ok(Fallback::Model("fraud-rules".into()))
        );
        assert_eq!("value:0.5".parse(), Ok(Fallback::Value(vec![0.5])));
        assert_eq!(
            "value:0.2, 0.8".parse(),
            Ok(Fallback::Value(vec![0.2, 0.8]))
        );
        for (bad, needle) in [
            ("model:", "name the model"),
            ("value:x", "\"x\" is not a finite number"),
            ("value:NaN", "not a finite number"),
            ("stale", "expected \"cache\""),
        ] {
            let e = bad.parse::<Fallback>().expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cache_answers_only_when_every_row_was_scored() {
        let c = LastGood::new(100, 2, 1);
        c.remember(&[1.0, 2.0, 3.0, f64::NAN], &[0.1, 0.2]);
        assert_eq!(c.recall(&[3.0, f64::NAN, 1.0, 2.0]), Some(vec![0.2, 0.1]));
        assert_eq!(c.recall(&[1.0, 2.0, 9.0, 9.0]), None);
        // A newer answer replaces the old one.
        c.remember(&[1.0, 2.0], &[0.7]);
        assert_eq!(c.recall(&[1.0, 2.0]), Some(vec![0.7]));
    }
}
