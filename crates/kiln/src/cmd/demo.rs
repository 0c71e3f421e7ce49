//! `kiln demo`: the main job end to end on embedded defaults, narrated: a temporary project is
//! created, applied, materialized and served, then features are looked up over HTTP and a
//! point-in-time training set is built. Nothing outside the temporary directory is touched.

use std::path::PathBuf;
use std::time::Instant;

use kiln_serve::ServeState;
use serde_json::json;

use super::{Ctx, apply, dataset, materialize, models};
use crate::http::Conn;
use crate::output::Format;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the demo project in this directory instead of a temporary one.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Drivers in the example data.
    #[arg(long, default_value_t = 1_000)]
    pub drivers: u64,
}

fn step(n: u32, what: &str) {
    println!("\n\x1b[1m{n}. {what}\x1b[0m");
}

pub async fn run(_ctx: &Ctx, a: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &a.keep {
        Some(d) => d.clone(),
        None => {
            temp = tempdir()?;
            temp.0.clone()
        }
    };
    let project_ctx = Ctx {
        project: Some(dir.clone()),
        output: Format::Table,
        quiet: true,
        env: Vec::new(),
    };
    println!(
        "Kiln demo: a feature store on embedded defaults (SQLite registry, redb online store, Parquet offline store), end to end."
    );

    step(1, &format!("kiln init {}", dir.display()));
    let t = Instant::now();
    let created = super::init::create_example(&dir, a.drivers, 48)?;
    println!(
        "   Example project: entity `driver`, source data/driver_stats.parquet ({} drivers, up to {} hourly rows each, {} rows; every 50th driver stopped reporting {} hours ago), view `driver_hourly_stats` (ttl 1d), service `driver_activity`. ({:.0} ms)",
        created.stats.drivers,
        created.stats.hours,
        created.rows,
        created.stats.stale_hours,
        ms(t)
    );

    step(
        2,
        "kiln apply   — validate the definitions against the data, register them as events",
    );
    let t = Instant::now();
    apply::run(&project_ctx, true).await?;
    println!("   ({:.0} ms)", ms(t));

    let start = kiln_core::time::format_timestamp(created.stats.first_hour());
    step(
        3,
        &format!(
            "kiln materialize --start {start}   — latest row per driver in the window into the online store"
        ),
    );
    let t = Instant::now();
    let project = project_ctx.project()?;
    let args = materialize::MaterializeArgs {
        start: Some(start),
        end: None,
        incremental: false,
        views: Vec::new(),
    };
    for r in materialize::materialize(&project, &args, true).await? {
        println!(
            "   {}@v{}: {} rows in the window -> {} drivers written ({:.0} ms)",
            r.view,
            r.version,
            r.rows_in_window,
            r.written,
            ms(t)
        );
    }

    step(
        4,
        "kiln models register ranker --feature-service driver_activity && kiln models promote ranker --version 1",
    );
    let t = Instant::now();
    let model_file = dir.join("models/driver_ranker.json");
    std::fs::create_dir_all(dir.join("models"))?;
    // A small XGBoost model trained on the example's three service features (the fixture
    // written by crates/kiln-models/tests/fixtures/driver_model.py).
    std::fs::write(
        &model_file,
        include_bytes!("../../../kiln-models/tests/fixtures/driver_ranker.json"),
    )?;
    models::run(
        &project_ctx,
        models::ModelsCmd::Register(models::RegisterArgs {
            name: "ranker".into(),
            path: model_file,
            format: "xgboost".into(),
            feature_service: Some("driver_activity".into()),
            features: Vec::new(),
            metrics: vec!["auc=0.93".into()],
            description: "driver ranking".into(),
            on_missing: "missing".into(),
            reference: None,
        }),
    )
    .await?;
    models::run(
        &project_ctx,
        models::ModelsCmd::Promote {
            name: "ranker".into(),
            version: 1,
            stage: "production".into(),
        },
    )
    .await?;
    println!(
        "   XGBoost model checked against the feature service's inputs, stored with its SHA-256, promoted. ({:.0} ms)",
        ms(t)
    );

    step(
        5,
        "kiln serve   — the Feast-compatible HTTP API and the Open Inference Protocol",
    );
    let registry = project.registry().await?;
    let state = ServeState::new(
        registry.state().await?,
        Some(registry),
        project.online_store().await?,
        project.serve_options()?,
    );
    state.preload_models().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kiln_serve::serve(
        listener,
        state,
        std::time::Duration::from_secs(2),
        async {
            let _ = stop_rx.await;
        },
    ));
    println!("   Listening on http://{addr}");

    step(6, "Online look-ups over HTTP (POST /get-online-features)");
    let mut conn = Conn::open(&addr.to_string()).await?;
    let lookups = [
        (
            "by feature service: two drivers, an unknown one, and one that stopped reporting 30 hours ago (older than the 1d ttl: EXPIRED, sent as Feast's OUTSIDE_MAX_AGE)",
            json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001, 1002, 99999, 1050]}}),
        ),
        (
            "by feature names, full feature names",
            json!({"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_rating"], "entities": {"driver_id": [1003]}, "full_feature_names": true}),
        ),
        (
            "a mistake: a feature that does not exist",
            json!({"features": ["driver_hourly_stats:conv_rat"], "entities": {"driver_id": [1001]}}),
        ),
    ];
    for (what, body) in lookups {
        let t = Instant::now();
        let (status, resp) = conn.post_json("/get-online-features", &body).await?;
        println!("   {what}:\n   -> {body}");
        println!("   <- {status} in {:.2} ms", ms(t));
        print_response(&resp);
    }

    step(
        7,
        "Scoring: the Open Inference Protocol, and predict by entity",
    );
    let infer = json!({"id": "demo", "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": [[0.9, 0.8, 700], [0.1, 0.2, 30]]}]});
    let t = Instant::now();
    let (status, resp) = conn.post_json("/v2/models/ranker/infer", &infer).await?;
    println!(
        "   POST /v2/models/ranker/infer (what tritonclient and KServe tooling send)\n   -> {infer}\n   <- {status} in {:.2} ms: {}",
        ms(t),
        resp["outputs"]
    );
    let by_entity = json!({"entities": {"driver_id": [1001, 99999, 1050]}});
    let t = Instant::now();
    let (status, resp) = conn
        .post_json("/v1/models/ranker/predict", &by_entity)
        .await?;
    println!(
        "   POST /v1/models/ranker/predict: features from the online store, then the model\n   -> {by_entity}\n   <- {status} in {:.2} ms: scores {} ; missing inputs (policy {}): {}",
        ms(t),
        resp["scores"],
        resp["on_missing"],
        resp["missing"]
    );

    step(
        8,
        "kiln dataset build   — a point-in-time correct training set",
    );
    let out = dir.join("training_set.parquet");
    let t = Instant::now();
    dataset::run(
        &project_ctx,
        dataset::DatasetCmd::Build(dataset::BuildArgs {
            entities: dir.join("data/driver_entities.parquet"),
            service: Some("driver_activity".into()),
            features: Vec::new(),
            out: out.clone(),
            created_cutoff: false,
            full_feature_names: false,
            timestamp_column: None,
        }),
    )
    .await?;
    println!(
        "   ({:.0} ms) First rows (each row gets the values as of its own timestamp; rows before the data or for unknown drivers get nulls):",
        ms(t)
    );
    print_parquet_head(&out, 6)?;

    step(9, "Shutting down gracefully");
    let _ = stop_tx.send(());
    server.await??;
    match &a.keep {
        Some(d) => println!(
            "\nDone. The project is kept in {}: try `kiln -p {} list views`, `kiln -p {} lineage driver_activity`, `kiln -p {} serve`.",
            d.display(),
            d.display(),
            d.display(),
            d.display()
        ),
        None => println!(
            "\nDone. Keep the project with `kiln demo --keep DIR` to explore it with the other commands."
        ),
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn print_response(resp: &serde_json::Value) {
    let (Some(names), Some(results)) = (
        resp["metadata"]["feature_names"].as_array(),
        resp["results"].as_array(),
    ) else {
        // Errors come as Feast does them: a JSON string holding {module, class, message}.
        let detail: Option<serde_json::Value> =
            resp.as_str().and_then(|s| serde_json::from_str(s).ok());
        match detail {
            Some(d) => println!(
                "      {}: {}",
                d["class"].as_str().unwrap_or("error"),
                d["message"].as_str().unwrap_or("")
            ),
            None => println!("      {resp}"),
        }
        return;
    };
    for (name, col) in names.iter().zip(results) {
        let vals: Vec<String> = col["values"]
            .as_array()
            .map(|v| {
                v.iter()
                    .zip(col["statuses"].as_array().into_iter().flatten())
                    .map(|(v, s)| format!("{v} ({})", s.as_str().unwrap_or("?")))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "      {:<32} {}",
            name.as_str().unwrap_or("?"),
            vals.join(", ")
        );
    }
}

fn print_parquet_head(path: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?
        .with_batch_size(n)
        .build()?;
    if let Some(batch) = reader.next() {
        let batch = batch?;
        let header: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let rows = (0..batch.num_rows())
            .map(|r| {
                batch
                    .columns()
                    .iter()
                    .map(|c| match kiln_features::value_at(c, r) {
                        kiln_core::Value::Null => String::new(),
                        v => v.to_string(),
                    })
                    .collect()
            })
            .collect();
        println!("{}", crate::output::table(&header, rows));
    }
    Ok(())
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let d = std::env::temp_dir().join(format!(
        "kiln-demo-{}-{}",
        std::process::id(),
        kiln_core::time::now_micros()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(TempDir(d))
}
