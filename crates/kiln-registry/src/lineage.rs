//! Lineage: which sources feed which view versions, which services consume them, and which
//! model versions read those services.
//!
//! The full graph is built from the state (source -> view@version for every version,
//! view@current -> service for every service), then cut down to what lies upstream and
//! downstream of the object asked about.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use crate::{RegistryError, State};

/// A node of the lineage graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LineageNode {
    Source {
        name: String,
        path: String,
    },
    View {
        name: String,
        version: u32,
        current: bool,
    },
    Service {
        name: String,
    },
    Model {
        name: String,
        version: u32,
        stage: String,
    },
}

impl LineageNode {
    /// A stable id such as `view:driver_hourly_stats@v2`.
    pub fn id(&self) -> String {
        match self {
            LineageNode::Source { name, .. } => format!("source:{name}"),
            LineageNode::View { name, version, .. } => format!("view:{name}@v{version}"),
            LineageNode::Service { name } => format!("service:{name}"),
            LineageNode::Model { name, version, .. } => format!("model:{name}@v{version}"),
        }
    }
}

/// A directed edge `from -> to`, by node id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LineageEdge {
    pub from: String,
    pub to: String,
}

/// What is upstream and downstream of one object.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub root: String,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

/// The lineage of the source, view or service called `name`.
pub fn lineage(state: &State, name: &str) -> Result<Lineage, RegistryError> {
    let (nodes, edges) = full_graph(state);
    let roots: Vec<String> = nodes
        .iter()
        .filter(|n| match n {
            LineageNode::Source { name: s, .. } | LineageNode::Service { name: s } => s == name,
            LineageNode::View { name: v, .. } | LineageNode::Model { name: v, .. } => v == name,
        })
        .map(LineageNode::id)
        .collect();
    if roots.is_empty() {
        return Err(RegistryError::NotFound {
            kind: "source, feature view, feature service or model",
            name: name.to_string(),
            hint: String::new(),
        });
    }
    let mut keep: BTreeSet<String> = roots.iter().cloned().collect();
    for downstream in [true, false] {
        let mut queue: VecDeque<String> = roots.iter().cloned().collect();
        while let Some(id) = queue.pop_front() {
            for e in &edges {
                let (here, next) = if downstream {
                    (&e.from, &e.to)
                } else {
                    (&e.to, &e.from)
                };
                if *here == id && keep.insert(next.clone()) {
                    queue.push_back(next.clone());
                }
            }
        }
    }
    Ok(Lineage {
        root: name.to_string(),
        nodes: nodes
            .into_iter()
            .filter(|n| keep.contains(&n.id()))
            .collect(),
        edges: edges
            .into_iter()
            .filter(|e| keep.contains(&e.from) && keep.contains(&e.to))
            .collect(),
    })
}

fn full_graph(state: &State) -> (Vec<LineageNode>, Vec<LineageEdge>) {
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    for view in state.views.values() {
        let current = (!view.deleted).then(|| view.current().version);
        for v in &view.versions {
            let source = LineageNode::Source {
                name: v.source.name.clone(),
                path: state
                    .sources
                    .get(&v.source.name)
                    .map_or_else(|| v.source.path.clone(), |s| s.path.clone()),
            };
            let node = LineageNode::View {
                name: v.name.clone(),
                version: v.version,
                current: current == Some(v.version),
            };
            edges.insert(LineageEdge {
                from: source.id(),
                to: node.id(),
            });
            nodes.insert(source);
            nodes.insert(node);
        }
    }
    for source in state.sources.values() {
        nodes.insert(LineageNode::Source {
            name: source.name.clone(),
            path: source.path.clone(),
        });
    }
    for service in state.services.values() {
        let node = LineageNode::Service {
            name: service.name.clone(),
        };
        let views: BTreeSet<&str> = service.features.iter().map(|f| f.view.as_str()).collect();
        for view in views {
            if let Ok(v) = state.view(view) {
                edges.insert(LineageEdge {
                    from: format!("view:{view}@v{}", v.current().version),
                    to: node.id(),
                });
            }
        }
        nodes.insert(node);
    }
    for model in state.models.values() {
        for v in &model.versions {
            let node = LineageNode::Model {
                name: model.name.clone(),
                version: v.spec.version,
                stage: v.stage.to_string(),
            };
            if let Some(service) = &v.spec.feature_service {
                edges.insert(LineageEdge {
                    from: format!("service:{service}"),
                    to: node.id(),
                });
            }
            nodes.insert(node);
        }
    }
    (nodes.into_iter().collect(), edges.into_iter().collect())
}
