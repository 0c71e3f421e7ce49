//! Plans: what `kiln apply` would change in the registry, and the events that make the change.
//!
//! A view whose data definition (schema, source, ttl, entities) differs from its current
//! version gets a new immutable version; a change to only its description, owner, tags or
//! online flag is recorded without one. Objects that are registered but no longer defined are
//! deleted (a deleted view's versions stay readable).

use std::collections::BTreeSet;
use std::fmt;

use kiln_core::spec::{Field, ViewVersion};
use kiln_core::time::{Micros, format_duration};
use kiln_registry::{Event, State};
use serde::Serialize;

use crate::definitions::Definitions;

/// What happens to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create,
    /// Metadata only (no new version).
    Update {
        changes: Vec<String>,
    },
    NewVersion {
        from: u32,
        to: u32,
        changes: Vec<String>,
    },
    Delete,
    Unchanged,
}

/// One object's planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, what) = match &self.action {
            Action::Create => ("+", "create".to_string()),
            Action::Update { changes } => ("~", format!("update: {}", changes.join("; "))),
            Action::NewVersion { from, to, changes } => (
                "~",
                format!("new version v{from} -> v{to}: {}", changes.join("; ")),
            ),
            Action::Delete => ("-", "delete".to_string()),
            Action::Unchanged => ("=", "unchanged".to_string()),
        };
        write!(f, "{sign} {} {}: {what}", self.kind, self.name)
    }
}

/// The full plan: changes for display, events to append, and the log position it was made at.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub base_seq: i64,
    pub changes: Vec<Change>,
    #[serde(skip)]
    pub events: Vec<Event>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Plans the change from `state` to `defs`.
pub fn plan(defs: &Definitions, state: &State, now: Micros) -> Plan {
    let mut changes = Vec::new();
    let mut events = Vec::new();
    let mut change = |kind, name: &str, action| {
        changes.push(Change {
            kind,
            name: name.to_string(),
            action,
        })
    };

    for e in &defs.entities {
        match state.entities.get(&e.name) {
            None => {
                change("entity", &e.name, Action::Create);
                events.push(Event::EntityApplied { spec: e.clone() });
            }
            Some(old) if old != e => {
                let mut diffs = Vec::new();
                if old.join_keys != e.join_keys {
                    diffs.push(format!(
                        "join keys {} -> {}",
                        fields(&old.join_keys),
                        fields(&e.join_keys)
                    ));
                }
                if old.description != e.description || old.tags != e.tags {
                    diffs.push("description/tags".to_string());
                }
                change("entity", &e.name, Action::Update { changes: diffs });
                events.push(Event::EntityApplied { spec: e.clone() });
            }
            Some(_) => change("entity", &e.name, Action::Unchanged),
        }
    }
    for s in &defs.sources {
        match state.sources.get(&s.name) {
            None => {
                change("source", &s.name, Action::Create);
                events.push(Event::SourceApplied { spec: s.clone() });
            }
            Some(old) if old != s => {
                let mut diffs = Vec::new();
                if old.path != s.path {
                    diffs.push(format!("path {} -> {}", old.path, s.path));
                }
                if old.timestamp_field != s.timestamp_field
                    || old.created_timestamp_column != s.created_timestamp_column
                {
                    diffs.push("timestamp columns".to_string());
                }
                if old.description != s.description || old.tags != s.tags {
                    diffs.push("description/tags".to_string());
                }
                change("source", &s.name, Action::Update { changes: diffs });
                events.push(Event::SourceApplied { spec: s.clone() });
            }
            Some(_) => change("source", &s.name, Action::Unchanged),
        }
    }
    for v in &defs.views {
        let existing = state.views.get(&v.name);
        let next = existing.map_or(1, |x| x.versions.len() as u32 + 1);
        // Validation guarantees the view's entities and source are defined.
        let Some(resolved) = defs.resolve_view(v, next, now) else {
            continue;
        };
        match existing {
            Some(old) if !old.deleted => {
                let current = old.current();
                if current.data_differs(&resolved) {
                    change(
                        "feature_view",
                        &v.name,
                        Action::NewVersion {
                            from: current.version,
                            to: next,
                            changes: view_diffs(current, &resolved),
                        },
                    );
                    events.push(Event::ViewVersionCreated {
                        version: resolved,
                        online: v.online,
                        meta: v.meta.clone(),
                    });
                } else if old.online != v.online || old.meta != v.meta {
                    let mut diffs = Vec::new();
                    if old.online != v.online {
                        diffs.push(format!("online {} -> {}", old.online, v.online));
                    }
                    if old.meta != v.meta {
                        diffs.push("description/owner/tags".to_string());
                    }
                    change("feature_view", &v.name, Action::Update { changes: diffs });
                    events.push(Event::ViewUpdated {
                        name: v.name.clone(),
                        online: v.online,
                        meta: v.meta.clone(),
                    });
                } else {
                    change("feature_view", &v.name, Action::Unchanged);
                }
            }
            _ => {
                change("feature_view", &v.name, Action::Create);
                events.push(Event::ViewVersionCreated {
                    version: resolved,
                    online: v.online,
                    meta: v.meta.clone(),
                });
            }
        }
    }
    for s in &defs.services {
        match state.services.get(&s.name) {
            None => {
                change("feature_service", &s.name, Action::Create);
                events.push(Event::ServiceApplied { spec: s.clone() });
            }
            Some(old) if old != s => {
                let before: BTreeSet<String> = old.features.iter().map(|f| f.to_string()).collect();
                let after: BTreeSet<String> = s.features.iter().map(|f| f.to_string()).collect();
                let mut diffs: Vec<String> =
                    after.difference(&before).map(|f| format!("+{f}")).collect();
                diffs.extend(before.difference(&after).map(|f| format!("-{f}")));
                if diffs.is_empty() {
                    diffs.push(
                        if before == after && old.features != s.features {
                            "feature order"
                        } else {
                            "description/owner/tags"
                        }
                        .to_string(),
                    );
                }
                change(
                    "feature_service",
                    &s.name,
                    Action::Update { changes: diffs },
                );
                events.push(Event::ServiceApplied { spec: s.clone() });
            }
            Some(_) => change("feature_service", &s.name, Action::Unchanged),
        }
    }

    // Deletions, dependents first.
    for name in state
        .services
        .keys()
        .filter(|n| !defs.services.iter().any(|s| &s.name == *n))
    {
        change("feature_service", name, Action::Delete);
        events.push(Event::ServiceDeleted { name: name.clone() });
    }
    for view in state
        .live_views()
        .filter(|v| !defs.views.iter().any(|d| d.name == v.name))
    {
        change("feature_view", &view.name, Action::Delete);
        events.push(Event::ViewDeleted {
            name: view.name.clone(),
        });
    }
    for name in state
        .sources
        .keys()
        .filter(|n| !defs.sources.iter().any(|s| &s.name == *n))
    {
        change("source", name, Action::Delete);
        events.push(Event::SourceDeleted { name: name.clone() });
    }
    for name in state
        .entities
        .keys()
        .filter(|n| !defs.entities.iter().any(|e| &e.name == *n))
    {
        change("entity", name, Action::Delete);
        events.push(Event::EntityDeleted { name: name.clone() });
    }
    Plan {
        base_seq: state.last_seq,
        changes,
        events,
    }
}

