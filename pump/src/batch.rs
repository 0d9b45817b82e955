//! Batches and their acknowledgement.
//!
//! A source builds a [`Batch`] with [`Batch::with_ack`] when it must learn that the sink has
//! settled it (to send a TAP ack, a DCP buffer-ack, or advance a checkpoint): it keeps the
//! [`Acked`] future and the sink resolves it through the batch's [`Ack`] with an [`Outcome`]:
//!
//! ```text
//! Ok(Delivery { written, skipped, failed: [KeyFailure { key, vbucket, seqno, size, reason }], retries })
//!     every message settled once: delivered (written or skipped) or failed by key
//! Err(Rejected { reason })
//!     the sink did not settle the batch (it stopped, or dropped the Ack): nothing delivered
//! ```
//!
//! An `Ack` dropped without being confirmed rejects its batch, so a crashed sink never lets a
//! source move on; a failed key keeps the source from acknowledging past it (see the crate
//! docs).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::message::{Message, Op};
use crate::stats::Stats;

/// When a batch is full. cbtransfer's defaults: 1000 messages or 400,000 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_items: usize,
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_items: 1000,
            max_bytes: 400_000,
        }
    }
}

/// Accumulates messages until [`BatchLimits`] say the batch is full. Does no I/O.
#[derive(Debug)]
pub struct BatchBuilder {
    limits: BatchLimits,
    messages: Vec<Message>,
    bytes: usize,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new(limits: BatchLimits) -> Self {
        BatchBuilder {
            limits,
            messages: Vec::with_capacity(limits.max_items.min(4096)),
            bytes: 0,
        }
    }

    /// Adds a message; true when the batch is now full and should be taken.
    pub fn push(&mut self, m: Message) -> bool {
        self.bytes += m.size();
        self.messages.push(m);
        self.is_full()
    }

    /// True at `max_items` messages or `max_bytes` bytes.
    pub fn is_full(&self) -> bool {
        self.messages.len() >= self.limits.max_items || self.bytes >= self.limits.max_bytes
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Takes what has accumulated, leaving the builder empty.
    pub fn take(&mut self) -> Vec<Message> {
        self.bytes = 0;
        std::mem::replace(
            &mut self.messages,
            Vec::with_capacity(self.limits.max_items.min(4096)),
        )
    }
}

/// One message a sink could not write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFailure {
    pub key: Bytes,
    pub vbucket: u16,
    /// The message's seqno (its position in its vbucket's history; 0 when the source has none).
    pub seqno: u64,
    /// The message's payload bytes (key + value + meta), for a source that must tell how much
    /// of what it read was not delivered (a DCP flow-control window).
    pub size: usize,
    pub reason: String,
}

impl KeyFailure {
    /// The failure of message `m`, for `reason`.
    pub fn of(m: &Message, reason: impl Into<String>) -> KeyFailure {
        KeyFailure {
            key: m.key.clone(),
            vbucket: m.vbucket,
            seqno: m.seqno,
            size: m.size(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for KeyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {:?} (vbucket {}): {}",
            crate::message::key_display(&self.key),
            self.vbucket,
            self.reason
        )
    }
}

/// What a sink did with a batch it took: each message is written, declined harmlessly
/// (skipped) or failed, and counted once, however often it was retried. A batch a sink did
/// not take is [`Rejected`] instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Messages written and confirmed.
    pub written: usize,
    /// Messages the destination declined harmlessly (KEY_EEXISTS on add, KEY_ENOENT on
    /// delete), and control messages a sink of items does not write: delivered all the same.
    pub skipped: usize,
    /// Messages that could not be written, each with its reason: not delivered. The run goes
    /// on and ends non-zero; a source keeps its checkpoint of their vbuckets behind them.
    pub failed: Vec<KeyFailure>,
    /// Resends it took (a message resent three times counts three here, once above).
    pub retries: u64,
    /// Of `skipped`, how many of each op ([`Op::index`]) the sink says it skipped. Skips a
    /// sink leaves out of it are counted as removals first (a skip is a removal of a key that
    /// is gone, unless the sink adds), then as mutations.
    pub skipped_ops: [usize; 3],
}

impl Delivery {
    /// Every one of `n` messages written.
    pub fn all(n: usize) -> Delivery {
        Delivery {
            written: n,
            ..Delivery::default()
        }
    }

    /// Counts one skipped message of `op`.
    pub fn skip(&mut self, op: Op) {
        self.skipped += 1;
        self.skipped_ops[op.index()] += 1;
    }

