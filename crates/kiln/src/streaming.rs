//! Which sources stream, read from the registry: every online view with windowed
//! aggregations, grouped by the source it reads. `kiln stream run`, `kiln serve` (push API and
//! embedded stream) and `kiln consistency` all start from this list.

use std::path::PathBuf;

use anyhow::Context;
use arrow_schema::SchemaRef;
use kiln_core::spec::ViewVersion;
use kiln_registry::State;
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
