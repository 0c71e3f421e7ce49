//! Checkpoints: every view's keyed state together with the log offset it reflects, the
//! stream's time and the dead-letter file's length, in one file replaced atomically (write a
//! temporary file, `fsync`, rename, `fsync` the directory). A restart loads it and replays the
//! log from its offset; since the state is a function of the events alone (see
//! [`crate::window`]) and online writes are newer-wins, the result is the state an
//! uninterrupted run would have reached.
//!
//! Format: `KILNCKP1`, then little-endian fields, then the XXH3 of everything before it, so a
//! torn or damaged file is detected instead of half-loaded. The broker position comes last and
//! may be absent (files written before it existed).

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_core::time::Micros;
use kiln_core::value::{ValueReader, ValueWriter};

use crate::StreamError;
use crate::window::Event;

const MAGIC: &[u8; 8] = b"KILNCKP1";

/// One key's saved state.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedKey {
    pub key: Vec<u8>,
    pub as_of: Micros,
    pub seq: u64,
    pub events: Vec<Event>,
}

/// One view's saved state.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedView {
    pub name: String,
    pub version: u32,
    pub keys: Vec<SavedKey>,
}

/// Everything a restart needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// The offset of the first event not reflected.
    pub offset: u64,
    pub stream_time: Micros,
    pub dead_letter_bytes: u64,
    pub views: Vec<SavedView>,
    /// The last broker position frame the stream read (a connector's JSON; empty if none): how
    /// far the broker had been read into what this checkpoint covers.
    pub broker_position: Vec<u8>,
}

struct Out(Vec<u8>);

impl Out {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

struct In<'a> {
    b: &'a [u8],
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("ends early".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(self.u64()? as i64)
    }
    fn len(&mut self) -> Result<usize, String> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.b.len())
            .ok_or_else(|| format!("a length of {n} is past the end"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        self.take(n)
    }
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        let mut o = Out(MAGIC.to_vec());
        o.u64(self.offset);
        o.i64(self.stream_time);
        o.u64(self.dead_letter_bytes);
        o.u64(self.views.len() as u64);
        let mut vals = Vec::new();
        for v in &self.views {
            o.bytes(v.name.as_bytes());
            o.u64(u64::from(v.version));
            o.u64(v.keys.len() as u64);
            for k in &v.keys {
                o.bytes(&k.key);
                o.i64(k.as_of);
                o.u64(k.seq);
                o.u64(k.events.len() as u64);
                for e in &k.events {
                    o.i64(e.ts);
                    o.i64(e.created);
                    o.u64(e.seq);
                    vals.clear();
                    let mut w = ValueWriter::new(&mut vals);
                    for x in e.values.iter() {
                        w.put(x);
                    }
                    o.bytes(&vals);
                }
            }
        }
        o.bytes(&self.broker_position);
        let sum = xxhash_rust::xxh3::xxh3_64(&o.0);
        o.u64(sum);
        o.0
    }

    fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        if bytes.len() < MAGIC.len() + 8 || &bytes[..8] != MAGIC {
            return Err("not a Kiln stream checkpoint".into());
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut a = [0u8; 8];
        a.copy_from_slice(sum);
        if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(a) {
            return Err("checksum mismatch (a torn or damaged file)".into());
        }
        let mut i = In { b: &body[8..] };
        let mut c = Checkpoint {
            offset: i.u64()?,
            stream_time: i.i64()?,
            dead_letter_bytes: i.u64()?,
            views: Vec::new(),
            broker_position: Vec::new(),
        };
        for _ in 0..i.u64()? {
            let name = String::from_utf8(i.bytes()?.to_vec()).map_err(|e| e.to_string())?;
            let version = u32::try_from(i.u64()?).map_err(|e| e.to_string())?;
            let mut keys = Vec::new();
            for _ in 0..i.u64()? {
                let key = i.bytes()?.to_vec();
                let as_of = i.i64()?;
                let seq = i.u64()?;
                let mut events = Vec::new();
                for _ in 0..i.u64()? {
                    let (ts, created, seq) = (i.i64()?, i.i64()?, i.u64()?);
                    let mut r = ValueReader::new(i.bytes()?);
                    let mut values = Vec::new();
                    while !r.is_empty() {
                        values.push(r.next_value().map_err(|e| e.to_string())?);
                    }
                    events.push(Event {
                        ts,
                        created,
                        seq,
                        values: values.into_boxed_slice(),
                    });
                }
                keys.push(SavedKey {
                    key,
                    as_of,
                    seq,
                    events,
                });
            }
            c.views.push(SavedView {
                name,
                version,
                keys,
            });
        }
        if !i.b.is_empty() {
            c.broker_position = i.bytes()?.to_vec();
        }
        Ok(c)
    }

    /// Loads the checkpoint at `path`; `None` if there is none yet.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, StreamError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StreamError::io(path)(e)),
        };
        Checkpoint::decode(&bytes)
            .map(Some)
            .map_err(|message| StreamError::Corrupt {
                path: path.to_path_buf(),
                message: format!(
                    "{message}; move it aside to rebuild the state from the start of the log"
                ),
            })
    }

    /// Replaces the checkpoint at `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StreamError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(StreamError::io(dir))?;
        let tmp: PathBuf = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(StreamError::io(&tmp))?;
        f.write_all(&self.encode())
            .and_then(|()| f.sync_all())
            .map_err(StreamError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(StreamError::io(path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StreamError::io(dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kiln_core::Value;

    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let c = Checkpoint {
            offset: 4096,
            stream_time: 1_700_000_000_000_000,
            dead_letter_bytes: 12,
            broker_position: br#"{"nats_stream":"S","seq":7}"#.to_vec(),
            views: vec![SavedView {
                name: "card_activity".into(),
                version: 2,
                keys: vec![SavedKey {
                    key: vec![1, 2, 3],
                    as_of: 5,
                    seq: 99,
                    events: vec![Event {
                        ts: 5,
                        created: 0,
                        seq: 99,
                        values: vec![Value::Bool(true), Value::Float64(2.5), Value::Null]
                            .into_boxed_slice(),
                    }],
                }],
            }],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::load(&path).expect("none"), None);
        c.save(&path).expect("save");
        assert_eq!(Checkpoint::load(&path).expect("load"), Some(c));
        let mut bytes = std::fs::read(&path).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let err = Checkpoint::load(&path).expect_err("damaged");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
