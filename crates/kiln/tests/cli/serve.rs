//! `kiln serve`: the Feast-compatible HTTP API from a real process, materialization and apply
//! from other processes while it serves, and graceful shutdown on SIGTERM.

use serde_json::json;

use crate::common::*;

#[test]
fn serves_feast_api_and_sees_other_processes_changes() {
    let p = init(&[]);
    ok(p.run(&["apply"]));
    let server = Server::start(&p.dir, &[("KILN__SERVE__REGISTRY_REFRESH", "1s")]);
    assert_eq!(http(&server.addr, "GET", "/health", None).0, 200);
    let (status, ready) = http(&server.addr, "GET", "/ready", None);
    assert_eq!(status, 200, "{ready}");

    // Nothing materialized yet: NOT_FOUND, with entity columns echoed first.
    let (status, body) = post(
        &server.addr,
        json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate", "acc_rate", "avg_daily_trips"])
    );
    assert_eq!(body["results"][0]["values"], json!([1001]));
    assert_eq!(
        body["results"][0]["event_timestamps"],
        json!(["1970-01-01T00:00:00Z"])
    );
    assert_eq!(body["results"][1]["statuses"], json!(["NOT_FOUND"]));

    // Materialize from another process while the server holds the store open.
    ok(p.run(&["materialize", "--start", "2000-01-01"]));
    let (_, body) = post(
        &server.addr,
        json!({
            "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
            "entities": {"driver_id": ["1001", 1050, 7]},
            "full_feature_names": true,
        }),
    );
    assert_eq!(
        body["metadata"]["feature_names"],
        json!([
            "driver_id",
            "driver_hourly_stats__conv_rate",
            "driver_hourly_stats__avg_daily_trips"
        ])
    );
    assert_eq!(body["results"][0]["values"], json!([1001, 1050, 7]));
    assert_eq!(
        body["results"][1]["statuses"],
        json!(["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );
    assert!(body["results"][2]["values"][0].is_i64(), "{body}");
    let ts = body["results"][1]["event_timestamps"][0]
        .as_str()
        .expect("timestamp");
    assert!(ts.ends_with(":00:00Z") && !ts.starts_with("1970"), "{ts}");

    // The same values as the CLI reads.
    let cli = json(p.run(&[
        "features",
        "get",
        "--features",
        "driver_hourly_stats:conv_rate,driver_hourly_stats:avg_daily_trips",
        "--entity",
        "driver_id=1001,1050,7",
        "--full-feature-names",
        "--output",
        "json",
    ]));
    assert_eq!(cli["results"], body["results"]);

    // Errors name what was wrong, in Feast's form (a JSON string holding module/class/message).
    for (req, code, class, needle) in [
        (
            json!({"features": ["nope:x"], "entities": {"driver_id": [1]}}),
            404,
            "FeatureViewNotFoundException",
            "\"nope\"",
        ),
        (
            json!({"feature_service": "nope", "entities": {"driver_id": [1]}}),
            404,
            "FeatureServiceNotFoundException",
            "\"nope\"",
        ),
        (
            json!({"features": ["driver_hourly_stats:x"], "entities": {"driver_id": [1]}}),
            404,
            "FeastObjectNotFoundException",
            "no feature \"x\"",
        ),
        (
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"rider_id": [1]}}),
            400,
            "FeastError",
            "\"rider_id\"",
        ),
        (
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": ["abc"]}}),
            400,
            "FeastError",
            "entities.driver_id[0]",
        ),
        (
            json!({"features": ["conv_rate"], "entities": {"driver_id": [1]}}),
            400,
            "FeastError",
            "view:feature",
        ),
        (
            json!({"features": ["driver_hourly_stats:conv_rate"]}),
            400,
            "FeastError",
            "entities",
        ),
    ] {
        let (status, body) = post(&server.addr, req.clone());
        assert_eq!(status, code, "{req} -> {body}");
        let detail: serde_json::Value =
            serde_json::from_str(body.as_str().expect("a JSON string")).expect("detail JSON");
        assert_eq!(detail["class"], class, "{req}");
        assert_eq!(detail["module"], "feast.errors");
        assert!(
            detail["message"]
                .as_str()
                .expect("message")
                .contains(needle),
            "{req} -> {detail}"
        );
    }

    // `kiln apply` from another process is picked up without a restart.
    let defs = p.read("features/driver.toml");
    p.write(
        "features/driver.toml",
        &defs.replace(
            "\"driver_hourly_stats:avg_daily_trips\",\n]",
            "\"driver_hourly_stats:avg_daily_trips\",\n    \"driver_hourly_stats:avg_rating\",\n]",
        ),
    );
    ok(p.run(&["apply"]));
    let mut names = json!(null);
    for _ in 0..50 {
        let (_, body) = post(
            &server.addr,
            json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001]}}),
        );
        names = body["metadata"]["feature_names"].clone();
        if names.as_array().map(Vec::len) == Some(5) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(names.as_array().map(Vec::len), Some(5), "{names}");

    assert!(server.stop(), "kiln serve did not exit cleanly on SIGTERM");
}
