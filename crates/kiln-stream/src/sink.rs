//! Where accepted and rejected events end up besides the online store.
//!
//! - [`OfflineSink`]: accepted events as Parquet in the source's directory, partitioned by the
//!   event's UTC date (`date=2026-11-28/part-{first}-{end}.parquet`, named by the log offsets
//!   the flush covers), so `kiln dataset build` backfills from exactly what the stream saw.
//!   Files are written under a hidden name and renamed; a restart deletes the parts at or past
//!   its checkpoint's offset before replaying them.
//! - [`DeadLetters`]: events the stream did not apply (too late, no longer decodable, or a
//!   broker message that was not an event), one JSON object per line with the reason and the
//!   log offset. A restart cuts the file back to the length its
//!   checkpoint recorded, so a replay does not list an event twice.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use kiln_core::time::format_timestamp;
use kiln_core::{Value, ValueType};
use parquet::arrow::ArrowWriter;

use crate::StreamError;
use crate::event::{EventSchema, Row, arrow_schema};

/// Buffers accepted events and writes them to the offline store at each checkpoint.
pub struct OfflineSink {
    dir: PathBuf,
    rows: Vec<Row>,
    first: Option<u64>,
}

fn part_range(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (a, b) = rest.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl OfflineSink {
    /// The sink for a source stored in `dir`; removes parts written past `offset` by a run
    /// that stopped before its next checkpoint.
    pub fn open(dir: &Path, offset: u64) -> Result<OfflineSink, StreamError> {
        if !dir.is_dir() {
            return Err(StreamError::Setup(format!(
                "{} is not a directory: a streamed source must be a directory of Parquet files, so the stream can add its events to it",
                dir.display()
            )));
        }
        for entry in std::fs::read_dir(dir).map_err(StreamError::io(dir))? {
            let entry = entry.map_err(StreamError::io(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with("date=") || !entry.path().is_dir() {
                continue;
            }
            let sub = entry.path();
            for f in std::fs::read_dir(&sub).map_err(StreamError::io(&sub))? {
                let f = f.map_err(StreamError::io(&sub))?;
                let fname = f.file_name().to_string_lossy().to_string();
                let orphan = fname.starts_with(".part-") && fname.ends_with(".tmp");
                if orphan || part_range(&fname).is_some_and(|(first, _)| first >= offset) {
                    std::fs::remove_file(f.path()).map_err(StreamError::io(f.path()))?;
                }
            }
        }
        Ok(OfflineSink {
            dir: dir.to_path_buf(),
            rows: Vec::new(),
            first: None,
        })
    }

    pub fn push(&mut self, row: Row, offset: u64) {
        self.first.get_or_insert(offset);
        self.rows.push(row);
    }

    pub fn buffered(&self) -> usize {
        self.rows.len()
    }

    /// Writes what is buffered, covering offsets up to `end`; returns the files written.
    pub fn flush(&mut self, schema: &EventSchema, end: u64) -> Result<Vec<PathBuf>, StreamError> {
        let Some(first) = self.first.take() else {
            return Ok(Vec::new());
        };
        let rows = std::mem::take(&mut self.rows);
        let mut by_date: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for r in rows {
            let date = format_timestamp(schema.event_ts(&r))
                .get(..10)
                .unwrap_or("unknown")
                .to_string();
            by_date.entry(date).or_default().push(r);
        }
        let mut written = Vec::new();
        for (date, rows) in by_date {
            let sub = self.dir.join(format!("date={date}"));
            std::fs::create_dir_all(&sub).map_err(StreamError::io(&sub))?;
            let name = format!("part-{first:020}-{end:020}.parquet");
            let tmp = sub.join(format!(".{name}.tmp"));
            let path = sub.join(&name);
            write_parquet(schema, &rows, &tmp)?;
            std::fs::rename(&tmp, &path).map_err(StreamError::io(&path))?;
            written.push(path);
        }
        Ok(written)
    }
}

fn write_parquet(schema: &EventSchema, rows: &[Row], path: &Path) -> Result<(), StreamError> {
    let perr = |e: &dyn std::fmt::Display| StreamError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let arrow = arrow_schema(schema);
    let columns: Vec<ArrayRef> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| column(c.dtype, rows.iter().map(|r| &r[i])))
        .collect();
    let batch = RecordBatch::try_new(arrow.clone(), columns).map_err(|e| perr(&e))?;
    let file = File::create(path).map_err(StreamError::io(path))?;
    let mut w = ArrowWriter::try_new(file, arrow, None).map_err(|e| perr(&e))?;
    w.write(&batch).map_err(|e| perr(&e))?;
    let file = w.into_inner().map_err(|e| perr(&e))?;
    file.sync_all().map_err(StreamError::io(path))?;
    Ok(())
}

/// An Arrow column of `dtype` from values of that type (anything else is null).
pub fn column<'a>(dtype: ValueType, values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    macro_rules! build {
        ($b:expr, $($pat:pat => $v:expr),+) => {{
            let mut b = $b;
            for v in values {
                match v {
                    $($pat => b.append_value($v),)+
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }};
    }
    match dtype {
        ValueType::Bool => build!(BooleanBuilder::new(), Value::Bool(x) => *x),
        ValueType::Int32 | ValueType::Int64 => {
            build!(Int64Builder::new(), Value::Int64(x) => *x, Value::Int32(x) => i64::from(*x))
        }
        ValueType::Float32 | ValueType::Float64 => {
            build!(Float64Builder::new(), Value::Float64(x) => *x, Value::Float32(x) => f64::from(*x))
        }
        ValueType::String => build!(StringBuilder::new(), Value::String(x) => x),
        ValueType::Bytes => build!(BinaryBuilder::new(), Value::Bytes(x) => x),
        ValueType::Timestamp => build!(
            TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            Value::Timestamp(x) => *x
        ),
    }
}

/// A value as JSON, as a person would write it in an event.
pub fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int32(x) => J::from(*x),
        Value::Int64(x) => J::from(*x),
        Value::Float32(x) => J::from(f64::from(*x)),
        Value::Float64(x) => J::from(*x),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Timestamp(t) => J::String(format_timestamp(*t)),
    }
}

