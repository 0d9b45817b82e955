//! `tap://[user:pass@]host:port` sink: a TAP consumer feeding the destination's replica (or
//! pending) vbuckets, as the recovery design's TapSink does.
//!
//! ```text
//! pump                                            node
//!  | HELLO, SASL (SCRAM or PLAIN), SELECT_BUCKET -B |
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
//! and the last of each round. The one writer (pump::deliver) drives it: a round is settled at
//! the ack of its last message; a refused message goes through pump::Verdict::of (temporary
//! statuses hold its vbucket's writes for a backoff and resend them in order, others are
//! reported per key); a lost connection is reopened and what was unsettled resent. One
//! connection: a vbucket's writes keep their order on it.
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | tap_ack_every | 1 | ACK flag on every N-th message (and the last of a batch) |
//! | timeout | 30 | seconds any network wait may take |
//! | sasl | the strongest listed | the SASL mechanism: PLAIN, SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1 |
//!
//! A value keeps its datatype where the node agreed to it in HELLO (SNAPPY, XATTR, JSON), and
//! is decompressed, or written as its body alone, where it did not.

#[cfg(test)]
mod tests;

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::deliver::{DeliverConfig, Heard, Link, LinkError, PipelinedSink, Protocol, Route};
use pump::{Error, Message, Options, Sink, SinkKind, Spec, Verdict};
use pump_client::{Connection, Handshake};
use pump_protocol::Feature;

use crate::values::{shaped, Takes};
use pump_protocol::packet::encode_request;
use pump_protocol::tap::message_flags;
use pump_protocol::{Magic, Opcode, Packet, Status};

use crate::net;

/// `-x` keys of the TAP sink.
pub const EXTRA_KEYS: &[&str] = &[
    "tap_ack_every",
    "timeout",
    "sasl",
    "cacert",
    "no_ssl_verify",
];

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
        let timeout = options.extra.timeout()?;
        let wire = TapWire {
            spec: spec.to_string(),
            addr: spec.authority()?.addr(),
            handshake: net::handshake(
                net::auth(spec, options)?,
                options.dest_bucket(),
                options,
                false,
            )?,
            takes: Mutex::new(Takes::BODY),
            ack_every: every as usize,
        };
        let deliver = DeliverConfig {
            connections: 1,
            depth: 4,
            round_items: options.extra.batch_max_size,
            retry: options.retry_policy(),
            timeout,
        };
        Ok(Box::new(PipelinedSink::new(wire, deliver)))
    }
}

/// The TAP sink: [`TapWire`] run by the one writer.
pub type TapSink = PipelinedSink<TapWire>;

/// What the TAP sink supplies to the writer: TAP messages into one node.
pub struct TapWire {
    spec: String,
    addr: String,
    /// HELLO, SASL, SELECT_BUCKET.
    handshake: Handshake,
    /// The datatype bits the node agreed to on the last connection.
    takes: Mutex<Takes>,
    ack_every: usize,
}

#[async_trait]
impl Protocol for TapWire {
    type Answer = Packet;
    type Status = Status;

    fn spec(&self) -> &str {
        &self.spec
    }

    fn endpoints(&self) -> Vec<String> {
        vec![self.addr.clone()]
    }

    fn route(&self, m: &Message) -> Route {
        Route {
            group: m.vbucket,
            endpoint: Some(0),
        }
    }

    /// One server: a vbucket's connection never changes.
    fn fixed_routes(&self) -> bool {
        true
    }

    async fn connect(&self, endpoint: &str) -> Result<Link<Packet>, LinkError> {
        let conn = Connection::negotiate(endpoint, &self.handshake)
            .await
            .map_err(net::link_error)?;
        // What the node agreed to decides how values are encoded.
        let f = conn.features();
        if let Ok(mut t) = self.takes.lock() {
            *t = Takes {
                snappy: f.contains(Feature::Snappy),
                xattrs: f.contains(Feature::Xattr),
                json: f.contains(Feature::Json),
            };
        }
        Ok(net::link(conn))
    }

    /// The round's messages with opaque = request id, the ACK flag on every N-th and the
    /// last (whose ack closes the round).
    fn encode_round(&self, msgs: &[&Message], first_id: u32, buf: &mut BytesMut) -> u32 {
        let takes = self.takes.lock().map_or(Takes::BODY, |t| *t);
        for (n, m) in msgs.iter().enumerate() {
            let id = first_id.wrapping_add(n as u32);
            let ack = (n + 1) % self.ack_every == 0 || n + 1 == msgs.len();
            let mut tap_flags = message_flags::NETWORK_BYTE_ORDER;
            if ack {
                tap_flags |= message_flags::ACK;
            }
            // engine_specific_len 0 | tap_flags | ttl 255 | 3 reserved [| flags | expiry]
            let mut extras = [0u8; 16];
            extras[2..4].copy_from_slice(&tap_flags.to_be_bytes());
            extras[4] = 255;
            if m.is_removal() {
                encode_request(
                    buf,
                    Opcode::TapDelete,
                    m.vbucket,
                    id,
                    m.cas,
                    0,
                    &extras[..8],
                    &m.key,
                    &[],
                );
            } else {
                extras[8..12].copy_from_slice(&m.flags.to_be_bytes());
                extras[12..16].copy_from_slice(&m.expiry.to_be_bytes());
                let (dt, value) = shaped(m.datatype, &m.value, takes);
                encode_request(
                    buf,
                    Opcode::TapMutation,
                    m.vbucket,
                    id,
                    m.cas,
                    dt,
                    &extras,
                    &m.key,
                    &value,
                );
            }
        }
        msgs.len() as u32
    }

    fn hear(&self, p: Packet) -> Heard<Status> {
        match p.magic {
            Magic::Response => Heard::Answer {
                id: p.opaque,
                status: p.status(),
            },
            Magic::Request if p.opcode == Opcode::Noop => {
                let mut reply = BytesMut::new();
                Packet::response_to(&p, Status::Success).encode(&mut reply);
                Heard::Request {
                    reply: Some(reply.freeze()),
                }
            }
            _ => Heard::Ignore,
        }
    }

    fn is_success(&self, status: Status) -> bool {
        status == Status::Success
    }

    fn verdict(&self, m: &Message, status: Status) -> Verdict {
        Verdict::of(status, false, m.is_removal())
    }
}
