//! `kiln serve`: the HTTP server, until SIGTERM or Ctrl-C; its logging and trace export
//! (`[tracing]`) are set up here, once kiln.toml is read, and flushed when it stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let mut options = project.serve_options()?;
    if let Some(shared) = project.shared_cache().await? {
        let s = &project.config.serve;
        for model in s.shared_prediction_caches() {
            let policy = match model {
                None => &mut options.resilience,
                Some(m) => options
                    .model_resilience
                    .get_mut(m)
                    .context("a model's resilience settings")?,
            };
            if let Some(c) = &mut policy.prediction_cache {
                c.shared = Some(shared.clone());
            }
        }
    }
    let mut store = project.online_store().await?;
    if let Some(settings) = project
        .config
        .online_store
        .breaker
        .settings("online_store.breaker")
        .map_err(|e| anyhow::anyhow!(e.join("; ")))?
    {
        let breaker = Arc::new(kiln_serve::resilience::Breaker::new(
            "online_store",
            settings,
        ));
        options.breakers.push(breaker.clone());
        store = Arc::new(kiln_serve::resilience::GuardedStore::new(store, breaker));
    }
    let streams = crate::streaming::streamed(project, &state, &[])?;
    if let Some(cache) = &project.config.online_store.cache
        && let Some((settings, known_entities)) = cache
            .settings()
            .map_err(|e| anyhow::anyhow!(e.join("; ")))?
    {
        // Outside the breaker: a hit needs no store. Embedded streams write through it.
        let cached = kiln_store::online::CachedStore::new(store, settings);
        store = Arc::new(cached.clone());
        let streamed_here = if project.config.stream.embedded {
            streams
                .iter()
                .flat_map(|s| s.views.iter().map(|v| v.name.clone()))
                .collect()
        } else {
            Default::default()
        };
        options.feature_cache = Some(kiln_serve::cache::features::FeatureCache::new(
            cached,
            known_entities,
            streamed_here,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut connectors = Vec::new();
    if !streams.is_empty() {
        let schemas = streams
            .iter()
            .map(|s| s.schema())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let hub = Arc::new(kiln_stream::push::PushHub::open(
            &project.config.stream.dir(&project.dir),
            schemas,
            &project.config.stream.log_options(),
        )?);
        // This process holds the logs, so it reads the brokers into them too.
        connectors = crate::streaming::start_connectors(
            project,
            &streams,
            |name| Ok(hub.log(name)),
            &stop,
            false,
        )?;
        for c in &connectors {
            eprintln!("reading {} into source {}'s log", c.broker, c.source);
        }
        options.push = Some(hub);
    } else if let Some(name) = project.config.stream.sources.keys().next() {
        anyhow::bail!(
            "stream.sources.{name}: no online feature view with windowed aggregations reads a source, so there is nothing to stream it into"
        );
    }
    let serve_state = ServeState::new(state, Some(registry), store.clone(), options);
    for c in &connectors {
        let (stats, source, metrics) = (c.stats.clone(), c.source.clone(), serve_state.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                metrics.metrics().broker_read(
                    &source,
                    stats.messages.load(Ordering::Relaxed),
                    stats.rejected.load(Ordering::Relaxed),
                );
            }
        });
    }
    let mut embedded = Vec::new();
    if project.config.stream.embedded {
        for s in &streams {
            let mut stream = s.open(project)?;
            let (store, stop, rt) = (
                store.clone(),
                stop.clone(),
                tokio::runtime::Handle::current(),
            );
            let metrics = serve_state.clone();
            eprintln!("streaming source {} in this server", s.source);
            embedded.push(tokio::task::spawn_blocking(move || {
                kiln_stream::pipeline::run(&mut stream, &rt, &store, &stop, false, |s, step| {
                    if step.events > 0 {
                        metrics
                            .metrics()
                            .stream_step(&s.schema.source, step, s.stream_time());
                    }
                })
            }));
        }
    }
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
    let served = kiln_serve::serve(listener, serve_state, refresh, shutdown_signal()).await;
    // The connectors and embedded streams stop (the streams checkpoint) once the server has
    // drained.
    stop.store(true, Ordering::Relaxed);
    for c in connectors {
        match c.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("reading {} stopped with an error: {e}", c.broker),
            Err(e) => eprintln!("connector task failed: {e}"),
        }
    }
    for t in embedded {
        match t.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("stream stopped with an error: {e}"),
            Err(e) => eprintln!("stream task failed: {e}"),
        }
    }
    served?;
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
