//! The shipped Prometheus rules (deploy/prometheus/kiln-alerts.yml) and Grafana dashboard
//! (deploy/grafana/kiln-serving.json) against the metrics `kiln serve` really exports
//! ([`metrics::ALL`]): every `kiln_*` name they use is defined (histograms also as `_bucket`,
//! `_sum`, `_count`), every label they match or group by exists on the metrics of that
//! expression, the files parse, each alert links a runbook that exists in docs/runbooks/, and
//! the dashboard is templated by model. Renaming a metric without updating them fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_serve::metrics::{ALL, Kind, MetricDef};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// YAML as JSON, so both files are walked the same way.
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map_or_else(|_| Value::String(s.clone()), Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => panic!("non-string YAML key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("unsupported YAML node {y:?}"),
    }
}

/// Every string under a key named `expr`, anywhere in `v`.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// A metric named in an expression, with its label matchers (`{...}`), if any.
#[derive(Debug)]
struct Ref {
    name: String,
    def: Option<&'static MetricDef>,
    suffix: &'static str,
    matchers: Vec<(String, String)>,
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Skips a quoted string starting at `i` (a quote); returns the index after it.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The `kiln_*` metric a series name refers to, and which histogram suffix it used.
fn resolve(name: &str) -> (Option<&'static MetricDef>, &'static str) {
    if let Some(def) = ALL.iter().copied().find(|d| d.name == name) {
        return (Some(def), "");
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            let def = ALL
                .iter()
                .copied()
                .find(|d| d.name == base && d.kind == Kind::Histogram);
            if def.is_some() {
                return (def, suffix);
            }
        }
    }
    (None, "")
}

/// `(label, value)` pairs of a matcher list such as `model=~"$model", status!="present"`.
fn matchers(body: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if ident_start(chars[i]) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let label: String = chars[start..i].iter().collect();
            while i < chars.len() && chars[i] != '"' && chars[i] != '\'' {
                i += 1;
            }
            let vstart = i + 1;
            i = skip_string(&chars, i.min(chars.len().saturating_sub(1)));
            let value: String = chars[vstart.min(chars.len())..(i - 1).min(chars.len())]
                .iter()
                .collect();
            out.push((label, value));
        } else {
            i += 1;
        }
    }
    out
}

/// The metrics an expression reads and the labels it groups or joins by.
fn scan(expr: &str) -> (Vec<Ref>, Vec<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let (mut refs, mut grouping) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
            continue;
        }
        if c == '[' {
            // A range or subquery duration.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            continue;
        }
        if !ident_start(c) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ident_char(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if matches!(
            word.as_str(),
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) && chars.get(j) == Some(&'(')
        {
            let end = (j..chars.len())
                .find(|&k| chars[k] == ')')
                .unwrap_or(chars.len());
            let list: String = chars[j + 1..end].iter().collect();
            grouping.extend(
                list.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
            i = end;
            continue;
        }
        if !word.starts_with("kiln_") {
            continue;
        }
        let mut found = Vec::new();
        if chars.get(j) == Some(&'{') {
            let mut k = j + 1;
            while k < chars.len() && chars[k] != '}' {
                if chars[k] == '"' || chars[k] == '\'' {
                    k = skip_string(&chars, k);
                } else {
                    k += 1;
                }
            }
            let body: String = chars[j + 1..k.min(chars.len())].iter().collect();
            found = matchers(&body);
            i = k;
        }
        let (def, suffix) = resolve(&word);
        refs.push(Ref {
            name: word,
            def,
            suffix,
            matchers: found,
        });
    }
    (refs, grouping)
}

/// Everything wrong with the metric use in `expr`.
fn check(expr: &str) -> Vec<String> {
    let (refs, grouping) = scan(expr);
    let mut problems = Vec::new();
    let mut known: BTreeSet<&str> = BTreeSet::new();
    for r in &refs {
        let Some(def) = r.def else {
            problems.push(format!(
                "{} is not a metric kiln serve exports (crates/kiln-serve/src/metrics/defs.rs)",
                r.name
            ));
            continue;
        };
        known.extend(def.labels.iter().copied());
        if r.suffix == "_bucket" {
            known.insert("le");
        }
        for (label, _) in &r.matchers {
            let ok =
                def.labels.contains(&label.as_str()) || (label == "le" && r.suffix == "_bucket");
            if !ok {
                problems.push(format!(
                    "{}: no label {label:?} (it has {:?})",
                    r.name, def.labels
                ));
            }
        }
    }
    if !refs.is_empty() {
        for label in &grouping {
            if !known.contains(label.as_str()) {
                problems.push(format!(
                    "groups or joins by {label:?}, which none of its metrics has ({known:?})"
                ));
            }
        }
    }
    problems
}

fn base_names(exprs: &[String]) -> BTreeSet<&'static str> {
    exprs
        .iter()
        .flat_map(|e| scan(e).0)
        .filter_map(|r| r.def.map(|d| d.name))
        .collect()
}

