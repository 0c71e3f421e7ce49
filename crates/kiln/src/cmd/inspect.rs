//! Reading the registry: `kiln registry log`, `kiln list`, `kiln show`, `kiln lineage`.

use kiln_core::spec::ViewVersion;
use kiln_core::time::{format_duration, format_timestamp};
use kiln_registry::{Event, LineageNode};

use super::Ctx;
use crate::output::{json, table};

#[derive(clap::Subcommand)]
pub enum RegistryCmd {
    /// The event log, oldest first.
    Log {
        /// Show only the last N events.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Entities,
    Sources,
    Views,
    Services,
}

#[derive(clap::Args)]
pub struct ListArgs {
    pub what: Kind,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ShowKind {
    Entity,
    Source,
    View,
    Service,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    pub what: ShowKind,
    pub name: String,
    /// For views: which version (default: the current one).
    #[arg(long)]
    pub version: Option<u32>,
}

#[derive(clap::Args)]
pub struct LineageArgs {
    pub name: String,
}

pub async fn registry(ctx: &Ctx, cmd: RegistryCmd) -> anyhow::Result<()> {
    let RegistryCmd::Log { limit } = cmd;
    let reg = ctx.project()?.registry().await?;
    let mut events = reg.events().await?;
    if let Some(n) = limit {
        events.drain(..events.len().saturating_sub(n));
    }
    if ctx.json() {
        return json(&events);
    }
    let rows = events
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                format_timestamp(r.at),
                r.event.kind().to_string(),
                r.event.subject(),
                summary(&r.event),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["#", "at", "event", "subject", "details"], rows)
    );
    Ok(())
}

fn summary(e: &Event) -> String {
    match e {
        Event::ModelVersionRegistered { version } => format!(
            "{} model, {} inputs{}",
            version.format,
            version.inputs.len(),
            version
                .feature_service
                .as_ref()
                .map(|s| format!(" from service {s}"))
                .unwrap_or_default()
        ),
        Event::ModelStageChanged { stage, .. } => format!("stage {stage}"),
        Event::ModelDeployed {
            deployment, reason, ..
        } => format!(
            "{} ({reason})",
            deployment
                .as_ref()
                .map_or("deployment cleared".into(), |d| d.split_text())
        ),
        Event::ViewVersionCreated { version, .. } => format!(
            "{} features, ttl {}, source {}",
            version.features.len(),
            format_duration(version.ttl_seconds),
            version.source.name
        ),
        Event::Materialized {
            start, end, rows, ..
        } => format!(
            "{} .. {}, {rows} rows",
            format_timestamp(*start),
            format_timestamp(*end)
        ),
        Event::ServiceApplied { spec } => format!("{} features", spec.features.len()),
        Event::EntityApplied { spec } => spec
            .join_keys
            .iter()
            .map(|k| format!("{}:{}", k.name, k.dtype))
            .collect::<Vec<_>>()
            .join(", "),
        Event::SourceApplied { spec } => spec.path.clone(),
        Event::ViewUpdated { online, .. } => format!("online = {online}"),
        Event::EntityDeleted { .. }
        | Event::SourceDeleted { .. }
        | Event::ViewDeleted { .. }
        | Event::ServiceDeleted { .. } => String::new(),
    }
}

pub async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let state = ctx.project()?.registry().await?.state().await?;
    match a.what {
        Kind::Entities => {
            if ctx.json() {
                return json(&state.entities.values().collect::<Vec<_>>());
            }
            let rows = state
                .entities
                .values()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.join_keys
                            .iter()
                            .map(|k| format!("{}:{}", k.name, k.dtype))
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.description.clone(),
                    ]
                })
                .collect();
            println!("{}", table(&["entity", "join keys", "description"], rows));
        }
        Kind::Sources => {
            if ctx.json() {
                return json(&state.sources.values().collect::<Vec<_>>());
            }
            let rows = state
                .sources
                .values()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.path.clone(),
                        s.timestamp_field.clone(),
                        s.created_timestamp_column.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["source", "path", "timestamp", "created"], rows)
            );
        }
        Kind::Views => {
            let views: Vec<_> = state.live_views().collect();
            if ctx.json() {
                let out: Vec<_> = views
                    .iter()
                    .map(|v| serde_json::json!({
                        "name": v.name, "version": v.current().version, "versions": v.versions.len(),
                        "online": v.online, "ttl_seconds": v.current().ttl_seconds,
                        "entities": v.current().entities, "features": v.current().features,
                        "source": v.current().source.name, "meta": v.meta,
                        "watermark": v.materialized.get(&v.current().version).map(|m| m.watermark),
                    }))
                    .collect();
                return json(&out);
            }
            let rows = views
                .iter()
                .map(|v| {
                    let c = v.current();
                    vec![
                        v.name.clone(),
                        format!("v{}", c.version),
                        c.entities.join(", "),
                        c.features.len().to_string(),
                        format_duration(c.ttl_seconds),
                        v.online.to_string(),
                        v.materialized
                            .get(&c.version)
                            .map_or("never".into(), |m| format_timestamp(m.watermark)),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "view",
                        "version",
                        "entities",
                        "features",
                        "ttl",
                        "online",
                        "materialized to"
                    ],
                    rows
                )
            );
        }
        Kind::Services => {
            if ctx.json() {
                return json(&state.services.values().collect::<Vec<_>>());
            }
            let rows = state
                .services
                .values()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.features
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join("\n"),
                        s.meta.description.clone(),
                    ]
                })
                .collect();
            println!("{}", table(&["service", "features", "description"], rows));
        }
    }
    Ok(())
}

