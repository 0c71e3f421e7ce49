//! `[[feature_view.aggregations]]`: expansion into features and located errors.

use std::fs::File;

use kiln_core::ValueType;
use kiln_core::spec::AggFunction;
use kiln_features::FeatureError;
use kiln_features::definitions::load_str;
use parquet::arrow::ArrowWriter;

use crate::common::*;

const HEAD: &str = r#"
[[entity]]
name = "card"
join_keys = [{ name = "card_id", dtype = "int64" }]

[[source]]
name = "tx"
path = "tx.parquet"
timestamp_field = "ts"

[[feature_view]]
name = "card_activity"
entities = ["card"]
source = "tx"
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = batch(vec![
        ("card_id", i64s(&[Some(1)])),
        ("ts", times(&[Some(0)])),
        ("amount", f64s(&[Some(1.0)])),
        ("qty", i64s(&[Some(1)])),
        ("merchant", strs(&[Some("m")])),
    ]);
    let mut w = ArrowWriter::try_new(
        File::create(dir.path().join("tx.parquet")).expect("create"),
        b.schema(),
        None,
    )
    .expect("writer");
    w.write(&b).expect("write");
    w.close().expect("close");
    dir
}

#[test]
fn aggregations_expand_into_typed_features() {
    let dir = project();
    let text = format!(
        "{HEAD}
[[feature_view.aggregations]]
function = \"count\"
windows = [\"10m\", \"24h\"]

[[feature_view.aggregations]]
column = \"qty\"
function = \"sum\"
windows = [\"1h\"]

[[feature_view.aggregations]]
column = \"amount\"
function = \"stddev\"
windows = [\"1h\"]

[[feature_view.aggregations]]
column = \"merchant\"
function = \"last\"
windows = [\"7d\"]
"
    );
    let defs = load_str(dir.path(), "cards.toml", &text).expect("valid");
    let v = &defs.views[0];
    let got: Vec<(&str, ValueType)> = v
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.dtype))
        .collect();
    assert_eq!(
        got,
        [
            ("count_10m", ValueType::Int64),
            ("count_24h", ValueType::Int64),
            ("qty_sum_1h", ValueType::Int64),
            ("amount_stddev_1h", ValueType::Float64),
            ("merchant_last_7d", ValueType::String),
        ]
    );
    assert_eq!(v.aggregations[1].window_seconds, 86_400);
    assert_eq!(v.aggregations[3].function, AggFunction::Stddev);
    let resolved = defs.resolve_view(v, 1, 0).expect("resolves");
    assert_eq!(resolved.aggregations, v.aggregations);
    // Old registry events (no aggregations field) still load.
    let mut json = serde_json::to_value(&resolved).expect("json");
    json.as_object_mut().expect("object").remove("aggregations");
    let old: kiln_core::spec::ViewVersion = serde_json::from_value(json).expect("loads");
    assert!(old.aggregations.is_empty());
}

#[test]
fn every_problem_is_reported_with_its_line_and_field() {
    let dir = project();
    let text = format!(
        "{HEAD}ttl = \"1d\"

[[feature_view.aggregations]]
function = \"median\"
column = \"amount\"
windows = [\"1h\"]

[[feature_view.aggregations]]
column = \"merchant\"
function = \"mean\"
windows = [\"1h\", \"0\"]

[[feature_view.aggregations]]
column = \"nope\"
function = \"max\"
windows = [\"1h\"]

[[feature_view.aggregations]]
column = \"amount\"
function = \"sum\"
windows = [\"1h\", \"60m\", \"1h\"]

[[feature_view.aggregations]]
function = \"min\"
windows = [\"1h\"]

[[feature_view.aggregations]]
column = \"amount\"
function = \"count_distinct\"
windows = [\"1h\"]
"
    );
    let Err(FeatureError::Invalid(diags)) = load_str(dir.path(), "cards.toml", &text) else {
        panic!("should be invalid");
    };
    let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let has = |needle: &str| {
        assert!(
            shown.iter().any(|d| d.contains(needle)),
            "no diagnostic with {needle:?} in {shown:#?}"
        )
    };
    has("feature_view[card_activity].ttl: a view of aggregations takes no ttl");
    has(
        "cards.toml:18:12: feature_view[card_activity].aggregations[0].function: unknown aggregation function \"median\"",
    );
    has("aggregations[1].column: mean needs a numeric");
    has("aggregations[1].windows[1]: window \"0\" is empty");
    has("aggregations[2].column: column \"nope\" is not in tx.parquet");
    has("aggregations[3].windows[1]: window \"60m\" has the same length");
    has("aggregations[3].windows[2]: the feature \"amount_sum_1h\" is declared twice");
    has("aggregations[4].column: min needs a column");
    has("aggregations[5].column: count_distinct does not take float columns");
    assert!(diags.iter().all(|d| d.line > 0), "{shown:#?}");
}