fn fields(fs: &[Field]) -> String {
    let inner: Vec<String> = fs
        .iter()
        .map(|f| format!("{}:{}", f.name, f.dtype))
        .collect();
    format!("[{}]", inner.join(", "))
}

fn view_diffs(old: &ViewVersion, new: &ViewVersion) -> Vec<String> {
    let mut out = Vec::new();
    if old.ttl_seconds != new.ttl_seconds {
        out.push(format!(
            "ttl {} -> {}",
            format_duration(old.ttl_seconds),
            format_duration(new.ttl_seconds)
        ));
    }
    if old.entities != new.entities || old.join_keys != new.join_keys {
        out.push(format!(
            "join keys {} -> {}",
            fields(&old.join_keys),
            fields(&new.join_keys)
        ));
    }
    if !old.source.reads_like(&new.source) {
        if old.source.name != new.source.name {
            out.push(format!("source {} -> {}", old.source.name, new.source.name));
        } else {
            out.push(format!("source {} changed", new.source.name));
        }
    }
    for f in &new.features {
        match old.feature(&f.name) {
            None => out.push(format!("+{}:{}", f.name, f.dtype)),
            Some(o) if o.dtype != f.dtype => {
                out.push(format!("{}: {} -> {}", f.name, o.dtype, f.dtype))
            }
            Some(_) => {}
        }
    }
    for f in &old.features {
        if new.feature(&f.name).is_none() {
            out.push(format!("-{}", f.name));
        }
    }
    if out.is_empty() && old.aggregations != new.aggregations {
        out.push("aggregation input types".to_string());
    }
    if out.is_empty() {
        out.push("feature order".to_string());
    }
    out
}
