//! `kiln dataset build`: a point-in-time correct training set.

use std::path::PathBuf;
use std::time::Instant;

use kiln_features::pit::{DatasetOptions, FeatureInput, ViewRequest, build_dataset};
use kiln_registry::State;

use super::Ctx;
use crate::progress::Bars;

#[derive(clap::Subcommand)]
pub enum DatasetCmd {
    /// Join feature values onto entity rows as of each row's timestamp.
    Build(BuildArgs),
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Parquet file of entity rows: join key columns and an event_timestamp column.
    #[arg(long)]
    pub entities: PathBuf,
    /// Take the features of this feature service.
    #[arg(
        long,
        conflicts_with = "features",
        required_unless_present = "features"
    )]
    pub service: Option<String>,
    /// Features as view:feature, comma separated; view@vN:feature reads an older version.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Where to write the training set (Parquet).
    #[arg(long)]
    pub out: PathBuf,
    /// Only use feature rows created at or before each entity row's timestamp.
    #[arg(long)]
    pub created_cutoff: bool,
    /// Name feature columns view__feature.
    #[arg(long)]
    pub full_feature_names: bool,
    /// The entity rows' timestamp column (default: event_timestamp).
    #[arg(long)]
    pub timestamp_column: Option<String>,
}

/// Resolves `view[@vN]:feature` references into per-view requests (each view version is read
/// once), and the output position of each feature so that columns come out in request order.
pub fn requests(state: &State, refs: &[String]) -> anyhow::Result<(Vec<ViewRequest>, Vec<usize>)> {
    let mut out: Vec<ViewRequest> = Vec::new();
    let mut slots: Vec<Vec<usize>> = Vec::new();
    for (pos, r) in refs.iter().enumerate() {
        let (view_part, feature) = r.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("feature {r:?} must be written view:feature (or view@vN:feature)")
        })?;
        let (view, version) = match view_part.split_once('@') {
            Some((v, ver)) => {
                let n = ver.trim_start_matches('v').parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("feature {r:?}: version {ver:?} is not a number like v2")
                })?;
                (v, Some(n))
            }
            None => (view_part, None),
        };
        let vv = state.view_version(view, version)?;
        if vv.feature(feature).is_none() {
            anyhow::bail!(
                "feature view {view}@v{} has no feature {feature:?} (it has: {})",
                vv.version,
                vv.features
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        match out
            .iter()
            .position(|q| q.view.name == vv.name && q.view.version == vv.version)
        {
            Some(i) => {
                out[i].features.push(feature.to_string());
                slots[i].push(pos);
            }
            None => {
                out.push(ViewRequest {
                    view: vv.clone(),
                    features: vec![feature.to_string()],
                });
                slots.push(vec![pos]);
            }
        }
    }
    Ok((out, slots.concat()))
}

pub async fn run(ctx: &Ctx, cmd: DatasetCmd) -> anyhow::Result<()> {
    let DatasetCmd::Build(a) = cmd;
    let project = ctx.project()?;
    let state = project.registry().await?.state().await?;
    let refs: Vec<String> = match &a.service {
        Some(s) => state
            .service(s)?
            .features
            .iter()
            .map(|f| f.to_string())
            .collect(),
        None => a.features.clone(),
    };
    let (reqs, feature_order) = requests(&state, &refs)?;
    if a.created_cutoff {
        for r in reqs
            .iter()
            .filter(|r| r.view.source.created_timestamp_column.is_none())
        {
            tracing::warn!(view = %r.view.name, "--created-cutoff has no effect: the source {} has no created timestamp column", r.view.source.name);
        }
    }
    let opts = DatasetOptions {
        full_feature_names: a.full_feature_names,
        created_cutoff: a.created_cutoff,
        timestamp_column: a.timestamp_column.clone(),
        memory_budget: (project.config.offline_store.memory_budget_mb as usize) << 20,
        spill_dir: project.spill_dir(),
        feature_order,
        ..DatasetOptions::default()
    };
    let views = reqs
        .into_iter()
        .map(|r| {
            let path = project.dir.join(&r.view.source.path);
            (r, FeatureInput::Parquet(path))
        })
        .collect();
    let started = Instant::now();
    let quiet = ctx.quiet || ctx.json();
    let (entities, out) = (a.entities.clone(), a.out.clone());
    let stats = tokio::task::spawn_blocking(move || {
        build_dataset(&entities, views, &out, &opts, &Bars::new(quiet))
    })
    .await??;
    let secs = started.elapsed().as_secs_f64();
    if ctx.json() {
        return crate::output::json(
            &serde_json::json!({ "out": a.out, "seconds": secs, "stats": stats }),
        );
    }
    println!(
        "Wrote {} rows to {} in {:.2}s ({} feature rows read; matched per view: {:?}; {} partition(s){})",
        stats.entity_rows,
        a.out.display(),
        secs,
        stats.feature_rows.iter().sum::<u64>(),
        stats.matched,
        stats.partitions.iter().max().copied().unwrap_or(0),
        if stats.spilled_bytes > 0 {
            format!(", spilled {} MiB", stats.spilled_bytes >> 20)
        } else {
            String::new()
        }
    );
    Ok(())
}
