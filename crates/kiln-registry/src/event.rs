//! The events the registry log records. Each is a fact about the past ("view X got version 3"),
//! never an instruction, so replaying them always yields the same state.

use kiln_core::deploy::Deployment;
use kiln_core::spec::{
    EntitySpec, FeatureServiceSpec, Meta, ModelVersion, SourceSpec, Stage, ViewVersion,
};
use kiln_core::time::Micros;
use serde::{Deserialize, Serialize};

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An entity was created or changed.
    EntityApplied {
        spec: EntitySpec,
    },
    EntityDeleted {
        name: String,
    },
    /// A source was created or changed. Views keep the source as it was when their version was
    /// created; a changed source leads to new versions of the views that read it.
    SourceApplied {
        spec: SourceSpec,
    },
    SourceDeleted {
        name: String,
    },
    /// A view was created, or its data definition (schema, source, ttl, entities) changed.
    ViewVersionCreated {
        version: ViewVersion,
        online: bool,
        meta: Meta,
    },
    /// Only a view's description, owner, tags or online flag changed: no new version.
    ViewUpdated {
        name: String,
        online: bool,
        meta: Meta,
    },
    /// A view was removed from the definitions. Its versions stay readable.
    ViewDeleted {
        name: String,
    },
    ServiceApplied {
        spec: FeatureServiceSpec,
    },
    ServiceDeleted {
        name: String,
    },
    /// A new immutable model version (stage `none`).
    ModelVersionRegistered {
        version: ModelVersion,
    },
    /// A model version moved to another stage.
    ModelStageChanged {
        name: String,
        version: u32,
        stage: Stage,
    },
    /// A model's traffic was routed anew (`kiln deploy`, or a canary's verdict); `None`: back
    /// to its production (else latest) version. `reason` says who or what decided.
    ModelDeployed {
        name: String,
        deployment: Option<Deployment>,
        reason: String,
    },
    /// The rows of a view version with `start <= event time <= end` were written to the online
    /// store.
    Materialized {
        view: String,
        version: u32,
        start: Micros,
        end: Micros,
        rows: u64,
    },
}

impl Event {
    /// A short name for the event type (the `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::EntityApplied { .. } => "entity_applied",
            Event::EntityDeleted { .. } => "entity_deleted",
            Event::SourceApplied { .. } => "source_applied",
            Event::SourceDeleted { .. } => "source_deleted",
            Event::ViewVersionCreated { .. } => "view_version_created",
            Event::ViewUpdated { .. } => "view_updated",
            Event::ViewDeleted { .. } => "view_deleted",
            Event::ServiceApplied { .. } => "service_applied",
            Event::ServiceDeleted { .. } => "service_deleted",
            Event::Materialized { .. } => "materialized",
            Event::ModelVersionRegistered { .. } => "model_version_registered",
            Event::ModelStageChanged { .. } => "model_stage_changed",
            Event::ModelDeployed { .. } => "model_deployed",
        }
    }

    /// The object the event is about (the `subject` column), e.g. `driver_hourly_stats@v2`.
    pub fn subject(&self) -> String {
        match self {
            Event::EntityApplied { spec } => spec.name.clone(),
            Event::SourceApplied { spec } => spec.name.clone(),
            Event::ServiceApplied { spec } => spec.name.clone(),
            Event::ViewVersionCreated { version, .. } => {
                format!("{}@v{}", version.name, version.version)
            }
            Event::Materialized { view, version, .. } => format!("{view}@v{version}"),
            Event::ModelVersionRegistered { version } => {
                format!("{}@v{}", version.name, version.version)
            }
            Event::ModelStageChanged { name, version, .. } => format!("{name}@v{version}"),
            Event::EntityDeleted { name }
            | Event::SourceDeleted { name }
            | Event::ViewUpdated { name, .. }
            | Event::ViewDeleted { name }
            | Event::ServiceDeleted { name }
            | Event::ModelDeployed { name, .. } => name.clone(),
        }
    }
}

/// An event as stored: its position in the log and when it was appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: i64,
    pub at: Micros,
    pub event: Event,
}
