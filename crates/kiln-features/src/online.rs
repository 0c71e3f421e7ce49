//! Online retrieval: feature values for entity keys, with TTL enforced on read.
//!
//! A [`Catalog`] is the serving-side view of the registry (built once per registry change):
//! each live view's current version with a feature-name index, and the feature lists of older
//! versions so that rows written by an older version are still read by name. A request names
//! features (`view:feature` or a feature service) and entity key columns; the answer has one
//! column per entity key (echoed) and per feature, each value with a status and an event time:
//! present, not found, or expired (older than the view's ttl, returned as null — Feast returns
//! such values as if they were fresh).

use std::collections::HashMap;

use kiln_core::spec::{Field, ViewVersion};
use kiln_core::time::Micros;
use kiln_core::{FeatureRef, Value, key::entity_key};
use kiln_registry::State;
use kiln_store::online::{OnlineStore, StoredRow};
use serde::Serialize;

use crate::{FeatureError, NotFoundKind};

/// What serving needs to know about one view.
#[derive(Debug, Clone)]
struct CatalogView {
    current: ViewVersion,
    online: bool,
    index: HashMap<String, usize>,
    /// Feature names of every version, version `n` at `n - 1`.
    version_features: Vec<Vec<Field>>,
}

/// The registry as serving sees it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    views: HashMap<String, CatalogView>,
    services: HashMap<String, Vec<FeatureRef>>,
    /// The registry position this catalog reflects.
    pub seq: i64,
}

impl Catalog {
    pub fn from_state(state: &State) -> Catalog {
        let views = state
            .live_views()
            .map(|v| {
                let current = v.current().clone();
                let index = current
                    .features
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.name.clone(), i))
                    .collect();
                let version_features = v.versions.iter().map(|x| x.features.clone()).collect();
                (
                    v.name.clone(),
                    CatalogView {
                        current,
                        online: v.online,
                        index,
                        version_features,
                    },
                )
            })
            .collect();
        let services = state
            .services
            .iter()
            .map(|(k, s)| (k.clone(), s.features.clone()))
            .collect();
        Catalog {
            views,
            services,
            seq: state.last_seq,
        }
    }

    /// The features of a service, in its order.
    pub fn service(&self, name: &str) -> Result<&[FeatureRef], FeatureError> {
        self.services
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| FeatureError::NotFound {
                kind: NotFoundKind::Service,
                message: format!(
                    "feature service {name:?} is not registered (registered: {})",
                    sorted(self.services.keys())
                ),
            })
    }

    fn view(&self, name: &str) -> Result<&CatalogView, FeatureError> {
        self.views.get(name).ok_or_else(|| FeatureError::NotFound {
            kind: NotFoundKind::View,
            message: format!(
                "feature view {name:?} is not registered (registered: {})",
                sorted(self.views.keys())
            ),
        })
    }
}

fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = names.map(String::as_str).collect();
    v.sort_unstable();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Which features a request wants.
#[derive(Debug, Clone)]
pub enum FeatureSelection {
    /// `view:feature` references.
    Refs(Vec<String>),
    /// All features of a feature service.
    Service(String),
}

/// An online request.
#[derive(Debug, Clone)]
pub struct OnlineRequest {
    pub features: FeatureSelection,
    /// Entity key columns, in request order, values as JSON.
    pub entities: Vec<(String, Vec<serde_json::Value>)>,
    pub full_feature_names: bool,
}

/// The status of one returned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FeatureStatus {
    #[serde(rename = "PRESENT")]
    Present,
    #[serde(rename = "NOT_FOUND")]
    NotFound,
    /// Older than the view's ttl. Feast's status name for this is `OUTSIDE_MAX_AGE`, which is
    /// what the Feast-compatible API sends.
    #[serde(rename = "OUTSIDE_MAX_AGE")]
    Expired,
}

impl FeatureStatus {
    /// The name shown to people (`EXPIRED` rather than Feast's wire name).
    pub fn label(self) -> &'static str {
        match self {
            FeatureStatus::Present => "PRESENT",
            FeatureStatus::NotFound => "NOT_FOUND",
            FeatureStatus::Expired => "EXPIRED",
        }
    }
}

