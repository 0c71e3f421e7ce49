//! The `kiln` binary: one subcommand per task, over the library crates.
//!
//! Commands are thin: they load the project (configuration layered from `kiln.toml`, `KILN__`
//! environment variables and flags), call into `kiln-features` / `kiln-registry` /
//! `kiln-serve`, and print a table or JSON. `anyhow` is used here only; the libraries have
//! typed errors.

mod cmd;
mod config;
mod http;
mod output;
mod progress;
mod project;
mod streaming;
mod tabular;
mod tabular_csv;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: feature store, registry and serving in one binary"
)]
struct Cli {
    /// The project directory (default: the current directory or the nearest parent with a kiln.toml).
    #[arg(short, long, global = true, env = "KILN_PROJECT")]
    project: Option<PathBuf>,
    /// Output format for results.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Format,
    /// No progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: cmd::Command,
}

/// mimalloc rather than the system allocator: see the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `kiln serve` sets logging up itself, with trace export when kiln.toml asks for it.
    if !matches!(cli.command, cmd::Command::Serve(_)) {
        telemetry::init_logs();
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KILN__") || k == telemetry::OTEL_ENDPOINT_ENV)
        .collect();
    let ctx = cmd::Ctx {
        project: cli.project,
        output: cli.output,
        quiet: cli.quiet,
        env,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cmd::run(ctx, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cmd::Exit>() {
            Some(exit) => {
                eprintln!("{}", exit.message);
                ExitCode::from(exit.code)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
