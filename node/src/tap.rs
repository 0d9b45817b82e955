//! The TAP producer: what a TAP_CONNECT turns its connection into.
//!
//! ```text
//! per vbucket: OPAQUE (u32 1, initial vbucket stream) | CHECKPOINT_START (u64 id)
//!              | MUTATION / DELETE ... | CHECKPOINT_END (u64 id)
//! TAKEOVER:    VBUCKET_SET active per vbucket (the local copy goes dead)
//! SUPPORT_ACK: the ACK flag on every 1000th message and on the last; nothing more is sent
//!              until that ack arrives (the next messages are encoded meanwhile, and written
//!              once it is there)
//! DUMP:        the connection closes after the last ack; otherwise new changes keep flowing
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pump_protocol::header::Magic;
use pump_protocol::tap::{connect_flags, message_flags, TapConnect, TapFrame, TapKind, TapMessage};
use pump_protocol::{Feature, FeatureSet};
use pump_protocol::{PacketCodec, VbucketState};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::kv::{Counters, KvContext, KvStream, IDLE_TIMEOUT, MAX_BODY};
use crate::store;
use crate::value;

/// Messages between two ACK flags (ep-engine's default tap_ack_interval; the pump's default
/// batch_max_size, so that one batch holds what one ack covers).
pub const ACK_EVERY: u64 = 1000;
const CHUNK: usize = 1024;
const FLUSH_AT: usize = 256 * 1024;
/// Responses (acks) the connection's reader may queue ahead of the producer; when full, the
/// reader waits and a client flooding responses is slowed by its own socket.
pub const ACK_QUEUE: usize = 1024;

fn io_err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// Aborts a spawned task when dropped (the reader half of a producer connection).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Emitter<W> {
    w: W,
    ctx: Arc<KvContext>,
    /// SNAPPY negotiated: values go out as stored.
    snappy: bool,
    /// XATTR negotiated: values keep their xattrs.
    xattrs: bool,
    buf: BytesMut,
    acks: mpsc::Receiver<(u32, u16)>,
    support_ack: bool,
    fix: bool,
    keys_only: bool,
    sent: u64,
    /// The opaque of the ACK-flagged message sent last, until its ack arrives.
    awaiting: Option<u32>,
}

impl<W: AsyncWrite + Unpin> Emitter<W> {
    async fn emit(&mut self, mut m: TapMessage, last: bool) -> std::io::Result<()> {
        self.sent += 1;
        m.opaque = self.sent as u32;
        let ack = self.support_ack && (last || self.sent.is_multiple_of(ACK_EVERY));
        if ack {
            m.tap_flags |= message_flags::ACK;
        }
        m.encode(&mut self.buf);
        self.written(ack.then_some(m.opaque)).await
    }

