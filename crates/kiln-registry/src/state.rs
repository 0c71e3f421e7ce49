//! The projection: the registry's current state, derived by replaying the event log.

use std::collections::BTreeMap;

use kiln_core::deploy::Deployment;
use kiln_core::spec::{
    EntitySpec, FeatureServiceSpec, Meta, ModelVersion, SourceSpec, Stage, ViewVersion,
};
use kiln_core::time::Micros;
use serde::Serialize;

use crate::{Event, EventRecord, RegistryError};

/// Everything registered, as of event `last_seq`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    pub last_seq: i64,
    pub entities: BTreeMap<String, EntitySpec>,
    pub sources: BTreeMap<String, SourceSpec>,
    /// Every view ever registered, deleted ones included (their versions stay readable).
    pub views: BTreeMap<String, ViewState>,
    pub services: BTreeMap<String, FeatureServiceSpec>,
    pub models: BTreeMap<String, ModelState>,
}

/// A registered model: its versions, each with its stage, and how its traffic is routed.
#[derive(Debug, Clone, Serialize)]
pub struct ModelState {
    pub name: String,
    /// Version `n` at index `n - 1`.
    pub versions: Vec<ModelVersionState>,
    /// The traffic split, when one was deployed; otherwise the production version (else the
    /// latest) answers. Promoting a version to production ends the deployment.
    pub deployment: Option<Deployment>,
    /// The event that set the deployment (a canary's step bakes from its time).
    pub deployed_seq: i64,
    pub deployed_at: Micros,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelVersionState {
    #[serde(flatten)]
    pub spec: ModelVersion,
    pub stage: Stage,
}

impl ModelState {
    pub fn version(&self, n: u32) -> Option<&ModelVersionState> {
        n.checked_sub(1).and_then(|i| self.versions.get(i as usize))
    }

    /// The version in production, if any.
    pub fn production(&self) -> Option<&ModelVersionState> {
        self.versions.iter().find(|v| v.stage == Stage::Production)
    }

