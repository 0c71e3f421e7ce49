//! Preprocessing steps and the chain they compile into.
//!
//! Every step works on one named column, so the whole chain compiles to one small program per
//! output column: take input column `source`, apply scalar [`Op`]s in order. A one-hot step
//! turns one column into one indicator column per category (the same program plus an
//! `IsCategory` op). Serving and offline scoring both run [`Chain::apply`]; there is no other
//! implementation of a step.
//!
//! Semantics (written in docs/models.md, checked against sklearn/numpy by the fixtures):
//! * `impute`: NaN becomes `value`; other values pass.
//! * `clip`: `min(max(x, min), max)` (either bound optional); NaN stays NaN (as `np.clip`).
//! * `scale`: `(x - mean) / std`; NaN stays NaN (as `StandardScaler`).
//! * `one_hot`: column `c` is replaced, in place, by `c=v` for each category `v` (1.0 when
//!   `x == v`, else 0.0). NaN and values not listed give all zeros (as
//!   `OneHotEncoder(handle_unknown="ignore")`).
//! * `bucketize`: the number of boundaries `<= x`, so bucket `i` is `[b[i-1], b[i])` and a value
//!   equal to a boundary goes to the bucket above it (as `np.digitize(x, b)`, right=False);
//!   NaN stays NaN, so the model's own missing-value rule applies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One preprocessing step, as written: `{ clip = { column = "x", min = 0 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Impute(Impute),
    Clip(Clip),
    Scale(Scale),
    OneHot(OneHot),
    Bucketize(Bucketize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impute {
    pub column: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clip {
    pub column: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub column: String,
    pub mean: f64,
    pub std: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneHot {
    pub column: String,
    pub categories: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucketize {
    pub column: String,
    pub boundaries: Vec<f64>,
}

/// What a step does to one value.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Impute(f64),
    Clip(f64, f64),
    Scale { mean: f64, std: f64 },
    IsCategory(f64),
    Bucketize(Vec<f64>),
}

impl Op {
    #[inline]
    fn apply(&self, x: f64) -> f64 {
        match self {
            Op::Impute(v) => {
                if x.is_nan() {
                    *v
                } else {
                    x
                }
            }
            // f64::clamp would panic on NaN bounds; bounds are validated finite or infinite.
            Op::Clip(lo, hi) => {
                if x.is_nan() {
                    x
                } else {
                    x.max(*lo).min(*hi)
                }
            }
            Op::Scale { mean, std } => (x - mean) / std,
            Op::IsCategory(c) => {
                if x == *c {
                    1.0
                } else {
                    0.0
                }
            }
            Op::Bucketize(b) => {
                if x.is_nan() {
                    x
                } else {
                    b.partition_point(|b| *b <= x) as f64
                }
            }
        }
    }
}

/// One output column of the chain: where it comes from and what is applied, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub source: usize,
    pub ops: Vec<Op>,
}

/// A compiled chain: the output columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub n_inputs: usize,
    pub columns: Vec<Column>,
}

fn finite(step: &str, field: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{step}: {field} must be a finite number, not {v}"))
    }
}

