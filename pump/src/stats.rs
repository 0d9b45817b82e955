//! Live counters of a run and its final summary.
//!
//! ```text
//! items, bytes      read (passed the filter), filtered out, written, skipped, failed, retries
//! per op            mutations, deletions, expirations: received, written, skipped, failed
//! per vbucket       the source's high seqno and its confirmed seqno (the lag), when it has them
//! ```
//! Bytes are key + value + metadata; "written" bytes are those of written messages (a batch
//! written in part counts its bytes in proportion).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::batch::{Delivery, KeyFailure, OpMix};
use crate::message::Op;

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
    dry_run: AtomicBool,
    failures: Mutex<Vec<KeyFailure>>,
    /// Per [`Op::index`]: received, written, skipped, failed.
    ops: [[AtomicU64; 4]; 3],
    vbuckets: Mutex<BTreeMap<u16, VbProgress>>,
}

/// Where a source's stream of one vbucket stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VbProgress {
    /// The source's high seqno when the stream started (where it ends).
    pub high: u64,
    /// The highest seqno the sink confirmed.
    pub confirmed: u64,
}

impl VbProgress {
    /// Seqnos left to confirm.
    pub fn lag(&self) -> u64 {
        self.high.saturating_sub(self.confirmed)
    }
}

/// One op's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Sent by the source and passed the filter.
    pub received: u64,
    pub written: u64,
    pub skipped: u64,
    pub failed: u64,
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
            dry_run: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            ops: Default::default(),
            vbuckets: Mutex::new(BTreeMap::new()),
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
    /// Per [`Op::index`].
    pub ops: [OpCounts; 3],
}

impl Stats {
    pub(crate) fn record_read(&self, items: u64, bytes: u64, ops: &[u64; 3]) {
        self.items_read.fetch_add(items, Relaxed);
        self.bytes_read.fetch_add(bytes, Relaxed);
        for (i, n) in ops.iter().enumerate() {
            if *n > 0 {
                self.ops[i][0].fetch_add(*n, Relaxed);
            }
        }
    }

    pub(crate) fn record_filtered(&self, items: u64) {
        self.filtered.fetch_add(items, Relaxed);
    }

    pub(crate) fn record_delivery(&self, d: &Delivery, bytes: usize, mix: &OpMix) {
        let (written, skipped, failed) = per_op(d, mix);
        for i in 0..3 {
            for (j, n) in [(1, written[i]), (2, skipped[i]), (3, failed[i])] {
                if n > 0 {
                    self.ops[i][j].fetch_add(n, Relaxed);
                }
            }
        }
        let total: u64 = mix.counts.iter().sum();
        let bytes = if d.written as u64 >= total {
            bytes as u64
        } else {
            (bytes as u128 * d.written as u128 / total.max(1) as u128) as u64
        };
        self.items_written.fetch_add(d.written as u64, Relaxed);
        self.bytes_written.fetch_add(bytes, Relaxed);
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

    /// Records the high seqno a source's stream of `vb` runs to.
    pub fn set_vbucket_high(&self, vb: u16, high: u64) {
        if let Ok(mut m) = self.vbuckets.lock() {
            m.entry(vb).or_default().high = high;
        }
    }

    /// Records the highest seqno of `vb` the sink confirmed.
    pub fn set_vbucket_confirmed(&self, vb: u16, seqno: u64) {
        if let Ok(mut m) = self.vbuckets.lock() {
            let p = m.entry(vb).or_default();
            p.confirmed = p.confirmed.max(seqno);
        }
    }

    /// Every vbucket a source reported, by id.
    pub fn vbuckets(&self) -> Vec<(u16, VbProgress)> {
        self.vbuckets
            .lock()
            .map(|m| m.iter().map(|(vb, p)| (*vb, *p)).collect())
            .unwrap_or_default()
    }

    pub(crate) fn mark_cancelled(&self) {
        self.cancelled.store(true, Relaxed);
    }

    pub(crate) fn mark_dry_run(&self) {
        self.dry_run.store(true, Relaxed);
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
            ops: std::array::from_fn(|i| OpCounts {
                received: self.ops[i][0].load(Relaxed),
                written: self.ops[i][1].load(Relaxed),
                skipped: self.ops[i][2].load(Relaxed),
                failed: self.ops[i][3].load(Relaxed),
            }),
        }
    }

