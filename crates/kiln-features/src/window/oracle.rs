//! Windowed aggregations written as their definition: for each entity row, scan every event,
//! keep those of the same key in the window as of `T` (`(T - w, T]` for a sliding one), and
//! compute the function over them directly
//! (two-pass variance, plain sums). Quadratic and obviously right; the kernel is tested
//! against it.

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_select::concat::concat_batches;
use kiln_core::Value;
use kiln_core::spec::{AggFunction, ViewVersion};
use kiln_store::offline::timestamps_micros;

use super::{requested, source_columns};
use crate::source::cast_to;
use crate::{FeatureError, value_at};

/// For each entity row, the requested aggregated features of `view` in order. `entities` must
/// hold the join-key columns and `ts_col`; `events` at least one (possibly empty) batch.
pub fn oracle_aggregate(
    entities: &RecordBatch,
    ts_col: &str,
    view: &ViewVersion,
    features: &[String],
    events: &[RecordBatch],
) -> Result<Vec<Vec<Value>>, FeatureError> {
    let bad = |what: &str| FeatureError::BadRequest(format!("oracle: {what}"));
    let aggs = requested(view, features)?;
    let cols = source_columns(view, &aggs);
    let schema = events
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| bad("no event batches"))?;
    let all = concat_batches(&schema, events).map_err(|e| bad(&e.to_string()))?;
    let norm = cols.normalize(&all, std::path::Path::new("oracle"))?;
    let ts = entities
        .column_by_name(ts_col)
        .and_then(|c| timestamps_micros(c).ok())
        .ok_or_else(|| bad("no entity timestamps"))?;
    let ekeys: Vec<ArrayRef> = view
        .join_keys
        .iter()
        .map(|k| {
            let col = entities
                .column_by_name(&k.name)
                .ok_or_else(|| bad("missing key column"))?;
            cast_to(col, &k.dtype.arrow_type()).map_err(|e| bad(&e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(entities.num_rows());
    for row in 0..entities.num_rows() {
        let key: Vec<Value> = ekeys.iter().map(|k| value_at(k, row)).collect();
        let t = (!ts.is_null(row)).then(|| ts.value(row));
        let Some(t) = t.filter(|_| key.iter().all(|v| !v.is_null())) else {
            out.push(vec![Value::Null; aggs.len()]);
            continue;
        };
        let mut values = Vec::new();
        for a in &aggs {
            // The key's events in the window, in (event, created, source) order.
            let mut evs: Vec<(i64, i64, usize)> = (0..norm.len())
                .filter(|&f| {
                    !norm.event_ts.is_null(f)
                        && norm.keys.iter().map(|k| value_at(k, f)).collect::<Vec<_>>() == key
                })
                .map(|f| {
                    let cr = norm
                        .created_ts
                        .as_ref()
                        .and_then(|c| (!c.is_null(f)).then(|| c.value(f)))
                        .unwrap_or(i64::MIN);
                    (norm.event_ts.value(f), cr, f)
                })
                .filter(|&(ev, _, _)| ev <= t)
                .collect();
            evs.sort_unstable();
            let lo = a
                .window()
                .horizon(t)
                .unwrap_or_else(|| a.window().session_horizon(t, evs.len(), |i| evs[i].0));
            evs.retain(|&(ev, _, _)| ev > lo);
            let input = a.column.as_ref().map(|c| {
                let i = cols
                    .features
                    .iter()
                    .position(|f| f.name == c.name)
                    .expect("source_columns lists every input column");
                &norm.features[i]
            });
            let Some(input) = input else {
                values.push(Value::Int64(evs.len() as i64));
                continue;
            };
            let vals: Vec<Value> = evs
                .iter()
                .map(|&(_, _, f)| value_at(input, f))
                .filter(|v| match v {
                    Value::Null => false,
                    Value::Float64(x) => x.is_finite(),
                    _ => true,
                })
                .collect();
            values.push(apply(a.function, &vals));
        }
        out.push(values);
    }
    Ok(out)
}

fn apply(function: AggFunction, vals: &[Value]) -> Value {
    use AggFunction as F;
    let n = vals.len();
    match function {
        F::Count => return Value::Int64(n as i64),
        F::CountDistinct => {
            let mut seen: Vec<&Value> = Vec::new();
            for v in vals {
                if !seen.contains(&v) {
                    seen.push(v);
                }
            }
            return Value::Int64(seen.len() as i64);
        }
        F::ApproxCountDistinct => {
            let mut sketch = super::hll::Sketch::default();
            vals.iter().for_each(|v| sketch.add(v));
            return Value::Int64(sketch.estimate());
        }
        _ if n == 0 => return Value::Null,
        F::Last => return vals[n - 1].clone(),
        _ => {}
    }
    let ints: Option<Vec<i64>> = vals
        .iter()
        .map(|v| match v {
            Value::Int64(x) => Some(*x),
            _ => None,
        })
        .collect();
    let floats: Vec<f64> = vals
        .iter()
        .map(|v| match v {
            Value::Int64(x) => *x as f64,
            Value::Float64(x) => *x,
            _ => f64::NAN,
        })
        .collect();
    let mean = floats.iter().sum::<f64>() / n as f64;
    match (function, ints) {
        (F::Sum, Some(xs)) => {
            let s: i128 = xs.iter().map(|&x| i128::from(x)).sum();
            Value::Int64(s.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
        }
        (F::Mean, Some(xs)) => {
            Value::Float64(xs.iter().map(|&x| i128::from(x)).sum::<i128>() as f64 / n as f64)
        }
        (F::Min, Some(xs)) => Value::Int64(xs.into_iter().min().unwrap_or_default()),
        (F::Max, Some(xs)) => Value::Int64(xs.into_iter().max().unwrap_or_default()),
        (F::Sum, None) => Value::Float64(floats.iter().sum()),
        (F::Mean, None) => Value::Float64(mean),
        (F::Min, None) => Value::Float64(floats.iter().copied().fold(f64::INFINITY, f64::min)),
        (F::Max, None) => Value::Float64(floats.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        (F::Stddev, _) => {
            let m2: f64 = floats.iter().map(|x| (x - mean) * (x - mean)).sum();
            Value::Float64((m2 / n as f64).sqrt())
        }
        (F::Count | F::CountDistinct | F::ApproxCountDistinct | F::Last, _) => {
            unreachable!("answered above")
        }
    }
}
