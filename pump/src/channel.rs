//! The bounded channel between source workers and sink workers.
//!
//! Bounded twice: in batches (a fixed number queued) and in bytes (a semaphore of byte
//! permits that a batch holds until its sink confirms it), so memory stays flat however large
//! the transfer. The sender applies the run's [`Filter`] (`-l`, `-k`, rehash) before queueing,
//! then the run's rate limit (`--rate`) when it has one.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use regex::bytes::Regex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Delivery, OpMix};
use crate::collections::CollectionSelect;
use crate::error::Error;
use crate::message::Message;
use crate::rate::RateLimiter;
use crate::spec::VbucketSet;
use crate::stats::Stats;

/// Which messages travel, and how they are rewritten on the way: a vbucket list, a key regex,
/// a value regex, deletions left out, expiries replaced, and whether to recompute vbuckets.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub vbuckets: Option<VbucketSet>,
    pub key: Option<Regex>,
    /// Only mutations whose value matches (`--filter-values`); removals carry no value and pass.
    pub value: Option<Regex>,
    /// Leave out deletions and expirations (`--exclude-deletions`).
    pub exclude_deletions: bool,
    /// Replace expiries (`--replace-ttl`, `--replace-ttl-with`).
    pub ttl: Option<TtlRewrite>,
    /// Recompute each message's vbucket from its key for this many vbuckets (`-x rehash=1`).
    pub rehash: Option<u16>,
    /// Only the collections `--include-data` / `--exclude-data` keep.
    pub collections: Option<CollectionSelect>,
}

/// Which expiries `--replace-ttl` replaces, and with what (an absolute unix time, 0 for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlRewrite {
    /// True: every mutation's expiry; false: only those already past at `now`.
    pub all: bool,
    pub with: u32,
    /// The unix time an expiry is compared with.
    pub now: u32,
}

/// Relative expiries (memcached's rule) are at most this many seconds; larger ones are unix
/// times.
const RELATIVE_EXPIRY_MAX: u32 = 30 * 24 * 3600;

impl TtlRewrite {
    /// The expiry `expiry` becomes.
    pub fn apply(&self, expiry: u32) -> u32 {
        let expired = expiry > RELATIVE_EXPIRY_MAX && expiry <= self.now;
        if self.all || expired {
            self.with
        } else {
            expiry
        }
    }
}

impl Filter {
    /// True when the filter changes nothing.
    pub fn is_noop(&self) -> bool {
        self.vbuckets.is_none()
            && self.key.is_none()
            && self.value.is_none()
            && !self.exclude_deletions
            && self.ttl.is_none()
            && self.rehash.is_none()
            && self.collections.is_none()
    }

    /// True when the filter may leave messages out (not only rewrite them).
    pub fn selects(&self) -> bool {
        self.vbuckets.is_some()
            || self.key.is_some()
            || self.value.is_some()
            || self.exclude_deletions
            || self.collections.is_some()
    }

    /// Keeps the messages that pass, rewriting them if asked. Control messages
    /// ([`crate::Op::Control`]) are not items: they always pass, untouched.
    pub fn apply(&self, messages: &mut Vec<Message>) {
        if self.is_noop() {
            return;
        }
        messages.retain_mut(|m| {
            if m.is_control() {
                return true;
            }
            if let Some(n) = self.rehash {
                m.vbucket = pump_protocol::vbucket_of(&m.key, n);
            }
            let keep = self.vbuckets.as_ref().is_none_or(|v| v.contains(m.vbucket))
                && self.key.as_ref().is_none_or(|re| re.is_match(&m.key))
                && (m.is_removal() || self.value.as_ref().is_none_or(|re| re.is_match(&m.value)))
                && !(self.exclude_deletions && m.is_removal())
                && self
                    .collections
                    .as_ref()
                    .is_none_or(|c| c.keeps(m.collection));
            if keep && !m.is_removal() {
                if let Some(ttl) = &self.ttl {
                    m.expiry = ttl.apply(m.expiry);
                }
            }
            keep
        });
    }
}

