//! The embedded event log: one append-only file per source (`events.log` in the source's log
//! directory), the default place events go before anything computes on them.
//!
//! Each event is a frame `[length u32][checksum u32][payload]` (little-endian; the checksum is
//! the low 32 bits of the payload's XXH3). An append writes its frames and `fsync`s before it
//! returns, so the push API acknowledges only what survives a crash. An event's offset is the
//! byte position of its frame: offsets only grow, which makes them the stream's sequence
//! numbers and its checkpoint positions.
//!
//! Besides events, a log holds what a broker connector ([`crate::connector`]) needs to resume
//! exactly: the broker position its appends reached ([`FrameKind::Position`], written in the
//! same append as the events it covers) and the messages it could not read as events
//! ([`FrameKind::Rejected`], which the stream turns into dead letters). The kind is the top
//! byte of the length word, which event sizes never reach, so a log of events only reads as
//! it always did.
//!
//! One process appends (a `LOCK` file, held with an OS lock, keeps a second one out); any
//! number read. A crash in the middle of an append leaves a torn frame at the end, which
//! readers stop at and the next writer cuts off. The log is not yet segmented or trimmed: it
//! grows until it is deleted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StreamError;

const FRAME_HEADER: usize = 8;
/// The largest event accepted (a frame's length is checked against it on read, so a corrupt
/// length cannot make a reader allocate gigabytes); 16 MiB less a byte, the most the length
/// bits of a frame header hold.
pub const MAX_EVENT_BYTES: usize = LEN_MASK as usize;
const LOG_FILE: &str = "events.log";
const KIND_SHIFT: u32 = 24;
const LEN_MASK: u32 = (1 << KIND_SHIFT) - 1;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An event: one checked row of the source ([`crate::event::encode_row`]).
    Event,
    /// The broker position a connector's appends reached (its own encoding).
    Position,
    /// A broker message that is not an event of the source: a JSON object with the reason.
    Rejected,
}

impl FrameKind {
    fn code(self) -> u32 {
        match self {
            FrameKind::Event => 0,
            FrameKind::Position => 1,
            FrameKind::Rejected => 2,
        }
    }

    fn from_code(code: u32) -> Option<FrameKind> {
        Some(match code {
            0 => FrameKind::Event,
            1 => FrameKind::Position,
            2 => FrameKind::Rejected,
            _ => return None,
        })
    }
}

fn checksum(payload: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(payload) as u32
}

/// Appends events; one per log at a time.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    end: u64,
    last_position: Option<Vec<u8>>,
    _lock: File,
}