    /// True when every message was delivered (none failed).
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// The vbuckets holding a failed message, sorted, each once.
    pub fn failed_vbuckets(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.failed.iter().map(|f| f.vbucket).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Payload bytes of the failed messages.
    pub fn failed_bytes(&self) -> usize {
        self.failed.iter().map(|f| f.size).sum()
    }
}

/// Why a batch was not delivered at all: the sink stopped (an error, a dropped ack) before it
/// settled the batch. Nothing in it may be acknowledged upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sink did not deliver the batch: {reason}")]
pub struct Rejected {
    pub reason: String,
}

/// What a source learns of a batch it sent with [`Batch::with_ack`]: the delivery (every
/// message delivered or failed by key), or the batch's rejection.
pub type Outcome = Result<Delivery, Rejected>;

/// The sink's side of a batch's acknowledgement. Confirming records the delivery in the run's
/// stats and wakes the source, if it waits; dropping it unconfirmed rejects the batch.
#[derive(Debug, Default)]
pub struct Ack {
    tx: Option<oneshot::Sender<Outcome>>,
    stats: Option<Arc<Stats>>,
    bytes: usize,
    /// Messages in the batch: no delivery counts more.
    items: usize,
    /// The batch's share of the channel's byte budget, released when the batch is settled.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// What the batch holds, to count its outcome per op.
    ops: OpMix,
}

/// A batch's messages per op, and (in a batch mixing mutations with removals) the keys of its
/// removals, so that a failed key is counted under its op.
#[derive(Debug, Default, Clone)]
pub(crate) struct OpMix {
    pub(crate) counts: [u64; 3],
    pub(crate) removals: Vec<(Bytes, u16, Op)>,
}

impl OpMix {
    pub(crate) fn of(messages: &[Message]) -> OpMix {
        let mut counts = [0u64; 3];
        for m in messages {
            counts[m.op.index()] += 1;
        }
        let mixed = counts[0] > 0 && counts[1] + counts[2] > 0;
        let removals = if mixed {
            messages
                .iter()
                .filter(|m| m.is_removal())
                .map(|m| (m.key.clone(), m.vbucket, m.op))
                .collect()
        } else {
            Vec::new()
        };
        OpMix { counts, removals }
    }

    /// The op of a failed key.
    pub(crate) fn op_of(&self, key: &[u8], vbucket: u16) -> Op {
        if let Some((_, _, op)) = self
            .removals
            .iter()
            .find(|(k, vb, _)| *vb == vbucket && &k[..] == key)
        {
            return *op;
        }
        Op::ALL
            .into_iter()
            .find(|op| self.counts[op.index()] > 0 && (op.index() == 0 || self.counts[0] == 0))
            .unwrap_or(Op::Mutation)
    }
}

impl Ack {
    /// Confirms the batch: counts it and resolves the source's [`Acked`]. A delivery that
    /// counts more messages than the batch holds is a sink's bug: its written count is cut
    /// down so that no message is counted twice.
    pub fn confirm(mut self, mut delivery: Delivery) {
        let settled = delivery.written + delivery.skipped + delivery.failed.len();
        if (self.tx.is_some() || self.stats.is_some()) && settled > self.items {
            tracing::warn!(
                "a sink counted {settled} messages of a batch of {}; counting each once",
                self.items
            );
            delivery.written = self
                .items
                .saturating_sub(delivery.skipped + delivery.failed.len());
        }
        if let Some(stats) = self.stats.take() {
            stats.record_delivery(&delivery, self.bytes, &self.ops);
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Ok(delivery));
        }
        self.permit = None;
    }

    /// Rejects the batch: nothing in it was delivered, and the source must not acknowledge
    /// it upstream.
    pub fn reject(mut self, reason: impl Into<String>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(Rejected {
                reason: reason.into(),
            }));
        }
        self.permit = None;
    }

    pub(crate) fn attach(&mut self, stats: Arc<Stats>, bytes: usize, ops: OpMix) {
        self.stats = Some(stats);
        self.bytes = bytes;
        self.ops = ops;
    }
}

/// The source's side: resolves with the batch's [`Outcome`] once the sink settled it.
#[derive(Debug)]
pub struct Acked(oneshot::Receiver<Outcome>);

impl std::future::Future for Acked {
    type Output = Outcome;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(Rejected {
                    reason: "the sink dropped it without settling it".into(),
                })
            })
        })
    }
}

