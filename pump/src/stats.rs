//! Live counters of a run and its final summary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::batch::{Delivery, KeyFailure};

/// How many failed keys are kept in memory for the report; the count goes on past it.
pub const MAX_KEPT_FAILURES: usize = 100_000;

/// Counters shared by every worker of a run.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    items_read: AtomicU64,
    bytes_read: AtomicU64,
    filtered: AtomicU64,
    items_written: AtomicU64,
    bytes_written: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    batches: AtomicU64,
    expected: AtomicU64,
    cancelled: AtomicBool,
    failures: Mutex<Vec<KeyFailure>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            items_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            items_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub items_read: u64,
    pub bytes_read: u64,
    pub filtered: u64,
    pub items_written: u64,
    pub bytes_written: u64,
    pub skipped: u64,
    pub failed: u64,
    pub retries: u64,
    pub batches: u64,
    /// Items the source expects to send in all, 0 when unknown.
    pub expected: u64,
}

impl Stats {
    pub(crate) fn record_read(&self, items: u64, bytes: u64) {
        self.items_read.fetch_add(items, Relaxed);
        self.bytes_read.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn record_filtered(&self, items: u64) {
        self.filtered.fetch_add(items, Relaxed);
    }

    pub(crate) fn record_delivery(&self, d: &Delivery, bytes: usize) {
        self.items_written.fetch_add(d.written as u64, Relaxed);
        self.bytes_written.fetch_add(bytes as u64, Relaxed);
        self.skipped.fetch_add(d.skipped as u64, Relaxed);
        self.retries.fetch_add(d.retries, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        if !d.failed.is_empty() {
            self.failed.fetch_add(d.failed.len() as u64, Relaxed);
            if let Ok(mut f) = self.failures.lock() {
                let room = MAX_KEPT_FAILURES.saturating_sub(f.len());
                f.extend(d.failed.iter().take(room).cloned());
            }
        }
    }

    /// Counts retries made outside a delivery (reconnects, for example).
    pub fn record_retries(&self, n: u64) {
        self.retries.fetch_add(n, Relaxed);
    }

    /// Sets how many items the source expects to send, for the progress bar.
    pub fn set_expected(&self, items: u64) {
        self.expected.store(items, Relaxed);
    }

    pub(crate) fn mark_cancelled(&self) {
        self.cancelled.store(true, Relaxed);
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            items_read: self.items_read.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            items_written: self.items_written.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retries: self.retries.load(Relaxed),
            batches: self.batches.load(Relaxed),
            expected: self.expected.load(Relaxed),
        }
    }

    /// The final summary.
    pub fn summary(&self) -> Summary {
        Summary {
            counts: self.snapshot(),
            elapsed: self.elapsed(),
            cancelled: self.cancelled.load(Relaxed),
            failures: self.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        }
    }
}

/// What a run did: printed at its end, returned to embedders.
#[derive(Debug, Clone)]
pub struct Summary {
    pub counts: Snapshot,
    pub elapsed: Duration,
    /// The run was stopped by Ctrl-C; the counts say what was confirmed before it drained.
    pub cancelled: bool,
    /// Keys that were not written (at most [`MAX_KEPT_FAILURES`]; `counts.failed` has them all).
    pub failures: Vec<KeyFailure>,
}

impl Summary {
    /// Confirmed items per second.
    pub fn items_per_sec(&self) -> f64 {
        self.counts.items_written as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Confirmed megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.counts.bytes_written as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True when every item read was written or harmlessly skipped, and the run was not cut.
    pub fn is_complete(&self) -> bool {
        !self.cancelled && self.counts.failed == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "{}",
            if self.cancelled {
                "transfer interrupted: confirmed so far"
            } else {
                "transfer done"
            }
        )?;
        writeln!(
            f,
            "  items     {:>14} written, {} skipped, {} failed, {} filtered out",
            c.items_written, c.skipped, c.failed, c.filtered
        )?;
        writeln!(f, "  bytes     {:>14}", c.bytes_written)?;
        writeln!(f, "  elapsed   {:>14.3} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "  rate      {:>14.0} items/s, {:.1} MB/s",
            self.items_per_sec(),
            self.mb_per_sec()
        )?;
        write!(f, "  batches   {:>14}, {} retries", c.batches, c.retries)
    }
}
