//! init, plan, apply, versions, the registry log, listings and lineage.

use crate::common::*;

#[test]
fn init_apply_list_show_and_lineage() {
    let p = init(&[]);
    let plan = p.run(&["plan"]);
    assert!(ok(plan).contains("+ feature_view driver_hourly_stats: create"));
    let applied = json(p.run(&["apply", "--output", "json"]));
    assert_eq!(applied["events"], 4);
    // A second apply changes nothing.
    assert!(ok(p.run(&["apply"])).contains("No changes"));

    let views = json(p.run(&["list", "views", "--output", "json"]));
    assert_eq!(views[0]["name"], "driver_hourly_stats");
    assert_eq!(views[0]["version"], 1);
    assert_eq!(views[0]["ttl_seconds"], 86_400);
    for what in ["entities", "sources", "services"] {
        let list = json(p.run(&["list", what, "--output", "json"]));
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{what}: {list}");
    }
    let table = ok(p.run(&["list", "views"]));
    assert!(
        table.contains("driver_hourly_stats") && table.contains("1d"),
        "{table}"
    );

    let show = ok(p.run(&["show", "view", "driver_hourly_stats"]));
    assert!(
        show.contains("conv_rate") && show.contains("float32"),
        "{show}"
    );
    let lineage = json(p.run(&["lineage", "driver_activity", "--output", "json"]));
    let ids: Vec<String> = lineage["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| format!("{} -> {}", e["from"], e["to"]))
        .collect();
    assert!(ids.iter().any(|e| e.contains("source:driver_stats") && e.contains("view:driver_hourly_stats@v1")), "{ids:?}");
    assert!(
        ids.iter().any(|e| e.contains("service:driver_activity")),
        "{ids:?}"
    );
}

#[test]
fn changing_ttl_makes_a_new_version_and_metadata_does_not() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let defs = p.read("features/driver.toml");
    p.write(
        "features/driver.toml",
        &defs.replace("ttl = \"1d\"", "ttl = \"2d\""),
    );
    let plan = ok(p.run(&["plan"]));
    assert!(
        plan.contains("new version v1 -> v2") && plan.contains("ttl 1d -> 2d"),
        "{plan}"
    );
    ok(p.run(&["apply"]));
    let v2 = json(p.run(&["show", "view", "driver_hourly_stats", "--output", "json"]));
    assert_eq!(v2["version"]["version"], 2);
    let v1 = json(p.run(&[
        "show",
        "view",
        "driver_hourly_stats",
        "--version",
        "1",
        "--output",
        "json",
    ]));
    assert_eq!(v1["version"]["ttl_seconds"], 86_400);

    let defs = p.read("features/driver.toml");
    p.write(
        "features/driver.toml",
        &defs.replace("Hourly driver performance statistics", "Per-hour stats"),
    );
    let plan = ok(p.run(&["plan"]));
    assert!(plan.contains("update: description"), "{plan}");
    ok(p.run(&["apply"]));
    let log = json(p.run(&["registry", "log", "--output", "json"]));
    let kinds: Vec<&str> = log
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"]["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "view_version_created")
            .count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"view_updated"));
    assert!(ok(p.run(&["registry", "log", "--limit", "1"])).contains("view_updated"));
}

#[test]
fn every_error_is_reported_at_once_and_nothing_is_registered() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let before = json(p.run(&["registry", "log", "--output", "json"]))
        .as_array()
        .map(Vec::len);
    let bad = r#"
[[entity]]
name = "driver"
join_keys = [{ name = "driver_id", dtype = "int64" }]

[[source]]
name = "driver_stats"
path = "data/driver_stats.parquet"
timestamp_field = "event_timestamp"

[[source]]
name = "missing_source"
path = "data/nope.parquet"
timestamp_field = "event_timestamp"

[[feature_view]]
name = "driver_hourly_stats"
entities = ["rider"]
source = "driver_stats"
ttl = "1 fortnight"
schema = [
    { name = "conv_rate", dtype = "int64" },
    { name = "not_a_column", dtype = "int64" },
]

[[feature_view]]
name = "driver_hourly_stats"
entities = ["driver"]
source = "driver_stats"
schema = [{ name = "acc_rate", dtype = "float32" }]

[[entity]]
name = "zone"
join_keys = [{ name = "lat", dtype = "float64" }]
"#;
    p.write("features/driver.toml", bad);
    let err = fails(p.run(&["apply"]));
    for needle in [
        "features/driver.toml:13:",
        "source[missing_source].path: unreadable source",
        "features/driver.toml:18:",
        "unknown entity \"rider\"",
        "ttl",
        "\"conv_rate\" is declared int64 but the column in data/driver_stats.parquet is Float32",
        "column \"not_a_column\" is not in data/driver_stats.parquet",
        "duplicate feature_view name \"driver_hourly_stats\"",
        "entity[zone].join_keys[0].dtype: join keys must be int32, int64 or string, not float64",
        "nothing was registered",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let after = json(p.run(&["registry", "log", "--output", "json"]))
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after);

    // JSON output lists the same errors for tools.
    let out = p.run(&["apply", "--output", "json"]);
    let errors: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        errors["errors"].as_array().map(Vec::len) >= Some(6),
        "{errors}"
    );

    // A TOML syntax error names the line.
    p.write(
        "features/driver.toml",
        "[[entity]]\nname = \"driver\"\njoin_keys = [\n",
    );
    let err = fails(p.run(&["plan"]));
    assert!(err.contains("features/driver.toml:"), "{err}");
}

#[test]
fn registry_on_postgres_through_the_same_commands() {
    let Ok(url) = std::env::var("KILN_TEST_POSTGRES_URL") else {
        eprintln!("KILN_TEST_POSTGRES_URL not set; skipping the PostgreSQL registry test");
        return;
    };
    let p = init(&[]);
    let project = unique("cli");
    let env = [
        ("KILN__REGISTRY__URL", url.as_str()),
        ("KILN__PROJECT", project.as_str()),
    ];
    ok(kiln_env(&p.dir, &["apply"], &env));
    let views = json(kiln_env(
        &p.dir,
        &["list", "views", "--output", "json"],
        &env,
    ));
    assert_eq!(views[0]["name"], "driver_hourly_stats");
    // The local SQLite registry was not touched.
    assert!(
        !p.dir.join(".kiln/registry.db").exists()
            || json(p.run(&["list", "views", "--output", "json"]))
                .as_array()
                .map(Vec::len)
                == Some(0)
    );
    ok(kiln_env(&p.dir, &["materialize", "--incremental"], &env));
    let log = json(kiln_env(
        &p.dir,
        &["registry", "log", "--output", "json"],
        &env,
    ));
    assert_eq!(
        log.as_array()
            .and_then(|l| l.last())
            .map(|e| e["event"]["type"].clone()),
        Some(serde_json::json!("materialized"))
    );
}