/// Messages plus their byte total and an acknowledgement handle.
#[derive(Debug)]
pub struct Batch {
    pub messages: Vec<Message>,
    bytes: usize,
    ack: Ack,
}

impl Batch {
    /// A batch nobody waits on (files, generated data): confirmed into the stats only.
    pub fn new(messages: Vec<Message>) -> Batch {
        let bytes = messages.iter().map(Message::size).sum();
        Batch {
            messages,
            bytes,
            ack: Ack::default(),
        }
    }

    /// A batch whose confirmation the source awaits through the returned [`Acked`].
    pub fn with_ack(messages: Vec<Message>) -> (Batch, Acked) {
        let (tx, rx) = oneshot::channel();
        let mut b = Batch::new(messages);
        b.ack.tx = Some(tx);
        (b, Acked(rx))
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when there are no messages.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Payload bytes (key + value + meta of every message).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Splits into the messages and the ack to confirm once they are written. The batch's
    /// share of the channel's byte budget stays with the ack until it is confirmed or dropped,
    /// so memory is bounded end to end.
    pub fn into_parts(mut self) -> (Vec<Message>, Ack) {
        let mut ack = std::mem::take(&mut self.ack);
        ack.bytes = self.bytes;
        ack.items = self.messages.len();
        (std::mem::take(&mut self.messages), ack)
    }

    /// Confirms the whole batch as written.
    pub fn confirm_all(self) {
        let n = self.len();
        let (_, ack) = self.into_parts();
        ack.confirm(Delivery::all(n));
    }

    pub(crate) fn attach(
        &mut self,
        stats: Arc<Stats>,
        permit: tokio::sync::OwnedSemaphorePermit,
        ops: OpMix,
    ) {
        let bytes = self.bytes;
        self.ack.attach(stats, bytes, ops);
        self.ack.permit = Some(permit);
    }

    /// Takes the ack out of a batch that turned out empty, to confirm it at once.
    pub(crate) fn take_ack(&mut self) -> Ack {
        let mut ack = std::mem::take(&mut self.ack);
        ack.items = self.messages.len();
        ack
    }

    pub(crate) fn recount(&mut self) {
        self.bytes = self.messages.iter().map(Message::size).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_is_full_at_either_limit() {
        let mut b = BatchBuilder::new(BatchLimits {
            max_items: 3,
            max_bytes: 1000,
        });
        assert!(!b.push(Message::mutation("a", "1")));
        assert!(!b.push(Message::mutation("b", "1")));
        assert!(b.push(Message::mutation("c", "1")));
        assert_eq!(b.take().len(), 3);
        assert!(b.is_empty());
        let mut b = BatchBuilder::new(BatchLimits {
            max_items: 1000,
            max_bytes: 10,
        });
        assert!(!b.push(Message::mutation("k", "12345")));
        assert!(b.push(Message::mutation("k", "1234")));
    }

    #[tokio::test]
    async fn a_delivery_never_counts_a_message_twice() {
        let stats = Arc::new(Stats::default());
        let messages = vec![Message::mutation("k", "v"); 3];
        let ops = OpMix::of(&messages);
        let (mut batch, acked) = Batch::with_ack(messages);
        batch.ack.attach(stats.clone(), 3, ops);
        let (msgs, ack) = batch.into_parts();
        // A sink that counted a resent message again.
        ack.confirm(Delivery {
            written: 3,
            failed: vec![KeyFailure::of(&msgs[0], "E2BIG")],
            retries: 2,
            ..Delivery::default()
        });
        let d = acked.await.unwrap();
        assert_eq!((d.written, d.failed.len(), d.retries), (2, 1, 2));
        let c = stats.snapshot();
        assert_eq!((c.items_written, c.failed, c.retries), (2, 1, 2));
    }

    #[tokio::test]
    async fn acked_resolves_on_confirm_and_fails_when_the_ack_is_dropped() {
        let (batch, acked) = Batch::with_ack(vec![Message::mutation("k", "v")]);
        batch.confirm_all();
        assert_eq!(acked.await.unwrap().written, 1);

        let (batch, acked) = Batch::with_ack(vec![Message::mutation("k", "v")]);
        drop(batch);
        assert!(acked.await.unwrap_err().reason.contains("dropped"));

        let (batch, acked) = Batch::with_ack(vec![Message::mutation("k", "v")]);
        batch.into_parts().1.reject("stopped");
        assert_eq!(acked.await.unwrap_err().reason, "stopped");
    }
}