/// The dead-letter file of a source.
pub struct DeadLetters {
    path: PathBuf,
    file: File,
    len: u64,
    count: u64,
}

impl DeadLetters {
    /// Opens the file, cut back to `len` bytes (what the checkpoint saw).
    pub fn open(path: &Path, len: u64) -> Result<DeadLetters, StreamError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(path)
            .map_err(StreamError::io(path))?;
        let have = file.metadata().map_err(StreamError::io(path))?.len();
        if have > len {
            file.set_len(len).map_err(StreamError::io(path))?;
        }
        Ok(DeadLetters {
            path: path.to_path_buf(),
            file,
            len: have.min(len),
            count: 0,
        })
    }

    pub fn write(
        &mut self,
        schema: &EventSchema,
        row: &Row,
        offset: u64,
        reason: &str,
    ) -> Result<(), StreamError> {
        let event: serde_json::Map<String, serde_json::Value> = schema
            .columns
            .iter()
            .zip(row)
            .filter(|(_, v)| !v.is_null())
            .map(|(c, v)| (c.name.clone(), value_json(v)))
            .collect();
        self.line(&serde_json::json!({
            "source": schema.source,
            "offset": offset,
            "reason": reason,
            "event": event,
        }))
    }

    /// An event that cannot be read as a row of the source any more.
    pub fn write_undecodable(
        &mut self,
        source: &str,
        offset: u64,
        why: &str,
    ) -> Result<(), StreamError> {
        self.line(&serde_json::json!({
            "source": source,
            "offset": offset,
            "reason": format!("undecodable: {why}"),
        }))
    }

    /// A broker message a connector could not read as an event (`record` is what it logged:
    /// origin, reason and the message).
    pub fn write_malformed(
        &mut self,
        source: &str,
        offset: u64,
        record: &[u8],
    ) -> Result<(), StreamError> {
        let record: serde_json::Value = serde_json::from_slice(record).unwrap_or_default();
        self.line(&serde_json::json!({
            "source": source,
            "offset": offset,
            "reason": format!("malformed: {}", record["reason"].as_str().unwrap_or("unreadable")),
            "origin": record["origin"],
            "message": record["message"],
            "truncated": record["truncated"],
        }))
    }

    fn line(&mut self, value: &serde_json::Value) -> Result<(), StreamError> {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(StreamError::io(&self.path))?;
        self.len += line.len() as u64;
        self.count += 1;
        Ok(())
    }

    /// The length to record in a checkpoint (flushed to disk first).
    pub fn sync(&mut self) -> Result<u64, StreamError> {
        self.file.sync_data().map_err(StreamError::io(&self.path))?;
        Ok(self.len)
    }

    /// Events written since this process opened the file.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