/// Builds a connected sender and receiver.
pub fn bounded(
    max_batches: usize,
    max_bytes: usize,
    filter: Filter,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> (BatchSender, BatchReceiver) {
    let (tx, rx) = async_channel::bounded(max_batches.max(1));
    let budget = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let end = Arc::new(AtomicU8::new(SourceEnd::Running as u8));
    let sender = BatchSender {
        end: end.clone(),
        tx,
        bytes: Arc::new(Semaphore::new(budget)),
        budget,
        filter: Arc::new(filter),
        stats,
        cancel,
        rate: None,
    };
    (
        sender,
        BatchReceiver {
            rx,
            end,
            held: Arc::default(),
        },
    )
}

/// The source's end. Cheap to clone: every source worker holds one.
#[derive(Debug, Clone)]
pub struct BatchSender {
    tx: async_channel::Sender<Batch>,
    end: Arc<AtomicU8>,
    bytes: Arc<Semaphore>,
    budget: usize,
    filter: Arc<Filter>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    rate: Option<Arc<RateLimiter>>,
}

impl BatchSender {
    /// The same sender, holding every batch until `rate` lets it through (`--rate`).
    pub fn with_rate(mut self, rate: Arc<RateLimiter>) -> BatchSender {
        self.rate = Some(rate);
        self
    }

    /// Filters the batch and queues it, waiting while the channel is full in batches or bytes.
    /// A batch the filter empties is confirmed at once. Fails with [`Error::Cancelled`] after
    /// Ctrl-C and [`Error::SinkGone`] when every sink worker has stopped.
    pub async fn send(&self, mut batch: Batch) -> Result<(), Error> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let before = batch.len();
        self.filter.apply(&mut batch.messages);
        if batch.len() != before {
            batch.recount();
            self.stats.record_filtered((before - batch.len()) as u64);
        }
        if batch.is_empty() {
            batch.take_ack().confirm(Delivery::default());
            return Ok(());
        }
        let (items, bytes) = (batch.len() as u64, batch.bytes() as u64);
        if let Some(rate) = &self.rate {
            tokio::select! {
                _ = rate.acquire(items, bytes) => {}
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
            }
        }
        let want = batch.bytes().clamp(1, self.budget) as u32;
        let permit = tokio::select! {
            p = self.bytes.clone().acquire_many_owned(want) => p.map_err(|_| Error::SinkGone)?,
            _ = self.cancel.cancelled() => return Err(Error::Cancelled),
        };
        let ops = OpMix::of(&batch.messages);
        let counts = ops.counts;
        batch.attach(self.stats.clone(), permit, ops);
        tokio::select! {
            r = self.tx.send(batch) => r.map_err(|_| Error::SinkGone)?,
            _ = self.cancel.cancelled() => return Err(Error::Cancelled),
        }
        self.stats.record_read(items, bytes, &counts);
        Ok(())
    }

    /// Sends messages as a batch nobody waits on.
    pub async fn send_messages(&self, messages: Vec<Message>) -> Result<(), Error> {
        self.send(Batch::new(messages)).await
    }

    /// True once Ctrl-C was pressed or the run is stopping.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The run's cancellation token, for sources that wait on the network.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Records how the source ended; the pipeline calls it before the last sender is dropped,
    /// so a sink that sees the channel close can tell a complete source from a failed one.
    pub(crate) fn set_end(&self, end: SourceEnd) {
        self.end.store(end as u8, Ordering::SeqCst);
    }

    /// The run's live counters (a source may set the expected total).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// The sink's end. Cheap to clone: every sink worker holds one.
#[derive(Debug, Clone)]
pub struct BatchReceiver {
    rx: async_channel::Receiver<Batch>,
    end: Arc<AtomicU8>,
    /// The first batch, taken by [`BatchReceiver::wait_first`] and handed out first.
    held: Arc<std::sync::Mutex<Option<Batch>>>,
}

/// How the source ended, as the sink sees it once the channel is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceEnd {
    /// Still sending.
    Running = 0,
    /// Sent everything: a file sink may commit (rename its temporary file).
    Complete = 1,
    /// Stopped by Ctrl-C: what was sent is drained and confirmed, but the data is partial.
    Cancelled = 2,
    /// Failed: the data is partial.
    Failed = 3,
}

impl BatchReceiver {
    /// The next batch, or `None` once every source worker has finished and the queue is empty.
    pub async fn recv(&self) -> Option<Batch> {
        if let Some(b) = self.held.lock().ok().and_then(|mut h| h.take()) {
            return Some(b);
        }
        self.rx.recv().await.ok()
    }

    /// Waits until the first batch is there (or the source ended without one), and keeps it
    /// for the next [`BatchReceiver::recv`]: what the source publishes before its first batch
    /// (its collections) is then known.
    pub async fn wait_first(&self) {
        if self.held.lock().map(|h| h.is_some()).unwrap_or(false) {
            return;
        }
        if let Ok(b) = self.rx.recv().await {
            if let Ok(mut h) = self.held.lock() {
                *h = Some(b);
            }
        }
    }

