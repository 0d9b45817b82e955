//! The couchbase sink's protocol for the one writer ([`pump::deliver`]): each message goes to
//! the node holding its vbucket active in the cluster's map; NOT_MY_VBUCKET re-routes the
//! vbucket's messages, in order, with the map its answer carries (a Couchbase Server 5+ node
//! puts its config in the body: taken when its (revEpoch, rev) is newer than the map held, no
//! REST round trip), or else with the map fetched again over REST.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::deliver::{Heard, Link, LinkError, LinkReader, Protocol, Route};
use pump::{Message, RetryPolicy, Verdict};
use pump_client::{Auth, Connection, Handshake, VbucketMap};
use pump_protocol::packet::encode_request;
use pump_protocol::{vbucket_of, Feature, Magic, Opcode, Packet, Status};

use super::write::Plan;
use crate::net;
use crate::values::Takes;

/// What the router needs to know.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The sink's spec, for errors.
    pub spec: String,
    /// `http://host:restport` (`https://` over TLS).
    pub rest: String,
    pub auth: Option<Auth>,
    /// HELLO, SASL, SELECT_BUCKET, TLS: how each node connection is opened.
    pub handshake: Handshake,
    pub bucket: String,
    /// ADD instead of SET.
    pub add: bool,
    /// SET/ADD/DEL_WITH_META for messages with a cas (`-x conflict_resolve=1`, the default).
    pub with_meta: bool,
    /// Recompute vbuckets for the destination's vbucket count.
    pub rehash: bool,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Rounds in flight per node connection.
    pub depth: usize,
    /// Connections per node (`-t`); a vbucket always uses the same one, so writes to a key
    /// keep their order.
    pub connections: usize,
}

/// The cluster's map and how to write into it.
pub struct Router {
    config: RouterConfig,
    map: RwLock<Option<Arc<VbucketMap>>>,
    /// The datatype bits every node connection so far agreed to (HELLO): what is sent.
    takes: RwLock<Option<Takes>>,
    /// A NOT_MY_VBUCKET answer brought a newer map since the last refresh.
    fresh: AtomicBool,
}

/// An answer, and the node (`host:port`) it came from: its `$HOST`.
pub struct Answer {
    peer: Arc<str>,
    packet: Packet,
}

/// A node connection's reader whose answers name the node.
struct Tagged {
    peer: Arc<str>,
    inner: Box<dyn LinkReader<Answer = Packet>>,
}

#[async_trait]
impl LinkReader for Tagged {
    type Answer = Answer;

    async fn read(&mut self, wait: Duration) -> Result<Option<Answer>, String> {
        Ok(self.inner.read(wait).await?.map(|packet| Answer {
            peer: self.peer.clone(),
            packet,
        }))
    }
}

impl Router {
    /// A router for `config`; the map is fetched when the sink starts.
    pub fn new(config: RouterConfig) -> Router {
        Router {
            config,
            map: RwLock::new(None),
            takes: RwLock::new(None),
            fresh: AtomicBool::new(false),
        }
    }

    fn map(&self) -> Option<Arc<VbucketMap>> {
        self.map.read().ok().and_then(|m| m.clone())
    }

    /// The vbucket `m` is written to in the destination.
    fn vbucket(&self, m: &Message, n: usize) -> u16 {
        if self.config.rehash {
            vbucket_of(&m.key, n as u16)
        } else {
            m.vbucket
        }
    }

    /// How messages are written into the bucket `map` describes (seqno resolution until the
    /// map says otherwise).
    fn plan(&self, map: Option<&VbucketMap>) -> Plan {
        Plan {
            with_meta: self.config.with_meta,
            add: self.config.add,
            resolution: map.and_then(|m| m.conflict_resolution).unwrap_or_default(),
        }
    }

    /// Takes the map a NOT_MY_VBUCKET answer of `peer` carries, if it is newer than the one
    /// held; true when it was taken.
    fn take_map_from(&self, peer: &str, body: &[u8]) -> bool {
        let tls = self.config.handshake.tls.is_some();
        let map = match VbucketMap::from_not_my_vbucket(body, peer, tls) {
            None => return false,
            Some(Err(e)) => {
                tracing::debug!("{}: {e}; the map is fetched over REST", self.config.spec);
                return false;
            }
            Some(Ok(m)) => m,
        };
        let Ok(mut held) = self.map.write() else {
            return false;
        };
        if held.as_ref().is_some_and(|h| !map.is_newer_than(h)) {
            return false;
        }
        tracing::debug!(
            "{}: the vbucket map of {peer}'s NOT_MY_VBUCKET answer (rev {:?})",
            self.config.spec,
            map.revision
        );
        *held = Some(Arc::new(map));
        self.fresh.store(true, Ordering::SeqCst);
        true
    }