#[test]
fn the_checker_catches_unknown_names_labels_and_suffixes() {
    assert!(check("rate(kiln_nope_total[5m])")[0].contains("kiln_nope_total"));
    assert!(check(r#"kiln_http_requests_total{modle="x"}"#)[0].contains("modle"));
    assert!(
        !check("rate(kiln_feature_lookups_total_bucket[1m])").is_empty(),
        "counters have no buckets"
    );
    assert!(!check("sum by (model) (rate(kiln_feature_lookups_total[1m]))").is_empty());
    assert!(!check(r#"kiln_inference_queue_depth{le="1"}"#).is_empty());
    assert_eq!(
        check(
            r#"histogram_quantile(0.99, sum by (model, le) (rate(kiln_inference_request_duration_seconds_bucket{model=~"$model", le!=""}[$__rate_interval])))"#
        ),
        Vec::<String>::new()
    );
    assert_eq!(check(r#"up{job="kiln"} == 0"#), Vec::<String>::new());
    assert_eq!(
        check(r#"sum by (view) (rate(kiln_feature_lookups_total{status="kiln_x{y}"}[5m]))"#),
        Vec::<String>::new(),
        "strings are not names"
    );
}

#[test]
fn prometheus_rules_use_defined_metrics_and_link_existing_runbooks() {
    let path = "deploy/prometheus/kiln-alerts.yml";
    let docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    let root = to_json(&docs[0]);
    let groups = root["groups"].as_array().expect("groups: a list");
    assert!(!groups.is_empty());
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    let mut all_exprs = Vec::new();
    for g in groups {
        assert!(g["name"].is_string(), "every group has a name");
        for rule in g["rules"].as_array().expect("rules: a list") {
            let alert = rule["alert"].as_str().expect("an alerting rule");
            assert!(names.insert(alert.to_string()), "{alert} is defined twice");
            let expr = rule["expr"].as_str().expect("expr");
            all_exprs.push(expr.to_string());
            problems.extend(check(expr).into_iter().map(|p| format!("{alert}: {p}")));
            if let Some(d) = rule.get("for") {
                let d = d.as_str().expect("for: a duration");
                assert!(
                    d.ends_with(['s', 'm', 'h'])
                        && d[..d.len() - 1].chars().all(|c| c.is_ascii_digit()),
                    "{alert}: for = {d:?}"
                );
            }
            let severity = rule["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{alert}: severity {severity:?}"
            );
            let notes = &rule["annotations"];
            assert!(
                notes["summary"].is_string() && notes["description"].is_string(),
                "{alert}"
            );
            let url = notes["runbook_url"].as_str().expect("runbook_url");
            let at = url
                .find("docs/runbooks/")
                .unwrap_or_else(|| panic!("{alert}: runbook_url {url}"));
            assert!(
                repo().join(&url[at..]).is_file(),
                "{alert}: {} does not exist",
                &url[at..]
            );
        }
    }
    assert!(problems.is_empty(), "{path}:\n{}", problems.join("\n"));
    let used = base_names(&all_exprs);
    for name in [
        "kiln_inference_requests_total",
        "kiln_inference_request_duration_seconds",
        "kiln_inference_queue_depth",
        "kiln_feature_lookups_total",
        "kiln_http_requests_total",
    ] {
        assert!(used.contains(name), "{path} has no alert on {name}");
    }
}

#[test]
fn the_grafana_dashboard_uses_defined_metrics_and_is_templated_by_model() {
    let path = "deploy/grafana/kiln-serving.json";
    let dash: Value = serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"model") && vars.contains(&"datasource"),
        "{vars:?}"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let ids: Vec<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids.len(), panels.len(), "every panel has an id");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "panel ids are unique"
    );
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert!(
                t["expr"].is_string() && t["refId"].is_string(),
                "{}",
                p["title"]
            );
        }
    }
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let mut problems = Vec::new();
    for e in &all {
        problems.extend(check(e).into_iter().map(|p| format!("{e}: {p}")));
        for r in scan(e).0 {
            let has_model = r.def.is_some_and(|d| d.labels.contains(&"model"));
            let filtered = r
                .matchers
                .iter()
                .any(|(l, v)| l == "model" && v == "$model");
            if has_model && !filtered {
                problems.push(format!(
                    "{e}: {} is not filtered by model=~\"$model\"",
                    r.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{path}:\n{}", problems.join("\n"));
    let used = base_names(&all);
    for name in [
        "kiln_inference_requests_total",
        "kiln_inference_request_duration_seconds",
        "kiln_inference_queue_duration_seconds",
        "kiln_inference_compute_duration_seconds",
        "kiln_inference_batch_rows",
        "kiln_inference_requests_in_flight",
        "kiln_inference_queue_depth",
        "kiln_feature_lookups_total",
        "kiln_http_requests_total",
        "kiln_http_request_duration_seconds",
    ] {
        assert!(used.contains(name), "{path} has no panel on {name}");
    }
}