    /// The final summary.
    pub fn summary(&self) -> Summary {
        Summary {
            counts: self.snapshot(),
            elapsed: self.elapsed(),
            cancelled: self.cancelled.load(Relaxed),
            dry_run: self.dry_run.load(Relaxed),
            failures: self.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        }
    }
}

impl Snapshot {
    /// The counts as one JSON object (numbers only), `elapsed` seconds after the start:
    ///
    /// ```text
    /// {"elapsed":1.25,"items_read":..,"items_written":..,"bytes_read":..,"bytes_written":..,
    ///  "filtered":..,"skipped":..,"failed":..,"retries":..,"batches":..,"expected":..,
    ///  "items_per_sec":..,"mb_per_sec":..,
    ///  "mutations":{"received":..,"written":..,"skipped":..,"failed":..},"deletions":{..},"expirations":{..}}
    /// ```
    pub fn to_json(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "{{\"elapsed\":{:.3},\"items_read\":{},\"items_written\":{},\"bytes_read\":{},\"bytes_written\":{},\"filtered\":{},\"skipped\":{},\"failed\":{},\"retries\":{},\"batches\":{},\"expected\":{},\"items_per_sec\":{:.0},\"mb_per_sec\":{:.3}",
            elapsed.as_secs_f64(),
            self.items_read,
            self.items_written,
            self.bytes_read,
            self.bytes_written,
            self.filtered,
            self.skipped,
            self.failed,
            self.retries,
            self.batches,
            self.expected,
            self.items_written as f64 / secs,
            self.bytes_written as f64 / 1e6 / secs,
        );
        for op in Op::ALL {
            let c = &self.ops[op.index()];
            s.push_str(&format!(
                ",\"{}\":{{\"received\":{},\"written\":{},\"skipped\":{},\"failed\":{}}}",
                op.plural(),
                c.received,
                c.written,
                c.skipped,
                c.failed
            ));
        }
        s.push('}');
        s
    }
}

/// A delivery's written, skipped and failed messages per op. Failed keys are looked up among
/// the batch's removals; skips the sink did not attribute go to removals first.
fn per_op(d: &Delivery, mix: &OpMix) -> ([u64; 3], [u64; 3], [u64; 3]) {
    let mut failed = [0u64; 3];
    for f in &d.failed {
        failed[mix.op_of(&f.key, f.vbucket).index()] += 1;
    }
    let mut skipped = d.skipped_ops.map(|n| n as u64);
    let mut rest = (d.skipped as u64).saturating_sub(skipped.iter().sum());
    for op in [Op::Deletion, Op::Expiration, Op::Mutation] {
        let i = op.index();
        let room = mix.counts[i].saturating_sub(failed[i] + skipped[i]);
        let take = room.min(rest);
        skipped[i] += take;
        rest -= take;
    }
    skipped[0] += rest;
    let mut written = [0u64; 3];
    for i in 0..3 {
        written[i] = mix.counts[i].saturating_sub(failed[i] + skipped[i]);
    }
    // A sink that wrote fewer than it was given without saying why: the counts it gave win.
    let sum: u64 = written.iter().sum();
    if sum != d.written as u64 {
        let mut excess = sum.saturating_sub(d.written as u64);
        for i in (0..3).rev() {
            let cut = written[i].min(excess);
            written[i] -= cut;
            excess -= cut;
        }
        if sum < d.written as u64 {
            written[0] += d.written as u64 - sum;
        }
    }
    (written, skipped, failed)
}

