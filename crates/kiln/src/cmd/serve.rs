//! `kiln serve`: the HTTP server, until SIGTERM or Ctrl-C; its logging and trace export
//! (`[tracing]`) are set up here, once kiln.toml is read, and flushed when it stops.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use kiln_serve::ServeState;

use super::Ctx;
use crate::project::Project;
use crate::telemetry::Telemetry;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Listen address (overrides serve.addr).
    #[arg(long)]
    pub addr: Option<String>,
}

pub async fn run(ctx: &Ctx, a: ServeArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let telemetry = Telemetry::init(&project.config.tracing)?;
    let result = serve(&project, a).await;
    // However the server ended, the spans still queued go out before the process does.
    telemetry.shutdown().await;
    result
}

async fn serve(project: &Project, a: ServeArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = a
        .addr
        .as_deref()
        .unwrap_or(&project.config.serve.addr)
        .parse()
        .context("--addr: expected HOST:PORT")?;
    let refresh = Duration::from_secs(
        kiln_core::time::parse_duration(&project.config.serve.registry_refresh)?.max(1),
    );
    let registry = project.registry().await?;
    let state = registry.state().await?;
    let store = project.online_store()?;
    let serve_state = ServeState::new(
        state,
        Some(registry),
        store.clone(),
        project.serve_options()?,
    );
    serve_state.preload_models().await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, store = %store.describe(), project = %project.config.project, "serving");
    let traces = match project.config.tracing.endpoint() {
        Some(endpoint) => format!("; traces to {endpoint}"),
        None => String::new(),
    };
    eprintln!(
        "kiln serving project {} on http://{} (online store: {}{traces})",
        project.config.project,
        listener.local_addr()?,
        store.describe()
    );
    kiln_serve::serve(listener, serve_state, refresh, shutdown_signal()).await?;
    eprintln!("kiln stopped");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
