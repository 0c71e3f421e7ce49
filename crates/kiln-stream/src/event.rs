//! What an event of a source is: one row of the source's columns, checked when it arrives
//! (push API) and stored in the log in the value codec, so everything downstream reads typed
//! values and never re-validates.
//!
//! The schema comes from the source's Parquet data (every column, so that what the stream
//! writes back to the offline store reads like the rest of it) and from the aggregated views
//! that read the source (their join keys and the timestamp are required).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use kiln_core::spec::ViewVersion;
use kiln_core::time::Micros;
use kiln_core::value::{ValueReader, ValueWriter};
use kiln_core::{Value, ValueType};
use kiln_features::definitions::input_type;

use crate::StreamError;

/// One column of a source's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub dtype: ValueType,
    /// Why an event must carry it (a join key of a view, the event time), if it must.
    pub required_by: Option<String>,
}

/// The events of one source.
#[derive(Debug, Clone)]
pub struct EventSchema {
    pub source: String,
    pub columns: Vec<Column>,
    pub timestamp: usize,
    pub created: Option<usize>,
    by_name: HashMap<String, usize>,
}

/// One event: its values in [`EventSchema::columns`] order.
pub type Row = Vec<Value>;

impl EventSchema {
    /// The schema of `views`' source (they must all read the same one), whose Parquet data has
    /// `arrow` columns.
    pub fn new(views: &[&ViewVersion], arrow: &SchemaRef) -> Result<EventSchema, StreamError> {
        let Some(first) = views.first() else {
            return Err(StreamError::Setup(
                "no aggregated feature view to stream".into(),
            ));
        };
        let source = &first.source;
        let mut columns = Vec::new();
        for f in arrow.fields() {
            let Some(dtype) = input_type(f.data_type()) else {
                return Err(StreamError::Setup(format!(
                    "source {:?} ({}): column {:?} is {}, which events cannot carry; streaming needs integer, float, string, bytes, bool or timestamp columns",
                    source.name,
                    source.path,
                    f.name(),
                    f.data_type()
                )));
            };
            columns.push(Column {
                name: f.name().clone(),
                dtype,
                required_by: None,
            });
        }
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let find = |name: &str| {
            by_name.get(name).copied().ok_or_else(|| {
                StreamError::Setup(format!(
                    "source {:?} ({}) has no column {name:?}",
                    source.name, source.path
                ))
            })
        };
        let timestamp = find(&source.timestamp_field)?;
        columns[timestamp].required_by = Some("the event time".into());
        let created = source
            .created_timestamp_column
            .as_deref()
            .map(find)
            .transpose()?;
        for v in views {
            for k in &v.join_keys {
                let i = find(&k.name)?;
                columns[i]
                    .required_by
                    .get_or_insert_with(|| format!("a join key of feature view {:?}", v.name));
            }
        }
        Ok(EventSchema {
            source: source.name.clone(),
            columns,
            timestamp,
            created,
            by_name,
        })
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks one event given as a JSON object; `at` names it in errors (`events[3]`).
    pub fn row_from_json(&self, json: &serde_json::Value, at: &str) -> Result<Row, StreamError> {
        let bad = |field: &str, message: String| StreamError::BadEvent {
            at: if field.is_empty() {
                at.to_string()
            } else {
                format!("{at}.{field}")
            },
            message,
        };
        let Some(obj) = json.as_object() else {
            return Err(bad(
                "",
                format!("an event is a JSON object of column values, not {json}"),
            ));
        };
        let mut row = vec![Value::Null; self.columns.len()];
        for (name, v) in obj {
            let Some(i) = self.index(name) else {
                return Err(bad(
                    name,
                    format!(
                        "not a column of source {:?} (columns: {})",
                        self.source,
                        self.names()
                    ),
                ));
            };
            let c = &self.columns[i];
            row[i] = Value::from_json(v, c.dtype).map_err(|_| {
                let hint = if c.dtype == ValueType::Timestamp {
                    " (an RFC 3339 time such as \"2026-01-31T12:00:00Z\", or integer seconds since the epoch)"
                } else {
                    ""
                };
                bad(name, format!("expected {}{hint}, got {v}", c.dtype))
            })?;
        }
        self.check_required(&row, &bad)?;
        Ok(row)
    }

    fn check_required(
        &self,
        row: &Row,
        bad: &dyn Fn(&str, String) -> StreamError,
    ) -> Result<(), StreamError> {
        for (c, v) in self.columns.iter().zip(row) {
            if let (Some(why), true) = (&c.required_by, v.is_null()) {
                return Err(bad(&c.name, format!("missing or null; it is {why}")));
            }
        }
        Ok(())
    }

    /// Checks the events of an Arrow record batch (columns by name, cast to the source's
    /// types); `first` is the index of its first row among the request's events.
    pub fn rows_from_arrow(
        &self,
        batch: &RecordBatch,
        first: usize,
    ) -> Result<Vec<Row>, StreamError> {
        let mut cols: Vec<Option<arrow_array::ArrayRef>> = vec![None; self.columns.len()];
        for (f, a) in batch.schema().fields().iter().zip(batch.columns()) {
            let Some(i) = self.index(f.name()) else {
                return Err(StreamError::BadEvent {
                    at: format!("column {:?}", f.name()),
                    message: format!(
                        "not a column of source {:?} (columns: {})",
                        self.source,
                        self.names()
                    ),
                });
            };
            let c = &self.columns[i];
            let cast = kiln_features::cast_to(a, &c.dtype.arrow_type()).map_err(|e| {
                StreamError::BadEvent {
                    at: format!("column {:?}", f.name()),
                    message: format!("{} cannot be read as {}: {e}", a.data_type(), c.dtype),
                }
            })?;
            cols[i] = Some(cast);
        }
        let mut rows = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let row: Row = cols
                .iter()
                .map(|c| {
                    c.as_ref()
                        .map_or(Value::Null, |a| kiln_features::value_at(a, r))
                })
                .collect();
            let at = format!("events[{}]", first + r);
            self.check_required(&row, &|field: &str, message| StreamError::BadEvent {
                at: format!("{at}.{field}"),
                message,
            })?;
            rows.push(row);
        }
        Ok(rows)
    }

