//! Progress reporting and cancellation for long, synchronous engine jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// One progress report: which stage a job is in and how far it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Short human-readable stage name, e.g. "reading file" or "statistics".
    pub stage: String,
    /// Units of work done in this stage.
    pub done: u64,
    /// Units of work in this stage (0 when unknown).
    pub total: u64,
}

impl Progress {
    /// Fraction in 0..=1, or `None` when the total is unknown.
    pub fn fraction(&self) -> Option<f32> {
        (self.total > 0).then(|| (self.done as f64 / self.total as f64).clamp(0.0, 1.0) as f32)
    }
}

/// Receives progress reports from a job. Must be cheap: jobs call it often, from any thread.
pub trait ProgressSink: Send + Sync {
    /// Called when a job makes progress.
    fn report(&self, progress: Progress);
}

/// A sink that ignores every report.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _progress: Progress) {}
}

impl<F: Fn(Progress) + Send + Sync> ProgressSink for F {
    fn report(&self, progress: Progress) {
        self(progress);
    }
}

/// Reports `stage` as `done / total`.
pub(crate) fn report(sink: &dyn ProgressSink, stage: &str, done: u64, total: u64) {
    sink.report(Progress {
        stage: stage.to_owned(),
        done,
        total,
    });
}

/// A shared flag that asks a job to stop. Cloning shares the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every job holding this token to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Error::Cancelled)` once cancelled: jobs call this between units of work.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}
