//! `kiln dataset build` from the command line, old view versions included.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;

use crate::common::*;

#[test]
fn builds_training_sets_by_service_features_and_old_versions() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let entities = p.dir.join("data/driver_entities.parquet");
    let out = p.dir.join("train.parquet");
    let r = build_dataset(&p, &entities, &["--service", "driver_activity"], &out);
    assert_eq!(r["stats"]["entity_rows"], 1_000, "{r}");
    let b = read_parquet(&out);
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "event_timestamp",
            "conv_rate",
            "acc_rate",
            "avg_daily_trips"
        ]
    );
    // Entity rows keep their order.
    let e = read_parquet(&entities);
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>(),
        e.column(0).as_primitive::<Int64Type>()
    );
    let matched = r["stats"]["matched"][0].as_u64().expect("matched");
    assert!(matched > 500 && matched < 1_000, "{r}");

    // Change the ttl (v2), then build from v1 explicitly with full names.
    let defs = p.read("features/driver.toml");
    p.write(
        "features/driver.toml",
        &defs.replace("ttl = \"1d\"", "ttl = \"1h\""),
    );
    ok(p.run(&["apply"]));
    let out2 = p.dir.join("train_v1.parquet");
    let r1 = build_dataset(
        &p,
        &entities,
        &[
            "--features",
            "driver_hourly_stats@v1:conv_rate",
            "--full-feature-names",
        ],
        &out2,
    );
    assert_eq!(
        r1["stats"]["matched"][0], r["stats"]["matched"][0],
        "v1 keeps the 1d ttl"
    );
    assert_eq!(
        read_parquet(&out2).schema().field(2).name(),
        "driver_hourly_stats__conv_rate"
    );
    let out3 = p.dir.join("train_v2.parquet");
    let r2 = build_dataset(
        &p,
        &entities,
        &["--features", "driver_hourly_stats:conv_rate"],
        &out3,
    );
    assert!(
        r2["stats"]["matched"][0].as_u64() < r1["stats"]["matched"][0].as_u64(),
        "a 1h ttl matches fewer rows: {r2}"
    );

    let e = fails(p.run(&[
        "dataset",
        "build",
        "--entities",
        entities.to_str().expect("path"),
        "--features",
        "driver_hourly_stats@v9:conv_rate",
        "--out",
        "x.parquet",
    ]));
    assert!(
        e.contains("driver_hourly_stats@v9") && e.contains("versions 1 to 2"),
        "{e}"
    );
    let e = fails(p.run(&[
        "dataset",
        "build",
        "--entities",
        "missing.parquet",
        "--service",
        "driver_activity",
        "--out",
        "x.parquet",
    ]));
    assert!(e.contains("missing.parquet"), "{e}");
}
