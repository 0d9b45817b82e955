//! `tap://[user:pass@]host:port`: a TAP dump of one node.
//!
//! ```text
//! pump                                   node
//!  | HELLO, SASL (SCRAM or PLAIN, when credentials)
//!  | SELECT_BUCKET -b (skipped on UNKNOWN_COMMAND)
//!  | TAP_CONNECT DUMP|SUPPORT_ACK|FIX_FLAG_BYTEORDER [|LIST_VBUCKETS -l]
//!  |<--------- TAP_MUTATION / TAP_DELETE ...
//!  |<--------- ... one with the ACK flag  |  (the node waits)
//!  |   flush the batch, wait until the sink confirms it
//!  | ack (0x81, same opcode and opaque) -->|
//!  |<--------- ... close after the last ack: the dump is complete
//! ```
//!
//! Item flags are fixed with [`TapMessage::fixed_item_flags`] (swapped back when a message
//! lacks NETWORK_BYTE_ORDER, as old servers sent them). Seqnos: a per-vbucket counter;
//! engine-specific bytes, when present, carry the item's rev seqno.
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | tap_backfill | 0 | BACKFILL since 0 instead of DUMP |
//! | timeout | 30 | seconds any network wait may take |
//! | sasl | the strongest listed | the SASL mechanism: PLAIN, SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1 |
//!
//! The connection says HELLO first (user agent `pump/VERSION`; XATTR, XERROR, SELECT_BUCKET,
//! JSON, SNAPPY): values then arrive as the node holds them, compressed or with xattrs, and
//! keep their datatype on their way to the sink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Buf;
use pump::pipeline::Context;
use pump::{
    Batch, BatchBuilder, BatchLimits, BatchSender, Error, Message, Op, Options, Source, SourceKind,
    Spec,
};
use pump_client::{Auth, Connection, Handshake, Next};
use pump_protocol::tap::{connect_flags, TapConnect, TapKind, TapMessage};
use pump_protocol::{Magic, Opcode, Packet, Status};
use tokio::sync::Mutex;

use crate::net::{self, Acker, IDLE_FLUSH};

#[cfg(test)]
mod tests;

/// The `tap://` source kind.
pub struct TapSourceKind;

/// `-x` keys of the TAP source.
pub const EXTRA_KEYS: &[&str] = &["tap_backfill", "timeout", "sasl", "cacert", "no_ssl_verify"];

impl SourceKind for TapSourceKind {
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
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let a = spec.authority()?;
        Ok(Box::new(TapSource {
            spec: spec.to_string(),
            addr: a.addr(),
            config: TapConfig::from_options(spec, options)?,
            vbuckets: options.vbuckets.as_ref().map(|v| v.iter().collect()),
        }))
    }
}

/// How to open a TAP stream (shared with the `couchbase://` source).
#[derive(Debug, Clone)]
pub struct TapConfig {
    pub auth: Option<Auth>,
    pub bucket: String,
    pub backfill: bool,
    pub timeout: Duration,
    pub limits: BatchLimits,
    pub verbose: u8,
    /// HELLO, SASL, SELECT_BUCKET (and TLS for a `couchbases://` cluster).
    pub handshake: Handshake,
}

impl TapConfig {
    /// Reads credentials, bucket, `-x tap_backfill`, `-x timeout` and the handshake's keys.
    pub fn from_options(spec: &Spec, options: &Options) -> Result<TapConfig, Error> {
        let auth = net::auth(spec, options)?;
        let tls = matches!(spec.scheme(), Some("couchbases" | "https"));
        Ok(TapConfig {
            handshake: net::handshake(auth.clone(), &options.source_bucket, options, tls)?,
            auth,
            bucket: options.source_bucket.clone(),
            backfill: options.extra.flag("tap_backfill")?,
            timeout: options.extra.timeout()?,
            limits: options.batch_limits(),
            verbose: options.verbose,
        })
    }

    /// The TAP_CONNECT this config sends.
    pub fn connect(&self, vbuckets: Option<Vec<u16>>) -> TapConnect {
        let mut flags = connect_flags::SUPPORT_ACK | connect_flags::FIX_FLAG_BYTEORDER;
        if !self.backfill {
            flags |= connect_flags::DUMP;
        }
        TapConnect {
            name: bytes::Bytes::from(format!("pump-{}", std::process::id())),
            flags,
            backfill_since: self.backfill.then_some(0),
            vbuckets,
            checkpoints: None,
            opaque: 0,
        }
    }
}

/// A TAP dump of one node.
pub struct TapSource {
    spec: String,
    addr: String,
    config: TapConfig,
    vbuckets: Option<Vec<u16>>,
}

#[async_trait]
impl Source for TapSource {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        stream(&self.spec, &self.addr, &self.config, self.vbuckets, &out).await
    }
}