impl LogWriter {
    /// Opens (creating) the log in `dir`, cutting off a torn frame a crash left at its end.
    pub fn open(dir: &Path) -> Result<LogWriter, StreamError> {
        std::fs::create_dir_all(dir).map_err(StreamError::io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StreamError::io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StreamError::Locked { path: lock_path });
        }
        let mut lock = lock;
        lock.set_len(0).map_err(StreamError::io(&lock_path))?;
        let _ = write!(lock, "{}", std::process::id());
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        let mut reader = LogReader::from_file(
            path.clone(),
            file.try_clone().map_err(StreamError::io(&path))?,
            0,
        );
        let mut last_position = None;
        loop {
            let frames = reader.read(4096)?;
            if frames.is_empty() {
                break;
            }
            if let Some(p) = frames.into_iter().rfind(|f| f.kind == FrameKind::Position) {
                last_position = Some(p.payload);
            }
        }
        let end = reader.position();
        let len = file.metadata().map_err(StreamError::io(&path))?.len();
        if len > end {
            tracing::warn!(
                log = %path.display(),
                "cutting off {} bytes of a torn append at the end of the event log",
                len - end
            );
            file.set_len(end).map_err(StreamError::io(&path))?;
            file.sync_all().map_err(StreamError::io(&path))?;
        }
        Ok(LogWriter {
            path,
            file,
            end,
            last_position,
            _lock: lock,
        })
    }

    /// Appends `events` (each already encoded) durably; returns the offset of the first and
    /// the log's new end.
    pub fn append(&mut self, events: &[Vec<u8>]) -> Result<(u64, u64), StreamError> {
        let written = self.write(events)?;
        self.file.sync_data().map_err(StreamError::io(&self.path))?;
        Ok(written)
    }

    /// The payload of the last [`FrameKind::Position`] frame in the log, if any: where a
    /// connector resumes.
    pub fn last_position(&self) -> Option<&[u8]> {
        self.last_position.as_deref()
    }

    /// A handle that makes what was written durable (`sync_data`) without holding the writer,
    /// so concurrent appenders can share one `fsync` (group commit).
    pub fn syncer(&self) -> Result<Syncer, StreamError> {
        Ok(Syncer {
            file: self.file.try_clone().map_err(StreamError::io(&self.path))?,
            path: self.path.clone(),
        })
    }

    /// Writes `events` without waiting for the disk; [`Syncer::sync`] or [`LogWriter::append`]
    /// makes them durable.
    pub fn write(&mut self, events: &[Vec<u8>]) -> Result<(u64, u64), StreamError> {
        self.write_frames(events.iter().map(|e| (FrameKind::Event, e.as_slice())))
    }

    /// Writes frames of any kind, like [`LogWriter::write`].
    pub fn write_frames<'a>(
        &mut self,
        frames: impl Iterator<Item = (FrameKind, &'a [u8])> + Clone,
    ) -> Result<(u64, u64), StreamError> {
        let mut buf = Vec::with_capacity(frames.clone().map(|(_, e)| e.len() + FRAME_HEADER).sum());
        let mut position = None;
        for (kind, e) in frames {
            if e.len() > MAX_EVENT_BYTES {
                return Err(StreamError::BadEvent {
                    at: "event".into(),
                    message: format!(
                        "{} bytes is larger than the {MAX_EVENT_BYTES}-byte limit",
                        e.len()
                    ),
                });
            }
            buf.extend_from_slice(&(e.len() as u32 | kind.code() << KIND_SHIFT).to_le_bytes());
            buf.extend_from_slice(&checksum(e).to_le_bytes());
            buf.extend_from_slice(e);
            if kind == FrameKind::Position {
                position = Some(e);
            }
        }
        let first = self.end;
        if let Err(e) = self.file.write_all_at(&buf, first) {
            // Whatever part was written is a torn tail: cut it so the log stays well-formed.
            let _ = self.file.set_len(first);
            return Err(StreamError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        self.end = first + buf.len() as u64;
        if let Some(p) = position {
            self.last_position = Some(p.to_vec());
        }
        Ok((first, self.end))
    }

    /// The offset the next event will get.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// Makes a log's writes durable, from any thread.
#[derive(Debug)]
pub struct Syncer {
    file: File,
    path: PathBuf,
}

impl Syncer {
    pub fn sync(&self) -> Result<(), StreamError> {
        self.file.sync_data().map_err(StreamError::io(&self.path))
    }
}

/// One frame read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub offset: u64,
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

/// Frames read by [`LogReader::read_batch`]: their payloads in one buffer, reused from batch to
/// batch so that reading allocates nothing per event.
#[derive(Debug, Default)]
pub struct LogBatch {
    data: Vec<u8>,
    /// Offset, kind and the payload's end in `data` (it starts where the previous one ends).
    frames: Vec<(u64, FrameKind, usize)>,
}

/// One frame of a [`LogBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub offset: u64,
    pub kind: FrameKind,
    pub payload: &'a [u8],
}

impl LogBatch {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Frame<'_>> {
        self.frames.iter().scan(0, |start, &(offset, kind, end)| {
            let payload = &self.data[*start..end];
            *start = end;
            Some(Frame {
                offset,
                kind,
                payload,
            })
        })
    }

    fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
    }

    fn push(&mut self, offset: u64, kind: FrameKind, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.frames.push((offset, kind, self.data.len()));
    }
}

/// Reads a log from an offset onwards; sees events as they are appended.
pub struct LogReader {
    path: PathBuf,
    file: File,
    pos: u64,
    buf: Vec<u8>,
}

impl LogReader {
    /// A reader of the log in `dir` starting at `offset` (0, or an offset a checkpoint
    /// recorded). A log that does not exist yet reads as empty until it does.
    pub fn open(dir: &Path, offset: u64) -> Result<LogReader, StreamError> {
        std::fs::create_dir_all(dir).map_err(StreamError::io(dir))?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        let len = file.metadata().map_err(StreamError::io(&path))?.len();
        if offset > len {
            return Err(StreamError::Corrupt {
                path,
                message: format!(
                    "the checkpoint's offset {offset} is past the log's end ({len} bytes): the log was replaced or cut; delete the checkpoint to start over"
                ),
            });
        }
        Ok(Self::from_file(path, file, offset))
    }

    fn from_file(path: PathBuf, file: File, pos: u64) -> LogReader {
        LogReader {
            path,
            file,
            pos,
            buf: Vec::new(),
        }
    }

    /// The offset of the next event to read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Up to `max` complete events from the current position (fewer, or none, at the end).
    pub fn read(&mut self, max: usize) -> Result<Vec<Logged>, StreamError> {
        let mut batch = LogBatch::default();
        self.read_batch(max, &mut batch)?;
        Ok(batch
            .iter()
            .map(|f| Logged {
                offset: f.offset,
                kind: f.kind,
                payload: f.payload.to_vec(),
            })
            .collect())
    }

