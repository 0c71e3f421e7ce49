//! The Feast feature-server API: `POST /get-online-features`, request and response exactly as
//! Feast's Python server speaks them, so Feast's HTTP clients and its `remote` online store work
//! against Kiln unchanged.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_core::time::{format_timestamp, now_micros};
use kiln_features::online::{FeatureSelection, OnlineRequest, OnlineResponse, ResponseColumn};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use crate::ServeState;
use crate::error::ApiError;
use crate::json::FeastJson;

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    /// Join key -> values; key order is kept (it is the response's column order).
    entities: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    full_feature_names: bool,
    /// Accepted for compatibility with Feast clients that send it; Kiln has no per-request
    /// version metadata to add.
    #[serde(default)]
    #[allow(dead_code)]
    include_feature_view_version_metadata: bool,
}

impl Request {
    fn into_core(self) -> Result<OnlineRequest, ApiError> {
        let features = match (self.feature_service, self.features) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give either \"features\" or \"feature_service\", not both",
                ));
            }
            (Some(s), None) => FeatureSelection::Service(s),
            (None, Some(f)) => FeatureSelection::Refs(f),
            (None, None) => {
                return Err(ApiError::bad_request(
                    "request needs \"features\" (a list of \"view:feature\") or \"feature_service\"",
                ));
            }
        };
        let entities = self
            .entities
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::Array(values) => Ok((k, values)),
                other => Err(ApiError::bad_request(format!(
                    "entities.{k} must be a list of values, not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(OnlineRequest {
            features,
            entities,
            full_feature_names: self.full_feature_names,
        })
    }
}

pub(crate) async fn get_online_features(
    State(state): State<ServeState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: Request = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let req = req.into_core()?;
    let snapshot = state.snapshot();
    let resp = kiln_features::online::get_online_features(
        &snapshot.catalog,
        state.store(),
        &req,
        now_micros(),
    )
    .await?;
    state.metrics().feature_lookups(&resp);
    let body = encode_response(&resp)
        .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// An online response in Feast's JSON form (also what `kiln features get --output json` prints).
pub fn encode_response(resp: &OnlineResponse) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Wire(resp))
}

/// The response in Feast's column-major form.
struct Wire<'a>(&'a OnlineResponse);

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("results", &Columns(&self.0.columns))?;
        m.serialize_entry("metadata", &Metadata(&self.0.columns))?;
        m.end()
    }
}

struct Columns<'a>(&'a [ResponseColumn]);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0 {
            seq.serialize_element(&Column(c))?;
        }
        seq.end()
    }
}

struct Column<'a>(&'a ResponseColumn);

impl Serialize for Column<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("values", &Values(&c.values))?;
        m.serialize_entry("statuses", &c.statuses)?;
        m.serialize_entry("event_timestamps", &Timestamps(&c.event_timestamps))?;
        m.end()
    }
}

struct Values<'a>(&'a [kiln_core::Value]);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&FeastJson(v))?;
        }
        seq.end()
    }
}

struct Timestamps<'a>(&'a [i64]);

impl Serialize for Timestamps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for t in self.0 {
            seq.serialize_element(&format_timestamp(*t))?;
        }
        seq.end()
    }
}

struct Metadata<'a>(&'a [ResponseColumn]);

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = self.0.iter().map(|c| c.name.as_str()).collect();
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("feature_names", &names)?;
        m.end()
    }
}