/// One column of the answer (an entity key or a feature), one entry per entity row.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseColumn {
    pub name: String,
    /// The feature view the column was read from; `None` for entity key columns.
    pub view: Option<String>,
    pub values: Vec<Value>,
    pub statuses: Vec<FeatureStatus>,
    /// Event time of each value; 0 (the epoch) for entity keys and missing values, as Feast.
    pub event_timestamps: Vec<Micros>,
}

/// The answer: entity key columns first, then features in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineResponse {
    pub columns: Vec<ResponseColumn>,
}

/// Reads features for entity rows at time `now`.
pub async fn get_online_features(
    catalog: &Catalog,
    store: &dyn OnlineStore,
    req: &OnlineRequest,
    now: Micros,
) -> Result<OnlineResponse, FeatureError> {
    // Resolve the features, grouped by view in order of first appearance.
    let refs: Vec<FeatureRef> = match &req.features {
        FeatureSelection::Service(name) => catalog.service(name)?.to_vec(),
        FeatureSelection::Refs(texts) => texts
            .iter()
            .map(|t| {
                t.parse::<FeatureRef>()
                    .map_err(|e| FeatureError::BadRequest(e.to_string()))
            })
            .collect::<Result<_, _>>()?,
    };
    if refs.is_empty() {
        return Err(FeatureError::BadRequest("no features requested".into()));
    }
    let mut groups: Vec<(&CatalogView, Vec<(usize, usize)>)> = Vec::new(); // (view, [(output slot, feature index)])
    let mut names = Vec::new();
    for (slot, r) in refs.iter().enumerate() {
        let view = catalog.view(&r.view)?;
        if !view.online {
            return Err(FeatureError::BadRequest(format!(
                "feature view {:?} is not served online (online = false in its definition)",
                r.view
            )));
        }
        let idx = *view
            .index
            .get(&r.feature)
            .ok_or_else(|| FeatureError::NotFound {
                kind: NotFoundKind::Feature,
                message: format!(
                    "feature view {:?} has no feature {:?} (it has: {})",
                    r.view,
                    r.feature,
                    view.current
                        .features
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let name = r.column_name(req.full_feature_names);
        if names.contains(&name) {
            return Err(FeatureError::BadRequest(format!(
                "feature {name:?} is requested twice{}",
                if req.full_feature_names {
                    ""
                } else {
                    " (from two views? set full_feature_names)"
                }
            )));
        }
        names.push(name);
        match groups
            .iter_mut()
            .find(|(v, _)| v.current.name == view.current.name)
        {
            Some((_, slots)) => slots.push((slot, idx)),
            None => groups.push((view, vec![(slot, idx)])),
        }
    }

    // Entity rows.
    let n = req.entities.first().map_or(0, |(_, v)| v.len());
    if n == 0 {
        return Err(FeatureError::BadRequest(
            "entities must hold at least one row of join key values".into(),
        ));
    }
    for (i, (name, values)) in req.entities.iter().enumerate() {
        if req.entities[..i].iter().any(|(other, _)| other == name) {
            return Err(FeatureError::BadRequest(format!(
                "entity column {name:?} is given twice; give each join key once with one value per row"
            )));
        }
        if values.len() != n {
            return Err(FeatureError::BadRequest(format!(
                "entity column {name:?} has {} values but {:?} has {n}; every column needs one value per row",
                values.len(),
                req.entities[0].0
            )));
        }
        if !groups
            .iter()
            .any(|(v, _)| v.current.join_keys.iter().any(|k| &k.name == name))
        {
            let keys: Vec<&str> = groups
                .iter()
                .flat_map(|(v, _)| v.current.join_keys.iter().map(|k| k.name.as_str()))
                .collect();
            return Err(FeatureError::BadRequest(format!(
                "entity column {name:?} is not a join key of the requested features (their join keys: {})",
                keys.join(", ")
            )));
        }
    }

    let mut columns: Vec<ResponseColumn> = Vec::new();
    let mut entity_values: HashMap<&str, Vec<Value>> = HashMap::new();
    let mut features: Vec<Option<ResponseColumn>> = vec![None; refs.len()];
    for (view, slots) in &groups {
        // Keys for this view, converted to its declared types.
        let mut key_cols = Vec::new();
        for k in &view.current.join_keys {
            let (_, raw) = req
                .entities
                .iter()
                .find(|(n, _)| n == &k.name)
                .ok_or_else(|| {
                    FeatureError::BadRequest(format!(
                        "entities has no column {:?}, the join key of feature view {:?}",
                        k.name, view.current.name
                    ))
                })?;
            let vals = raw
                .iter()
                .enumerate()
                .map(|(row, j)| {
                    Value::from_json(j, k.dtype).map_err(|e| {
                        FeatureError::BadRequest(format!("entities.{}[{row}]: {e}", k.name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(row) = vals.iter().position(Value::is_null) {
                return Err(FeatureError::BadRequest(format!(
                    "entities.{}[{row}] is null; join key values cannot be null",
                    k.name
                )));
            }
            entity_values
                .entry(k.name.as_str())
                .or_insert_with(|| vals.clone());
            key_cols.push(vals);
        }
        let keys: Vec<Vec<u8>> = (0..n)
            .map(|row| entity_key(&key_cols.iter().map(|c| c[row].clone()).collect::<Vec<_>>()))
            .collect();
        let rows = store.get_many(&view.current.name, &keys).await?;
        let ttl = view.current.ttl_micros();
        let mut out: Vec<ResponseColumn> = slots
            .iter()
            .map(|(slot, _)| ResponseColumn {
                name: names[*slot].clone(),
                view: Some(view.current.name.clone()),
                values: Vec::with_capacity(n),
                statuses: Vec::with_capacity(n),
                event_timestamps: Vec::with_capacity(n),
            })
            .collect();
        for (row, stored) in rows.iter().enumerate() {
            let decoded = match stored {
                Some(s) => Some((
                    s.event_ts,
                    decode_row(view, s).map_err(|reason| {
                        FeatureError::Store(kiln_store::StoreError::CorruptRow {
                            view: view.current.name.clone(),
                            key: key_cols
                                .iter()
                                .map(|c| c[row].to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            reason,
                        })
                    })?,
                )),
                None => None,
            };
            for (col, (_, idx)) in out.iter_mut().zip(slots.iter()) {
                let (value, status, ts) = match &decoded {
                    None => (Value::Null, FeatureStatus::NotFound, 0),
                    Some((ev, vals)) => match vals.get(*idx) {
                        None | Some(None) => (Value::Null, FeatureStatus::NotFound, 0),
                        Some(Some(_)) if ttl > 0 && *ev < now.saturating_sub(ttl) => {
                            (Value::Null, FeatureStatus::Expired, *ev)
                        }
                        Some(Some(v)) => (v.clone(), FeatureStatus::Present, *ev),
                    },
                };
                col.values.push(value);
                col.statuses.push(status);
                col.event_timestamps.push(ts);
            }
        }
        for ((slot, _), col) in slots.iter().zip(out) {
            features[*slot] = Some(col);
        }
    }
    for (name, _) in &req.entities {
        let values = entity_values.remove(name.as_str()).unwrap_or_default();
        columns.push(ResponseColumn {
            name: name.clone(),
            view: None,
            statuses: vec![FeatureStatus::Present; values.len()],
            event_timestamps: vec![0; values.len()],
            values,
        });
    }
    columns.extend(features.into_iter().flatten());
    Ok(OnlineResponse { columns })
}

/// Decodes a stored payload into values positioned like the view's current features: `None`
/// for a feature the writing version did not have with the same name and type. A row written by
/// a version this catalog does not know yet (a newer one, registered since the catalog was
/// built) reads as not found until the catalog catches up.
fn decode_row(view: &CatalogView, row: &StoredRow) -> Result<Vec<Option<Value>>, String> {
    let (version, values) = row.decode_payload()?;
    if version == view.current.version {
        return Ok(values.into_iter().map(Some).collect());
    }
    let Some(written) = (version as usize)
        .checked_sub(1)
        .and_then(|i| view.version_features.get(i))
    else {
        return Ok(vec![None; view.current.features.len()]);
    };
    Ok(view
        .current
        .features
        .iter()
        .map(|f| {
            written
                .iter()
                .position(|w| w == f)
                .and_then(|i| values.get(i).cloned())
        })
        .collect())
}
