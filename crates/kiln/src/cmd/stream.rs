//! `kiln stream`: run the streaming aggregations (`run`), append events to a source's log
//! without a server (`push`), and show where each stream stands (`status`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use kiln_core::time::format_timestamp;
use kiln_stream::Checkpoint;
use kiln_stream::log::{FrameKind, LogReader};
use kiln_stream::pipeline::{RunSummary, source_dir};
use kiln_stream::push::{Encoding, PushHub};
use serde::Serialize;

use super::Ctx;
use crate::project::Project;
use crate::streaming::streamed;

#[derive(clap::Subcommand)]
pub enum StreamCmd {
    /// Consume the sources' event logs and keep the aggregated views current in the online
    /// store (and the events in the offline store), until Ctrl-C.
    Run(RunArgs),
    /// Append events from a file (a JSON array, or one JSON object per line) to a source's
    /// log, as `POST /v1/push/{source}` does.
    Push(PushArgs),
    /// Each streamed source: log end, checkpoint, lag, stream time, dead letters.
    Status,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Only the sources of these views (comma separated); default every aggregated view.
    #[arg(long, value_delimiter = ',')]
    pub views: Vec<String>,
    /// Stop once every log has been read to its end (a catch-up or backfill run).
    #[arg(long)]
    pub until_idle: bool,
}

#[derive(clap::Args)]
pub struct PushArgs {
    pub source: String,
    pub file: PathBuf,
}

pub async fn run(ctx: &Ctx, cmd: StreamCmd) -> anyhow::Result<()> {
    let project = ctx.project()?;
    match cmd {
        StreamCmd::Run(a) => run_streams(ctx, &project, a).await,
        StreamCmd::Push(a) => push(ctx, &project, a).await,
        StreamCmd::Status => status(ctx, &project).await,
    }
}

