//! Reads a memcached: keys from the metadump, values from pipelined GETKQ rounds.
//!
//! ```text
//! metadump ──▶ spool (a task drains it into an unlinked file at once, see spool.rs)
//! spool ── up to batch_max_size keys ──▶ GETKQ (opaque = index) ... NOOP ──▶ one batch
//! ```
//!
//! Several rounds are on the wire at once; GETKQ answers only on a hit, so the answers before
//! a round's NOOP are the keys still there. Nothing is kept per key: the memory of a run is
//! flat however many items the server holds (a few rounds of keys, and the channel's batches;
//! the listing waits on disk). The listing is never left unread while GETs wait: memcached's
//! hash walk holds an item lock while it waits to write, and a GET under it would wait too.
//! A listing short of `curr_items` (items written while it ran; or, on a memcached without
//! the hash walk, items the LRU crawler missed) is followed by another pass that reads every
//! key again: at least once, as the delivery contract allows (see [`MAX_PASSES`]).

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::pipeline::Context;
use pump::{BatchSender, Error, Message, Source};
use pump_client::{Auth, Duplex};
use pump_protocol::packet::encode_request;
use pump_protocol::{vbucket_of, Opcode, Status, HEADER_LEN};

use super::metadump::{Listed, Metadump, Walk};
use super::spool::Spool;
use super::MemcachedConfig;

/// GETKQ rounds on the wire at once.
const DEPTH: usize = 4;
/// The opaque of the NOOP that closes a round.
const BARRIER: u32 = u32::MAX;

/// Every item of one memcached.
pub struct MemcachedSource {
    config: MemcachedConfig,
}

impl MemcachedSource {
    /// A source for `config`; nothing is opened until it runs.
    pub fn new(config: MemcachedConfig) -> Self {
        MemcachedSource { config }
    }
}

fn encode_gets(keys: &[Listed]) -> bytes::Bytes {
    let cap: usize = keys.iter().map(|k| HEADER_LEN + k.key.len()).sum();
    let mut buf = BytesMut::with_capacity(cap + HEADER_LEN);
    for (i, k) in keys.iter().enumerate() {
        encode_request(&mut buf, Opcode::GetKQ, 0, i as u32, 0, 0, &[], &k.key, &[]);
    }
    encode_request(&mut buf, Opcode::Noop, 0, BARRIER, 0, 0, &[], &[], &[]);
    buf.freeze()
}

/// When a listing comes up short of `curr_items`, the next pass lists and reads every key
/// again (the keys already read are read twice: remembering them would cost memory per key),
/// up to this many passes.
const MAX_PASSES: usize = 3;

/// What one listing pass did.
#[derive(Default)]
struct Pass {
    listed: u64,
    vanished: usize,
}

impl MemcachedSource {
    /// One listing and the GETKQ rounds of the keys it lists.
    async fn pass(
        &self,
        client: &mut Duplex,
        listing: &mut Spool,
        out: &BatchSender,
    ) -> Result<Pass, Error> {
        let c = &self.config;
        let fail = |m: String| Error::source(&c.spec, m);
        let mut pass = Pass::default();
        let mut in_flight: VecDeque<Vec<Listed>> = VecDeque::with_capacity(DEPTH);
        let mut listing_done = false;
        loop {
            while !listing_done && in_flight.len() < DEPTH {
                let keys = listing.next_keys(c.batch_items).await.map_err(fail)?;
                if keys.is_empty() {
                    listing_done = true;
                    break;
                }
                pass.listed += keys.len() as u64;
                client
                    .send(encode_gets(&keys))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                in_flight.push_back(keys);
            }
            let Some(keys) = in_flight.pop_front() else {
                return Ok(pass);
            };
            let mut messages = Vec::with_capacity(keys.len());
            loop {
                let p = client.recv().await.map_err(|e| fail(e.to_string()))?;
                if p.opcode == Opcode::Noop && p.opaque == BARRIER {
                    break;
                }
                let listed = keys
                    .get(p.opaque as usize)
                    .filter(|_| p.opcode == Opcode::GetKQ);
                let Some(listed) = listed else {
                    return Err(fail(format!(
                        "{}: an answer ({:?}, opaque {}) to nothing asked",
                        c.addr, p.opcode, p.opaque
                    )));
                };
                match p.status() {
                    Status::Success => {}
                    Status::KeyEnoent => continue,
                    s => {
                        return Err(fail(format!(
                            "{}: GET {:?} answered {s}",
                            c.addr,
                            pump::message::key_display(&listed.key)
                        )))
                    }
                }
                let flags = p
                    .extras
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                messages.push(Message {
                    vbucket: vbucket_of(&p.key, c.num_vbuckets),
                    key: p.key,
                    value: p.value,
                    flags,
                    expiry: listed.expiry,
                    cas: p.cas,
                    ..Message::default()
                });
            }
            pass.vanished += keys.len() - messages.len();
            if !messages.is_empty() {
                out.send_messages(messages).await?;
            }
        }
    }
}

#[async_trait]
impl Source for MemcachedSource {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        let c = &self.config;
        let fail = |m: String| Error::source(&c.spec, m);
        let auth = c.credentials.as_ref().map(|a| Auth {
            user: a.user.clone(),
            password: a.password.clone(),
        });
        let mut client = Duplex::open(&c.addr, auth.as_ref(), c.timeout, DEPTH + 1)
            .await
            .map_err(|e| {
                let hint = if e.is_auth() {
                    "; check -u/-p (or USER:PASSWORD@ in the URL)"
                } else {
                    ""
                };
                fail(format!("memcached at {e}{hint}"))
            })?;
        let mut vanished = 0;
        let mut expected = None;
        for n in 1..=MAX_PASSES {
            let dump = Metadump::start(&c.addr, c.timeout).await.map_err(fail)?;
            // Items deleted or expired since the first listing lower the bar.
            let before = (*expected.get_or_insert(dump.items_before)).min(dump.items_before);
            out.stats().set_expected(before);
            let walk = dump.walk;
            let mut listing = Spool::start(dump, &c.addr).map_err(fail)?;
            let pass = self.pass(&mut client, &mut listing, &out).await?;
            vanished += pass.vanished;
            if pass.listed >= before || pass.listed == 0 {
                break;
            }
            let why = match walk {
                Walk::Hash => "items were written while it ran",
                Walk::Lru => "the LRU crawler misses items that move while it walks",
            };
            if n == MAX_PASSES {
                tracing::warn!(
                    "{}: {MAX_PASSES} metadumps listed {} keys but the server held {before} items when the first began ({why}); run the transfer again once the server is quiet to catch the rest",
                    c.spec,
                    pass.listed,
                );
            } else {
                tracing::info!(
                    "{}: the metadump listed {} of {before} items ({why}): listing and reading every key again",
                    c.spec,
                    pass.listed,
                );
            }
        }
        if vanished > 0 {
            tracing::warn!(
                "{}: {vanished} keys vanished between listing and fetching (expired, evicted or deleted): skipped",
                c.spec
            );
        }
        Ok(())
    }
}