pub async fn show(ctx: &Ctx, a: ShowArgs) -> anyhow::Result<()> {
    let state = ctx.project()?.registry().await?.state().await?;
    let missing =
        |kind: &str| anyhow::anyhow!("{kind} {:?} is not registered; see `kiln list`", a.name);
    match a.what {
        ShowKind::Entity => json(
            state
                .entities
                .get(&a.name)
                .ok_or_else(|| missing("entity"))?,
        ),
        ShowKind::Source => json(
            state
                .sources
                .get(&a.name)
                .ok_or_else(|| missing("source"))?,
        ),
        ShowKind::Service => json(state.service(&a.name)?),
        ShowKind::View => {
            let v = state.view_version(&a.name, a.version)?;
            let vs = &state.views[&a.name];
            if ctx.json() {
                return json(&serde_json::json!({
                    "version": v,
                    "current_version": vs.current().version,
                    "versions": vs.versions.len(),
                    "deleted": vs.deleted,
                    "online": vs.online,
                    "meta": vs.meta,
                    "materialized": vs.materialized.get(&v.version),
                }));
            }
            print_view(v, vs.versions.len(), vs.online, &vs.meta);
            if let Some(m) = vs.materialized.get(&v.version) {
                println!(
                    "materialized:  up to {} (last run {} .. {}, {} rows)",
                    format_timestamp(m.watermark),
                    format_timestamp(m.last_start),
                    format_timestamp(m.last_end),
                    m.last_rows
                );
            } else {
                println!("materialized:  never");
            }
            Ok(())
        }
    }
}

fn print_view(v: &ViewVersion, versions: usize, online: bool, meta: &kiln_core::spec::Meta) {
    println!(
        "feature view:  {} (version {} of {versions})",
        v.name, v.version
    );
    println!(
        "entities:      {} (join keys {})",
        v.entities.join(", "),
        v.join_keys
            .iter()
            .map(|k| format!("{}:{}", k.name, k.dtype))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "source:        {} ({}, timestamp {}{})",
        v.source.name,
        v.source.path,
        v.source.timestamp_field,
        v.source
            .created_timestamp_column
            .as_ref()
            .map(|c| format!(", created {c}"))
            .unwrap_or_default()
    );
    println!("ttl:           {}", format_duration(v.ttl_seconds));
    println!("online:        {online}");
    println!("created:       {}", format_timestamp(v.created_at));
    if !meta.description.is_empty() {
        println!("description:   {}", meta.description);
    }
    if !meta.owner.is_empty() {
        println!("owner:         {}", meta.owner);
    }
    if !meta.tags.is_empty() {
        println!(
            "tags:          {}",
            meta.tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let rows = v
        .features
        .iter()
        .map(|f| vec![f.name.clone(), f.dtype.to_string()])
        .collect();
    println!("{}", table(&["feature", "type"], rows));
}

pub async fn lineage(ctx: &Ctx, a: LineageArgs) -> anyhow::Result<()> {
    let state = ctx.project()?.registry().await?.state().await?;
    let l = kiln_registry::lineage(&state, &a.name)?;
    if ctx.json() {
        return json(&l);
    }
    let label = |n: &LineageNode| match n {
        LineageNode::Source { name, path } => format!("source {name} ({path})"),
        LineageNode::View {
            name,
            version,
            current,
        } => format!(
            "view {name}@v{version}{}",
            if *current { " (current)" } else { "" }
        ),
        LineageNode::Service { name } => format!("service {name}"),
        LineageNode::Model {
            name,
            version,
            stage,
        } => format!("model {name}@v{version} ({stage})"),
    };
    let by_id = |id: &str| {
        l.nodes
            .iter()
            .find(|n| n.id() == id)
            .map(label)
            .unwrap_or_else(|| id.to_string())
    };
    println!("lineage of {}:", a.name);
    for e in &l.edges {
        println!("  {} -> {}", by_id(&e.from), by_id(&e.to));
    }
    for n in l
        .nodes
        .iter()
        .filter(|n| !l.edges.iter().any(|e| e.from == n.id() || e.to == n.id()))
    {
        println!("  {} (nothing connected)", label(n));
    }
    Ok(())
}
