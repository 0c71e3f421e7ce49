//! The subcommands.

mod apply;
mod bench;
mod bench_stream;
mod consistency;
mod dataset;
mod demo;
mod deploy;
mod drift;
mod drift_live;
mod features;
mod init;
mod inspect;
mod materialize;
pub(crate) mod models;
mod score;
mod serve;
mod stream;

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Format;
use crate::project::Project;

/// What every command gets.
pub struct Ctx {
    pub project: Option<PathBuf>,
    pub output: Format,
    pub quiet: bool,
    /// `KILN__*` environment variables, for configuration overrides (and
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, the standard default of `tracing.otlp_endpoint`).
    pub env: Vec<(String, String)>,
}

impl Ctx {
    pub fn project(&self) -> anyhow::Result<Project> {
        Project::discover(self.project.as_deref(), &self.env)
    }

    pub fn json(&self) -> bool {
        self.output == Format::Json
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new project with example definitions and data.
    Init(init::InitArgs),
    /// Show what `kiln apply` would change.
    Plan,
    /// Validate the definitions and register them.
    Apply,
    /// The registry's event log.
    Registry {
        #[command(subcommand)]
        cmd: inspect::RegistryCmd,
    },
    /// List registered objects.
    List(inspect::ListArgs),
    /// Show one registered object in full.
    Show(inspect::ShowArgs),
    /// What feeds an object and what it feeds (source -> view@version -> service).
    Lineage(inspect::LineageArgs),
    /// Training sets.
    Dataset {
        #[command(subcommand)]
        cmd: dataset::DatasetCmd,
    },
    /// Load the latest feature values of a time window into the online store.
    Materialize(materialize::MaterializeArgs),
    /// Serve features over HTTP (Feast-compatible API).
    Serve(serve::ServeArgs),
    /// Online features from the command line.
    Features {
        #[command(subcommand)]
        cmd: features::FeaturesCmd,
    },
    /// The model registry: register, list, show, promote, archive, score offline.
    Models {
        #[command(subcommand)]
        cmd: models::ModelsCmd,
    },
    /// Route a model's traffic between its versions: all to one, a weighted split, sticky by
    /// caller, shadow copies; `kiln deploy status MODEL` shows the split and its history.
    Deploy(deploy::DeployArgs),
    /// Compare an aggregated view's online values with a batch recomputation at the same
    /// times (exit status 2 with --fail-on-mismatch when any differ).
    Consistency(consistency::ConsistencyArgs),
    /// Streaming aggregations: run them, push events, see where they stand.
    Stream {
        #[command(subcommand)]
        cmd: stream::StreamCmd,
    },
    /// Watch Kiln work end to end on a temporary example project.
    Demo(demo::DemoArgs),
    /// Benchmark helpers: data generation and an HTTP load generator.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// Data drift between a reference file and a current one (Evidently's rules), or a served
    /// model's live drift (--model), as a table,
    /// JSON (-o json) or an HTML page (-o html). Exit status 0 when the report is made, 1 on
    /// an error, 2 on dataset drift with --fail-on-drift.
    Drift(drift::DriftArgs),
}

/// An error that ends the process with a given status (not 1) and a message.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

pub async fn run(ctx: Ctx, command: Command) -> anyhow::Result<()> {
    if ctx.output == Format::Html && !matches!(command, Command::Drift(_)) {
        anyhow::bail!("--output html is only supported by `kiln drift`; use table or json");
    }
    match command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Plan => apply::run(&ctx, false).await,
        Command::Apply => apply::run(&ctx, true).await,
        Command::Registry { cmd } => inspect::registry(&ctx, cmd).await,
        Command::List(a) => inspect::list(&ctx, a).await,
        Command::Show(a) => inspect::show(&ctx, a).await,
        Command::Lineage(a) => inspect::lineage(&ctx, a).await,
        Command::Dataset { cmd } => dataset::run(&ctx, cmd).await,
        Command::Materialize(a) => materialize::run(&ctx, a).await,
        Command::Serve(a) => serve::run(&ctx, a).await,
        Command::Features { cmd } => features::run(&ctx, cmd).await,
        Command::Models { cmd } => models::run(&ctx, cmd).await,
        Command::Deploy(a) => deploy::run(&ctx, a).await,
        Command::Consistency(a) => consistency::run(&ctx, a).await,
        Command::Stream { cmd } => stream::run(&ctx, cmd).await,
        Command::Demo(a) => demo::run(&ctx, a).await,
        Command::Bench { cmd } => bench::run(&ctx, cmd).await,
        Command::Drift(a) => drift::run(&ctx, a).await,
    }
}
