//! `kiln drift` end to end: the JSON against Evidently's verdict on the same Parquet files
//! (`kiln-monitor/tests/fixtures/drift/cli/`), the HTML page, CSV input, exit codes, and bad
//! input named clearly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use serde_json::Value;

use crate::common::{fails, json, kiln, ok};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-monitor/tests/fixtures/drift/cli")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn expected(i: usize) -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["runs"][i]["expected"].clone()
}

/// Kiln's JSON report against Evidently's expected figures.
fn check(report: &Value, expected: &Value) {
    let columns = report["columns"].as_array().expect("columns");
    for e in expected["columns"].as_array().expect("columns") {
        let name = e["name"].as_str().expect("name");
        let k = columns
            .iter()
            .find(|c| c["name"] == *name)
            .unwrap_or_else(|| panic!("column {name} missing from {report}"));
        assert_eq!(k["method"], e["method"], "{name}");
        assert_eq!(k["drifted"], e["drifted"], "{name}");
        let (got, want) = (
            k["score"].as_f64().expect("score"),
            e["score"].as_f64().expect("score"),
        );
        // kiln-monitor's rule: relative 1e-9, the scale floored at the smallest normal double
        // for p-values and at 1e-6 for distances.
        let p_value = ["ks", "chisquare", "z"].contains(&e["method"].as_str().expect("method"));
        let scale = want
            .abs()
            .max(if p_value { f64::MIN_POSITIVE } else { 1e-6 });
        assert!(
            (got - want).abs() <= 1e-9 * scale,
            "{name}: {got} vs Evidently {want}"
        );
    }
    assert_eq!(report["number_of_columns"], expected["number_of_columns"]);
    assert_eq!(
        report["number_of_drifted_columns"],
        expected["number_of_drifted_columns"]
    );
    assert_eq!(
        report["share_of_drifted_columns"],
        expected["share_of_drifted_columns"]
    );
    assert_eq!(report["dataset_drift"], expected["dataset_drift"]);
}

#[test]
fn json_report_matches_evidently_on_the_same_parquet_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, c) = (
        fixtures().join("reference.parquet"),
        fixtures().join("current.parquet"),
    );
    let report = json(kiln(
        tmp.path(),
        &[
            "drift",
            "--reference",
            path(&r),
            "--current",
            path(&c),
            "-o",
            "json",
        ],
    ));
    check(&report, &expected(0));
    // The timestamp column is listed, not compared (Evidently leaves it out too).
    assert_eq!(report["skipped"][0]["name"], "signup");
    assert_eq!(report["current"], path(&c));

    let psi = json(kiln(
        tmp.path(),
        &[
            "drift",
            "--reference",
            path(&r),
            "--current",
            path(&c),
            "-o",
            "json",
            "--method",
            "psi",
        ],
    ));
    check(&psi, &expected(1));
}

#[test]
fn html_report_is_one_self_contained_file_with_every_column() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("drift.html");
    let (r, c) = (
        fixtures().join("reference.parquet"),
        fixtures().join("current.parquet"),
    );
    ok(kiln(
        tmp.path(),
        &[
            "drift",
            "--reference",
            path(&r),
            "--current",
            path(&c),
            "-o",
            "html",
            "--out",
            path(&out),
        ],
    ));
    let html = std::fs::read_to_string(&out).expect("html written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for col in ["amount", "age", "visits", "segment", "is_new", "plan"] {
        assert!(
            html.contains(&format!("id=\"col-{col}\"")),
            "no section for {col}"
        );
    }
    assert!(html.matches("<svg").count() >= 6, "a histogram per column");
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href=\"http"));
}