impl Step {
    /// Parses step `index` of `preprocess`; errors name the index and the step kind.
    pub fn parse(index: usize, v: &Value) -> Result<Step, String> {
        let at = format!("preprocess[{index}]");
        let Some(obj) = v.as_object() else {
            return Err(format!(
                "{at}: expected a table with one step, e.g. clip = {{ column = \"x\", min = 0 }}"
            ));
        };
        if obj.len() != 1 {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            return Err(format!(
                "{at}: a step is a table with exactly one of impute, clip, scale, one_hot, bucketize; found {}",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ));
        }
        let kind = obj.keys().next().map(String::as_str).unwrap_or_default();
        serde_json::from_value(v.clone()).map_err(|e| {
            if matches!(
                kind,
                "impute" | "clip" | "scale" | "one_hot" | "bucketize"
            ) {
                format!("{at} ({kind}): {e}")
            } else {
                format!(
                    "{at}: unknown step {kind:?} (expected impute, clip, scale, one_hot or bucketize)"
                )
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Step::Impute(_) => "impute",
            Step::Clip(_) => "clip",
            Step::Scale(_) => "scale",
            Step::OneHot(_) => "one_hot",
            Step::Bucketize(_) => "bucketize",
        }
    }

    fn column(&self) -> &str {
        match self {
            Step::Impute(s) => &s.column,
            Step::Clip(s) => &s.column,
            Step::Scale(s) => &s.column,
            Step::OneHot(s) => &s.column,
            Step::Bucketize(s) => &s.column,
        }
    }

    /// The scalar op of a one-column step, after checking its fields (`at` names the step).
    fn op(&self, at: &str) -> Result<Option<Op>, String> {
        Ok(Some(match self {
            Step::Impute(s) => Op::Impute(finite(at, "value", s.value)?),
            Step::Clip(s) => {
                if s.min.is_none() && s.max.is_none() {
                    return Err(format!("{at}: give min, max or both"));
                }
                let lo = match s.min {
                    Some(v) => finite(at, "min", v)?,
                    None => f64::NEG_INFINITY,
                };
                let hi = match s.max {
                    Some(v) => finite(at, "max", v)?,
                    None => f64::INFINITY,
                };
                if lo > hi {
                    return Err(format!("{at}: min {lo} is greater than max {hi}"));
                }
                Op::Clip(lo, hi)
            }
            Step::Scale(s) => {
                let mean = finite(at, "mean", s.mean)?;
                let std = finite(at, "std", s.std)?;
                if std <= 0.0 {
                    return Err(format!("{at}: std must be greater than 0, not {std}"));
                }
                Op::Scale { mean, std }
            }
            Step::Bucketize(s) => {
                if s.boundaries.is_empty() {
                    return Err(format!("{at}: boundaries is empty; give at least one"));
                }
                for (i, b) in s.boundaries.iter().enumerate() {
                    finite(at, &format!("boundaries[{i}]"), *b)?;
                    if i > 0 && s.boundaries[i - 1] >= *b {
                        return Err(format!(
                            "{at}: boundaries must be strictly increasing; boundaries[{}] = {} is not below boundaries[{i}] = {b}",
                            i - 1,
                            s.boundaries[i - 1]
                        ));
                    }
                }
                Op::Bucketize(s.boundaries.clone())
            }
            Step::OneHot(_) => return Ok(None),
        }))
    }
}

impl Chain {
    /// Compiles `steps` over the columns `inputs`. Errors name the step's index and kind.
    pub fn compile(inputs: &[String], steps: &[Step]) -> Result<Chain, String> {
        if inputs.is_empty() {
            return Err("inputs is empty; list the pipeline's input columns".into());
        }
        let mut columns: Vec<Column> = Vec::with_capacity(inputs.len());
        for (i, name) in inputs.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("inputs[{i}] is an empty name"));
            }
            if columns.iter().any(|c| c.name == *name) {
                return Err(format!("inputs[{i}]: {name:?} is listed twice"));
            }
            columns.push(Column {
                name: name.clone(),
                source: i,
                ops: Vec::new(),
            });
        }
        for (index, step) in steps.iter().enumerate() {
            let at = format!("preprocess[{index}] ({})", step.kind());
            let name = step.column();
            let Some(pos) = columns.iter().position(|c| c.name == name) else {
                return Err(format!(
                    "{at}: column {name:?} does not exist at this step (columns: {})",
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            match (step, step.op(&at)?) {
                (_, Some(op)) => columns[pos].ops.push(op),
                (Step::OneHot(s), None) => {
                    if s.categories.is_empty() {
                        return Err(format!("{at}: categories is empty; give at least one"));
                    }
                    let old = columns.remove(pos);
                    let mut new = Vec::with_capacity(s.categories.len());
                    for (i, c) in s.categories.iter().enumerate() {
                        finite(&at, &format!("categories[{i}]"), *c)?;
                        let name = format!("{}={c}", old.name);
                        if s.categories[..i].contains(c) {
                            return Err(format!("{at}: category {c} is listed twice"));
                        }
                        if columns.iter().any(|x| x.name == name) {
                            return Err(format!(
                                "{at}: the new column {name:?} already exists; rename the input"
                            ));
                        }
                        let mut ops = old.ops.clone();
                        ops.push(Op::IsCategory(*c));
                        new.push(Column {
                            name,
                            source: old.source,
                            ops,
                        });
                    }
                    columns.splice(pos..pos, new);
                }
                // `op` returns None only for one_hot.
                (_, None) => {}
            }
        }
        Ok(Chain {
            n_inputs: inputs.len(),
            columns,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Transforms rows (`n_inputs` wide) into `out` (`width()` wide), row by row.
    pub fn apply(&self, rows: &[f64], out: &mut [f64]) {
        let w = self.width();
        for (row, o) in rows
            .chunks_exact(self.n_inputs)
            .zip(out.chunks_exact_mut(w))
        {
            for (c, o) in self.columns.iter().zip(o.iter_mut()) {
                let mut x = row[c.source];
                for op in &c.ops {
                    x = op.apply(x);
                }
                *o = x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn chain(inputs: &[&str], steps: Value) -> Result<Chain, String> {
        let steps: Vec<Step> = steps
            .as_array()
            .expect("array")
            .iter()
            .enumerate()
            .map(|(i, s)| Step::parse(i, s))
            .collect::<Result<_, _>>()?;
        Chain::compile(&names(inputs), &steps)
    }

    fn run(c: &Chain, row: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; c.width()];
        c.apply(row, &mut out);
        out
    }

    #[test]
    fn impute_replaces_only_nan() {
        let c = chain(&["a"], json!([{"impute": {"column": "a", "value": 0.5}}])).expect("ok");
        assert_eq!(run(&c, &[f64::NAN]), [0.5]);
        assert_eq!(run(&c, &[2.0]), [2.0]);
        assert_eq!(run(&c, &[f64::INFINITY]), [f64::INFINITY]);
    }

    #[test]
    fn clip_keeps_nan_and_allows_one_bound() {
        let c = chain(
            &["a", "b"],
            json!([{"clip": {"column": "a", "min": 0, "max": 500}}, {"clip": {"column": "b", "max": 1}}]),
        )
        .expect("ok");
        assert_eq!(run(&c, &[-3.0, 5.0]), [0.0, 1.0]);
        assert_eq!(run(&c, &[700.0, -1e30]), [500.0, -1e30]);
        assert_eq!(
            run(&c, &[250.0, f64::NEG_INFINITY]),
            [250.0, f64::NEG_INFINITY]
        );
        assert!(run(&c, &[f64::NAN, f64::NAN]).iter().all(|x| x.is_nan()));
    }

    #[test]
    fn scale_is_x_minus_mean_over_std() {
        let c = chain(
            &["a"],
            json!([{"scale": {"column": "a", "mean": 0.5, "std": 0.2}}]),
        )
        .expect("ok");
        assert_eq!(run(&c, &[0.9]), [(0.9 - 0.5) / 0.2]);
        assert!(run(&c, &[f64::NAN])[0].is_nan());
    }

    #[test]
    fn one_hot_replaces_the_column_in_place() {
        let c = chain(
            &["a", "city", "b"],
            json!([{"one_hot": {"column": "city", "categories": [1, 2, 3.5]}}]),
        )
        .expect("ok");
        assert_eq!(
            c.names(),
            names(&["a", "city=1", "city=2", "city=3.5", "b"])
        );
        assert_eq!(run(&c, &[7.0, 2.0, 8.0]), [7.0, 0.0, 1.0, 0.0, 8.0]);
        assert_eq!(run(&c, &[7.0, 3.5, 8.0]), [7.0, 0.0, 0.0, 1.0, 8.0]);
        // Unknown and missing categories: all zeros.
        assert_eq!(run(&c, &[7.0, 4.0, 8.0]), [7.0, 0.0, 0.0, 0.0, 8.0]);
        assert_eq!(run(&c, &[7.0, f64::NAN, 8.0]), [7.0, 0.0, 0.0, 0.0, 8.0]);
    }

    #[test]
    fn one_hot_after_impute_sees_the_imputed_value() {
        let c = chain(
            &["city"],
            json!([{"impute": {"column": "city", "value": 2}}, {"one_hot": {"column": "city", "categories": [1, 2]}}]),
        )
        .expect("ok");
        assert_eq!(run(&c, &[f64::NAN]), [0.0, 1.0]);
        // Later steps can address the new columns by name.
        let c = chain(
            &["city"],
            json!([{"one_hot": {"column": "city", "categories": [1, 2]}}, {"scale": {"column": "city=2", "mean": 1, "std": 2}}]),
        )
        .expect("ok");
        assert_eq!(run(&c, &[2.0]), [0.0, 0.0]);
        assert_eq!(run(&c, &[1.0]), [1.0, -0.5]);
    }

    #[test]
    fn bucketize_puts_a_boundary_in_the_bucket_above() {
        let c = chain(
            &["t"],
            json!([{"bucketize": {"column": "t", "boundaries": [10, 100]}}]),
        )
        .expect("ok");
        let b = |x: f64| run(&c, &[x])[0];
        assert_eq!(b(-1e30), 0.0);
        assert_eq!(b(9.999), 0.0);
        assert_eq!(b(10.0), 1.0);
        assert_eq!(b(99.0), 1.0);
        assert_eq!(b(100.0), 2.0);
        assert_eq!(b(f64::INFINITY), 2.0);
        assert!(b(f64::NAN).is_nan());
    }

    #[test]
    fn steps_apply_in_order_on_the_same_column() {
        let c = chain(
            &["t"],
            json!([{"clip": {"column": "t", "min": 0, "max": 500}}, {"bucketize": {"column": "t", "boundaries": [10, 500]}}]),
        )
        .expect("ok");
        assert_eq!(run(&c, &[900.0]), [2.0]);
        assert_eq!(run(&c, &[-5.0]), [0.0]);
    }

    #[test]
    fn bad_steps_get_errors_naming_the_step_and_field() {
        let cases = [
            (
                json!([{"normalize": {"column": "a"}}]),
                "preprocess[0]: unknown step \"normalize\"",
            ),
            (
                json!([{"clip": {"column": "a", "min": 1}, "scale": {}}]),
                "exactly one of",
            ),
            (json!([{}]), "found none"),
            (json!(["clip"]), "preprocess[0]: expected a table"),
            (
                json!([{"clip": {"column": "nope", "min": 1}}]),
                "preprocess[0] (clip): column \"nope\" does not exist at this step (columns: a, b)",
            ),
            (
                json!([{"clip": {"column": "a", "min": 2, "max": 1}}]),
                "preprocess[0] (clip): min 2 is greater than max 1",
            ),
            (
                json!([{"clip": {"column": "a"}}]),
                "preprocess[0] (clip): give min, max or both",
            ),
            (
                json!([{"impute": {"column": "a"}}]),
                "preprocess[0] (impute): missing field `value`",
            ),
            (
                json!([{"impute": {"column": "a", "value": 1, "fill": 2}}]),
                "preprocess[0] (impute): unknown field `fill`",
            ),
            (
                json!([{"scale": {"column": "a", "mean": 0, "std": 0}}]),
                "preprocess[0] (scale): std must be greater than 0",
            ),
            (
                json!([{"impute": {"column": "a", "value": 1}}, {"bucketize": {"column": "b", "boundaries": [5, 1]}}]),
                "preprocess[1] (bucketize): boundaries must be strictly increasing; boundaries[0] = 5 is not below boundaries[1] = 1",
            ),
            (
                json!([{"bucketize": {"column": "b", "boundaries": [1, 1]}}]),
                "strictly increasing",
            ),
            (
                json!([{"bucketize": {"column": "b", "boundaries": []}}]),
                "preprocess[0] (bucketize): boundaries is empty",
            ),
            (
                json!([{"one_hot": {"column": "b", "categories": []}}]),
                "preprocess[0] (one_hot): categories is empty",
            ),
            (
                json!([{"one_hot": {"column": "b", "categories": [1, 1]}}]),
                "category 1 is listed twice",
            ),
            (
                json!([{"one_hot": {"column": "b", "categories": [1]}}, {"clip": {"column": "b", "max": 1}}]),
                "preprocess[1] (clip): column \"b\" does not exist at this step (columns: a, b=1)",
            ),
        ];
        for (steps, needle) in cases {
            let e = chain(&["a", "b"], steps.clone())
                .err()
                .unwrap_or_else(|| panic!("{steps} should fail"));
            assert!(
                e.contains(needle),
                "{steps}: {e}\n  does not contain: {needle}"
            );
        }
        assert!(
            chain(&[], json!([]))
                .expect_err("empty")
                .contains("inputs is empty")
        );
        assert!(
            chain(&["a", "a"], json!([]))
                .expect_err("dup")
                .contains("listed twice")
        );
        let e = chain(
            &["a", "b=1", "b"],
            json!([{"one_hot": {"column": "b", "categories": [1]}}]),
        )
        .expect_err("collision");
        assert!(e.contains("\"b=1\" already exists"), "{e}");
    }

    #[test]
    fn steps_serialize_back_as_written() {
        let v = json!({"one_hot": {"column": "city", "categories": [1.0, 2.0]}});
        let s = Step::parse(0, &v).expect("ok");
        assert_eq!(serde_json::to_value(&s).expect("json"), v);
    }
}
