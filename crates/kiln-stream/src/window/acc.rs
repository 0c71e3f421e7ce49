//! The pre-aggregate of some values of one input, from which every function but `last` and
//! the distinct counts is finished.

use kiln_core::Value;
use kiln_core::spec::AggFunction;
use kiln_features::window::swag::{Moments, Monoid, SumF};

/// The pre-aggregate of some values of one input: everything every function needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acc {
    pub(super) n: i64,
    sum_i: i128,
    sum_f: SumF,
    min_i: i64,
    max_i: i64,
    min_f: f64,
    max_f: f64,
    moments: Moments,
}

impl Acc {
    pub(super) const EMPTY: Acc = Acc {
        n: 0,
        sum_i: 0,
        sum_f: SumF::IDENTITY,
        min_i: i64::MAX,
        max_i: i64::MIN,
        min_f: f64::INFINITY,
        max_f: f64::NEG_INFINITY,
        moments: Moments::IDENTITY,
    };

    /// Whether a value counts: NaN and infinities are skipped like nulls, as on the batch
    /// side.
    pub(super) fn counts(v: &Value) -> bool {
        !matches!(v, Value::Null) && !matches!(v, Value::Float64(x) if !x.is_finite())
    }

    /// Adds one value (`moments`: whether a standard deviation will read it): the fold's
    /// inner loop, so it builds no second accumulator to combine. Values that do not count
    /// leave it as it is.
    #[inline]
    pub(super) fn push(&mut self, v: &Value, moments: bool) {
        match *v {
            Value::Null => {}
            Value::Int64(x) => {
                self.n += 1;
                self.sum_i += i128::from(x);
                self.min_i = self.min_i.min(x);
                self.max_i = self.max_i.max(x);
                if moments {
                    self.moments = self.moments.combine(Moments::of(x as f64));
                }
            }
            Value::Float64(x) if !x.is_finite() => {}
            Value::Float64(x) => {
                self.n += 1;
                self.sum_f = self.sum_f.combine(SumF::of(x));
                self.min_f = self.min_f.min(x);
                self.max_f = self.max_f.max(x);
                if moments {
                    self.moments = self.moments.combine(Moments::of(x));
                }
            }
            _ => self.n += 1,
        }
    }

    #[inline]
    pub(super) fn combine(self, b: Acc) -> Acc {
        if b.n == 0 {
            return self;
        }
        Acc {
            n: self.n + b.n,
            sum_i: self.sum_i + b.sum_i,
            sum_f: self.sum_f.combine(b.sum_f),
            min_i: self.min_i.min(b.min_i),
            max_i: self.max_i.max(b.max_i),
            min_f: self.min_f.min(b.min_f),
            max_f: self.max_f.max(b.max_f),
            moments: self.moments.combine(b.moments),
        }
    }

    pub(super) fn finish(&self, f: AggFunction, float: bool) -> Value {
        use AggFunction as F;
        if self.n == 0 {
            return match f {
                F::Count | F::CountDistinct | F::ApproxCountDistinct => Value::Int64(0),
                _ => Value::Null,
            };
        }
        match (f, float) {
            (F::Count, _) => Value::Int64(self.n),
            (F::Sum, false) => {
                Value::Int64(self.sum_i.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
            }
            (F::Sum, true) => Value::Float64(self.sum_f.value()),
            (F::Mean, false) => Value::Float64(self.sum_i as f64 / self.n as f64),
            (F::Mean, true) => Value::Float64(self.sum_f.value() / self.n as f64),
            (F::Min, false) => Value::Int64(self.min_i),
            (F::Max, false) => Value::Int64(self.max_i),
            (F::Min, true) => Value::Float64(self.min_f),
            (F::Max, true) => Value::Float64(self.max_f),
            (F::Stddev, _) => self.moments.stddev().map_or(Value::Null, Value::Float64),
            // Computed from raw events, never from an accumulator.
            (F::Last | F::CountDistinct | F::ApproxCountDistinct, _) => Value::Null,
        }
    }
}
