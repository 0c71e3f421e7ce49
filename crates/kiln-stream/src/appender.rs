//! A source's log shared by everyone who appends to it in one process (push requests, a broker
//! connector): appends are serialised, and their `fsync`s are shared (group commit) — a
//! caller waits for one flush that covers everything written before it started.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::StreamError;
use crate::log::{FrameKind, LogOptions, LogWriter, Syncer};

pub struct Appender {
    writer: Mutex<LogWriter>,
    /// The log's durable end; held by the one caller whose `fsync` covers everyone who wrote
    /// before it started.
    durable: Mutex<u64>,
    syncer: Syncer,
    /// When anything was last appended (ticks included).
    last_append: Mutex<Instant>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl Appender {
    /// Opens the log in `dir` for appending (refused while another process holds it).
    pub fn open(dir: &Path) -> Result<Arc<Appender>, StreamError> {
        Self::open_with(dir, &LogOptions::default())
    }

    /// [`Appender::open`] with segments and ticks as `opts` say.
    pub fn open_with(dir: &Path, opts: &LogOptions) -> Result<Arc<Appender>, StreamError> {
        let writer = LogWriter::open_with(dir, opts.segment_bytes)?;
        let log = Arc::new(Appender {
            durable: Mutex::new(writer.end()),
            syncer: writer.syncer(),
            writer: Mutex::new(writer),
            last_append: Mutex::new(Instant::now()),
        });
        if let Some(idle) = opts.tick_when_idle {
            log.tick_when_idle(idle).map_err(StreamError::io(dir))?;
        }
        Ok(log)
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
        *self.last_append.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
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

    /// From now until the appender is dropped, appends the clock's time
    /// ([`FrameKind::Time`]) whenever nothing was appended for `idle`: while a source is
    /// silent its stream's time follows the clock in steps of `idle`, so that its windows
    /// empty as they would under traffic. Events then older than that time less the allowed
    /// lateness are late, so this suits sources whose events arrive as they happen.
    fn tick_when_idle(self: &Arc<Self>, idle: Duration) -> std::io::Result<()> {
        let log = Arc::downgrade(self);
        let nap = (idle / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("kiln-log-ticks".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(nap);
                    let Some(log) = log.upgrade() else { return };
                    let quiet = log
                        .last_append
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .elapsed();
                    if quiet < idle {
                        continue;
                    }
                    let now = kiln_core::time::now_micros().to_le_bytes();
                    if let Err(e) = log.append_frames([(FrameKind::Time, now.as_slice())].into_iter()) {
                        tracing::warn!(error = %e, "could not log the clock's time for an idle source");
                    }
                }
            })?;
        Ok(())
    }
}
