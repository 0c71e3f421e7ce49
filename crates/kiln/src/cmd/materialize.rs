//! `kiln materialize`: latest feature values of a window into the online store.

use kiln_core::time::{format_timestamp, now_micros, parse_timestamp};
use kiln_features::materialize::{
    MaterializeJob, MaterializeOptions, MaterializeReport, materialize_view,
};
use kiln_registry::{Event, Registry, RegistryError};

use super::Ctx;
use crate::progress::Bars;
use crate::project::Project;

#[derive(clap::Args)]
pub struct MaterializeArgs {
    /// Window start (inclusive): RFC 3339, a date, or epoch seconds.
    #[arg(
        long,
        required_unless_present = "incremental",
        conflicts_with = "incremental"
    )]
    pub start: Option<String>,
    /// Window end (inclusive); default now.
    #[arg(long)]
    pub end: Option<String>,
    /// Start each view where its last materialization ended (or at end - ttl the first time).
    #[arg(long)]
    pub incremental: bool,
    /// Only these views (comma separated); default every online view.
    #[arg(long, value_delimiter = ',')]
    pub views: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: MaterializeArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let reports = materialize(&project, &a, ctx.quiet || ctx.json()).await?;
    if ctx.json() {
        return crate::output::json(&reports);
    }
    for r in &reports {
        println!(
            "{}@v{}: {} .. {}: {} rows in window, {} keys written, {} kept (newer in store), {:.2}s ({:.0} rows/s)",
            r.view,
            r.version,
            format_timestamp(r.start),
            format_timestamp(r.end),
            r.rows_in_window,
            r.written,
            r.kept_newer,
            r.seconds,
            r.rows_scanned as f64 / r.seconds.max(1e-9)
        );
    }
    if reports.is_empty() {
        println!("No online feature views to materialize.");
    }
    Ok(())
}

/// Materializes the selected views and records each window in the registry.
pub async fn materialize(
    project: &Project,
    a: &MaterializeArgs,
    quiet: bool,
) -> anyhow::Result<Vec<MaterializeReport>> {
    let registry = project.registry().await?;
    let state = registry.state().await?;
    let end = match &a.end {
        Some(t) => parse_timestamp(t)?,
        None => now_micros(),
    };
    let views: Vec<_> = if a.views.is_empty() {
        // Aggregated views are kept online by the streaming side (`kiln stream run`);
        // latest-row materialization would be wrong for them.
        state
            .live_views()
            .filter(|v| v.online && v.current().aggregations.is_empty())
            .collect()
    } else {
        a.views
            .iter()
            .map(|n| match state.view(n) {
                Ok(v) if !v.online => Err(anyhow::anyhow!("feature view {n:?} is not online (online = false in its definition); nothing to materialize")),
                Ok(v) if !v.current().aggregations.is_empty() => Err(anyhow::anyhow!("feature view {n:?} has windowed aggregations: `kiln stream run` keeps them in the online store from their events (and `kiln dataset build` computes them for training sets)")),
                Ok(v) => Ok(v),
                Err(e) => Err(e.into()),
            })
            .collect::<anyhow::Result<_>>()?
    };
    if project.config.online_store.kind == crate::config::OnlineStoreType::Memory {
        tracing::warn!(
            "the online store is `memory`: what this command writes is gone when it exits"
        );
    }
    let store = project.online_store().await?;
    let mut reports = Vec::new();
    for v in views {
        let view = v.current().clone();
        let start = if a.incremental {
            match v.materialized.get(&view.version) {
                Some(m) => m.watermark,
                None if view.ttl_seconds > 0 => end.saturating_sub(view.ttl_micros()),
                None => i64::MIN,
            }
        } else {
            // `required_unless_present` guarantees a start without --incremental.
            parse_timestamp(a.start.as_deref().unwrap_or_default())?
        };
        if start > end {
            anyhow::bail!(
                "{}: window start {} is after its end {}",
                view.name,
                format_timestamp(start),
                format_timestamp(end)
            );
        }
        let job = MaterializeJob { view, start, end };
        let (store2, dir, job2) = (store.clone(), project.dir.clone(), job.clone());
        let opts = MaterializeOptions {
            max_keys: project.config.online_store.write_batch(),
            ..MaterializeOptions::default()
        };
        let rt = tokio::runtime::Handle::current();
        let report = tokio::task::spawn_blocking(move || {
            materialize_view(&rt, &store2, &dir, &job2, &opts, &Bars::new(quiet))
        })
        .await??;
        record(&registry, &job, report.rows_in_window).await?;
        reports.push(report);
    }
    Ok(reports)
}

/// Appends the Materialized event, retrying if another writer appended meanwhile (the event
/// does not depend on what they wrote).
async fn record(registry: &Registry, job: &MaterializeJob, rows: u64) -> anyhow::Result<()> {
    let event = Event::Materialized {
        view: job.view.name.clone(),
        version: job.view.version,
        start: job.start,
        end: job.end,
        rows,
    };
    for _ in 0..5 {
        let last = registry.last_seq().await?;
        match registry.append(last, std::slice::from_ref(&event)).await {
            Ok(_) => return Ok(()),
            Err(RegistryError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "the registry kept changing; the data is in the online store but the window was not recorded — run again"
    )
}
