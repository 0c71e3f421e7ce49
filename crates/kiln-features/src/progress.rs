//! Progress reporting for long jobs, as a trait so the engine does not depend on a terminal
//! library: the CLI draws bars, tests and the server pass [`NoProgress`].

/// Receives progress of a long job: stages with a known amount of work each.
pub trait Progress: Sync {
    /// A new stage begins, with `total` units of work (rows, partitions) and its unit name.
    fn begin(&self, stage: &str, total: u64, unit: &str);
    /// `n` more units are done.
    fn inc(&self, n: u64);
    /// The current stage is over.
    fn end(&self);
}

/// Ignores progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64, _: &str) {}
    fn inc(&self, _: u64) {}
    fn end(&self) {}
}
