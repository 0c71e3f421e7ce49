//! Which sources stream, read from the registry: every online view with windowed
//! aggregations, grouped by the source it reads. `kiln stream run`, `kiln serve` (push API and
//! embedded stream) and `kiln consistency` all start from this list. The broker connectors of
//! `[stream.sources]` are started here too, for both `kiln stream run` and `kiln serve`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use arrow_schema::SchemaRef;
use kiln_core::spec::ViewVersion;
use kiln_registry::State;
use kiln_stream::StreamError;
use kiln_stream::appender::Appender;
use kiln_stream::connector::{Connector, ConnectorOptions, ConnectorStats};
use kiln_stream::event::EventSchema;
use kiln_stream::pipeline::{SourceStream, source_dir};

use crate::project::Project;

/// One streamed source and the aggregated views that read it.
pub struct Streamed {
    pub source: String,
    /// The source's Parquet directory (resolved against the project).
    pub path: PathBuf,
    pub views: Vec<ViewVersion>,
    pub arrow: SchemaRef,
}

impl Streamed {
    pub fn schema(&self) -> anyhow::Result<EventSchema> {
        Ok(EventSchema::new(
            &self.views.iter().collect::<Vec<_>>(),
            &self.arrow,
        )?)
    }

    /// Opens this source's stream at its checkpoint.
    pub fn open(&self, project: &Project) -> anyhow::Result<SourceStream> {
        let dir = source_dir(&project.config.stream.dir(&project.dir), &self.source);
        SourceStream::open(
            &dir,
            &self.path,
            &self.views.iter().collect::<Vec<_>>(),
            &self.arrow,
            project.config.stream.options(),
        )
        .with_context(|| format!("opening the stream of source {:?}", self.source))
    }
}

/// The streamed sources, optionally only those of `views`.
pub fn streamed(
    project: &Project,
    state: &State,
    only: &[String],
) -> anyhow::Result<Vec<Streamed>> {
    for name in only {
        let v = state.view(name)?;
        if v.current().aggregations.is_empty() {
            anyhow::bail!(
                "feature view {name:?} has no windowed aggregations; its online values come from `kiln materialize`"
            );
        }
    }
    let mut out: Vec<Streamed> = Vec::new();
    for v in state.live_views() {
        let view = v.current();
        if !v.online || view.aggregations.is_empty() {
            continue;
        }
        if !only.is_empty() && !only.contains(&view.name) {
            continue;
        }
        match out.iter_mut().find(|s| s.source == view.source.name) {
            Some(s) => s.views.push(view.clone()),
            None => {
                let path = project.dir.join(&view.source.path);
                let arrow = kiln_store::offline::read_schema(&path)
                    .with_context(|| format!("reading source {:?}", view.source.name))?;
                out.push(Streamed {
                    source: view.source.name.clone(),
                    path,
                    views: vec![view.clone()],
                    arrow,
                });
            }
        }
    }
    Ok(out)
}

/// A broker connector started by [`start_connectors`].
pub struct Running {
    pub source: String,
    pub broker: String,
    pub stats: Arc<ConnectorStats>,
    pub task: tokio::task::JoinHandle<Result<(), StreamError>>,
}

/// Starts the connector of every source in `[stream.sources]` (each must be one of `streams`)
/// on its own task, appending to the log `log_of` gives for it; a source whose log `log_of`
/// cannot give (`None`: another process holds it, and reads the broker) is skipped with a
/// note on stderr.
pub fn start_connectors(
    project: &Project,
    streams: &[Streamed],
    mut log_of: impl FnMut(&str) -> anyhow::Result<Option<Arc<Appender>>>,
    stop: &Arc<AtomicBool>,
    until_caught_up: bool,
) -> anyhow::Result<Vec<Running>> {
    let mut running = Vec::new();
    for (name, broker) in &project.config.stream.sources {
        let Some(s) = streams.iter().find(|s| &s.source == name) else {
            anyhow::bail!(
                "stream.sources.{name}: no online feature view with windowed aggregations reads source {name:?}, so there is nothing to stream it into (streamed sources: {})",
                if streams.is_empty() {
                    "none".to_string()
                } else {
                    streams
                        .iter()
                        .map(|s| s.source.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        };
        let Some(log) = log_of(name)? else {
            eprintln!(
                "source {name}: its log is held by another process (e.g. kiln serve), which reads {} into it",
                broker.describe()
            );
            continue;
        };
        let connector = Connector {
            schema: s.schema()?,
            log,
            stats: Arc::new(ConnectorStats::default()),
            stop: stop.clone(),
            opts: ConnectorOptions {
                batch: project.config.stream.batch,
                until_caught_up,
            },
        };
        let stats = connector.stats.clone();
        let (task_broker, task_name) = (broker.clone(), name.clone());
        running.push(Running {
            source: name.clone(),
            broker: broker.describe(),
            stats,
            task: tokio::spawn(async move {
                let result = connector.run(&task_broker).await;
                if let (Err(e), false) = (&result, until_caught_up) {
                    // A long-running process says so now, not when it stops.
                    eprintln!(
                        "source {task_name}: reading {} stopped: {e}",
                        task_broker.describe()
                    );
                }
                result
            }),
        });
    }
    Ok(running)
}

/// Opens a source's log for a connector in this process; `None` when another process holds it.
pub fn open_log(project: &Project, source: &str) -> anyhow::Result<Option<Arc<Appender>>> {
    let dir = source_dir(&project.config.stream.dir(&project.dir), source);
    match Appender::open_with(&dir, &project.config.stream.log_options()) {
        Ok(log) => Ok(Some(log)),
        Err(StreamError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
