//! Windowed aggregations, batch side: the exact value of each aggregation as of each entity
//! row's timestamp, computed inside the point-in-time join (`kiln dataset build`).
//!
//! Semantics, once for every implementation (the streaming side, `kiln-stream`, agrees):
//! - The value as of `T` for key `k` and window `w` covers the events of `k` with
//!   `T - w < event_ts <= T`: the lower bound is exclusive, the upper inclusive, so an event at
//!   exactly `T` counts and one at exactly `T - w` does not.
//! - Events with a null key or event time are ignored; a null value (or a NaN or infinite
//!   float) is skipped by every function. `count` without a column counts events; with a
//!   column, its non-null values.
//! - No event in the window (or none with a value): `count` and `count_distinct` are 0, every
//!   other function is null. An entity row with a null key or timestamp gets nulls throughout.
//! - `stddev` is the population standard deviation; `last` is the value of the latest event by
//!   (event time, created time, position in the source); `count_distinct` is exact and
//!   `approx_count_distinct` a HyperLogLog estimate ([`hll`]).
//! - Integer sums are exact (128-bit) and saturate at the int64 bounds; float aggregates agree
//!   with a straightforward recomputation up to rounding (compensated sums, pairwise moments).
//!
//! [`kernel`] computes a partition in one sort-merge pass; [`oracle`] is the brute-force
//! definition it is tested against.

pub mod hll;
mod kernel;
pub mod oracle;
pub mod swag;

use arrow_array::ArrayRef;
use kiln_core::spec::{AggregationSpec, Field, ViewVersion, WindowKind};

use crate::FeatureError;
use crate::pit::kernel::EntityRows;
use crate::source::SourceColumns;
pub(crate) use kernel::Events;
use kernel::{Agg, Sorted};

/// The aggregations behind `features` of an aggregated view, in that order.
pub(crate) fn requested(
    view: &ViewVersion,
    features: &[String],
) -> Result<Vec<AggregationSpec>, FeatureError> {
    features
        .iter()
        .map(|f| {
            view.aggregation(f).cloned().ok_or_else(|| {
                FeatureError::BadRequest(format!(
                    "feature view {}@v{} has no aggregated feature {f:?}",
                    view.name, view.version
                ))
            })
        })
        .collect()
}

/// What to read from the source for these aggregations: keys, event and created times, and
/// each input column once.
pub(crate) fn source_columns(view: &ViewVersion, aggs: &[AggregationSpec]) -> SourceColumns {
    let mut features: Vec<Field> = Vec::new();
    for c in aggs.iter().filter_map(|a| a.column.as_ref()) {
        if !features.iter().any(|f| f.name == c.name) {
            features.push(c.clone());
        }
    }
    SourceColumns {
        keys: view.join_keys.clone(),
        timestamp: view.source.timestamp_field.clone(),
        created: view.source.created_timestamp_column.clone(),
        features,
    }
}

/// How far before the earliest entity row events can matter; 0 (no limit) with a session
/// window, whose session may have begun any time before.
pub(crate) fn reach_micros(aggs: &[AggregationSpec]) -> i64 {
    if aggs.iter().any(|a| a.kind == WindowKind::Session) {
        return 0;
    }
    aggs.iter()
        .map(AggregationSpec::window_micros)
        .max()
        .unwrap_or(0)
}

/// Every aggregation for the entity rows of one partition, in `aggs` order, and how many rows
/// had at least one event in the widest window. `inputs` are the normalised columns of
/// `cols.features`, row-aligned with `events`.
pub(crate) fn compute(
    rows: &EntityRows<'_>,
    events: &Events<'_>,
    aggs: &[AggregationSpec],
    cols: &SourceColumns,
    inputs: &[ArrayRef],
) -> Result<(Vec<ArrayRef>, u64), FeatureError> {
    let sorted = Sorted::new(rows, events);
    let out = aggs
        .iter()
        .map(|a| {
            let input = match &a.column {
                None => None,
                Some(c) => {
                    let i = cols
                        .features
                        .iter()
                        .position(|f| f.name == c.name)
                        .ok_or_else(|| {
                            FeatureError::internal("aggregating", format!("no column {}", c.name))
                        })?;
                    Some(&inputs[i])
                }
            };
            sorted.compute(&Agg {
                function: a.function,
                window: a.window(),
                input,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reach = match reach_micros(aggs) {
        0 => i64::MAX,
        r => r,
    };
    Ok((out, sorted.matched(reach)))
}