async fn run_streams(ctx: &Ctx, project: &Project, a: RunArgs) -> anyhow::Result<()> {
    let state = project.registry().await?.state().await?;
    let sources = streamed(project, &state, &a.views)?;
    if sources.is_empty() {
        anyhow::bail!(
            "no online feature view has windowed aggregations, so there is nothing to stream (see docs/definitions.md#windowed-aggregations)"
        );
    }
    let store = project.online_store().await?;
    let stop = Arc::new(AtomicBool::new(false));
    if !a.until_idle {
        let stop = stop.clone();
        tokio::spawn(async move {
            super::serve::shutdown_signal().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let quiet = ctx.quiet || ctx.json();
    let mut connectors = crate::streaming::start_connectors(
        project,
        &sources,
        |name| crate::streaming::open_log(project, name),
        &stop,
        a.until_idle,
    )?;
    for c in &connectors {
        if !quiet {
            eprintln!("reading {} into source {}'s log", c.broker, c.source);
        }
    }
    let mut brokers = Vec::new();
    if a.until_idle {
        // A catch-up run: first everything the brokers hold into the logs, then the logs.
        for c in connectors.drain(..) {
            brokers.push(finish(c).await?);
        }
    }
    let mut tasks = Vec::new();
    for s in sources {
        let mut stream = s.open(project)?;
        if !quiet {
            eprintln!(
                "streaming source {} into {} (from log offset {})",
                s.source,
                s.views
                    .iter()
                    .map(|v| format!("{}@v{}", v.name, v.version))
                    .collect::<Vec<_>>()
                    .join(", "),
                stream.position()
            );
        }
        let (store, stop, rt) = (
            store.clone(),
            stop.clone(),
            tokio::runtime::Handle::current(),
        );
        let until_idle = a.until_idle;
        tasks.push(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut last = Instant::now();
            let mut events = 0u64;
            kiln_stream::pipeline::run(&mut stream, &rt, &store, &stop, until_idle, |s, step| {
                events += step.events as u64;
                if !quiet && last.elapsed().as_secs() >= 2 {
                    last = Instant::now();
                    eprintln!(
                        "{}: {events} events ({:.0}/s), stream time {}, log offset {}",
                        s.schema.source,
                        events as f64 / started.elapsed().as_secs_f64().max(1e-9),
                        format_timestamp(s.stream_time()),
                        s.position()
                    );
                }
            })
        }));
    }
    let mut summaries: Vec<SourceRun> = Vec::new();
    let mut failed = None;
    for t in tasks {
        match t.await? {
            Ok(run) => summaries.push(SourceRun { run, broker: None }),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                failed = failed.or(Some(e));
            }
        }
    }
    // The pipelines stopped, so `stop` is set: the connectors return within a poll.
    stop.store(true, Ordering::Relaxed);
    for c in connectors {
        brokers.push(finish(c).await?);
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    for (source, b) in brokers {
        if let Some(s) = summaries.iter_mut().find(|s| s.run.source == source) {
            s.broker = Some(b);
        }
    }
    if ctx.json() {
        return crate::output::json(&summaries);
    }
    for SourceRun { run: s, broker } in &summaries {
        if let Some(b) = broker {
            println!(
                "{}: {} messages from {} ({} events, {} rejected, {} redelivered and skipped)",
                s.source, b.messages, b.broker, b.events, b.rejected, b.duplicates
            );
        }
        println!(
            "{}: {} events applied, {} late, {} undecodable and {} malformed (dead letters in {}), {} online rows written, checkpoint at log offset {}{}",
            s.source,
            s.events - s.late - s.undecodable - s.malformed,
            s.late,
            s.undecodable,
            s.malformed,
            s.dead_letters,
            s.rows_written,
            s.position,
            s.stream_time
                .as_ref()
                .map(|t| format!(", stream time {t}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// One source's run, with what its broker connector read.
#[derive(Serialize)]
struct SourceRun {
    #[serde(flatten)]
    run: RunSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<BrokerRun>,
}

#[derive(Serialize)]
struct BrokerRun {
    broker: String,
    messages: u64,
    events: u64,
    rejected: u64,
    duplicates: u64,
}

/// Waits for a connector to return; its source and what it read.
async fn finish(c: crate::streaming::Running) -> anyhow::Result<(String, BrokerRun)> {
    c.task
        .await?
        .with_context(|| format!("reading {} into source {}", c.broker, c.source))?;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Ok((
        c.source,
        BrokerRun {
            broker: c.broker,
            messages: n(&c.stats.messages),
            events: n(&c.stats.events),
            rejected: n(&c.stats.rejected),
            duplicates: n(&c.stats.duplicates),
        },
    ))
}

async fn push(ctx: &Ctx, project: &Project, a: PushArgs) -> anyhow::Result<()> {
    let state = project.registry().await?.state().await?;
    let sources = streamed(project, &state, &[])?;
    let text = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    // JSON lines become one array, so both forms are checked the same way.
    let body = match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => text,
        _ => {
            let lines: Vec<&[u8]> = text
                .split(|b| *b == b'\n')
                .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                .collect();
            let mut out = b"[".to_vec();
            out.extend(lines.join(&b","[..]));
            out.push(b']');
            out
        }
    };
    let schemas = sources
        .iter()
        .filter(|s| s.source == a.source)
        .map(|s| s.schema())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let hub = PushHub::open(
        &project.config.stream.dir(&project.dir),
        schemas,
        &project.config.stream.log_options(),
    )?;
    let receipt = hub
        .push(&a.source, &body, Encoding::Json)
        .with_context(|| format!("{}", a.file.display()))?;
    if ctx.json() {
        return crate::output::json(&receipt);
    }
    println!(
        "{}: appended {} events (log offsets {}..{})",
        receipt.source, receipt.accepted, receipt.first_offset, receipt.end_offset
    );
    Ok(())
}

#[derive(Serialize)]
struct SourceStatus {
    source: String,
    views: Vec<String>,
    /// The offset of the log's first byte still kept (above 0 once retention deleted
    /// segments), and how many segment files hold the log.
    log_start: u64,
    log_segments: usize,
    log_bytes: u64,
    checkpoint_offset: u64,
    /// Bytes of log not yet checkpointed.
    lag_bytes: u64,
    stream_time: Option<String>,
    dead_letters: u64,
    /// How far a broker connector has read into the log (Kafka: the next offset per
    /// partition; JetStream: the last stream sequence), if one has.
    broker_position: Option<serde_json::Value>,
}

async fn status(ctx: &Ctx, project: &Project) -> anyhow::Result<()> {
    let state = project.registry().await?.state().await?;
    let stream_dir = project.config.stream.dir(&project.dir);
    let mut rows = Vec::new();
    for s in streamed(project, &state, &[])? {
        let dir = source_dir(&stream_dir, &s.source);
        let checkpoint = Checkpoint::load(&dir.join("checkpoint"))?.unwrap_or_default();
        // Reading from the checkpoint to the end gives the log's end without a writer's lock,
        // and the latest broker position (the checkpoint's if none came since).
        let mut reader = LogReader::open(&dir, checkpoint.offset)?;
        let mut position = checkpoint.broker_position.clone();
        loop {
            let frames = reader.read(65_536)?;
            if frames.is_empty() {
                break;
            }
            if let Some(p) = frames.into_iter().rfind(|f| f.kind == FrameKind::Position) {
                position = p.payload;
            }
        }
        let dead = std::fs::read(dir.join("dead-letters.jsonl"))
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .unwrap_or(0);
        rows.push(SourceStatus {
            source: s.source.clone(),
            views: s
                .views
                .iter()
                .map(|v| format!("{}@v{}", v.name, v.version))
                .collect(),
            log_start: kiln_stream::log::start(&dir)?,
            log_segments: kiln_stream::log::segments(&dir)?.len(),
            log_bytes: reader.position(),
            checkpoint_offset: checkpoint.offset,
            lag_bytes: reader.position() - checkpoint.offset,
            stream_time: (checkpoint.offset > 0).then(|| format_timestamp(checkpoint.stream_time)),
            dead_letters: dead,
            broker_position: serde_json::from_slice(&position).ok(),
        });
    }
    if ctx.json() {
        return crate::output::json(&rows);
    }
    if rows.is_empty() {
        println!("No streamed sources (no online view has windowed aggregations).");
        return Ok(());
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.source.clone(),
                r.views.join(", "),
                r.log_start.to_string(),
                r.log_bytes.to_string(),
                r.checkpoint_offset.to_string(),
                r.lag_bytes.to_string(),
                r.stream_time.clone().unwrap_or_else(|| "-".into()),
                r.dead_letters.to_string(),
                r.broker_position
                    .as_ref()
                    .map_or_else(|| "-".into(), |p| p.to_string()),
            ]
        })
        .collect();
    println!(
        "{}",
        crate::output::table(
            &[
                "source",
                "views",
                "log start",
                "log bytes",
                "checkpoint",
                "lag bytes",
                "stream time",
                "dead letters",
                "broker position"
            ],
            table
        )
    );
    Ok(())
}