    /// [`LogReader::read`] into `out` (cleared first), without allocating per event.
    pub fn read_batch(&mut self, max: usize, out: &mut LogBatch) -> Result<(), StreamError> {
        out.clear();
        // About what `max` small events take, within 64 KiB..1 MiB; grown for a larger event.
        let mut chunk = max.saturating_mul(64).clamp(1 << 16, 1 << 20);
        while out.len() < max {
            self.buf.resize(chunk, 0);
            let n = self
                .file
                .read_at(&mut self.buf, self.pos)
                .map_err(StreamError::io(&self.path))?;
            let data = &self.buf[..n];
            let mut at = 0usize;
            let mut need_more = false;
            while out.len() < max {
                if data.len() - at < FRAME_HEADER {
                    need_more = n == chunk;
                    break;
                }
                let word = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                let len = (word & LEN_MASK) as usize;
                let sum =
                    u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
                let Some(kind) = FrameKind::from_code(word >> KIND_SHIFT) else {
                    // A torn or corrupt header: nothing after it is readable.
                    break;
                };
                if len > MAX_EVENT_BYTES {
                    break;
                }
                let start = at + FRAME_HEADER;
                if data.len() - start < len {
                    need_more = n == chunk;
                    if need_more && at == 0 {
                        chunk = (FRAME_HEADER + len).max(chunk * 2);
                    }
                    break;
                }
                let payload = &data[start..start + len];
                if checksum(payload) != sum {
                    // A frame still being written (or torn by a crash): stop before it.
                    break;
                }
                out.push(self.pos + at as u64, kind, payload);
                at = start + len;
            }
            self.pos += at as u64;
            if !need_more {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_read_back_in_order_from_any_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = LogWriter::open(dir.path()).expect("open");
        let (a, end) = w
            .append(&[b"one".to_vec(), b"two".to_vec()])
            .expect("append");
        assert_eq!(a, 0);
        let (b, _) = w.append(&[vec![7u8; 3_000_000]]).expect("append big");
        assert_eq!(b, end);
        let mut r = LogReader::open(dir.path(), 0).expect("reader");
        let got = r.read(10).expect("read");
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].payload, b"two");
        assert_eq!(got[2].payload.len(), 3_000_000);
        assert!(r.read(10).expect("read at end").is_empty());
        let mut r = LogReader::open(dir.path(), got[1].offset).expect("reader");
        assert_eq!(r.read(1).expect("read")[0].payload, b"two");
        // A second writer is refused while the first holds the log.
        assert!(matches!(
            LogWriter::open(dir.path()),
            Err(StreamError::Locked { .. })
        ));
    }

    #[test]
    fn frame_kinds_read_back_and_the_last_position_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut w = LogWriter::open(dir.path()).expect("open");
            assert_eq!(w.last_position(), None);
            w.write_frames(
                [
                    (FrameKind::Event, b"e1".as_slice()),
                    (FrameKind::Rejected, b"{}".as_slice()),
                    (FrameKind::Position, b"p1".as_slice()),
                ]
                .into_iter(),
            )
            .expect("write");
            w.write_frames([(FrameKind::Position, b"p2".as_slice())].into_iter())
                .expect("write");
            w.append(&[b"e2".to_vec()]).expect("append");
            assert_eq!(w.last_position(), Some(b"p2".as_slice()));
            let too_big = vec![0u8; MAX_EVENT_BYTES + 1];
            assert!(w.append(&[too_big]).is_err());
        }
        let w = LogWriter::open(dir.path()).expect("reopen");
        assert_eq!(w.last_position(), Some(b"p2".as_slice()));
        let got = LogReader::open(dir.path(), 0)
            .expect("reader")
            .read(10)
            .expect("read");
        assert_eq!(
            got.iter().map(|l| l.kind).collect::<Vec<_>>(),
            [
                FrameKind::Event,
                FrameKind::Rejected,
                FrameKind::Position,
                FrameKind::Position,
                FrameKind::Event
            ]
        );
    }

    #[test]
    fn a_torn_append_is_invisible_and_cut_off_by_the_next_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = {
            let mut w = LogWriter::open(dir.path()).expect("open");
            w.append(&[b"kept".to_vec()]).expect("append").1
        };
        // A crash halfway through a frame: header and part of the payload.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[10, 0, 0, 0, 1, 2, 3, 4, b'x'])
            .expect("write");
        drop(f);
        let mut r = LogReader::open(dir.path(), 0).expect("reader");
        assert_eq!(r.read(10).expect("read").len(), 1);
        assert_eq!(r.position(), end);
        let mut w = LogWriter::open(dir.path()).expect("reopen");
        assert_eq!(w.end(), end);
        w.append(&[b"next".to_vec()]).expect("append");
        let got = LogReader::open(dir.path(), 0)
            .expect("reader")
            .read(10)
            .expect("read");
        assert_eq!(
            got.iter().map(|l| l.payload.as_slice()).collect::<Vec<_>>(),
            [b"kept".as_slice(), b"next"]
        );
    }
}