    /// Whether `d` can route this model's traffic: every version it names exists and is not
    /// archived, and all of them take the same inputs and give the same number of outputs
    /// (a caller cannot tell which one answers).
    pub fn check_deployment(&self, d: &Deployment) -> Result<(), String> {
        let name = &self.name;
        d.check()
            .map_err(|e| format!("deployment of {name}: {e}"))?;
        let mut first: Option<&ModelVersion> = None;
        for n in d.versions() {
            let v = self.version(n).ok_or_else(|| {
                format!(
                    "{name} has no version {n} (it has 1 to {})",
                    self.versions.len()
                )
            })?;
            if v.stage == Stage::Archived {
                return Err(format!(
                    "{name}@v{n} is archived; promote it to staging first to deploy it"
                ));
            }
            match first {
                None => first = Some(&v.spec),
                Some(f) if f.inputs != v.spec.inputs || f.n_outputs != v.spec.n_outputs => {
                    return Err(format!(
                        "{name}@v{n} takes inputs [{}] and gives {} outputs, but {name}@v{} takes [{}] and gives {}: the versions of one deployment must be interchangeable",
                        v.spec.inputs.join(", "),
                        v.spec.n_outputs,
                        f.version,
                        f.inputs.join(", "),
                        f.n_outputs
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub fn latest(&self) -> &ModelVersionState {
        // Invariant: a ModelState is created by ModelVersionRegistered, which pushes a version.
        &self.versions[self.versions.len() - 1]
    }
}

/// A feature view's history and current metadata.
#[derive(Debug, Clone, Serialize)]
pub struct ViewState {
    pub name: String,
    /// All versions, oldest first; version `n` is at index `n - 1`.
    pub versions: Vec<ViewVersion>,
    pub deleted: bool,
    pub online: bool,
    pub meta: Meta,
    /// The latest materialization of each version.
    pub materialized: BTreeMap<u32, MaterializationRecord>,
}

/// Where materialization of one view version has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MaterializationRecord {
    /// The end of the latest window written; incremental runs start here.
    pub watermark: Micros,
    pub last_start: Micros,
    pub last_end: Micros,
    pub last_rows: u64,
    pub at: Micros,
}

impl ViewState {
    /// The current version (the latest). Every view has at least one.
    pub fn current(&self) -> &ViewVersion {
        // Invariant: a ViewState is only created by ViewVersionCreated, which pushes a version.
        &self.versions[self.versions.len() - 1]
    }

    pub fn version(&self, n: u32) -> Option<&ViewVersion> {
        n.checked_sub(1).and_then(|i| self.versions.get(i as usize))
    }
}

impl State {
    /// Replays events in order.
    pub fn replay<'a>(
        records: impl IntoIterator<Item = &'a EventRecord>,
    ) -> Result<State, RegistryError> {
        let mut state = State::default();
        for r in records {
            state.apply(r)?;
        }
        Ok(state)
    }

    /// Applies one event. Fails only on a log that could not have been written by Kiln (an
    /// event out of order, a version that skips a number), which means the log is corrupt.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), RegistryError> {
        let corrupt = |reason: String| RegistryError::CorruptEvent {
            seq: record.seq,
            reason,
        };
        if record.seq <= self.last_seq {
            return Err(corrupt(format!(
                "sequence number is not after #{}",
                self.last_seq
            )));
        }
        match &record.event {
            Event::EntityApplied { spec } => {
                self.entities.insert(spec.name.clone(), spec.clone());
            }
            Event::EntityDeleted { name } => {
                self.entities.remove(name);
            }
            Event::SourceApplied { spec } => {
                self.sources.insert(spec.name.clone(), spec.clone());
            }
            Event::SourceDeleted { name } => {
                self.sources.remove(name);
            }
            Event::ViewVersionCreated {
                version,
                online,
                meta,
            } => {
                let view = self
                    .views
                    .entry(version.name.clone())
                    .or_insert_with(|| ViewState {
                        name: version.name.clone(),
                        versions: Vec::new(),
                        deleted: false,
                        online: *online,
                        meta: meta.clone(),
                        materialized: BTreeMap::new(),
                    });
                let expected = view.versions.len() as u32 + 1;
                if version.version != expected {
                    return Err(corrupt(format!(
                        "view {} jumps to version {} (expected {expected})",
                        version.name, version.version
                    )));
                }
                view.versions.push(version.clone());
                view.deleted = false;
                view.online = *online;
                view.meta = meta.clone();
            }
            Event::ViewUpdated { name, online, meta } => {
                let view = self
                    .views
                    .get_mut(name)
                    .ok_or_else(|| corrupt(format!("update of unknown view {name}")))?;
                view.online = *online;
                view.meta = meta.clone();
            }
            Event::ViewDeleted { name } => {
                let view = self
                    .views
                    .get_mut(name)
                    .ok_or_else(|| corrupt(format!("deletion of unknown view {name}")))?;
                view.deleted = true;
            }
            Event::ServiceApplied { spec } => {
                self.services.insert(spec.name.clone(), spec.clone());
            }
            Event::ServiceDeleted { name } => {
                self.services.remove(name);
            }
            Event::ModelVersionRegistered { version } => {
                let model = self
                    .models
                    .entry(version.name.clone())
                    .or_insert_with(|| ModelState {
                        name: version.name.clone(),
                        versions: Vec::new(),
                        deployment: None,
                        deployed_seq: 0,
                        deployed_at: 0,
                    });
                let expected = model.versions.len() as u32 + 1;
                if version.version != expected {
                    return Err(corrupt(format!(
                        "model {} jumps to version {} (expected {expected})",
                        version.name, version.version
                    )));
                }
                model.versions.push(ModelVersionState {
                    spec: version.clone(),
                    stage: Stage::None,
                });
            }
            Event::ModelStageChanged {
                name,
                version,
                stage,
            } => {
                let model = self
                    .models
                    .get_mut(name)
                    .ok_or_else(|| corrupt(format!("stage change of unknown model {name}")))?;
                if model.version(*version).is_none() {
                    return Err(corrupt(format!(
                        "stage change of unknown version {name}@v{version}"
                    )));
                }
                // One production version at a time: promoting a version archives the previous
                // one, and ends any deployment (the promoted version takes the traffic).
                if *stage == Stage::Production {
                    model.deployment = None;
                    for v in model
                        .versions
                        .iter_mut()
                        .filter(|v| v.stage == Stage::Production)
                    {
                        v.stage = Stage::Archived;
                    }
                }
                model.versions[*version as usize - 1].stage = *stage;
            }
            Event::ModelDeployed {
                name, deployment, ..
            } => {
                let model = self
                    .models
                    .get_mut(name)
                    .ok_or_else(|| corrupt(format!("deployment of unknown model {name}")))?;
                if let Some(d) = deployment {
                    model.check_deployment(d).map_err(corrupt)?;
                }
                model.deployment = deployment.clone();
                model.deployed_seq = record.seq;
                model.deployed_at = record.at;
            }
            Event::Materialized {
                view,
                version,
                start,
                end,
                rows,
            } => {
                let v = self
                    .views
                    .get_mut(view)
                    .ok_or_else(|| corrupt(format!("materialization of unknown view {view}")))?;
                let watermark = v
                    .materialized
                    .get(version)
                    .map_or(*end, |m| m.watermark.max(*end));
                v.materialized.insert(
                    *version,
                    MaterializationRecord {
                        watermark,
                        last_start: *start,
                        last_end: *end,
                        last_rows: *rows,
                        at: record.at,
                    },
                );
            }
        }
        self.last_seq = record.seq;
        Ok(())
    }

    /// A live (not deleted) view.
    pub fn view(&self, name: &str) -> Result<&ViewState, RegistryError> {
        match self.views.get(name) {
            Some(v) if !v.deleted => Ok(v),
            Some(_) => Err(RegistryError::NotFound {
                kind: "feature view",
                name: name.to_string(),
                hint:
                    " (it was deleted; its old versions can still be read with an explicit version)"
                        .into(),
            }),
            None => Err(self.not_found(
                "feature view",
                name,
                self.live_views().map(|v| v.name.as_str()),
            )),
        }
    }

    /// A view version, deleted views included, or the current version of a live view.
    pub fn view_version(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<&ViewVersion, RegistryError> {
        let Some(n) = version else {
            return Ok(self.view(name)?.current());
        };
        let view = self.views.get(name).ok_or_else(|| {
            self.not_found(
                "feature view",
                name,
                self.live_views().map(|v| v.name.as_str()),
            )
        })?;
        view.version(n).ok_or_else(|| RegistryError::NotFound {
            kind: "feature view version",
            name: format!("{name}@v{n}"),
            hint: format!(" (it has versions 1 to {})", view.versions.len()),
        })
    }

    pub fn service(&self, name: &str) -> Result<&FeatureServiceSpec, RegistryError> {
        self.services.get(name).ok_or_else(|| {
            self.not_found(
                "feature service",
                name,
                self.services.keys().map(String::as_str),
            )
        })
    }

    pub fn model(&self, name: &str) -> Result<&ModelState, RegistryError> {
        self.models
            .get(name)
            .ok_or_else(|| self.not_found("model", name, self.models.keys().map(String::as_str)))
    }

    /// A model version, or the production version (else the latest) when none is given.
    pub fn model_version(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<&ModelVersionState, RegistryError> {
        let model = self.model(name)?;
        match version {
            Some(n) => model.version(n).ok_or_else(|| RegistryError::NotFound {
                kind: "model version",
                name: format!("{name}@v{n}"),
                hint: format!(" (it has versions 1 to {})", model.versions.len()),
            }),
            None => Ok(model.production().unwrap_or_else(|| model.latest())),
        }
    }

    pub fn live_views(&self) -> impl Iterator<Item = &ViewState> {
        self.views.values().filter(|v| !v.deleted)
    }

    fn not_found<'a>(
        &self,
        kind: &'static str,
        name: &str,
        known: impl Iterator<Item = &'a str>,
    ) -> RegistryError {
        let known: Vec<&str> = known.collect();
        let hint = if known.is_empty() {
            " (nothing of that kind is registered; did you run `kiln apply`?)".to_string()
        } else {
            format!(" (known: {})", known.join(", "))
        };
        RegistryError::NotFound {
            kind,
            name: name.to_string(),
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_core::ValueType;
    use kiln_core::spec::Field;

    use super::*;

    fn version(name: &str, v: u32, ttl: u64) -> ViewVersion {
        ViewVersion {
            name: name.into(),
            version: v,
            entities: vec!["driver".into()],
            join_keys: vec![Field {
                name: "driver_id".into(),
                dtype: ValueType::Int64,
            }],
            source: SourceSpec {
                name: "s".into(),
                path: "data/s.parquet".into(),
                timestamp_field: "ts".into(),
                created_timestamp_column: None,
                description: String::new(),
                tags: Default::default(),
            },
            ttl_seconds: ttl,
            features: vec![],
            aggregations: Vec::new(),
            created_at: 0,
        }
    }

    fn rec(seq: i64, event: Event) -> EventRecord {
        EventRecord {
            seq,
            at: seq * 10,
            event,
        }
    }

    #[test]
    fn versions_accumulate_and_survive_deletion() {
        let log = vec![
            rec(
                1,
                Event::ViewVersionCreated {
                    version: version("v", 1, 60),
                    online: true,
                    meta: Meta::default(),
                },
            ),
            rec(
                2,
                Event::ViewVersionCreated {
                    version: version("v", 2, 120),
                    online: false,
                    meta: Meta::default(),
                },
            ),
            rec(
                3,
                Event::Materialized {
                    view: "v".into(),
                    version: 2,
                    start: 0,
                    end: 500,
                    rows: 7,
                },
            ),
            rec(
                4,
                Event::Materialized {
                    view: "v".into(),
                    version: 2,
                    start: 0,
                    end: 300,
                    rows: 1,
                },
            ),
            rec(5, Event::ViewDeleted { name: "v".into() }),
        ];
        let s = State::replay(&log).expect("valid log");
        assert!(s.view("v").is_err());
        assert_eq!(s.view_version("v", Some(1)).expect("v1").ttl_seconds, 60);
        assert_eq!(s.view_version("v", Some(2)).expect("v2").ttl_seconds, 120);
        assert!(s.view_version("v", Some(3)).is_err());
        let m = s.views["v"].materialized[&2];
        assert_eq!((m.watermark, m.last_end, m.last_rows), (500, 300, 1));
    }

    fn model(version: u32, inputs: &[&str]) -> Event {
        Event::ModelVersionRegistered {
            version: ModelVersion {
                name: "m".into(),
                version,
                format: "xgboost".into(),
                artifact: format!("m/{version}"),
                sha256: String::new(),
                size_bytes: 0,
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                n_outputs: 1,
                objective: "binary:logistic".into(),
                feature_service: None,
                metrics: Default::default(),
                description: String::new(),
                on_missing: Default::default(),
                created_at: 0,
                reference: None,
            },
        }
    }

    #[test]
    fn deployments_replay_and_a_promotion_ends_them() {
        use kiln_core::deploy::{Arm, Deployment, Sticky};
        let split = Deployment {
            arms: vec![
                Arm {
                    version: 1,
                    weight: 9_000,
                },
                Arm {
                    version: 2,
                    weight: 1_000,
                },
            ],
            sticky: Some(Sticky::Entity),
            shadow: vec![3],
            canary: None,
        };
        let deployed = |d: Option<Deployment>| Event::ModelDeployed {
            name: "m".into(),
            deployment: d,
            reason: "test".into(),
        };
        let mut log: Vec<EventRecord> = (1..=3)
            .map(|v| rec(v as i64, model(v, &["a", "b"])))
            .collect();
        log.push(rec(4, deployed(Some(split.clone()))));
        let s = State::replay(&log).expect("valid");
        assert_eq!(s.models["m"].deployment, Some(split.clone()));
        log.push(rec(
            5,
            Event::ModelStageChanged {
                name: "m".into(),
                version: 2,
                stage: Stage::Production,
            },
        ));
        assert_eq!(
            State::replay(&log).expect("valid").models["m"].deployment,
            None
        );

        // Versions of one deployment take the same inputs; archived ones and unknown ones
        // cannot be deployed.
        let mut other = log[..3].to_vec();
        other.push(rec(4, model(4, &["a", "c"])));
        let s = State::replay(&other).expect("valid");
        let m = &s.models["m"];
        let mut d = split.clone();
        d.shadow = vec![4];
        assert!(
            m.check_deployment(&d)
                .expect_err("inputs")
                .contains("interchangeable")
        );
        d.shadow = vec![7];
        assert!(
            m.check_deployment(&d)
                .expect_err("unknown")
                .contains("no version 7")
        );
        other.push(rec(5, deployed(Some(d))));
        assert!(
            State::replay(&other).is_err(),
            "a corrupt deployment is refused"
        );
        let mut archived = log[..3].to_vec();
        archived.push(rec(
            4,
            Event::ModelStageChanged {
                name: "m".into(),
                version: 3,
                stage: Stage::Archived,
            },
        ));
        let s = State::replay(&archived).expect("valid");
        assert!(
            s.models["m"]
                .check_deployment(&split)
                .expect_err("archived")
                .contains("archived")
        );
    }

    #[test]
    fn corrupt_logs_are_refused() {
        let skip = vec![rec(
            1,
            Event::ViewVersionCreated {
                version: version("v", 2, 0),
                online: true,
                meta: Meta::default(),
            },
        )];
        assert!(State::replay(&skip).is_err());
        let out_of_order = vec![
            rec(2, Event::EntityDeleted { name: "x".into() }),
            rec(1, Event::EntityDeleted { name: "y".into() }),
        ];
        assert!(State::replay(&out_of_order).is_err());
    }
}
