//! Every case of `tests/fixtures/drift/cases/`, every option set, against Evidently's result.

use std::collections::BTreeMap;

use kiln_monitor::drift::rules::{Typing, infer};
use kiln_monitor::drift::{DriftOptions, DriftReport, Method, drift_datasets};
use serde_json::Value;

use crate::fixtures::{close, dataset, dir, load};

fn options(o: &Value) -> DriftOptions {
    let mut opts = DriftOptions::default();
    if let Some(m) = o.get("method").and_then(Value::as_str) {
        opts.method = Some(m.parse::<Method>().expect("a known method"));
    }
    if let Some(cols) = o.get("columns").and_then(Value::as_array) {
        opts.columns = Some(
            cols.iter()
                .map(|c| c.as_str().expect("name").to_string())
                .collect(),
        );
    }
    opts
}

/// Evidently's name of a typing ("num", "cat", "text", "unknown").
fn evidently_type(t: &Typing) -> &'static str {
    match t {
        Typing::Type(kiln_monitor::drift::ColumnType::Numerical) => "num",
        Typing::Type(kiln_monitor::drift::ColumnType::Categorical) => "cat",
        Typing::Text => "text",
        Typing::Untyped(_) => "unknown",
    }
}

/// Largest relative difference seen per method, for the summary.
type Worst = BTreeMap<String, (f64, String)>;

fn check_run(case: &str, run: &Value, report: &DriftReport, worst: &mut Worst) -> Vec<String> {
    let mut errors = Vec::new();
    let expected = &run["expected"];
    let label = format!("{case} {}", run["options"]);
    for e in expected["columns"].as_array().expect("columns") {
        let name = e["name"].as_str().expect("name");
        let Some(k) = report.column(name) else {
            errors.push(format!("{label}: column {name} missing from Kiln's report"));
            continue;
        };
        let method = e["method"].as_str().expect("method");
        let want_type = match e["column_type"].as_str() {
            Some("num") => "numerical",
            Some("cat") => "categorical",
            other => panic!("unexpected type {other:?}"),
        };
        if k.column_type.as_str() != want_type {
            errors.push(format!(
                "{label}: {name}: type {} vs Evidently {want_type}",
                k.column_type
            ));
        }
        if k.method.name() != method {
            errors.push(format!(
                "{label}: {name}: method {} vs Evidently {method}",
                k.method
            ));
        }
        // A forced method is echoed by name, a default one by display name.
        let forced = run["options"].get("method").is_some();
        if !forced && k.method_name != e["method_name"].as_str().expect("method_name") {
            errors.push(format!(
                "{label}: {name}: method name {} vs {}",
                k.method_name, e["method_name"]
            ));
        }
        let want = e["score"].as_f64().expect("score");
        let (ok, rel) = close(method, k.score, want);
        if !ok {
            errors.push(format!(
                "{label}: {name}: {method} score {:e} vs Evidently {want:e} (rel {rel:e})",
                k.score
            ));
        }
        let w = worst
            .entry(method.to_string())
            .or_insert((0.0, String::new()));
        if rel > w.0 {
            *w = (rel, format!("{case}/{name}"));
        }
        if k.threshold != e["threshold"].as_f64().expect("threshold") {
            errors.push(format!(
                "{label}: {name}: threshold {} vs {}",
                k.threshold, e["threshold"]
            ));
        }
        if k.drifted != e["drifted"].as_bool().expect("drifted") {
            errors.push(format!(
                "{label}: {name}: drifted {} vs Evidently {}",
                k.drifted, e["drifted"]
            ));
        }
    }
    let n = expected["number_of_columns"].as_u64().expect("n") as usize;
    if report.number_of_columns != n {
        errors.push(format!(
            "{label}: {} columns compared vs Evidently {n}",
            report.number_of_columns
        ));
    }
    let d = expected["number_of_drifted_columns"].as_u64().expect("d") as usize;
    if report.number_of_drifted_columns != d {
        errors.push(format!(
            "{label}: {} drifted vs Evidently {d}",
            report.number_of_drifted_columns
        ));
    }
    if report.share_of_drifted_columns
        != expected["share_of_drifted_columns"]
            .as_f64()
            .expect("share")
    {
        errors.push(format!(
            "{label}: share {} vs {}",
            report.share_of_drifted_columns, expected["share_of_drifted_columns"]
        ));
    }
    if report.dataset_drift != expected["dataset_drift"].as_bool().expect("dataset_drift") {
        errors.push(format!(
            "{label}: dataset drift {} vs {}",
            report.dataset_drift, expected["dataset_drift"]
        ));
    }
    errors
}

#[test]
fn every_case_agrees_with_evidently() {
    let mut paths: Vec<_> = std::fs::read_dir(dir().join("cases"))
        .expect("cases directory")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 15,
        "expected the generated cases, found {}",
        paths.len()
    );
    let mut errors = Vec::new();
    let mut worst = Worst::new();
    let mut compared = 0;
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let case = load(&format!("cases/{name}.json"));
        let reference = dataset(&case["reference"]);
        let current = dataset(&case["current"]);
        for run in case["runs"].as_array().expect("runs") {
            // Typing of every current column, compared or not.
            for (col, want) in run["expected"]["types"].as_object().expect("types") {
                let data = &current.column(col).expect("column").data;
                let got = evidently_type(&infer(data));
                if got != want.as_str().expect("type") {
                    errors.push(format!("{name}: {col} typed {got} vs Evidently {want}"));
                }
            }
            match drift_datasets(&reference, &current, &options(&run["options"])) {
                Ok(report) => {
                    compared += report.number_of_columns;
                    errors.extend(check_run(&name, run, &report, &mut worst));
                }
                Err(e) => errors.push(format!("{name} {}: {e}", run["options"])),
            }
        }
    }
    for (method, (rel, at)) in &worst {
        println!("{method:14} max relative difference {rel:.2e} ({at})");
    }
    println!("{compared} column comparisons");
    assert!(
        errors.is_empty(),
        "{} disagreements:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn text_and_untyped_columns_are_listed_as_skipped() {
    let case = load("cases/text_column.json");
    let report = drift_datasets(
        &dataset(&case["reference"]),
        &dataset(&case["current"]),
        &DriftOptions::default(),
    )
    .expect("report");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].name, "note");
    assert!(
        report.skipped[0].reason.contains("text"),
        "{}",
        report.skipped[0].reason
    );
    let case = load("cases/untyped_columns.json");
    let report = drift_datasets(
        &dataset(&case["reference"]),
        &dataset(&case["current"]),
        &DriftOptions::default(),
    )
    .expect("report");
    assert_eq!(
        report
            .skipped
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["maybe"]
    );
}
