//! Reading the fixtures, and the tolerance rule.

use std::path::{Path, PathBuf};

use kiln_monitor::drift::{ColumnData, Dataset, Strings};
use serde_json::Value;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drift")
}

pub fn load(rel: &str) -> Value {
    let path = dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Null => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        v => v.as_f64().expect("a number"),
    }
}

/// A side of a case (`{"columns": [{"name", "dtype", "values"}]}`) as a Kiln dataset.
pub fn dataset(side: &Value) -> Dataset {
    let mut ds = Dataset::new();
    for c in side["columns"].as_array().expect("columns") {
        let name = c["name"].as_str().expect("name");
        let values = c["values"].as_array().expect("values");
        let data = match c["dtype"].as_str().expect("dtype") {
            "float64" => ColumnData::Float(values.iter().map(float).collect()),
            "int64" => ColumnData::Int(values.iter().map(|v| v.as_i64().expect("int")).collect()),
            "bool" => ColumnData::Bool(values.iter().map(|v| v.as_bool().expect("bool")).collect()),
            "string" => ColumnData::Str(values.iter().map(Value::as_str).collect::<Strings>()),
            // pandas holds booleans with missing values as objects: Evidently leaves them out.
            "object_bool" => ColumnData::Unsupported {
                dtype: "boolean with missing values".into(),
                len: values.len(),
            },
            other => panic!("unknown dtype {other}"),
        };
        ds.push(name, data).expect("unique names");
    }
    ds
}

/// The agreement required of a score: a relative 1e-9, with the relative scale floored at the
/// smallest normal double for p-values (subnormal p-values have fewer than 1e-9 worth of
/// significant bits) and at 1e-6 for distances (a Jensen-Shannon distance is the square root
/// of a divergence that cancels to about 1e-16 when the two sides are nearly equal, so its
/// last ~1e-8 are rounding noise in SciPy as here).
pub fn close(method: &str, got: f64, want: f64) -> (bool, f64) {
    if got == want || (got.is_nan() && want.is_nan()) {
        return (true, 0.0);
    }
    let diff = (got - want).abs();
    // Reported relative to the floored scale, like the check itself.
    let floor = match method {
        "ks" | "chisquare" | "z" => f64::MIN_POSITIVE,
        _ => 1e-6,
    };
    let scale = want.abs().max(floor);
    (diff <= 1e-9 * scale, diff / scale)
}
