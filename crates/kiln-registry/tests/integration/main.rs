//! The registry against real databases: SQLite always, PostgreSQL when
//! `KILN_TEST_POSTGRES_URL` is set (`.ci/run` sets it to the local server).

use kiln_core::ValueType;
use kiln_core::spec::{EntitySpec, Field, Meta, SourceSpec, ViewVersion};
use kiln_registry::{Event, Registry, RegistryError, lineage};

fn backends() -> Vec<(String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}/registry.db", dir.path().display());
    let mut out = vec![(sqlite, Some(dir))];
    if let Ok(url) = std::env::var("KILN_TEST_POSTGRES_URL") {
        out.push((url, None));
    }
    out
}

fn unique_project(tag: &str) -> String {
    format!(
        "test_{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

fn source() -> SourceSpec {
    SourceSpec {
        name: "stats".into(),
        path: "data/stats.parquet".into(),
        timestamp_field: "event_timestamp".into(),
        created_timestamp_column: Some("created".into()),
        description: String::new(),
        tags: Default::default(),
    }
}

fn view(version: u32, ttl: u64) -> Event {
    Event::ViewVersionCreated {
        version: ViewVersion {
            name: "driver_stats".into(),
            version,
            entities: vec!["driver".into()],
            join_keys: vec![Field {
                name: "driver_id".into(),
                dtype: ValueType::Int64,
            }],
            source: source(),
            ttl_seconds: ttl,
            features: vec![Field {
                name: "conv_rate".into(),
                dtype: ValueType::Float32,
            }],
            aggregations: Vec::new(),
            created_at: 0,
        },
        online: true,
        meta: Meta::default(),
    }
}

#[tokio::test]
async fn append_replay_and_conflicts_on_every_backend() {
    for (url, _guard) in backends() {
        let project = unique_project("append");
        let reg = Registry::open(&url, &project).await.expect("opens");
        assert_eq!(reg.last_seq().await.expect("seq"), 0);
        let entity = Event::EntityApplied {
            spec: EntitySpec {
                name: "driver".into(),
                join_keys: vec![Field {
                    name: "driver_id".into(),
                    dtype: ValueType::Int64,
                }],
                description: "a driver".into(),
                tags: Default::default(),
            },
        };
        let seq = reg
            .append(
                0,
                &[
                    entity,
                    Event::SourceApplied { spec: source() },
                    view(1, 86_400),
                ],
            )
            .await
            .expect("first append");
        assert_eq!(seq, 3);

        // A writer that planned against an older log is refused, and nothing of it is written.
        let stale = reg.append(0, &[view(2, 3_600)]).await;
        assert!(
            matches!(
                stale,
                Err(RegistryError::Conflict {
                    expected: 0,
                    found: 3
                })
            ),
            "{stale:?}"
        );
        assert_eq!(reg.last_seq().await.expect("seq"), 3);

        reg.append(3, &[view(2, 3_600)])
            .await
            .expect("second append");
        let state = reg.state().await.expect("replays");
        assert_eq!(state.last_seq, 4);
        let v = state.view("driver_stats").expect("view");
        assert_eq!(v.versions.len(), 2);
        assert_eq!(v.current().ttl_seconds, 3_600);
        assert_eq!(
            state
                .view_version("driver_stats", Some(1))
                .expect("v1")
                .ttl_seconds,
            86_400
        );

        // A second handle on the same database sees the same state, and refresh catches up.
        let other = Registry::open(&url, &project).await.expect("reopens");
        let mut s2 = other.state().await.expect("replays");
        assert_eq!(s2.last_seq, 4);
        reg.append(
            4,
            &[Event::ViewDeleted {
                name: "driver_stats".into(),
            }],
        )
        .await
        .expect("delete");
        assert!(other.refresh(&mut s2).await.expect("refresh"));
        assert!(s2.view("driver_stats").is_err());
        assert!(s2.view_version("driver_stats", Some(2)).is_ok());

        // Projects sharing a database do not see each other.
        let stranger = Registry::open(&url, &unique_project("other"))
            .await
            .expect("opens");
        assert_eq!(stranger.last_seq().await.expect("seq"), 0);
        reg.close().await;
    }
}

#[tokio::test]
async fn lineage_follows_source_to_service() {
    for (url, _guard) in backends() {
        let reg = Registry::open(&url, &unique_project("lineage"))
            .await
            .expect("opens");
        let service = Event::ServiceApplied {
            spec: kiln_core::spec::FeatureServiceSpec {
                name: "ranker".into(),
                features: vec!["driver_stats:conv_rate".parse().expect("ref")],
                meta: Meta::default(),
            },
        };
        reg.append(
            0,
            &[
                Event::SourceApplied { spec: source() },
                view(1, 0),
                view(2, 60),
                service,
            ],
        )
        .await
        .expect("append");
        let state = reg.state().await.expect("state");
        let l = lineage(&state, "ranker").expect("lineage");
        let ids: Vec<String> = l.nodes.iter().map(|n| n.id()).collect();
        assert!(ids.contains(&"view:driver_stats@v2".to_string()), "{ids:?}");
        assert!(
            !ids.contains(&"view:driver_stats@v1".to_string()),
            "{ids:?}"
        );
        assert!(ids.contains(&"source:stats".to_string()), "{ids:?}");
        let l = lineage(&state, "stats").expect("lineage");
        assert_eq!(l.edges.len(), 3, "{:?}", l.edges);
        assert!(lineage(&state, "nope").is_err());
    }
}

#[tokio::test]
async fn concurrent_writers_get_conflicts_not_database_errors() {
    for (url, _guard) in backends() {
        let project = unique_project("race");
        let a = Registry::open(&url, &project).await.expect("opens");
        let b = Registry::open(&url, &project).await.expect("opens");
        for round in 0..10 {
            let last = a.last_seq().await.expect("seq");
            let ev = |n: &str| {
                [Event::EntityDeleted {
                    name: format!("{n}{round}"),
                }]
            };
            let (ea, eb) = (ev("a"), ev("b"));
            let (ra, rb) = tokio::join!(a.append(last, &ea), b.append(last, &eb));
            let ok = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
            for r in [&ra, &rb] {
                assert!(
                    r.is_ok() || matches!(r, Err(RegistryError::Conflict { .. })),
                    "{url}: {r:?}"
                );
            }
            assert!(ok <= 1, "{url}: both writers appended at #{last}");
            assert_eq!(a.last_seq().await.expect("seq"), last + ok as i64);
        }
    }
}
