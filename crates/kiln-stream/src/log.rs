//! The embedded event log: a directory of segment files per source, the default place events
//! go before anything computes on them.
//!
//! Each event is a frame `[length u32][checksum u32][payload]` (little-endian; the checksum is
//! the low 32 bits of the payload's XXH3). An append writes its frames and `fsync`s before it
//! returns, so the push API acknowledges only what survives a crash. An event's offset is the
//! byte position of its frame in the whole log: offsets only grow, which makes them the stream's
//! sequence numbers and its checkpoint positions.
//!
//! The log is cut into segments, `{offset of its first frame:020}.log` (a log written before
//! segments is one file, `events.log`, which reads as the segment at 0). The writer starts a new
//! segment once the current one holds `segment_bytes`; only the last segment is ever written,
//! so a reader that reaches the end of one segment while the next exists has read it all.
//! Segments make retention possible: [`trim`] deletes whole segments that a checkpoint has
//! passed and that are older than the retention, oldest first, never the last one.
//!
//! Besides events, a log holds what a broker connector ([`crate::connector`]) needs to resume
//! exactly: the broker position its appends reached ([`FrameKind::Position`], written in the
//! same append as the events it covers) and the messages it could not read as events
//! ([`FrameKind::Rejected`], which the stream turns into dead letters). The kind is the top
//! byte of the length word, which event sizes never reach, so a log of events only reads as
//! it always did. [`FrameKind::Time`] frames move the stream's time on while no events come.
//! A new segment starts with the last position frame written before it, so that
//! a writer finds where its connector stood by reading the last segment alone.
//!
//! An append is all or none: an append of several frames begins with a frame (never returned
//! to readers) holding the offset it ends at, and readers go past that frame only once the log
//! reaches that offset. A process killed in the middle of writing an append (Linux stops a
//! large write between pages on a fatal signal) leaves whole frames of it on disk, but no
//! reader ever sees them and the next writer cuts them off, so a connector's events are never
//! logged without the broker position that covers them (and logged a second time when it
//! resumes from the position before). Logs written before such frames existed have none, and
//! read as they always did.
//!
//! One process appends (a `LOCK` file, held with an OS lock, keeps a second one out); any
//! number read. A crash in the middle of an append leaves a torn append at the end, which
//! readers stop at and the next writer cuts off.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::StreamError;

const FRAME_HEADER: usize = 8;
/// The largest event accepted (a frame's length is checked against it on read, so a corrupt
/// length cannot make a reader allocate gigabytes); 16 MiB less a byte, the most the length
/// bits of a frame header hold.
pub const MAX_EVENT_BYTES: usize = LEN_MASK as usize;
/// The file of a log written before segments: the segment at offset 0.
const LEGACY_FILE: &str = "events.log";
const KIND_SHIFT: u32 = 24;
const LEN_MASK: u32 = (1 << KIND_SHIFT) - 1;
/// The kind code of the frame that begins an append of several frames: its payload is the
/// offset the append ends at (`u64` little-endian).
const APPEND: u32 = 4;
const APPEND_FRAME: usize = FRAME_HEADER + 8;
/// How large a segment grows before the writer starts the next one, unless configured.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 20;

/// How the process holding a log writes it.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment is begun once the current one holds this many bytes.
    pub segment_bytes: u64,
    /// Log the clock's time when nothing was appended for this long
    /// ([`crate::appender::Appender::tick_when_idle`]); `None`: never.
    pub tick_when_idle: Option<std::time::Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            tick_when_idle: None,
        }
    }
}

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An event: one checked row of the source ([`crate::event::encode_row`]).
    Event,
    /// The broker position a connector's appends reached (its own encoding).
    Position,
    /// A broker message that is not an event of the source: a JSON object with the reason.
    Rejected,
    /// The clock's time (microseconds, `i64` little-endian), written by the process holding
    /// the log when nothing was appended for a while ([`crate::appender::Appender::tick_when_idle`]):
    /// the stream's time moves on to it, so an idle source's windows still empty, and since
    /// it is logged, a replay moves on at the same place.
    Time,
}