    /// After a message was encoded: an ACK-flagged one (`ack`, its opaque) is written at once
    /// and awaited before anything more goes out; otherwise the buffer is written when full.
    async fn written(&mut self, ack: Option<u32>) -> std::io::Result<()> {
        if let Some(opaque) = ack {
            self.flush().await?;
            self.awaiting = Some(opaque);
        } else if self.buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Encodes a stored item as the next message, straight from the store; returns its
    /// opaque when it carries the ACK flag (the caller then calls [`Emitter::written`]).
    fn encode_item(&mut self, vb: u16, key: &[u8], i: &store::Item) -> Option<u32> {
        self.sent += 1;
        let opaque = self.sent as u32;
        let ack = self.support_ack && self.sent.is_multiple_of(ACK_EVERY);
        let mut tap_flags = if ack { message_flags::ACK } else { 0 };
        let (datatype, shown) = if i.deleted || self.keys_only {
            (i.datatype, Bytes::new())
        } else {
            let (dt, v) = value::present(i.datatype, &i.value, self.snappy, self.xattrs);
            if dt & pump_protocol::datatype::SNAPPY != 0 {
                Counters::bump(&self.ctx.counters.snappy_out);
            }
            (dt, v)
        };
        let (kind, item_flags, value): (_, _, &[u8]) = if i.deleted {
            (TapKind::Delete, 0, &[])
        } else {
            let flags = if self.fix {
                tap_flags |= message_flags::NETWORK_BYTE_ORDER;
                i.flags
            } else {
                i.flags.swap_bytes()
            };
            if self.keys_only {
                tap_flags |= message_flags::NO_VALUE;
                (TapKind::Mutation, flags, &[])
            } else {
                (TapKind::Mutation, flags, &shown)
            }
        };
        TapFrame {
            kind,
            vbucket: vb,
            opaque,
            cas: i.cas,
            datatype,
            tap_flags,
            ttl: 255,
            item_flags,
            item_expiry: i.expiry,
            engine_specific: &[],
            key,
            value,
        }
        .encode(&mut self.buf);
        ack.then_some(opaque)
    }

    /// Writes what is encoded, once the last ACK-flagged message sent has been acked.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.settle().await?;
            self.w.write_all(&self.buf).await?;
            self.w.flush().await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Waits for the ack of the last ACK-flagged message sent, if any is awaited.
    async fn settle(&mut self) -> std::io::Result<()> {
        match self.awaiting.take() {
            Some(opaque) => self.wait_ack(opaque).await,
            None => Ok(()),
        }
    }

    async fn wait_ack(&mut self, opaque: u32) -> std::io::Result<()> {
        loop {
            match tokio::time::timeout(IDLE_TIMEOUT, self.acks.recv()).await {
                Err(_) => return Err(io_err("TAP: no ack before the idle timeout")),
                Ok(None) => return Err(io_err("TAP: consumer closed before acking")),
                Ok(Some((_, status))) if status != 0 => {
                    return Err(io_err(format!("TAP: consumer answered status {status:#x}")))
                }
                Ok(Some((o, _))) if o >= opaque => return Ok(()),
                Ok(Some(_)) => {}
            }
        }
    }

    fn item(&self, vb: u16, key: Bytes, i: &store::Item) -> TapMessage {
        let kind = if i.deleted {
            TapKind::Delete
        } else {
            TapKind::Mutation
        };
        let mut m = TapMessage {
            vbucket: vb,
            cas: i.cas,
            datatype: i.datatype,
            key,
            item_expiry: i.expiry,
            ..TapMessage::new(kind)
        };
        if !i.deleted {
            m.set_item_flags(i.flags, self.fix);
            if self.keys_only {
                m.tap_flags |= message_flags::NO_VALUE;
            } else {
                let (dt, v) = value::present(i.datatype, &i.value, self.snappy, self.xattrs);
                if dt & pump_protocol::datatype::SNAPPY != 0 {
                    Counters::bump(&self.ctx.counters.snappy_out);
                }
                m.datatype = dt;
                m.value = v;
            }
        }
        m
    }
}

/// Runs a TAP producer on `sock` for the TAP_CONNECT `c`; `rbuf` holds bytes already read;
/// `features` are what the connection negotiated (values keep their snappy compression and
/// xattrs only when it did).
pub async fn produce<S: KvStream>(
    sock: S,
    mut rbuf: BytesMut,
    ctx: Arc<KvContext>,
    c: TapConnect,
    features: FeatureSet,
) -> std::io::Result<()> {
    let bucket = ctx.bucket.clone();
    let (mut r, w) = sock.halves();
    let (ack_tx, acks) = mpsc::channel(ACK_QUEUE);
    // The reader: acks (responses to our messages) go to the emitter; EOF ends it.
    let reader = AbortOnDrop(tokio::spawn(async move {
        let mut codec = PacketCodec::with_max_body(MAX_BODY);
        loop {
            while let Ok(Some(p)) = codec.decode(&mut rbuf) {
                if p.magic == Magic::Response
                    && ack_tx.send((p.opaque, p.vbucket_or_status)).await.is_err()
                {
                    return;
                }
            }
            match r.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }));
    let vbs: Vec<u16> = match &c.vbuckets {
        Some(v) => v.clone(),
        None => (0..bucket.num_vbuckets())
            .filter(|vb| bucket.state(*vb) == Some(VbucketState::Active))
            .collect(),
    };
    let dump = c.has(connect_flags::DUMP);
    let takeover = c.has(connect_flags::TAKEOVER_VBUCKETS);
    let backfill = dump || c.backfill_since.is_some_and(|s| s != u64::MAX);
    let mut e = Emitter {
        w,
        ctx: ctx.clone(),
        snappy: features.contains(Feature::Snappy),
        xattrs: features.contains(Feature::Xattr),
        buf: BytesMut::with_capacity(FLUSH_AT + 64 * 1024),
        acks,
        support_ack: c.has(connect_flags::SUPPORT_ACK),
        fix: c.has(connect_flags::FIX_FLAG_BYTEORDER),
        keys_only: c.has(connect_flags::REQUEST_KEYS_ONLY),
        sent: 0,
        awaiting: None,
    };
    let mut last_sent: Vec<u64> = vec![0; vbs.len()];
    let result = async {
        for (n, &vb) in vbs.iter().enumerate() {
            let last_vb = n + 1 == vbs.len() && !takeover;
            let high = match bucket.vb(vb) {
                Some(v) => v.high_seqno,
                None => continue,
            };
            let mut op = TapMessage::new(TapKind::Opaque);
            op.vbucket = vb;
            op.value = Bytes::from_static(&[0, 0, 0, 1]);
            e.emit(op, false).await?;
            let mut cp = TapMessage::new(TapKind::CheckpointStart);
            cp.vbucket = vb;
            cp.value = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]);
            e.emit(cp, false).await?;
            let mut after = 0;
            if backfill {
                let t = store::now();
                loop {
                    // Encode under the vbucket's lock until an ACK-flagged message or a full
                    // buffer, then write (the lock is not held across the write).
                    let mut ack = None;
                    let complete = match bucket.vb(vb) {
                        Some(v) => v.visit(after, high, |k, i| {
                            after = i.by_seqno;
                            // TAP knows no collections: the default collection only.
                            let Some(k) = store::default_key(k) else {
                                return true;
                            };
                            if i.expired(t) || (dump && i.deleted) {
                                return true;
                            }
                            ack = e.encode_item(vb, &k, i);
                            ack.is_none() && e.buf.len() < FLUSH_AT
                        }),
                        None => true,
                    };
                    e.written(ack).await?;
                    if complete {
                        break;
                    }
                }
            }
            last_sent[n] = high;
            let mut cp = TapMessage::new(TapKind::CheckpointEnd);
            cp.vbucket = vb;
            cp.value = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]);
            e.emit(cp, last_vb && dump).await?;
        }
        if takeover {
            for (n, &vb) in vbs.iter().enumerate() {
                e.emit(
                    TapMessage::vbucket_set(vb, VbucketState::Active),
                    n + 1 == vbs.len() && dump,
                )
                .await?;
                // An ACK-flagged VBUCKET_SET is acked before the local copy goes dead.
                e.settle().await?;
                bucket.set_state(vb, VbucketState::Dead);
            }
        }
        e.flush().await?;
        if dump {
            // The connection closes after the last ack; without SUPPORT_ACK nothing confirms
            // the end: the close does.
            return e.settle().await;
        }
        // A backfill (not a dump) keeps streaming new changes until the consumer leaves.
        loop {
            if reader.0.is_finished() {
                return Ok(());
            }
            let mut any = false;
            for (n, &vb) in vbs.iter().enumerate() {
                let chunk = match bucket.vb(vb) {
                    Some(v) if v.high_seqno > last_sent[n] => {
                        v.range(last_sent[n], v.high_seqno, CHUNK)
                    }
                    _ => continue,
                };
                for (k, i) in chunk {
                    last_sent[n] = i.by_seqno;
                    let Some(k) = store::default_key(&k) else {
                        continue;
                    };
                    let m = e.item(vb, k, &i);
                    e.emit(m, false).await?;
                    any = true;
                }
            }
            e.flush().await?;
            if !any {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    .await;
    drop(reader);
    let mut w = e.w;
    let _ = w.shutdown().await;
    result
}
