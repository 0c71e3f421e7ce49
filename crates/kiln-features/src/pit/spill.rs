//! Partition buffers that live in memory or spill to Arrow IPC files, and row hashing that puts
//! equal join keys in the same partition on both sides of the join.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;
use arrow_select::concat::concat_batches;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::FeatureError;

/// Fixed so that partitioning is reproducible run to run.
const HASH_SEED: u64 = 0x6b69_6c6e;

/// The partition of every row of `keys` among `partitions`. Both sides of the join call this
/// with key columns of the same (declared) types, so equal keys land in the same partition.
pub(crate) fn partition_of(keys: &[ArrayRef], partitions: usize) -> Result<Vec<u32>, FeatureError> {
    let n = keys.first().map_or(0, |k| k.len());
    if partitions <= 1 {
        return Ok(vec![0; n]);
    }
    let p = partitions as u64;
    let bucket = |h: u64| (h % p) as u32;
    if let [k] = keys
        && let Some(values) = super::kernel::int_key(k)
    {
        return Ok(values
            .map(|v| {
                v.map_or(0, |v| {
                    bucket(xxh3_64_with_seed(&v.to_le_bytes(), HASH_SEED))
                })
            })
            .collect());
    }
    let conv = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )
    .map_err(|e| FeatureError::internal("partitioning", e))?;
    let rows = conv
        .convert_columns(keys)
        .map_err(|e| FeatureError::internal("partitioning", e))?;
    Ok((0..n)
        .map(|i| bucket(xxh3_64_with_seed(rows.row(i).data(), HASH_SEED)))
        .collect())
}

/// Record batches of one partition, kept in memory or appended to an IPC stream file.
pub(crate) struct Spill {
    schema: SchemaRef,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
    file: Option<(PathBuf, StreamWriter<BufWriter<File>>)>,
    /// Where to spill to, or `None` to stay in memory.
    spill_path: Option<PathBuf>,
    flush_rows: usize,
    pub(crate) rows: u64,
    /// Size of the spill file once sealed.
    pub(crate) bytes_spilled: u64,
}

impl Spill {
    pub(crate) fn new(schema: SchemaRef, spill_path: Option<PathBuf>, flush_rows: usize) -> Spill {
        Spill {
            schema,
            buffered: Vec::new(),
            buffered_rows: 0,
            file: None,
            spill_path,
            flush_rows: flush_rows.max(1),
            rows: 0,
            bytes_spilled: 0,
        }
    }

    pub(crate) fn push(&mut self, batch: RecordBatch) -> Result<(), FeatureError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.buffered_rows += batch.num_rows();
        self.buffered.push(batch);
        if self.spill_path.is_some() && self.buffered_rows >= self.flush_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FeatureError> {
        let Some(path) = &self.spill_path else {
            return Ok(());
        };
        if self.buffered.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let f = File::create(path).map_err(|source| FeatureError::Io {
                path: path.clone(),
                source,
            })?;
            let w = StreamWriter::try_new(BufWriter::new(f), &self.schema)
                .map_err(|e| spill_err(path, e))?;
            self.file = Some((path.clone(), w));
        }
        let batch = concat_batches(&self.schema, &self.buffered).map_err(|e| spill_err(path, e))?;
        if let Some((p, w)) = &mut self.file {
            w.write(&batch).map_err(|e| spill_err(p, e))?;
        }
        self.buffered.clear();
        self.buffered_rows = 0;
        Ok(())
    }

    /// Finishes writing; the spill can then be read back.
    pub(crate) fn seal(&mut self) -> Result<(), FeatureError> {
        if self.file.is_some() {
            self.flush()?;
            if let Some((p, w)) = &mut self.file {
                w.finish().map_err(|e| spill_err(p, e))?;
                self.bytes_spilled = std::fs::metadata(p.as_path()).map_or(0, |m| m.len());
            }
        }
        Ok(())
    }

    /// All rows as one batch (for the join of one partition).
    pub(crate) fn read_all(&self) -> Result<RecordBatch, FeatureError> {
        let batches = self.batches()?.collect::<Result<Vec<_>, _>>()?;
        concat_batches(&self.schema, &batches)
            .map_err(|e| FeatureError::internal("reading a partition", e))
    }

    /// The rows in the order they were pushed.
    pub(crate) fn batches(
        &self,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, FeatureError>> + Send>, FeatureError>
    {
        let memory: Vec<Result<RecordBatch, FeatureError>> =
            self.buffered.iter().cloned().map(Ok).collect();
        match &self.file {
            None => Ok(Box::new(memory.into_iter())),
            Some((path, _)) => {
                let f = File::open(path).map_err(|source| FeatureError::Io {
                    path: path.clone(),
                    source,
                })?;
                let r = StreamReader::try_new(BufReader::new(f), None)
                    .map_err(|e| spill_err(path, e))?;
                let p = path.clone();
                Ok(Box::new(
                    r.map(move |b| b.map_err(|e| spill_err(&p, e)))
                        .chain(memory),
                ))
            }
        }
    }

    /// Frees memory and removes the spill file.
    pub(crate) fn discard(&mut self) {
        self.buffered.clear();
        if let Some((path, _)) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.discard();
    }
}

fn spill_err(path: &Path, e: impl std::fmt::Display) -> FeatureError {
    FeatureError::Data {
        path: path.to_path_buf(),
        message: format!("spill file: {e}"),
    }
}

/// Reads a spill's rows front to back, `n` at a time, across batch boundaries.
pub(crate) struct Cursor {
    iter: Box<dyn Iterator<Item = Result<RecordBatch, FeatureError>> + Send>,
    current: Option<RecordBatch>,
    offset: usize,
    schema: SchemaRef,
}

impl Cursor {
    pub(crate) fn new(spill: &Spill) -> Result<Cursor, FeatureError> {
        Ok(Cursor {
            iter: spill.batches()?,
            current: None,
            offset: 0,
            schema: spill.schema.clone(),
        })
    }

    /// The next `n` rows; fails if fewer are left (the caller knows how many there are).
    pub(crate) fn take(&mut self, mut n: usize) -> Result<RecordBatch, FeatureError> {
        let mut parts = Vec::new();
        while n > 0 {
            let batch = match &self.current {
                Some(b) if self.offset < b.num_rows() => b.clone(),
                _ => {
                    let next = self.iter.next().ok_or_else(|| {
                        FeatureError::internal(
                            "assembling the output",
                            "a partition ran out of rows",
                        )
                    })??;
                    self.current = Some(next);
                    self.offset = 0;
                    continue;
                }
            };
            let len = n.min(batch.num_rows() - self.offset);
            parts.push(batch.slice(self.offset, len));
            self.offset += len;
            n -= len;
        }
        match parts.len() {
            1 => Ok(parts.swap_remove(0)),
            _ => concat_batches(&self.schema, &parts)
                .map_err(|e| FeatureError::internal("assembling the output", e)),
        }
    }
}