    /// The event time of a checked row.
    pub fn event_ts(&self, row: &[Value]) -> Micros {
        match row[self.timestamp] {
            Value::Timestamp(t) => t,
            // Checked rows always carry a timestamp here.
            _ => i64::MIN,
        }
    }

    /// The created time of a row; lowest without a created column or value, as the batch side
    /// orders ties.
    pub fn created_ts(&self, row: &[Value]) -> Micros {
        match self.created.map(|i| &row[i]) {
            Some(Value::Timestamp(t)) => *t,
            _ => Micros::MIN,
        }
    }
}

/// A row as stored in the log.
pub fn encode_row(row: &Row, out: &mut Vec<u8>) {
    let mut w = ValueWriter::new(out);
    for v in row {
        w.put(v);
    }
}

/// A row read back from the log; `width` is the schema's column count.
pub fn decode_row(bytes: &[u8], width: usize) -> Result<Row, String> {
    let mut row = Vec::with_capacity(width);
    decode_row_into(bytes, width, &mut row)?;
    Ok(row)
}

/// [`decode_row`] into `row` (cleared first), so a stream reuses one row.
pub fn decode_row_into(bytes: &[u8], width: usize, row: &mut Row) -> Result<(), String> {
    row.clear();
    let mut r = ValueReader::new(bytes);
    while !r.is_empty() {
        row.push(r.next_value().map_err(|e| e.to_string())?);
    }
    if row.len() != width {
        return Err(format!(
            "{} values where the source has {width} columns (did the source's columns change since it was logged?)",
            row.len()
        ));
    }
    Ok(())
}

/// The arrow schema of a source's events as the stream writes them back (widened types).
pub fn arrow_schema(schema: &EventSchema) -> SchemaRef {
    Arc::new(arrow_schema::Schema::new(
        schema
            .columns
            .iter()
            .map(|c| arrow_schema::Field::new(&c.name, c.dtype.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}
