//! The push API's core, transport-free: check a request's events against their source's
//! schema, append them to the source's log, and answer once they are durable. Either every
//! event of a request is appended or none is (the first bad one is named and nothing is
//! written).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::StreamError;
use crate::appender::Appender;
use crate::event::{EventSchema, Row, encode_row};
use crate::log::LogOptions;
use crate::pipeline::source_dir;

/// How a request's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object, or an array of them.
    Json,
    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    ArrowIpc,
}

/// What a push appended.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub source: String,
    pub accepted: usize,
    /// Log offsets: the first event's, and the log's end after the append.
    pub first_offset: u64,
    pub end_offset: u64,
}

struct Source {
    schema: EventSchema,
    log: Arc<Appender>,
}

/// The logs that pushes append to, one per streamed source.
pub struct PushHub {
    sources: BTreeMap<String, Source>,
}

impl std::fmt::Debug for PushHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHub")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PushHub {
    /// Opens the log of each source under `stream_dir` for appending.
    pub fn open(
        stream_dir: &Path,
        schemas: Vec<EventSchema>,
        opts: &LogOptions,
    ) -> Result<PushHub, StreamError> {
        let mut sources = BTreeMap::new();
        for schema in schemas {
            let dir = source_dir(stream_dir, &schema.source);
            let log = Appender::open_with(&dir, opts)?;
            sources.insert(schema.source.clone(), Source { schema, log });
        }
        Ok(PushHub { sources })
    }

    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// The log of `source`, for a broker connector running in the same process.
    pub fn log(&self, source: &str) -> Option<Arc<Appender>> {
        self.sources.get(source).map(|s| s.log.clone())
    }

    /// Checks and appends a request's events (blocking: it waits for the disk).
    pub fn push(
        &self,
        source: &str,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<Receipt, StreamError> {
        let s = self.sources.get(source).ok_or_else(|| {
            StreamError::UnknownSource(format!(
                "no aggregated feature view reads source {source:?}, so nothing streams from it (streamed sources: {})",
                if self.sources.is_empty() {
                    "none".to_string()
                } else {
                    self.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })?;
        let rows = match encoding {
            Encoding::Json => json_rows(&s.schema, body)?,
            Encoding::ArrowIpc => arrow_rows(&s.schema, body)?,
        };
        if rows.is_empty() {
            return Err(StreamError::BadEvent {
                at: "body".into(),
                message: "no events".into(),
            });
        }
        let encoded: Vec<Vec<u8>> = rows
            .iter()
            .map(|r| {
                let mut b = Vec::with_capacity(16 * r.len());
                encode_row(r, &mut b);
                b
            })
            .collect();
        let (first_offset, end_offset) = s.log.append(&encoded)?;
        Ok(Receipt {
            source: source.to_string(),
            accepted: rows.len(),
            first_offset,
            end_offset,
        })
    }
}

fn json_rows(schema: &EventSchema, body: &[u8]) -> Result<Vec<Row>, StreamError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| StreamError::BadEvent {
            at: "body".into(),
            message: format!("not JSON: {e}"),
        })?;
    match &json {
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, e)| schema.row_from_json(e, &format!("events[{i}]")))
            .collect(),
        _ => Ok(vec![schema.row_from_json(&json, "event")?]),
    }
}

fn arrow_rows(schema: &EventSchema, body: &[u8]) -> Result<Vec<Row>, StreamError> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .map_err(|e| StreamError::BadEvent {
            at: "body".into(),
            message: format!("not an Arrow IPC stream: {e}"),
        })?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| StreamError::BadEvent {
            at: "body".into(),
            message: format!("Arrow IPC stream: {e}"),
        })?;
        rows.extend(schema.rows_from_arrow(&batch, rows.len())?);
    }
    Ok(rows)
}
