//! `tap://[user:pass@]host:port` sink: a TAP consumer feeding the destination's replica (or
//! pending) vbuckets, as the recovery design's TapSink does.
//!
//! ```text
//! pump                                            node
//!  | SASL_AUTH, SELECT_BUCKET -B                   |
//!  | TAP_MUTATION (flags in network order, NETWORK_BYTE_ORDER) / TAP_DELETE, with ACK ...
//!  |<--- ack (same opcode and opaque, a status) for every ACK-flagged message,
//!  |<--- and a reply for every refused one
//!  | the batch is confirmed once the last message's ack arrived
//! ```
//! No TAP_CONNECT: that request asks the server to *produce* a stream (its flags, BACKFILL,
//! DUMP, ..., SUPPORT_ACK, describe what the requester wants to receive), so a destination
//! that got one would start sending. A TAP consumer is a connection that sends TAP messages;
//! what SUPPORT_ACK and FIX_FLAG_BYTEORDER negotiate for a stream, the sink says per message
//! with the ACK and NETWORK_BYTE_ORDER flags.
//! The ACK flag goes on every message (`-x tap_ack_every=1`, the default) or on every N-th
//! and the last of each batch. A refused message goes through pump::Verdict::of: temporary
//! statuses are resent after a backoff, others are reported per key.
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | tap_ack_every | 1 | ACK flag on every N-th message (and the last of a batch) |
//! | timeout | 30 | seconds any network wait may take |

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::{
    BatchWriter, Delivery, Error, KeyFailure, Message, Options, RetryPolicy, Sink, SinkKind, Spec,
    Verdict, WriterSink,
};
use pump_client::{Auth, Connection, ReadHalf, WriteHalf};
use pump_protocol::packet::encode_request;
use pump_protocol::tap::message_flags;
use pump_protocol::{Magic, Opcode, Packet, Status};

use crate::net;

/// `-x` keys of the TAP sink.
pub const EXTRA_KEYS: &[&str] = &["tap_ack_every", "timeout"];

/// The `tap://` sink kind.
pub struct TapSinkKind;

impl SinkKind for TapSinkKind {
    fn name(&self) -> &'static str {
        "tap"
    }
    fn syntax(&self) -> &'static str {
        "tap://[USER:PASSWORD@]HOST:PORT"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("tap")
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        EXTRA_KEYS
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error> {
        let every = options.extra.number("tap_ack_every", 1)?;
        if every == 0 {
            return Err(Error::usage("-x tap_ack_every=0: expected 1 or more"));
        }
        Ok(Box::new(WriterSink(TapWriter {
            spec: spec.to_string(),
            addr: spec.authority()?.addr(),
            auth: net::auth(spec, options)?,
            bucket: options.dest_bucket().to_string(),
            timeout: options.extra.timeout()?,
            retry: options.retry_policy(),
            ack_every: every as usize,
            dry_run: options.dry_run,
            conn: None,
            next_opaque: 1,
            buf: BytesMut::new(),
        })))
    }
}

/// Writes batches as TAP messages over one connection.
pub struct TapWriter {
    spec: String,
    addr: String,
    auth: Option<Auth>,
    bucket: String,
    timeout: Duration,
    retry: RetryPolicy,
    ack_every: usize,
    dry_run: bool,
    conn: Option<(ReadHalf, WriteHalf)>,
    next_opaque: u32,
    buf: BytesMut,
}

impl TapWriter {
    async fn connection(&mut self) -> Result<&mut (ReadHalf, WriteHalf), Error> {
        if self.conn.is_none() {
            let err = |e| Error::sink(&self.spec, e);
            let c = Connection::open(
                &self.addr,
                self.auth.as_ref(),
                Some(&self.bucket),
                self.timeout,
            )
            .await
            .map_err(err)?;
            self.conn = Some(c.into_split());
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::sink(&self.spec, "no connection"))
    }

