//! A source's log shared by everyone who appends to it in one process (push requests, a broker
//! connector): appends are serialised, and their `fsync`s are shared (group commit) — a
//! caller waits for one flush that covers everything written before it started.

use std::path::Path;
use std::sync::Mutex;

use crate::StreamError;
use crate::log::{FrameKind, LogWriter, Syncer};

pub struct Appender {
    writer: Mutex<LogWriter>,
    /// The log's durable end; held by the one caller whose `fsync` covers everyone who wrote
    /// before it started.
    durable: Mutex<u64>,
    syncer: Syncer,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl Appender {
    /// Opens the log in `dir` for appending (refused while another process holds it).
    pub fn open(dir: &Path) -> Result<Appender, StreamError> {
        let writer = LogWriter::open(dir)?;
        Ok(Appender {
            durable: Mutex::new(writer.end()),
            syncer: writer.syncer()?,
            writer: Mutex::new(writer),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, LogWriter> {
        // A poisoned lock means a write panicked; the writer cut any torn frame, so the log
        // is still well-formed and later writes may go on.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends events durably (blocking: it waits for the disk); returns the first event's
    /// offset and the log's end after them.
    pub fn append(&self, events: &[Vec<u8>]) -> Result<(u64, u64), StreamError> {
        self.append_frames(events.iter().map(|e| (FrameKind::Event, e.as_slice())))
    }

    /// Appends frames of any kind durably, all or none.
    pub fn append_frames<'a>(
        &self,
        frames: impl Iterator<Item = (FrameKind, &'a [u8])> + Clone,
    ) -> Result<(u64, u64), StreamError> {
        let (first, end) = self.writer().write_frames(frames)?;
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable < end {
            // Everything written so far: these frames and any written meanwhile.
            let target = self.writer().end();
            self.syncer.sync()?;
            *durable = target;
        }
        Ok((first, end))
    }

    /// The payload of the log's last position frame (see [`LogWriter::last_position`]).
    pub fn last_position(&self) -> Option<Vec<u8>> {
        self.writer().last_position().map(<[u8]>::to_vec)
    }
}