    /// How the source ended; meaningful once [`BatchReceiver::recv`] returned `None`.
    pub fn source_end(&self) -> SourceEnd {
        match self.end.load(Ordering::SeqCst) {
            1 => SourceEnd::Complete,
            2 => SourceEnd::Cancelled,
            3 => SourceEnd::Failed,
            _ => SourceEnd::Running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(
        max_batches: usize,
        max_bytes: usize,
        filter: Filter,
    ) -> (BatchSender, BatchReceiver, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let (tx, rx) = bounded(
            max_batches,
            max_bytes,
            filter,
            stats.clone(),
            CancellationToken::new(),
        );
        (tx, rx, stats)
    }

    #[tokio::test]
    async fn filter_keeps_listed_vbuckets_and_matching_keys() {
        let filter = Filter {
            vbuckets: Some(VbucketSet::parse("1,3-4").unwrap()),
            key: Some(Regex::new("^user").unwrap()),
            ..Filter::default()
        };
        let (tx, rx, stats) = channel(4, 1 << 20, filter);
        let msgs = vec![
            Message {
                vbucket: 1,
                ..Message::mutation("user1", "v")
            },
            Message {
                vbucket: 2,
                ..Message::mutation("user2", "v")
            },
            Message {
                vbucket: 4,
                ..Message::mutation("other", "v")
            },
            Message {
                vbucket: 3,
                ..Message::mutation("user3", "v")
            },
        ];
        tx.send_messages(msgs).await.unwrap();
        let b = rx.recv().await.unwrap();
        let keys: Vec<_> = b.messages.iter().map(|m| m.key.clone()).collect();
        assert_eq!(keys, vec!["user1", "user3"]);
        assert_eq!(stats.snapshot().filtered, 2);
    }

    #[tokio::test]
    async fn values_deletions_and_expiries_are_filtered_and_rewritten() {
        let now = 2_000_000_000;
        let msgs = || {
            vec![
                Message {
                    expiry: now - 10,
                    ..Message::mutation("old", "{\"type\":\"beer\"}")
                },
                Message {
                    expiry: now + 10,
                    ..Message::mutation("new", "{\"type\":\"beer\"}")
                },
                Message {
                    expiry: 100,
                    ..Message::mutation("relative", "{\"type\":\"wine\"}")
                },
                Message::deletion("gone"),
            ]
        };
        let run = |filter: Filter| {
            let mut m = msgs();
            filter.apply(&mut m);
            m.into_iter()
                .map(|m| (m.key_display(), m.expiry))
                .collect::<Vec<_>>()
        };
        let values = Filter {
            value: Some(Regex::new("beer").unwrap()),
            ..Filter::default()
        };
        assert_eq!(
            run(values),
            [
                ("old".into(), now - 10),
                ("new".into(), now + 10),
                ("gone".into(), 0)
            ]
        );
        let no_deletions = Filter {
            exclude_deletions: true,
            ..Filter::default()
        };
        assert_eq!(run(no_deletions).len(), 3);
        let expired = Filter {
            ttl: Some(TtlRewrite {
                all: false,
                with: 0,
                now,
            }),
            ..Filter::default()
        };
        assert_eq!(
            run(expired),
            [
                ("old".into(), 0),
                ("new".into(), now + 10),
                ("relative".into(), 100),
                ("gone".into(), 0)
            ]
        );
        let all = Filter {
            ttl: Some(TtlRewrite {
                all: true,
                with: now + 3600,
                now,
            }),
            ..Filter::default()
        };
        assert!(run(all)[..3].iter().all(|(_, e)| *e == now + 3600));
    }

    #[tokio::test]
    async fn rehash_recomputes_vbuckets_from_keys() {
        let filter = Filter {
            rehash: Some(1024),
            ..Filter::default()
        };
        let (tx, rx, _) = channel(4, 1 << 20, filter);
        tx.send_messages(vec![Message {
            vbucket: 7,
            ..Message::mutation("hello", "v")
        }])
        .await
        .unwrap();
        assert_eq!(rx.recv().await.unwrap().messages[0].vbucket, 528);
    }

    #[tokio::test]
    async fn control_messages_pass_every_filter_and_rehash_untouched() {
        let filter = Filter {
            vbuckets: Some(VbucketSet::parse("9").unwrap()),
            key: Some(Regex::new("^user").unwrap()),
            rehash: Some(1024),
            ..Filter::default()
        };
        let (tx, rx, stats) = channel(4, 1 << 20, filter);
        let mut control = Message::control(2, "table", "end");
        control.vbucket = 3;
        tx.send_messages(vec![control.clone(), Message::mutation("other", "v")])
            .await
            .unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!(b.messages, vec![control]);
        assert_eq!(stats.snapshot().filtered, 1);
    }

    #[tokio::test]
    async fn a_batch_emptied_by_the_filter_is_confirmed_at_once() {
        let filter = Filter {
            vbuckets: Some(VbucketSet::parse("9").unwrap()),
            ..Filter::default()
        };
        let (tx, _rx, _) = channel(1, 1 << 20, filter);
        let (b, acked) = Batch::with_ack(vec![Message::mutation("k", "v")]);
        tx.send(b).await.unwrap();
        assert_eq!(acked.await.unwrap(), Delivery::default());
    }

    #[tokio::test]
    async fn the_byte_budget_blocks_until_a_batch_is_confirmed() {
        let (tx, rx, _) = channel(100, 10, Filter::default());
        tx.send_messages(vec![Message::mutation("k", "123456789")])
            .await
            .unwrap();
        let second = tx.send_messages(vec![Message::mutation("k", "123456789")]);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err()
        );
        rx.recv().await.unwrap().confirm_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn send_after_cancel_fails_with_cancelled() {
        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let (tx, _rx) = bounded(1, 100, Filter::default(), stats, cancel.clone());
        cancel.cancel();
        assert!(matches!(
            tx.send_messages(vec![Message::mutation("k", "v")]).await,
            Err(Error::Cancelled)
        ));
    }
}