/// What a run did: printed at its end, returned to embedders.
#[derive(Debug, Clone)]
pub struct Summary {
    pub counts: Snapshot,
    pub elapsed: Duration,
    /// The run was stopped by Ctrl-C; the counts say what was confirmed before it drained.
    pub cancelled: bool,
    /// A dry run: the sink was checked, every message read is counted as skipped.
    pub dry_run: bool,
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
            match (self.cancelled, self.dry_run) {
                (true, _) => "transfer interrupted: confirmed so far",
                (false, true) => "dry run done: the sink was checked, nothing written",
                (false, false) => "transfer done",
            }
        )?;
        writeln!(
            f,
            "  items     {:>14} written, {} skipped, {} failed, {} filtered out",
            c.items_written, c.skipped, c.failed, c.filtered
        )?;
        for op in Op::ALL {
            let o = &c.ops[op.index()];
            if o.received + o.written + o.skipped + o.failed > 0 {
                writeln!(
                    f,
                    "  {:<11}{:>12} received, {} written, {} skipped, {} failed",
                    op.plural(),
                    o.received,
                    o.written,
                    o.skipped,
                    o.failed
                )?;
            }
        }
        writeln!(f, "  bytes     {:>14} written", c.bytes_written)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::message::Message;

    fn mixed() -> Vec<Message> {
        vec![
            Message::mutation("m1", "vvvv"),
            Message::mutation("m2", "vvvv"),
            Message::deletion("d1"),
            Message {
                op: Op::Expiration,
                ..Message::deletion("e1")
            },
        ]
    }

    #[test]
    fn outcomes_are_counted_per_op_and_bytes_only_for_what_was_written() {
        let stats = std::sync::Arc::new(Stats::default());
        let (tx, rx) = crate::channel::bounded(
            4,
            1 << 20,
            crate::Filter::default(),
            stats.clone(),
            tokio_util::sync::CancellationToken::new(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(Batch::new(mixed())).await.unwrap();
            let (_, ack) = rx.recv().await.unwrap().into_parts();
            // m2 failed, d1 skipped (its key was gone): the sink says which op it skipped.
            let mut d = Delivery {
                written: 2,
                failed: vec![KeyFailure {
                    key: "m2".into(),
                    vbucket: 0,
                    seqno: 0,
                    size: 0,
                    reason: "E2BIG".into(),
                }],
                ..Delivery::default()
            };
            d.skip(Op::Deletion);
            ack.confirm(d);
            // A sink that only counts its skips: they go to removals first.
            tx.send(Batch::new(mixed())).await.unwrap();
            let (_, ack) = rx.recv().await.unwrap().into_parts();
            ack.confirm(Delivery {
                written: 2,
                skipped: 2,
                ..Delivery::default()
            });
            // Nothing written: no bytes written either.
            tx.send(Batch::new(vec![Message::mutation("k", "123456")]))
                .await
                .unwrap();
            let (_, ack) = rx.recv().await.unwrap().into_parts();
            ack.confirm(Delivery {
                skipped: 1,
                ..Delivery::default()
            });
        });
        let s = stats.snapshot();
        let m = s.ops[Op::Mutation.index()];
        let d = s.ops[Op::Deletion.index()];
        let e = s.ops[Op::Expiration.index()];
        assert_eq!((m.received, m.written, m.skipped, m.failed), (5, 3, 1, 1));
        assert_eq!((d.received, d.written, d.skipped, d.failed), (2, 0, 2, 0));
        assert_eq!((e.received, e.written, e.skipped, e.failed), (2, 1, 1, 0));
        assert_eq!(s.items_written, 4);
        // Each mixed batch holds 16 bytes (12 of them in the mutations); half its items written.
        assert_eq!(s.bytes_written, 8 + 8);
        let json = s.to_json(Duration::from_secs(2));
        let v: Vec<&str> = json.split(',').collect();
        assert!(
            json.starts_with("{\"elapsed\":2.000,") && json.ends_with("}}"),
            "{json}"
        );
        assert!(
            json.contains(
                "\"deletions\":{\"received\":2,\"written\":0,\"skipped\":2,\"failed\":0}"
            ),
            "{json}"
        );
        assert!(v.len() > 20);
    }

    #[test]
    fn vbucket_lag_is_the_high_seqno_less_the_confirmed_one() {
        let stats = Stats::default();
        stats.set_vbucket_high(3, 100);
        stats.set_vbucket_confirmed(3, 40);
        stats.set_vbucket_confirmed(3, 30);
        let v = stats.vbuckets();
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].0, v[0].1.lag()), (3, 60));
    }
}
