//! Recent predictions, findable by request id or by entity and time, so a label that arrives
//! later can be joined to the prediction it judges. Bounded: the oldest requests are forgotten
//! first once `capacity` requests are remembered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::events::PredictionEvent;

/// A logged prediction row.
#[derive(Debug, Clone)]
pub struct Found {
    pub event: Arc<PredictionEvent>,
    pub row: usize,
}

/// An entity's predictions: (time, request, row), oldest first.
type Timeline = VecDeque<(i64, Arc<PredictionEvent>, usize)>;

#[derive(Debug, Default)]
pub struct Index {
    capacity: usize,
    /// (model, request id) -> the request.
    by_id: HashMap<(String, String), Arc<PredictionEvent>>,
    /// (model, entity) -> its predictions (time, request, row), oldest first.
    by_entity: HashMap<(String, String), Timeline>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<(String, String)>,
}

impl Index {
    pub fn new(capacity: usize) -> Index {
        Index {
            capacity: capacity.max(1),
            ..Index::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn insert(&mut self, event: Arc<PredictionEvent>) {
        let key = (event.model.clone(), event.request_id.clone());
        if let Some(entities) = &event.entities {
            for (row, entity) in entities.iter().enumerate() {
                let list = self
                    .by_entity
                    .entry((event.model.clone(), entity.clone()))
                    .or_default();
                // Events arrive nearly in time order: insert from the back.
                let at = list
                    .iter()
                    .rposition(|(ts, _, _)| *ts <= event.ts_micros)
                    .map_or(0, |i| i + 1);
                list.insert(at, (event.ts_micros, event.clone(), row));
            }
        }
        if self.by_id.insert(key.clone(), event).is_none() {
            self.order.push_back(key);
        }
        while self.by_id.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_id.remove(&oldest) {
                self.forget_entities(&gone);
            }
        }
    }

    fn forget_entities(&mut self, gone: &Arc<PredictionEvent>) {
        let Some(entities) = &gone.entities else {
            return;
        };
        for entity in entities {
            let key = (gone.model.clone(), entity.clone());
            if let Some(list) = self.by_entity.get_mut(&key) {
                list.retain(|(_, e, _)| !Arc::ptr_eq(e, gone));
                if list.is_empty() {
                    self.by_entity.remove(&key);
                }
            }
        }
    }

    /// The prediction of `model` with this request id and row.
    pub fn by_request(&self, model: &str, request_id: &str, row: usize) -> Result<Found, String> {
        let event = self
            .by_id
            .get(&(model.to_string(), request_id.to_string()))
            .ok_or_else(|| {
                format!("no recent prediction of model {model:?} has request id {request_id:?}")
            })?;
        if row >= event.rows() {
            return Err(format!(
                "request {request_id:?} scored {} row(s); there is no row {row}",
                event.rows()
            ));
        }
        Ok(Found {
            event: event.clone(),
            row,
        })
    }

    /// The latest prediction of `model` for `entity` made at or before `at` (any time if
    /// `None`): the one in effect when the labelled outcome happened.
    pub fn by_entity(&self, model: &str, entity: &str, at: Option<i64>) -> Result<Found, String> {
        let list = self
            .by_entity
            .get(&(model.to_string(), entity.to_string()))
            .ok_or_else(|| {
                format!("no recent prediction of model {model:?} for entity {entity}")
            })?;
        let hit = list
            .iter()
            .rev()
            .find(|(ts, _, _)| at.is_none_or(|at| *ts <= at))
            .ok_or_else(|| {
                format!(
                    "no prediction of model {model:?} for entity {entity} at or before {}",
                    at.map(kiln_core::time::format_timestamp)
                        .unwrap_or_default()
                )
            })?;
        Ok(Found {
            event: hit.1.clone(),
            row: hit.2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, ts: i64, entities: &[&str]) -> Arc<PredictionEvent> {
        Arc::new(PredictionEvent {
            request_id: id.into(),
            model: "m".into(),
            version: 1,
            protocol: "predict",
            ts_micros: ts,
            inputs: Arc::from(vec!["x".to_string()]),
            objective: Arc::from("binary"),
            features: vec![0.0; entities.len()],
            outputs: vec![0.5; entities.len()],
            n_outputs: 1,
            entities: Some(entities.iter().map(|e| e.to_string()).collect()),
            latency_us: 1,
        })
    }

    #[test]
    fn entity_lookups_pick_the_prediction_in_effect() {
        let mut index = Index::new(10);
        index.insert(event("a", 100, &["k=1", "k=2"]));
        index.insert(event("c", 300, &["k=1"]));
        index.insert(event("b", 200, &["k=1"]));
        let at = |t| {
            index
                .by_entity("m", "k=1", Some(t))
                .map(|f| f.event.request_id.clone())
        };
        assert_eq!(at(250).as_deref(), Ok("b"));
        assert_eq!(at(300).as_deref(), Ok("c"));
        assert_eq!(at(100).as_deref(), Ok("a"));
        assert!(at(99).is_err());
        let latest = index.by_entity("m", "k=2", None).expect("k=2");
        assert_eq!((latest.event.request_id.as_str(), latest.row), ("a", 1));
        assert!(index.by_request("m", "a", 2).is_err(), "row out of range");
        assert!(index.by_request("other", "a", 0).is_err(), "other model");
    }

    #[test]
    fn the_oldest_requests_are_forgotten_with_their_entities() {
        let mut index = Index::new(2);
        index.insert(event("a", 1, &["k=1"]));
        index.insert(event("b", 2, &["k=2"]));
        index.insert(event("c", 3, &["k=3"]));
        assert_eq!(index.len(), 2);
        assert!(index.by_request("m", "a", 0).is_err());
        assert!(index.by_entity("m", "k=1", None).is_err());
        assert!(index.by_entity("m", "k=3", None).is_ok());
    }
}