#[test]
fn table_and_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, c) = (
        fixtures().join("reference.parquet"),
        fixtures().join("current.parquet"),
    );
    let args = ["drift", "--reference", path(&r), "--current", path(&c)];
    let table = ok(kiln(tmp.path(), &args));
    assert!(table.contains("DATASET DRIFT"), "{table}");
    assert!(table.contains("Wasserstein distance (normed)"), "{table}");
    // --fail-on-drift: status 2 when the dataset drifted, 0 when it did not.
    let out = kiln(tmp.path(), &[&args[..], &["--fail-on-drift"]].concat());
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same = kiln(
        tmp.path(),
        &[
            "drift",
            "--reference",
            path(&r),
            "--current",
            path(&r),
            "--fail-on-drift",
        ],
    );
    assert_eq!(same.status.code(), Some(0));
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let f = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(f, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

#[test]
fn bad_input_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let (r, c) = (
        fixtures().join("reference.parquet"),
        fixtures().join("current.parquet"),
    );

    let missing = d.join("nope.parquet");
    let err = fails(kiln(
        d,
        &[
            "drift",
            "--reference",
            path(&missing),
            "--current",
            path(&c),
        ],
    ));
    assert!(
        err.contains("cannot open the reference file") && err.contains("nope.parquet"),
        "{err}"
    );

    let err = fails(kiln(
        d,
        &[
            "drift",
            "--reference",
            path(&r),
            "--current",
            path(&c),
            "--columns",
            "amount,nope",
        ],
    ));
    assert!(
        err.contains("column \"nope\" is not in the reference file"),
        "{err}"
    );
    assert!(err.contains("amount"), "lists the columns: {err}");

    let a = d.join("a.parquet");
    let b = d.join("b.parquet");
    let x: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    let y: ArrayRef = Arc::new(StringArray::from(vec!["1", "2", "3"]));
    write_parquet(&a, vec![("x", Arc::clone(&x))]);
    write_parquet(&b, vec![("x", y)]);
    let err = fails(kiln(
        d,
        &["drift", "--reference", path(&a), "--current", path(&b)],
    ));
    assert!(
        err.contains(
            "column \"x\" is numeric in the reference data but string in the current data"
        ),
        "{err}"
    );

    let only_x = d.join("only_x.parquet");
    write_parquet(&only_x, vec![("x", x)]);
    let err = fails(kiln(
        d,
        &["drift", "--reference", path(&only_x), "--current", path(&c)],
    ));
    assert!(err.contains("is not in the reference data"), "{err}");

    let not_parquet = d.join("junk.parquet");
    std::fs::write(&not_parquet, "hello").expect("write");
    let err = fails(kiln(
        d,
        &[
            "drift",
            "--reference",
            path(&not_parquet),
            "--current",
            path(&c),
        ],
    ));
    assert!(err.contains("is not a Parquet file"), "{err}");

    let err = fails(kiln(d, &["list", "views", "-o", "html"]));
    assert!(err.contains("only supported by `kiln drift`"), "{err}");
}

#[test]
fn csv_files_are_typed_as_pandas_reads_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let mut r = String::from("price,code,label,flag\n");
    let mut c = String::from("price,code,label,flag\n");
    for i in 0..400 {
        r.push_str(&format!(
            "{},{},{},{}\n",
            f64::from(i) * 0.5,
            i % 4,
            ["a", "b"][i as usize % 2],
            i % 3 == 0
        ));
        let price = if i % 10 == 0 {
            "NA".to_string()
        } else {
            (f64::from(i) * 0.5 + 40.0).to_string()
        };
        c.push_str(&format!(
            "{price},{},\"{}\",{}\n",
            i % 5,
            ["a", "b"][i as usize % 2],
            i % 3 == 0
        ));
    }
    std::fs::write(d.join("r.csv"), r).expect("write");
    std::fs::write(d.join("c.csv"), c).expect("write");
    let report = json(kiln(
        d,
        &[
            "drift",
            "--reference",
            path(&d.join("r.csv")),
            "--current",
            path(&d.join("c.csv")),
            "-o",
            "json",
        ],
    ));
    let col = |n: &str| {
        report["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {report}"))
    };
    assert_eq!(col("price")["method"], "ks");
    assert_eq!(col("price")["current"]["missing"], 40);
    assert_eq!(col("code")["column_type"], "categorical");
    assert_eq!(col("code")["method"], "chisquare");
    assert_eq!(col("code")["score"], 0.0, "an unseen code is drift");
    assert_eq!(col("label")["method"], "z");
    assert_eq!(col("flag")["method"], "z");
}
