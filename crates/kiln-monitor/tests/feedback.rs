//! Labels join to the predictions they judge (by request id, or by entity and time), corrected
//! labels replace earlier ones, unknown ones are reported, and performance follows the labels.

use std::sync::Arc;
use std::time::Duration;

use kiln_monitor::bus::EventBus;
use kiln_monitor::events::{Event, PredictionEvent};
use kiln_monitor::feedback::{Feedback, FeedbackConfig, Label, LabelKey, entity_key};
use kiln_monitor::performance::Task;

fn predict(bus: &EventBus, id: &str, ts: i64, drivers: &[i64], scores: &[f64]) {
    bus.publish(Event::Prediction(Arc::new(PredictionEvent {
        request_id: id.into(),
        model: "ranker".into(),
        version: 3,
        protocol: "predict",
        ts_micros: ts,
        inputs: Arc::from(vec!["trips".to_string()]),
        objective: Arc::from("binary:logistic"),
        features: vec![1.0; drivers.len()],
        outputs: scores.to_vec(),
        n_outputs: 1,
        entities: Some(
            drivers
                .iter()
                .map(|d| entity_key([("driver_id", d.to_string())]))
                .collect(),
        ),
        latency_us: 10,
    })));
}

fn by_request(id: &str, row: usize, label: f64) -> Label {
    Label {
        model: "ranker".into(),
        key: LabelKey::Request {
            request_id: id.into(),
            row,
        },
        label,
    }
}

#[tokio::test]
async fn labels_join_and_performance_follows() {
    let bus = EventBus::new();
    let mut log = bus.subscribe("test", 100, |e| matches!(e, Event::Feedback(_)));
    let feedback = Feedback::start(&bus, FeedbackConfig::default());
    predict(&bus, "r1", 1_000, &[1001, 1002], &[0.9, 0.2]);
    predict(&bus, "r2", 2_000, &[1001], &[0.4]);

    // Posted at once: the join waits for the indexer instead of failing.
    let joined = feedback
        .label(&by_request("r1", 1, 0.0), 5_000)
        .await
        .expect("r1/1");
    assert_eq!((joined.version, joined.row, joined.prediction), (3, 1, 0.2));
    let by_entity = |at| Label {
        model: "ranker".into(),
        key: LabelKey::Entity {
            entity: entity_key([("driver_id", "1001".to_string())]),
            at,
        },
        label: 1.0,
    };
    // The prediction in effect at 1500 is r1's row 0; the latest is r2's.
    let j = feedback
        .label(&by_entity(Some(1_500)), 5_000)
        .await
        .expect("entity");
    assert_eq!((j.request_id.as_str(), j.row), ("r1", 0));
    let j = feedback
        .label(&by_entity(None), 5_000)
        .await
        .expect("entity");
    assert_eq!(j.request_id, "r2");

    let err = feedback
        .label(&by_request("nope", 0, 1.0), 5_000)
        .await
        .expect_err("unknown id");
    assert!(err.contains("\"nope\""), "{err}");
    assert!(
        feedback.label(&by_entity(Some(10)), 5_000).await.is_err(),
        "before any prediction"
    );
    assert!(
        feedback
            .label(&by_request("r1", 5, 1.0), 5_000)
            .await
            .is_err(),
        "no row 5"
    );

    let perf = feedback.performance("ranker", None, Duration::from_secs(60), 5_000);
    assert_eq!(perf.len(), 1);
    let p = &perf[0];
    assert_eq!(
        (p.version, p.task, p.performance.count),
        (3, Task::Binary, 3)
    );
    // Labels 0 (0.2), 1 (0.9), 1 (0.4): right, right, wrong at 0.5.
    assert_eq!(p.performance.accuracy, Some(2.0 / 3.0));
    assert_eq!(p.performance.auc, Some(1.0));

    // A corrected label replaces the first one.
    feedback
        .label(&by_request("r2", 0, 0.0), 6_000)
        .await
        .expect("relabel");
    let p = &feedback.performance("ranker", Some(3), Duration::from_secs(60), 6_000)[0];
    assert_eq!(p.performance.count, 3);
    assert_eq!(p.performance.accuracy, Some(1.0));
    assert_eq!(
        feedback
            .counters
            .relabelled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // Labels older than the window are left out.
    let p = feedback.performance("ranker", None, Duration::from_micros(500), 6_000);
    assert_eq!(p[0].performance.count, 1);

    // Every joined label was published for the feedback log.
    let mut published = 0;
    while let Ok(Event::Feedback(_)) = log.rx.try_recv() {
        published += 1;
    }
    assert_eq!(published, 4);
    assert!(
        feedback
            .label(
                &Label {
                    label: f64::NAN,
                    ..by_request("r1", 0, 0.0)
                },
                1
            )
            .await
            .is_err()
    );
}
