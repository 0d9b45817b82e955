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
//!
//! Collections: TAP predates them, and a source of the default collection alone writes as
//! above. When the source holds other collections (that `--exclude-data` does not leave out
//! nor `--map-data` map to the default one), the sink asks the node for COLLECTIONS in HELLO
//! and for its manifest (GET_COLLECTIONS_MANIFEST) before anything is written, maps each
//! source collection to the node's of the same name (after `--map-data`), and sends each key
//! with the node's collection id in front (LEB128), as any COLLECTIONS connection does: so
//! `pump recover` brings back every collection of a lost vbucket. A node without COLLECTIONS,
//! or a collection the node does not hold, is refused by name before anything is written
//! (create it on the destination first: its items go into a replica vbucket, and only an
//! active one may name a new collection).

#[cfg(test)]
mod tests;

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::deliver::{DeliverConfig, Heard, Link, LinkError, PipelinedSink, Protocol, Route};
use pump::{Error, Message, Options, Sink, SinkKind, Spec, Verdict};
use pump_client::{Connection, Handshake};
use pump_protocol::collections::{put_leb128, Manifest};
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
            collections: std::sync::OnceLock::new(),
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
    /// The source collections it takes (see `prepare`); unset: the default collection.
    collections: std::sync::OnceLock<TapCollections>,
}

/// What the TAP sink does with each source collection (set by `prepare`).
#[derive(Debug)]
enum TapCollections {
    /// Keys as they are (no COLLECTIONS): these source collections, all the default one.
    DefaultOnly(std::collections::HashSet<u32>),
    /// COLLECTIONS negotiated: source id -> the node's id, sent in front of each key.
    Mapped(std::collections::HashMap<u32, u32>),
}

impl TapCollections {
    fn takes(&self, collection: u32) -> bool {
        match self {
            TapCollections::DefaultOnly(ids) => ids.contains(&collection),
            TapCollections::Mapped(ids) => ids.contains_key(&collection),
        }
    }
}

impl TapWire {
    /// The node's manifest over a COLLECTIONS connection; None when the node does not agree
    /// to COLLECTIONS.
    async fn node_manifest(&self) -> Result<Option<Manifest>, String> {
        let mut h = self.handshake.clone();
        h.features.push(Feature::Collections);
        let mut conn = Connection::negotiate(&self.addr, &h)
            .await
            .map_err(|e| format!("{}: {e}", self.addr))?;
        if !conn.features().contains(Feature::Collections) {
            return Ok(None);
        }
        let r = conn
            .request(
                Packet::request(Opcode::GetCollectionsManifest),
                "GET_COLLECTIONS_MANIFEST",
            )
            .await
            .map_err(|e| format!("{}: {e}", self.addr))?;
        if r.status() != Status::Success {
            return Err(format!(
                "{}: GET_COLLECTIONS_MANIFEST failed: {}",
                self.addr,
                r.status()
            ));
        }
        Manifest::from_json(&r.value)
            .map(Some)
            .map_err(|e| format!("{}: the bucket's manifest: {e}", self.addr))
    }

    fn mapped(&self) -> Option<&std::collections::HashMap<u32, u32>> {
        match self.collections.get() {
            Some(TapCollections::Mapped(ids)) => Some(ids),
            _ => None,
        }
    }
}

/// Each source collection `run` names that `rules` keep -> the id of the collection of the
/// same name (after `rules`) in `node`'s manifest; an error names the first one `node` lacks.
fn map_by_name(
    run: &pump::RunCollections,
    rules: &pump::DataRules,
    bucket: &str,
    node: &Manifest,
    addr: &str,
) -> Result<std::collections::HashMap<u32, u32>, String> {
    let ids: Vec<u32> = match run.manifest() {
        Some(m) => m.collections().map(|(id, _)| id).collect(),
        None => vec![0],
    };
    let mut map = std::collections::HashMap::new();
    for id in ids {
        let Some(path) = run.path(id) else { continue };
        if !rules.keeps(bucket, &path) {
            continue;
        }
        let target = rules.target(bucket, &path).1;
        let to = node.id_of(&target.scope, &target.collection).ok_or_else(|| {
            format!(
                "the source holds collection {}.{}, and {addr} has no collection {}.{} (manifest uid {:#x}): create it on the destination first, or leave it out (--exclude-data) or map it (--map-data)",
                path.scope, path.collection, target.scope, target.collection, node.uid
            )
        })?;
        map.insert(id, to);
    }
    Ok(map)
}

#[async_trait]
impl Protocol for TapWire {
    type Answer = Packet;
    type Status = Status;

    fn spec(&self) -> &str {
        &self.spec
    }

    /// TAP knows no collections: any other than the default one the source has is refused by
    /// name before anything is written, unless left out or mapped to the default one.
    /// With other collections: through COLLECTIONS, mapped by name to the node's (see the
    /// module docs).
    async fn prepare(&self, ctx: &pump::pipeline::Context) -> Result<(), String> {
        let (run, rules, bucket) = (
            &ctx.collections,
            &ctx.options.data,
            &ctx.options.source_bucket,
        );
        let refusal = match pump::collections::default_only(run, rules, bucket, "TAP") {
            Ok(allowed) => {
                let _ = self.collections.set(TapCollections::DefaultOnly(allowed));
                return Ok(());
            }
            Err(refusal) => refusal,
        };
        let Some(node) = self.node_manifest().await? else {
            return Err(format!(
                "{refusal} ({} does not do collections: no COLLECTIONS in HELLO)",
                self.addr
            ));
        };
        let map = map_by_name(run, rules, bucket, &node, &self.addr)?;
        let _ = self.collections.set(TapCollections::Mapped(map));
        Ok(())
    }

    fn refuse(&self, m: &Message) -> Option<String> {
        let takes = match self.collections.get() {
            Some(c) => c.takes(m.collection),
            None => m.collection == 0,
        };
        (!takes).then(|| match self.mapped() {
            Some(_) => format!(
                "collection id {:#x} was never named by the source, so it has no place on the destination",
                m.collection
            ),
            None => format!(
                "collection id {:#x} is not the default collection, the only one TAP carries",
                m.collection
            ),
        })
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
        let conn = match self.mapped() {
            Some(_) => {
                let mut h = self.handshake.clone();
                h.features.push(Feature::Collections);
                Connection::negotiate(endpoint, &h).await
            }
            None => Connection::negotiate(endpoint, &self.handshake).await,
        }
        .map_err(net::link_error)?;
        if self.mapped().is_some() && !conn.features().contains(Feature::Collections) {
            return Err(LinkError::Failed(format!(
                "{endpoint}: no longer agrees to COLLECTIONS in HELLO"
            )));
        }
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
        let mapped = self.mapped();
        let mut prefixed = Vec::new();
        for (n, m) in msgs.iter().enumerate() {
            // With collections, the node's id in front of the key (`refuse` kept out every
            // message whose collection is not mapped).
            let key: &[u8] = match mapped.and_then(|ids| ids.get(&m.collection)) {
                Some(&to) => {
                    prefixed.clear();
                    put_leb128(&mut prefixed, to);
                    prefixed.extend_from_slice(&m.key);
                    &prefixed
                }
                None => &m.key,
            };
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
                    key,
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
                    key,
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