    async fn fetch(&self) -> Result<(), String> {
        let c = &self.config;
        let map = VbucketMap::fetch_with(
            &c.rest,
            &c.bucket,
            c.auth.as_ref(),
            c.timeout,
            c.handshake.tls.as_ref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Ok(mut m) = self.map.write() {
            *m = Some(Arc::new(map));
        }
        Ok(())
    }
}

#[async_trait]
impl Protocol for Router {
    type Answer = Answer;
    type Status = Status;

    fn spec(&self) -> &str {
        &self.config.spec
    }

    async fn start(&self) -> Result<(), String> {
        self.fetch().await
    }

    fn endpoints(&self) -> Vec<String> {
        self.map().map(|m| m.servers.clone()).unwrap_or_default()
    }

    fn route(&self, m: &Message) -> Route {
        let Some(map) = self.map() else {
            return Route {
                group: m.vbucket,
                endpoint: None,
            };
        };
        let vb = self.vbucket(m, map.num_vbuckets());
        Route {
            group: vb,
            endpoint: map.active(vb),
        }
    }

    fn refuse(&self, m: &Message) -> Option<String> {
        let n = self.map()?.num_vbuckets();
        let vb = self.vbucket(m, n);
        (usize::from(vb) >= n).then(|| {
            format!("in vbucket {vb}, but the destination has {n} vbuckets; use -x rehash=1")
        })
    }

    async fn connect(&self, endpoint: &str) -> Result<Link<Answer>, LinkError> {
        let conn = Connection::negotiate(endpoint, &self.config.handshake)
            .await
            .map_err(net::link_error)?;
        // Values go out in the form every node agreed to (all nodes of a cluster agree alike).
        let f = conn.features();
        let agreed = Takes {
            snappy: f.contains(Feature::Snappy),
            json: f.contains(Feature::Json),
            xattrs: f.contains(Feature::Xattr),
        };
        if let Ok(mut t) = self.takes.write() {
            *t = Some(match *t {
                None => agreed,
                Some(was) => Takes {
                    snappy: was.snappy && agreed.snappy,
                    json: was.json && agreed.json,
                    xattrs: was.xattrs && agreed.xattrs,
                },
            });
        }
        let link = net::link(conn);
        Ok(Link {
            writer: link.writer,
            reader: Box::new(Tagged {
                peer: endpoint.into(),
                inner: link.reader,
            }),
        })
    }

    async fn refresh(&self) -> Result<(), String> {
        if self.fresh.swap(false, Ordering::SeqCst) {
            // A NOT_MY_VBUCKET answer already brought a newer map.
            return Ok(());
        }
        self.fetch().await?;
        tracing::debug!("{}: vbucket map refreshed", self.config.rest);
        Ok(())
    }

    fn encode_round(&self, msgs: &[&Message], first_id: u32, buf: &mut BytesMut) -> u32 {
        let map = self.map();
        let n = map.as_ref().map_or(1024, |m| m.num_vbuckets());
        let plan = self.plan(map.as_deref());
        let takes = self
            .takes
            .read()
            .ok()
            .and_then(|t| *t)
            .unwrap_or(Takes::BODY);
        let mut id = first_id;
        for m in msgs {
            let vb = self.vbucket(m, n);
            let w = plan.write_of(m, takes);
            encode_request(
                buf,
                w.opcode,
                vb,
                id,
                0,
                w.datatype,
                w.extras(),
                &m.key,
                &w.value,
            );
            id = id.wrapping_add(1);
        }
        encode_request(buf, Opcode::Noop, 0, id, 0, 0, &[], &[], &[]);
        msgs.len() as u32 + 1
    }

    fn hear(&self, a: Answer) -> Heard<Status> {
        if a.packet.magic == Magic::Response && a.packet.status() == Status::NotMyVbucket {
            self.take_map_from(&a.peer, &a.packet.value);
        }
        crate::net::hear_answer(a.packet)
    }

    fn is_success(&self, status: Status) -> bool {
        status == Status::Success
    }

    fn verdict(&self, m: &Message, status: Status) -> Verdict {
        // A with-meta write the node's newer copy won (KEY_EEXISTS) is skipped, as an ADD of
        // a key that exists is.
        let plan = self.plan(self.map().as_deref());
        let exists_skips = (self.config.add && !m.is_removal()) || plan.keeps_meta(m);
        Verdict::of(status, exists_skips, m.is_removal())
    }
}