impl FrameKind {
    fn code(self) -> u32 {
        match self {
            FrameKind::Event => 0,
            FrameKind::Position => 1,
            FrameKind::Rejected => 2,
            FrameKind::Time => 3,
        }
    }

    fn from_code(code: u32) -> Option<FrameKind> {
        Some(match code {
            0 => FrameKind::Event,
            1 => FrameKind::Position,
            2 => FrameKind::Rejected,
            3 => FrameKind::Time,
            _ => return None,
        })
    }
}

fn checksum(payload: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(payload) as u32
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The log's segments in `dir`: (offset of the first frame, path), in order.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StreamError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StreamError::io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(StreamError::io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let base = if name == LEGACY_FILE {
            Some(0)
        } else {
            name.strip_suffix(".log")
                .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
        };
        if let Some(base) = base {
            out.push((base, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The offset of the log's first frame still kept (0 unless retention deleted segments).
pub fn start(dir: &Path) -> Result<u64, StreamError> {
    Ok(segments(dir)?.first().map_or(0, |s| s.0))
}

/// Deletes, oldest first, the segments wholly before `upto` (a checkpoint's offset) that were
/// last written before `older_than`; stops at the first that must stay, so the log is never
/// cut in its middle, and never deletes the last segment. Returns the paths deleted.
pub fn trim(dir: &Path, upto: u64, older_than: SystemTime) -> Result<Vec<PathBuf>, StreamError> {
    let segs = segments(dir)?;
    let mut deleted = Vec::new();
    for pair in segs.windows(2) {
        let ((_, path), (next, _)) = (&pair[0], &pair[1]);
        let written = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(StreamError::io(path))?;
        if *next > upto || written > older_than {
            break;
        }
        std::fs::remove_file(path).map_err(StreamError::io(path))?;
        deleted.push(path.clone());
    }
    Ok(deleted)
}

/// The segment being written, shared with [`Syncer`]s so that they follow it to the next.
#[derive(Debug)]
struct Current {
    path: PathBuf,
    file: File,
}

fn sync_dir(dir: &Path) -> Result<(), StreamError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StreamError::io(dir))
}

/// Appends events; one per log at a time.
pub struct LogWriter {
    dir: PathBuf,
    segment_bytes: u64,
    /// The offset of the current segment's first frame.
    base: u64,
    current: Arc<Mutex<Current>>,
    path: PathBuf,
    file: File,
    end: u64,
    last_position: Option<Vec<u8>>,
    _lock: File,
}

impl LogWriter {
    /// Opens (creating) the log in `dir`, cutting off a torn frame a crash left at its end.
    pub fn open(dir: &Path) -> Result<LogWriter, StreamError> {
        Self::open_with(dir, DEFAULT_SEGMENT_BYTES)
    }

    /// [`LogWriter::open`], starting a new segment once one holds `segment_bytes`.
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<LogWriter, StreamError> {
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
        let segs = segments(dir)?;
        let (base, path) = segs
            .last()
            .cloned()
            .unwrap_or_else(|| (0, segment_path(dir, 0)));
        let file = open_segment(&path)?;
        let (end, mut last_position) = scan(&path, &file, base)?;
        let len = file.metadata().map_err(StreamError::io(&path))?.len();
        if len > end - base {
            tracing::warn!(
                log = %path.display(),
                "cutting off {} bytes of a torn append at the end of the event log",
                len - (end - base)
            );
            file.set_len(end - base).map_err(StreamError::io(&path))?;
            file.sync_all().map_err(StreamError::io(&path))?;
        }
        // A segment is begun with the last position; a crash right after creating one leaves
        // it empty, and the position is in the segment before.
        let mut carry = None;
        if end == base && segs.len() > 1 {
            let (prev_base, prev) = &segs[segs.len() - 2];
            let prev_file = open_segment(prev)?;
            last_position = scan(prev, &prev_file, *prev_base)?.1;
            carry = last_position.clone();
        }
        sync_dir(dir)?;
        let mut w = LogWriter {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            base,
            current: Arc::new(Mutex::new(Current {
                path: path.clone(),
                file: file.try_clone().map_err(StreamError::io(&path))?,
            })),
            path,
            file,
            end,
            last_position,
            _lock: lock,
        };
        if let Some(p) = carry {
            w.append_raw([(FrameKind::Position, p.as_slice())].into_iter())?;
            w.file.sync_data().map_err(StreamError::io(&w.path))?;
        }
        Ok(w)
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
    pub fn syncer(&self) -> Syncer {
        Syncer {
            current: self.current.clone(),
        }
    }

    /// Writes `events` without waiting for the disk; [`Syncer::sync`] or [`LogWriter::append`]
    /// makes them durable.
    pub fn write(&mut self, events: &[Vec<u8>]) -> Result<(u64, u64), StreamError> {
        self.write_frames(events.iter().map(|e| (FrameKind::Event, e.as_slice())))
    }

    /// Writes frames of any kind, like [`LogWriter::write`], all in one segment (a new one if
    /// the current is full).
    pub fn write_frames<'a>(
        &mut self,
        frames: impl Iterator<Item = (FrameKind, &'a [u8])> + Clone,
    ) -> Result<(u64, u64), StreamError> {
        if self.end - self.base >= self.segment_bytes {
            self.roll()?;
        }
        self.append_raw(frames)
    }

    fn append_raw<'a>(
        &mut self,
        frames: impl Iterator<Item = (FrameKind, &'a [u8])> + Clone,
    ) -> Result<(u64, u64), StreamError> {
        let (count, bytes) = frames
            .clone()
            .fold((0, 0), |(n, b), (_, e)| (n + 1, b + e.len() + FRAME_HEADER));
        let first = self.end;
        let mut buf = Vec::with_capacity(bytes + APPEND_FRAME);
        if count > 1 {
            let end = (first + (APPEND_FRAME + bytes) as u64).to_le_bytes();
            put_frame(&mut buf, APPEND, &end);
        }
        let first_frame = first + buf.len() as u64;
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
            put_frame(&mut buf, kind.code(), e);
            if kind == FrameKind::Position {
                position = Some(e);
            }
        }
        if let Err(e) = self.file.write_all_at(&buf, first - self.base) {
            // Whatever part was written is a torn tail: cut it so the log stays well-formed.
            let _ = self.file.set_len(first - self.base);
            return Err(StreamError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        self.end = first + buf.len() as u64;
        if let Some(p) = position {
            self.last_position = Some(p.to_vec());
        }
        Ok((first_frame, self.end))
    }

    /// Ends the current segment (durably) and starts the next at the log's end, beginning it
    /// with the last position.
    fn roll(&mut self) -> Result<(), StreamError> {
        self.file.sync_data().map_err(StreamError::io(&self.path))?;
        let path = segment_path(&self.dir, self.end);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        sync_dir(&self.dir)?;
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            *current = Current {
                path: path.clone(),
                file: file.try_clone().map_err(StreamError::io(&path))?,
            };
        }
        self.base = self.end;
        self.path = path;
        self.file = file;
        if let Some(p) = self.last_position.clone() {
            self.append_raw([(FrameKind::Position, p.as_slice())].into_iter())?;
        }
        Ok(())
    }

    /// The offset the next event will get.
    pub fn end(&self) -> u64 {
        self.end
    }
}

fn put_frame(buf: &mut Vec<u8>, code: u32, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32 | code << KIND_SHIFT).to_le_bytes());
    buf.extend_from_slice(&checksum(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn open_segment(path: &Path) -> Result<File, StreamError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(StreamError::io(path))
}

/// Reads a segment's frames: the offset after the last whole one and the last position.
fn scan(path: &Path, file: &File, base: u64) -> Result<(u64, Option<Vec<u8>>), StreamError> {
    let mut reader = LogReader {
        // Read with `read_segment` only: it never looks for a next segment.
        dir: PathBuf::new(),
        path: path.to_path_buf(),
        file: file.try_clone().map_err(StreamError::io(path))?,
        base,
        pos: base,
        buf: Vec::new(),
    };
    let mut batch = LogBatch::default();
    let mut last_position = None;
    loop {
        reader.read_segment(4096, &mut batch)?;
        if batch.is_empty() {
            break;
        }
        if let Some(p) = batch
            .iter()
            .filter(|f| f.kind == FrameKind::Position)
            .last()
        {
            last_position = Some(p.payload.to_vec());
        }
    }
    Ok((reader.pos, last_position))
}

/// Makes a log's writes durable, from any thread (following the writer to new segments: a
/// segment is synced in full before the next is begun).
#[derive(Debug, Clone)]
pub struct Syncer {
    current: Arc<Mutex<Current>>,
}

impl Syncer {
    pub fn sync(&self) -> Result<(), StreamError> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .file
            .sync_data()
            .map_err(StreamError::io(&current.path))
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

/// Reads a log from an offset onwards, segment after segment; sees events as they are
/// appended.
pub struct LogReader {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The offset of the current segment's first frame.
    base: u64,
    pos: u64,
    buf: Vec<u8>,
}

impl LogReader {
    /// A reader of the log in `dir` starting at `offset` (the log's start, or an offset a
    /// checkpoint recorded). A log that does not exist yet reads as empty until it does.
    pub fn open(dir: &Path, offset: u64) -> Result<LogReader, StreamError> {
        std::fs::create_dir_all(dir).map_err(StreamError::io(dir))?;
        let mut segs = segments(dir)?;
        if segs.is_empty() {
            let path = segment_path(dir, 0);
            open_segment(&path)?;
            segs.push((0, path));
        }
        let first = segs[0].0;
        if offset < first {
            return Err(StreamError::Corrupt {
                path: dir.to_path_buf(),
                message: format!(
                    "offset {offset} is before the log's start ({first}): retention deleted the segments holding it"
                ),
            });
        }
        let (base, path) = segs
            .iter()
            .rev()
            .find(|s| s.0 <= offset)
            .cloned()
            .unwrap_or_default();
        let file = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(StreamError::io(&path))?;
        let len = file.metadata().map_err(StreamError::io(&path))?.len();
        if offset > base + len {
            return Err(StreamError::Corrupt {
                path,
                message: format!(
                    "the checkpoint's offset {offset} is past the log's end ({} bytes): the log was replaced or cut; delete the checkpoint to start over",
                    base + len
                ),
            });
        }
        Ok(LogReader {
            dir: dir.to_path_buf(),
            path,
            file,
            base,
            pos: offset,
            buf: Vec::new(),
        })
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

    /// [`LogReader::read`] into `out` (cleared first), without allocating per event; moves on
    /// to the next segment at the end of one.
    pub fn read_batch(&mut self, max: usize, out: &mut LogBatch) -> Result<(), StreamError> {
        loop {
            self.read_segment(max, out)?;
            // At the start of a segment (an empty log, or one just begun) there is no next.
            if !out.is_empty() || self.pos == self.base {
                return Ok(());
            }
            let next = segment_path(&self.dir, self.pos);
            if !next.exists() {
                return Ok(());
            }
            // Once the next segment exists nothing more is written to this one, and what was
            // written before it is visible now.
            self.read_segment(max, out)?;
            if !out.is_empty() {
                return Ok(());
            }
            let len = self
                .file
                .metadata()
                .map_err(StreamError::io(&self.path))?
                .len();
            if self.base + len > self.pos {
                return Err(StreamError::Corrupt {
                    path: self.path.clone(),
                    message: format!(
                        "the frame at offset {} does not read back (a later segment exists, so it is not an append in progress)",
                        self.pos
                    ),
                });
            }
            self.file = OpenOptions::new()
                .read(true)
                .open(&next)
                .map_err(StreamError::io(&next))?;
            self.base = self.pos;
            self.path = next;
        }
    }

    /// Reads frames from the current segment only, stopping before an append of several
    /// frames that does not end yet (being written, or cut short by a crash).
    fn read_segment(&mut self, max: usize, out: &mut LogBatch) -> Result<(), StreamError> {
        out.clear();
        // About what `max` small events take, within 64 KiB..1 MiB; grown for a larger event.
        let mut chunk = max.saturating_mul(64).clamp(1 << 16, 1 << 20);
        while out.len() < max {
            self.buf.resize(chunk, 0);
            let n = self
                .file
                .read_at(&mut self.buf, self.pos - self.base)
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
                let code = word >> KIND_SHIFT;
                let kind = FrameKind::from_code(code);
                if (kind.is_none() && code != APPEND) || len > MAX_EVENT_BYTES {
                    // A torn or corrupt header: nothing after it is readable.
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
                let Some(kind) = kind else {
                    let end = payload
                        .try_into()
                        .map(u64::from_le_bytes)
                        .unwrap_or(u64::MAX);
                    let written = if end <= self.pos + n as u64 {
                        true
                    } else {
                        let len = self
                            .file
                            .metadata()
                            .map_err(StreamError::io(&self.path))?
                            .len();
                        end <= self.base + len
                    };
                    if !written {
                        break;
                    }
                    // What follows, up to `end`, is there whole.
                    at = start + len;
                    continue;
                };
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
        // After the frame that says where the append ends.
        assert_eq!(a, APPEND_FRAME as u64);
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
        let path = segment_path(dir.path(), 0);
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

    #[test]
    fn an_append_is_read_only_once_written_whole_and_a_torn_one_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = segment_path(dir.path(), 0);
        let (end, whole) = {
            let mut w = LogWriter::open(dir.path()).expect("open");
            let frames = [
                (FrameKind::Event, b"e1".as_slice()),
                (FrameKind::Position, b"p1".as_slice()),
            ];
            let end = w.append_raw(frames.into_iter()).expect("append").1;
            let frames = [
                (FrameKind::Event, b"e2".as_slice()),
                (FrameKind::Event, b"e3".as_slice()),
                (FrameKind::Position, b"p2".as_slice()),
            ];
            w.append_raw(frames.into_iter()).expect("append");
            (end, std::fs::read(&path).expect("read"))
        };
        let text = |got: Vec<Logged>| {
            got.into_iter()
                .map(|l| String::from_utf8(l.payload).expect("utf8"))
                .collect::<Vec<_>>()
        };
        // The second append as a reader finds it while it is being written, or after a kill
        // stopped the write: its first two frames whole, the position not yet there.
        let cut = end as usize + APPEND_FRAME + 2 * (FRAME_HEADER + 2);
        std::fs::write(&path, &whole[..cut]).expect("write");
        let mut r = LogReader::open(dir.path(), 0).expect("reader");
        assert_eq!(text(r.read(10).expect("read")), ["e1", "p1"]);
        assert!(r.read(10).expect("read").is_empty());
        assert_eq!(r.position(), end);
        // The write ends: the whole append is read.
        std::fs::write(&path, &whole).expect("write");
        assert_eq!(text(r.read(10).expect("read")), ["e2", "e3", "p2"]);
        // Killed instead: the next writer cuts the append off and resumes from `p1`.
        std::fs::write(&path, &whole[..cut]).expect("write");
        let w = LogWriter::open(dir.path()).expect("reopen");
        assert_eq!(w.end(), end);
        assert_eq!(w.last_position(), Some(b"p1".as_slice()));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), end);
    }

    #[test]
    fn an_append_larger_than_a_read_is_read_a_few_frames_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = LogWriter::open(dir.path()).expect("open");
        // 3 MiB in one append: three times the most one read takes in.
        let events: Vec<Vec<u8>> = (0..12_000u32).map(|i| i.to_le_bytes().repeat(64)).collect();
        w.append(&events).expect("append");
        w.append(&[b"after".to_vec()]).expect("append");
        // Three frames a read: the append ends far past what the first read holds.
        let got = payloads(dir.path(), 0);
        assert_eq!(got.len(), events.len() + 1);
        assert!(got.iter().zip(&events).all(|(g, e)| g == e));
    }

    fn payloads(dir: &Path, from: u64) -> Vec<Vec<u8>> {
        let mut r = LogReader::open(dir, from).expect("reader");
        let mut out = Vec::new();
        loop {
            let got = r.read(3).expect("read");
            if got.is_empty() {
                return out;
            }
            out.extend(got.into_iter().map(|l| l.payload));
        }
    }

    #[test]
    fn segments_roll_and_read_as_one_log_and_a_reader_follows_the_writer_across_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = LogWriter::open_with(dir.path(), 100).expect("open");
        let mut live = LogReader::open(dir.path(), 0).expect("live reader");
        let mut seen = Vec::new();
        let mut offsets = Vec::new();
        for i in 0..40u32 {
            let (first, _) = w
                .append(&[format!("event-{i:02}-{}", "x".repeat(i as usize)).into_bytes()])
                .expect("append");
            offsets.push(first);
            if i % 7 == 0 {
                seen.extend(
                    live.read(100)
                        .expect("live read")
                        .into_iter()
                        .map(|l| l.offset),
                );
            }
        }
        seen.extend(
            live.read(100)
                .expect("live read")
                .into_iter()
                .map(|l| l.offset),
        );
        seen.extend(
            live.read(100)
                .expect("live read")
                .into_iter()
                .map(|l| l.offset),
        );
        let segs = segments(dir.path()).expect("segments");
        assert!(segs.len() > 5, "{segs:?}");
        // Each segment starts where the one before ended: offsets are the whole log's.
        for pair in segs.windows(2) {
            let len = std::fs::metadata(&pair[0].1).expect("stat").len();
            assert_eq!(pair[0].0 + len, pair[1].0);
        }
        let all = payloads(dir.path(), 0);
        assert_eq!(all.len(), 40);
        assert_eq!(all[39], format!("event-39-{}", "x".repeat(39)).into_bytes());
        // A checkpoint's offset in any segment resumes there.
        assert_eq!(payloads(dir.path(), offsets[23])[0], all[23]);
        // Frames are read in time whether the reader was ahead of the writer or behind.
        let mut live_rest = live.read(100).expect("read");
        while !live_rest.is_empty() {
            seen.extend(live_rest.iter().map(|l| l.offset));
            live_rest = live.read(100).expect("read");
        }
        assert_eq!(seen, offsets);
    }

    #[test]
    fn the_last_position_is_found_in_the_last_segment_even_when_it_was_left_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut w = LogWriter::open_with(dir.path(), 64).expect("open");
            w.write_frames(
                [
                    (FrameKind::Event, [1u8; 70].as_slice()),
                    (FrameKind::Position, b"p1".as_slice()),
                ]
                .into_iter(),
            )
            .expect("write");
            // Rolls: the new segment begins with the position.
            w.append(&[b"after".to_vec()]).expect("append");
        }
        let w = LogWriter::open_with(dir.path(), 64).expect("reopen");
        assert_eq!(w.last_position(), Some(b"p1".as_slice()));
        let end = w.end();
        drop(w);
        // A crash right after a new segment was created leaves it empty.
        File::create(segment_path(dir.path(), end)).expect("empty segment");
        let w = LogWriter::open_with(dir.path(), 64).expect("reopen");
        assert_eq!(w.last_position(), Some(b"p1".as_slice()));
        assert!(
            w.end() > end,
            "the position is carried into the empty segment"
        );
        let kinds: Vec<FrameKind> = LogReader::open(dir.path(), 0)
            .expect("reader")
            .read(10)
            .expect("read")
            .iter()
            .map(|l| l.kind)
            .collect();
        use FrameKind::{Event, Position};
        assert_eq!(kinds, [Event, Position]);
        let mut r = LogReader::open(dir.path(), 0).expect("reader");
        let mut all = Vec::new();
        loop {
            let got = r.read(10).expect("read");
            if got.is_empty() {
                break;
            }
            all.extend(got.into_iter().map(|l| (l.kind, l.payload)));
        }
        assert_eq!(
            all,
            [
                (Event, vec![1u8; 70]),
                (Position, b"p1".to_vec()),
                (Position, b"p1".to_vec()),
                (Event, b"after".to_vec()),
                (Position, b"p1".to_vec()),
            ]
        );
    }

    #[test]
    fn a_reader_at_the_start_of_an_empty_segment_finds_nothing_and_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = LogReader::open(dir.path(), 0).expect("reader of an empty log");
        assert!(r.read(10).expect("read").is_empty());
        let mut w = LogWriter::open_with(dir.path(), 8).expect("open");
        let (_, end) = w.append(&[b"first".to_vec()]).expect("append");
        assert_eq!(r.read(10).expect("read").len(), 1);
        // The next append begins a segment; a reader there before it is written sees nothing.
        File::create(segment_path(dir.path(), end)).expect("empty segment");
        let mut at_start = LogReader::open(dir.path(), end).expect("reader");
        assert!(at_start.read(10).expect("read").is_empty());
        assert!(r.read(10).expect("read").is_empty());
        drop(w);
        let mut w = LogWriter::open_with(dir.path(), 8).expect("reopen");
        w.append(&[b"second".to_vec()]).expect("append");
        assert_eq!(at_start.read(10).expect("read")[0].payload, b"second");
        assert_eq!(r.read(10).expect("read")[0].payload, b"second");
    }

    #[test]
    fn a_log_written_before_segments_reads_on_and_grows_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The format of the single-file log: the same frames in `events.log`.
        {
            let mut w = LogWriter::open(dir.path()).expect("open");
            w.append(&[b"old".to_vec()]).expect("append");
        }
        std::fs::rename(segment_path(dir.path(), 0), dir.path().join(LEGACY_FILE)).expect("rename");
        let mut w = LogWriter::open_with(dir.path(), 8).expect("reopen");
        w.append(&[b"new".to_vec()]).expect("append");
        assert_eq!(payloads(dir.path(), 0), [b"old".to_vec(), b"new".to_vec()]);
        assert_eq!(segments(dir.path()).expect("segments").len(), 2);
    }

    #[test]
    fn trim_deletes_only_old_segments_a_checkpoint_has_passed_and_never_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = LogWriter::open_with(dir.path(), 10).expect("open");
        let mut offsets = Vec::new();
        for i in 0..6u8 {
            offsets.push(w.append(&[vec![i; 12]]).expect("append").0);
        }
        assert_eq!(segments(dir.path()).expect("segments").len(), 6);
        let future = SystemTime::now() + std::time::Duration::from_secs(60);
        // Nothing is old enough.
        assert!(
            trim(dir.path(), u64::MAX, std::time::UNIX_EPOCH)
                .expect("trim")
                .is_empty()
        );
        // Up to the fourth event's offset: the three segments before it.
        let deleted = trim(dir.path(), offsets[3], future).expect("trim");
        assert_eq!(deleted.len(), 3);
        assert_eq!(start(dir.path()).expect("start"), offsets[3]);
        assert_eq!(payloads(dir.path(), offsets[3]).len(), 3);
        let err = LogReader::open(dir.path(), offsets[1])
            .err()
            .expect("trimmed");
        assert!(err.to_string().contains("retention"), "{err}");
        // Everything checkpointed: all but the last segment.
        trim(dir.path(), u64::MAX, future).expect("trim");
        assert_eq!(start(dir.path()).expect("start"), offsets[5]);
        w.append(&[b"more".to_vec()])
            .expect("append after trimming");
        assert_eq!(payloads(dir.path(), offsets[5]).len(), 2);
    }
}
