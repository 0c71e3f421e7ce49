//! Kiln's performance metrics against scikit-learn's on the same predictions and labels
//! (`tests/fixtures/performance/cases.json`, written by `generate.py` there).

use kiln_monitor::performance::{Task, compute};
use serde_json::Value;

fn close(what: &str, got: Option<f64>, want: &Value) {
    let want = want.as_f64().unwrap_or(f64::NAN);
    match got {
        Some(g) => assert!(
            (g - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{what}: Kiln {g}, scikit-learn {want}"
        ),
        None => assert!(want.is_nan(), "{what}: Kiln has none, scikit-learn {want}"),
    }
}

#[test]
fn metrics_agree_with_scikit_learn() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/performance/cases.json"
    ))
    .expect("cases.json");
    let fixture: Value = serde_json::from_str(&text).expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let floats = |k: &str| -> Vec<f64> {
            case[k]
                .as_array()
                .expect("array")
                .iter()
                .map(|v| v.as_f64().expect("number"))
                .collect()
        };
        let (outputs, labels) = (floats("outputs"), floats("labels"));
        let task = match case["task"].as_str().expect("task") {
            "binary" => Task::Binary,
            "multiclass" => Task::Multiclass {
                classes: case["classes"].as_u64().expect("classes") as usize,
            },
            _ => Task::Regression,
        };
        let threshold = case["threshold"].as_f64().unwrap_or(0.5);
        let m = compute(task, &outputs, &labels, threshold);
        let e = &case["expected"];
        assert_eq!(m.count, labels.len(), "{name}");
        let checks: [(&str, Option<f64>); 9] = [
            ("accuracy", m.accuracy),
            ("precision", m.precision),
            ("recall", m.recall),
            ("f1", m.f1),
            ("auc", m.auc),
            ("log_loss", m.log_loss),
            ("brier", m.brier),
            ("mae", m.mae),
            ("rmse", m.rmse),
        ];
        for (metric, got) in checks {
            if !e[metric].is_null() {
                close(&format!("{name}.{metric}"), got, &e[metric]);
            }
        }
        if let Some(fractions) = e["calibration_fraction_positive"].as_array() {
            assert_eq!(
                m.calibration.len(),
                fractions.len(),
                "{name}: calibration bins"
            );
            let means = e["calibration_mean_predicted"].as_array().expect("means");
            for (i, bin) in m.calibration.iter().enumerate() {
                close(
                    &format!("{name}.calibration[{i}].fraction_positive"),
                    Some(bin.fraction_positive),
                    &fractions[i],
                );
                close(
                    &format!("{name}.calibration[{i}].mean_predicted"),
                    Some(bin.mean_predicted),
                    &means[i],
                );
            }
        }
    }
}
