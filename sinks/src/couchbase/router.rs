//! The couchbase sink's protocol for the one writer ([`pump::deliver`]): each message goes to
//! the node holding its vbucket active in the cluster's map; NOT_MY_VBUCKET fetches the map
//! again and re-routes the vbucket's messages, in order.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::deliver::{Heard, Link, LinkError, Protocol, Route};
use pump::{Message, RetryPolicy, Verdict};
use pump_client::{Auth, Connection, VbucketMap};
use pump_protocol::packet::encode_request;
use pump_protocol::{vbucket_of, Opcode, Packet, Status};

use crate::net;

/// What the router needs to know.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The sink's spec, for errors.
    pub spec: String,
    /// `http://host:restport`.
    pub rest: String,
    pub auth: Option<Auth>,
    pub bucket: String,
    /// ADD instead of SET.
    pub add: bool,
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
}

impl Router {
    /// A router for `config`; the map is fetched when the sink starts.
    pub fn new(config: RouterConfig) -> Router {
        Router {
            config,
            map: RwLock::new(None),
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

    async fn fetch(&self) -> Result<(), String> {
        let c = &self.config;
        let map = VbucketMap::fetch(&c.rest, &c.bucket, c.auth.as_ref(), c.timeout)
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
    type Answer = Packet;
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

    async fn connect(&self, endpoint: &str) -> Result<Link<Packet>, LinkError> {
        let c = &self.config;
        let conn = Connection::open(endpoint, c.auth.as_ref(), Some(&c.bucket), c.timeout)
            .await
            .map_err(net::link_error)?;
        Ok(net::link(conn))
    }

    async fn refresh(&self) -> Result<(), String> {
        self.fetch().await?;
        tracing::debug!("{}: vbucket map refreshed", self.config.rest);
        Ok(())
    }

    fn encode_round(&self, msgs: &[&Message], first_id: u32, buf: &mut BytesMut) -> u32 {
        let n = self.map().map_or(1024, |m| m.num_vbuckets());
        let set = if self.config.add {
            Opcode::AddQ
        } else {
            Opcode::SetQ
        };
        let mut id = first_id;
        for m in msgs {
            let vb = self.vbucket(m, n);
            if m.is_removal() {
                encode_request(buf, Opcode::DeleteQ, vb, id, 0, 0, &[], &m.key, &[]);
            } else {
                let mut extras = [0u8; 8];
                extras[..4].copy_from_slice(&m.flags.to_be_bytes());
                extras[4..].copy_from_slice(&m.expiry.to_be_bytes());
                encode_request(buf, set, vb, id, 0, m.datatype, &extras, &m.key, &m.value);
            }
            id = id.wrapping_add(1);
        }
        encode_request(buf, Opcode::Noop, 0, id, 0, 0, &[], &[], &[]);
        msgs.len() as u32 + 1
    }

    fn hear(&self, p: Packet) -> Heard<Status> {
        crate::net::hear_answer(p)
    }

    fn is_success(&self, status: Status) -> bool {
        status == Status::Success
    }

    fn verdict(&self, m: &Message, status: Status) -> Verdict {
        Verdict::of(status, self.config.add && !m.is_removal(), m.is_removal())
    }
}