    /// Sends `which` messages, returns the status of each ACK-flagged one by message index.
    async fn send_round(
        &mut self,
        messages: &[Message],
        which: &[usize],
    ) -> Result<HashMap<usize, Status>, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // Every message by opaque (a refused one is answered even without ACK), and the
        // ACK-flagged ones still to be answered.
        let mut by_opaque: HashMap<u32, usize> = HashMap::with_capacity(which.len());
        let mut waiting: HashMap<u32, usize> = HashMap::new();
        for (n, &i) in which.iter().enumerate() {
            let m = &messages[i];
            let opaque = self.next_opaque;
            self.next_opaque = self.next_opaque.wrapping_add(1).max(1);
            let ack = (n + 1) % self.ack_every == 0 || n + 1 == which.len();
            let mut tap_flags = message_flags::NETWORK_BYTE_ORDER;
            by_opaque.insert(opaque, i);
            if ack {
                tap_flags |= message_flags::ACK;
                waiting.insert(opaque, i);
            }
            // engine_specific_len 0 | tap_flags | ttl 255 | 3 reserved [| flags | expiry]
            let mut extras = [0u8; 16];
            extras[2..4].copy_from_slice(&tap_flags.to_be_bytes());
            extras[4] = 255;
            if m.is_removal() {
                encode_request(
                    &mut buf,
                    Opcode::TapDelete,
                    m.vbucket,
                    opaque,
                    m.cas,
                    0,
                    &extras[..8],
                    &m.key,
                    &[],
                );
            } else {
                extras[8..12].copy_from_slice(&m.flags.to_be_bytes());
                extras[12..16].copy_from_slice(&m.expiry.to_be_bytes());
                encode_request(
                    &mut buf,
                    Opcode::TapMutation,
                    m.vbucket,
                    opaque,
                    m.cas,
                    m.datatype,
                    &extras,
                    &m.key,
                    &m.value,
                );
            }
        }
        let spec = self.spec.clone();
        let err = |e| Error::sink(&spec, e);
        let (read, write) = self.connection().await?;
        let sent = write.send_bytes(&buf, "sending TAP messages").await;
        let mut statuses = HashMap::new();
        let result = async {
            sent.map_err(&err)?;
            while !waiting.is_empty() {
                let p = read.recv("waiting for TAP acks").await.map_err(&err)?;
                if p.magic == Magic::Request {
                    if p.opcode == Opcode::Noop {
                        write
                            .send(&Packet::response_to(&p, Status::Success))
                            .await
                            .map_err(&err)?;
                    }
                    continue;
                }
                waiting.remove(&p.opaque);
                if let Some(&i) = by_opaque.get(&p.opaque) {
                    statuses.insert(i, p.status());
                } else if p.status() != Status::Success {
                    return Err(Error::sink(
                        &spec,
                        format!("{}: {:?} refused: {}", read.peer(), p.opcode, p.status()),
                    ));
                }
            }
            Ok(statuses)
        }
        .await;
        self.buf = buf;
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

#[async_trait]
impl BatchWriter for TapWriter {
    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        if self.dry_run {
            return Ok(Delivery {
                skipped: messages.len(),
                ..Delivery::default()
            });
        }
        let mut delivery = Delivery::default();
        let mut todo: Vec<usize> = (0..messages.len()).collect();
        let mut attempt = 0;
        while !todo.is_empty() {
            let statuses = self.send_round(&messages, &todo).await?;
            let mut again = Vec::new();
            let mut last = Status::Success;
            for &i in &todo {
                // Messages without an ACK flag are confirmed by the next ack after them.
                let status = statuses.get(&i).copied().unwrap_or(Status::Success);
                let m = &messages[i];
                match Verdict::of(status, false, m.is_removal()) {
                    Verdict::Done => delivery.written += 1,
                    Verdict::Skip => delivery.skip(m.op),
                    Verdict::Retry => {
                        last = status;
                        again.push(i)
                    }
                    Verdict::Reroute | Verdict::Fail => delivery.failed.push(KeyFailure {
                        key: m.key.clone(),
                        vbucket: m.vbucket,
                        reason: format!("{status} from {}", self.addr),
                    }),
                }
            }
            if again.is_empty() {
                break;
            }
            attempt += 1;
            match self.retry.backoff(attempt) {
                Some(pause) => {
                    delivery.retries += again.len() as u64;
                    tokio::time::sleep(pause).await;
                    todo = again;
                }
                None => {
                    for i in again {
                        delivery.failed.push(KeyFailure {
                            key: messages[i].key.clone(),
                            vbucket: messages[i].vbucket,
                            reason: format!("still {last} after {} retries", attempt - 1),
                        });
                    }
                    break;
                }
            }
        }
        Ok(delivery)
    }
}