/// Streams a TAP dump of `addr` (only `vbuckets` when given) into `out`.
pub async fn stream(
    spec: &str,
    addr: &str,
    config: &TapConfig,
    vbuckets: Option<Vec<u16>>,
    out: &BatchSender,
) -> Result<(), Error> {
    let err = |e| net::source_error(spec, e);
    let mut conn = Connection::negotiate(addr, &config.handshake)
        .await
        .map_err(err)?;
    // A node whose vbuckets are all dead would end the dump at once, as if it were empty.
    net::require_a_live_vbucket(spec, addr, &mut conn, vbuckets.as_deref()).await?;
    conn.send(&config.connect(vbuckets).to_packet())
        .await
        .map_err(err)?;
    let (mut read, write) = conn.into_split();
    let writer = Arc::new(Mutex::new(write));
    // A TAP ack says everything up to it was taken: one is sent only for a batch delivered
    // whole. A failed key withholds it, and the producer waits for it: the stream stops here,
    // with the keys listed.
    let name = spec.to_string();
    let mut acker: Acker<Option<Packet>> = Acker::start(
        spec.to_string(),
        writer.clone(),
        move |d, reply| {
            if d.is_complete() {
                return Ok(reply);
            }
            Err(Error::source(
                &name,
                format!(
                    "{} keys were not written (first: {}); a TAP stream cannot pass over them, so its ack is withheld and the stream stops here",
                    d.failed.len(),
                    d.failed[0]
                ),
            ))
        },
    );
    let mut builder = BatchBuilder::new(config.limits);
    let mut seqnos: HashMap<u16, u64> = HashMap::new();
    let what = "reading the TAP stream";
    let cancel = out.cancellation().clone();
    loop {
        let wait = if builder.is_empty() {
            config.timeout
        } else {
            IDLE_FLUSH
        };
        // Frames already read are taken without a wait; the select (timeout, a failed ack,
        // Ctrl-C) runs each time the read buffer runs dry.
        let next = match read.try_buffered(what).map_err(err)? {
            Some(p) => Next::Packet(p),
            None => tokio::select! {
                r = read.recv_within(wait, what) => r.map_err(err)?,
                e = acker.failed() => return Err(e),
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            },
        };
        let p = match next {
            Next::Packet(p) => p,
            Next::Eof => break,
            Next::Idle if !builder.is_empty() => {
                flush(&mut builder, &acker, None, out).await?;
                continue;
            }
            Next::Idle if acker.outstanding() > 0 => continue,
            Next::Idle => return Err(err(read.timeout_error(what))),
        };
        if p.magic == Magic::Response {
            if p.status() != Status::Success {
                return Err(Error::source(
                    spec,
                    format!(
                        "{addr}: the server refused {:?}: {} (a server without TAP, such as Couchbase 5 or later, streams with dcp://)",
                        p.opcode,
                        p.status()
                    ),
                ));
            }
            continue;
        }
        if p.opcode == Opcode::Noop {
            let reply = Packet::response_to(&p, Status::Success);
            writer.lock().await.send(&reply).await.map_err(err)?;
            continue;
        }
        let m =
            TapMessage::from_packet(&p).map_err(|e| Error::source(spec, format!("{addr}: {e}")))?;
        let msg = match m.kind() {
            TapKind::Mutation | TapKind::Delete => Some(to_message(&m, &mut seqnos)),
            TapKind::Flush => {
                tracing::warn!("{addr}: TAP_FLUSH received and ignored: a dump does not flush");
                None
            }
            other => {
                if config.verbose > 1 {
                    tracing::info!("{addr}: TAP {other:?} on vbucket {}", m.vbucket);
                }
                None
            }
        };
        let full = msg.is_some_and(|msg| builder.push(msg));
        if m.wants_ack() {
            flush(&mut builder, &acker, Some(m.ack_reply()), out).await?;
        } else if full {
            flush(&mut builder, &acker, None, out).await?;
        }
    }
    if !builder.is_empty() {
        flush(&mut builder, &acker, None, out).await?;
    }
    acker.finish().await
}

/// Sends what the builder holds as a batch whose confirmation the acker awaits before it
/// writes `reply`.
async fn flush(
    builder: &mut BatchBuilder,
    acker: &Acker<Option<Packet>>,
    reply: Option<Packet>,
    out: &BatchSender,
) -> Result<(), Error> {
    let (batch, acked) = Batch::with_ack(builder.take());
    acker.push(acked, reply);
    out.send(batch).await
}

/// A TAP MUTATION or DELETE as a pump message: no copy of key or value.
pub fn to_message(m: &TapMessage, seqnos: &mut HashMap<u16, u64>) -> Message {
    let seqno = seqnos.entry(m.vbucket).or_insert(0);
    *seqno += 1;
    let rev_seqno = if m.engine_specific.len() >= 8 {
        (&m.engine_specific[..8]).get_u64()
    } else {
        0
    };
    let (op, flags, expiry) = if m.kind() == TapKind::Mutation {
        (Op::Mutation, m.fixed_item_flags(), m.item_expiry)
    } else {
        (Op::Deletion, 0, 0)
    };
    Message {
        op,
        vbucket: m.vbucket,
        key: m.key.clone(),
        value: if op == Op::Mutation {
            m.value.clone()
        } else {
            bytes::Bytes::new()
        },
        flags,
        expiry,
        cas: m.cas,
        seqno: *seqno,
        rev_seqno,
        datatype: m.datatype,
        ..Message::default()
    }
}
