//! `kiln deploy`: route a model's traffic between its versions (all to one, a weighted split,
//! sticky by caller, shadow copies) and see where it stands. A deployment is registry data:
//! every change is an event (with who or what decided, and why), and every `kiln serve`
//! replica routes by it from its next registry refresh.

use anyhow::Context;
use kiln_core::deploy::{Arm, Canary, Deployment, FULL, Gates, Sticky, parse_percent, percent};
use kiln_core::spec::Stage;
use kiln_core::time::{format_duration, format_timestamp};
use kiln_registry::{Event, ModelState, Registry, State};
use serde::Serialize;

use super::Ctx;
use crate::output::{json, table};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
    #[command(subcommand)]
    cmd: Option<DeployCmd>,
    #[command(flatten)]
    set: SetArgs,
}

#[derive(clap::Subcommand)]
enum DeployCmd {
    /// Where a model's traffic goes now, and every routing change so far.
    Status { model: String },
    /// End a model's deployment: its production version (else its latest) takes all traffic.
    Clear {
        model: String,
        /// Why (recorded with the event).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(clap::Args)]
struct SetArgs {
    /// The model whose traffic to route.
    #[arg(required = true)]
    model: Option<String>,
    /// All traffic to this version.
    #[arg(long, conflicts_with = "split")]
    version: Option<u32>,
    /// A weighted split between versions, e.g. `1=90,2=10` (percentages with up to two
    /// decimals, adding up to 100).
    #[arg(long)]
    split: Option<String>,
    /// Keep each caller on one version: `entity` (predict-by-entity's entity keys; other
    /// requests the x-kiln-route-key header), `header:NAME`, or `none`. Default: as deployed.
    #[arg(long)]
    sticky: Option<String>,
    /// Versions every routed request is mirrored to, their answers discarded, e.g. `3` or
    /// `3,4`; `none` for none. Default: as deployed.
    #[arg(long)]
    shadow: Option<String>,
    /// Start a canary of this version against the version answering now (or --baseline): its
    /// share walks up --steps, each held for --bake; `kiln serve` rolls it back as soon as it is
    /// worse than the baseline, and promotes it to production after the last step.
    #[arg(long, conflicts_with_all = ["version", "split"])]
    canary: Option<u32>,
    /// The version the canary is compared with (default: the one answering now).
    #[arg(long, requires = "canary")]
    baseline: Option<u32>,
    /// The canary's share at each step, in percent, rising (100 is the promotion).
    #[arg(long, default_value = "5,25,50")]
    steps: String,
    /// How long each step runs before it may advance.
    #[arg(long, default_value = "5m")]
    bake: String,
    /// Roll back when the canary's error rate is higher by more than this many percentage
    /// points (default 1).
    #[arg(long)]
    max_error_increase: Option<f64>,
    /// Roll back when the canary's p99 latency is more than this many times the baseline's
    /// (default 1.5).
    #[arg(long)]
    max_latency_ratio: Option<f64>,
    /// Roll back when the Kolmogorov-Smirnov distance between the canary's predictions and
    /// the baseline's is above this (0 to 1, default 0.25).
    #[arg(long)]
    max_prediction_shift: Option<f64>,
    /// Requests each version needs in a step before it is judged (default 50).
    #[arg(long)]
    min_requests: Option<u64>,
    /// Roll back when, on the labels posted during a step, the canary's accuracy is lower by
    /// more than this many points (a regressor: its RMSE higher by more than this many
    /// percent); default 2.
    #[arg(long)]
    max_accuracy_drop: Option<f64>,
    /// Labels each version needs in a step before its quality is judged (default 50).
    #[arg(long)]
    min_labels: Option<u64>,
    /// Why (recorded with the event).
    #[arg(long)]
    reason: Option<String>,
}

pub async fn run(ctx: &Ctx, a: DeployArgs) -> anyhow::Result<()> {
    let registry = ctx.project()?.registry().await?;
    let state = registry.state().await?;
    match a.cmd {
        Some(DeployCmd::Status { model }) => status(ctx, &registry, &state, &model).await,
        Some(DeployCmd::Clear { model, reason }) => {
            let m = state.model(&model)?;
            if m.deployment.is_none() {
                anyhow::bail!("{model} has no deployment to clear");
            }
            record(ctx, &registry, &state, m, None, reason).await
        }
        None => {
            let s = a.set;
            let name = s.model.as_deref().context("the model to deploy")?;
            let m = state.model(name)?;
            let d = deployment(m, &s)?;
            if m.deployment.as_ref() == Some(&d) {
                anyhow::bail!("{name} is already deployed so: {}", describe(&d));
            }
            record(ctx, &registry, &state, m, Some(d), s.reason).await
        }
    }
}

/// The deployment the arguments ask for; what they leave out stays as deployed (the arms
/// default to the version answering now).
fn deployment(m: &ModelState, s: &SetArgs) -> anyhow::Result<Deployment> {
    let current = m.deployment.clone();
    let canary = s.canary.map(|v| canary(m, v, s)).transpose()?;
    if let (None, Some(c)) = (&canary, current.as_ref().and_then(|d| d.canary.as_ref())) {
        anyhow::bail!(
            "{} has a canary in progress ({}); end it first with `kiln deploy clear {}` or deploy a new canary",
            m.name,
            describe_canary(c),
            m.name
        );
    }
    let arms = match (&canary, &s.version, &s.split) {
        (Some(c), _, _) => c.arms(),
        (None, Some(v), _) => vec![Arm {
            version: *v,
            weight: FULL,
        }],
        (None, None, Some(split)) => parse_split(split)?,
        (None, None, None) => match &current {
            Some(d) => d.arms.clone(),
            None => vec![Arm {
                version: answering(m)?,
                weight: FULL,
            }],
        },
    };
    let sticky = match s.sticky.as_deref() {
        None => current.as_ref().and_then(|d| d.sticky.clone()),
        Some("none") => None,
        Some(text) => Some(
            text.parse::<Sticky>()
                .map_err(|e| anyhow::anyhow!("--sticky: {e}"))?,
        ),
    };
    let shadow = match s.shadow.as_deref() {
        None => current.map(|d| d.shadow).unwrap_or_default(),
        Some("none") => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|v| version_number(v).with_context(|| format!("--shadow: {v:?} is not a version")))
            .collect::<anyhow::Result<_>>()?,
    };
    let d = Deployment {
        arms,
        sticky,
        shadow,
        canary,
    };
    m.check_deployment(&d).map_err(|e| anyhow::anyhow!(e))?;
    Ok(d)
}

/// The canary the arguments describe, at its first step.
fn canary(m: &ModelState, version: u32, s: &SetArgs) -> anyhow::Result<Canary> {
    let baseline = match (s.baseline, &m.deployment) {
        (Some(b), _) => b,
        // The heaviest arm of the current deployment (a canary's baseline stays the baseline).
        (None, Some(d)) => match &d.canary {
            Some(c) => c.baseline,
            None => d
                .arms
                .iter()
                .max_by_key(|a| a.weight)
                .map_or(0, |a| a.version),
        },
        (None, None) => answering(m)?,
    };
    let mut steps = s
        .steps
        .split(',')
        .map(|p| parse_percent(p).map_err(|e| anyhow::anyhow!("--steps: {e}")))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    if steps.last() == Some(&FULL) {
        steps.pop();
    }
    let bake_seconds =
        kiln_core::time::parse_duration(&s.bake).map_err(|e| anyhow::anyhow!("--bake: {e}"))?;
    let defaults = Gates::default();
    Ok(Canary {
        version,
        baseline,
        steps,
        step: 0,
        bake_seconds,
        gates: Gates {
            max_error_increase: s
                .max_error_increase
                .map_or(defaults.max_error_increase, |p| p / 100.0),
            max_latency_ratio: s.max_latency_ratio.unwrap_or(defaults.max_latency_ratio),
            max_prediction_shift: s
                .max_prediction_shift
                .unwrap_or(defaults.max_prediction_shift),
            min_requests: s.min_requests.unwrap_or(defaults.min_requests),
            max_accuracy_drop: s
                .max_accuracy_drop
                .map_or(defaults.max_accuracy_drop, |p| p / 100.0),
            min_labels: s.min_labels.unwrap_or(defaults.min_labels),
        },
    })
}

fn describe_canary(c: &Canary) -> String {
    let steps: Vec<String> = c
        .steps
        .iter()
        .map(|s| format!("{}%", percent(*s)))
        .collect();
    format!(
        "canary v{} vs v{}: step {} of {} ({}), {} bake each",
        c.version,
        c.baseline,
        c.step + 1,
        c.steps.len(),
        steps.join(" -> "),
        format_duration(c.bake_seconds)
    )
}

fn version_number(text: &str) -> Option<u32> {
    let t = text.trim();
    t.strip_prefix('v').unwrap_or(t).parse().ok()
}

/// `1=90,2=10` (or `v1=90%,v2=10%`) as arms.
fn parse_split(text: &str) -> anyhow::Result<Vec<Arm>> {
    text.split(',')
        .map(|part| {
            let (v, p) = part.split_once('=').with_context(|| {
                format!("--split: {part:?} is not VERSION=PERCENT (e.g. 1=90,2=10)")
            })?;
            Ok(Arm {
                version: version_number(v)
                    .with_context(|| format!("--split: {v:?} is not a version"))?,
                weight: parse_percent(p).map_err(|e| anyhow::anyhow!("--split: {e}"))?,
            })
        })
        .collect()
}

/// The version a model without a deployment answers with: production, else the latest that
/// is not archived.
fn answering(m: &ModelState) -> anyhow::Result<u32> {
    m.production()
        .or_else(|| m.versions.iter().rev().find(|v| v.stage != Stage::Archived))
        .map(|v| v.spec.version)
        .with_context(|| format!("{} has only archived versions", m.name))
}

fn describe(d: &Deployment) -> String {
    let mut text = d.split_text();
    if let Some(s) = &d.sticky {
        text += &format!(", sticky by {s}");
    }
    if !d.shadow.is_empty() {
        let v: Vec<String> = d.shadow.iter().map(|v| format!("v{v}")).collect();
        text += &format!(", shadow {}", v.join(", "));
    }
    if let Some(c) = &d.canary {
        text += &format!(" ({})", describe_canary(c));
    }
    text
}

async fn record(
    ctx: &Ctx,
    registry: &Registry,
    state: &State,
    m: &ModelState,
    deployment: Option<Deployment>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let reason = reason.unwrap_or_else(|| format!("kiln deploy by {}", whoami()));
    registry
        .append(
            state.last_seq,
            &[Event::ModelDeployed {
                name: m.name.clone(),
                deployment: deployment.clone(),
                reason,
            }],
        )
        .await?;
    if ctx.json() {
        return json(&serde_json::json!({
            "model": m.name,
            "deployment": deployment,
            "previous": m.deployment,
        }));
    }
    let now = match &deployment {
        Some(d) => describe(d),
        None => format!(
            "no deployment: v{} takes all traffic",
            answering(m).map_or("?".into(), |v| v.to_string())
        ),
    };
    println!("{}: {now}", m.name);
    if let Some(before) = &m.deployment {
        println!("  (was {})", describe(before));
    }
    Ok(())
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// One routing change in a model's history.
#[derive(Serialize)]
struct Change {
    seq: i64,
    at: String,
    change: String,
    reason: String,
}

async fn status(ctx: &Ctx, registry: &Registry, state: &State, name: &str) -> anyhow::Result<()> {
    let m = state.model(name)?;
    let history: Vec<Change> = registry
        .events()
        .await?
        .into_iter()
        .filter_map(|r| {
            let (change, reason) = match r.event {
                Event::ModelDeployed {
                    name: n,
                    deployment,
                    reason,
                } if n == name => (
                    deployment.map_or("deployment cleared".into(), |d| describe(&d)),
                    reason,
                ),
                // A promotion ends a deployment: the promoted version takes the traffic.
                Event::ModelStageChanged {
                    name: n,
                    version,
                    stage: Stage::Production,
                } if n == name => (format!("v{version} promoted to production"), String::new()),
                _ => return None,
            };
            Some(Change {
                seq: r.seq,
                at: format_timestamp(r.at),
                change,
                reason,
            })
        })
        .collect();
    let arms: Vec<(u32, u32)> = match &m.deployment {
        Some(d) => d.arms.iter().map(|a| (a.version, a.weight)).collect(),
        None => vec![(answering(m)?, FULL)],
    };
    if ctx.json() {
        return json(&serde_json::json!({
            "model": name,
            "deployment": m.deployment,
            "since": m.deployment.as_ref().map(|_| format_timestamp(m.deployed_at)),
            "routes": arms.iter().map(|(v, w)| serde_json::json!({
                "version": v,
                "percent": f64::from(*w) / 100.0,
                "stage": m.version(*v).map(|s| s.stage),
            })).collect::<Vec<_>>(),
            "history": history,
        }));
    }
    let stage = |v: u32| m.version(v).map_or(String::new(), |s| s.stage.to_string());
    let mut rows: Vec<Vec<String>> = arms
        .iter()
        .map(|(v, w)| vec![format!("v{v}"), stage(*v), format!("{}%", percent(*w))])
        .collect();
    if let Some(d) = &m.deployment {
        rows.extend(
            d.shadow
                .iter()
                .map(|v| vec![format!("v{v}"), stage(*v), "shadow".into()]),
        );
    }
    println!("{}", table(&["version", "stage", "traffic"], rows));
    if let Some(c) = m.deployment.as_ref().and_then(|d| d.canary.as_ref()) {
        println!(
            "{}; this step since {}",
            describe_canary(c),
            format_timestamp(m.deployed_at)
        );
    }
    match &m.deployment {
        Some(Deployment {
            sticky: Some(s), ..
        }) => println!("sticky by {s}"),
        Some(_) => println!("not sticky: each request goes to a random version by weight"),
        None => println!("no deployment: the production version (else the latest) answers"),
    }
    if !history.is_empty() {
        let rows = history
            .iter()
            .map(|c| {
                vec![
                    c.seq.to_string(),
                    c.at.clone(),
                    c.change.clone(),
                    c.reason.clone(),
                ]
            })
            .collect();
        println!("{}", table(&["#", "at", "change", "reason"], rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_read_versions_and_percentages() {
        let arms = parse_split("1=90,v2=9.5%,3=0.5").expect("split");
        assert_eq!(
            arms.iter()
                .map(|a| (a.version, a.weight))
                .collect::<Vec<_>>(),
            vec![(1, 9_000), (2, 950), (3, 50)]
        );
        for (bad, says) in [
            ("1:90", "VERSION=PERCENT"),
            ("x=90", "not a version"),
            ("1=ninety", "not a percentage"),
        ] {
            let e = parse_split(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
