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

use super::collections::{CollectionMap, Rest};
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
    /// Source collection -> destination collection, when the run writes through collections
    /// (then every connection negotiates COLLECTIONS and each key carries its id); set by
    /// `prepare`, before any connection, and grown by `admit`.
    collections: RwLock<Option<Arc<CollectionMap>>>,
    /// What `admit` needs to create a collection the source made during the run.
    run: std::sync::OnceLock<RunSide>,
}

/// The run's side of the collection map: the source's collections, the rules, the REST API.
struct RunSide {
    rest: Rest,
    run: Arc<pump::RunCollections>,
    rules: pump::DataRules,
    source_bucket: String,
    /// The source manifest's uid last looked at (a change: its new collections are created).
    uid: std::sync::atomic::AtomicU64,
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
            collections: RwLock::new(None),
            run: std::sync::OnceLock::new(),
        }
    }

    fn collections(&self) -> Option<Arc<CollectionMap>> {
        self.collections.read().ok().and_then(|c| c.clone())
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

    /// With collections (see the module docs of `collections`): the destination's scopes and
    /// collections created, and the ids mapped, before the first connection. A source that
    /// knows collections but holds the default one only goes through COLLECTIONS too when the
    /// destination answers its manifest, so that a collection it creates during the run can
    /// be created on the destination (`admit`).
    async fn prepare(&self, ctx: &pump::pipeline::Context) -> Result<(), String> {
        let required = CollectionMap::needed(&ctx.collections, &ctx.options.data);
        let aware = ctx.collections.manifest().is_some();
        if !required && !aware {
            return Ok(());
        }
        let c = &self.config;
        let rest = Rest {
            spec: c.spec.clone(),
            base: c.rest.clone(),
            bucket: c.bucket.clone(),
            auth: c.auth.clone(),
            tls: c.handshake.tls.clone(),
            timeout: c.timeout,
        };
        let uid = ctx.collections.manifest().map_or(0, |m| m.uid);
        let map = match CollectionMap::prepare(
            &rest,
            &ctx.collections,
            &ctx.options.data,
            &ctx.options.source_bucket,
        )
        .await
        {
            Ok(map) => map,
            Err(e) if !required => {
                tracing::debug!(
                    "{}: writing without collections (the destination's manifest: {e})",
                    c.spec
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Ok(mut m) = self.collections.write() {
            *m = Some(Arc::new(map));
        }
        let _ = self.run.set(RunSide {
            rest,
            run: ctx.collections.clone(),
            rules: ctx.options.data.clone(),
            source_bucket: ctx.options.source_bucket.clone(),
            uid: std::sync::atomic::AtomicU64::new(uid),
        });
        Ok(())
    }

    /// A collection the source created during the run: created on the destination and mapped
    /// when the first batch after its system event comes (the source's manifest changed), or
    /// with its first item.
    async fn admit(&self, messages: &[Message]) -> Result<(), String> {
        let (Some(side), Some(map)) = (self.run.get(), self.collections()) else {
            return Ok(());
        };
        let manifest = side.run.manifest();
        let uid = manifest.as_ref().map_or(0, |m| m.uid);
        let mut ids: Vec<u32> = Vec::new();
        if uid != side.uid.load(Ordering::SeqCst) {
            if let Some(m) = &manifest {
                ids.extend(m.collections().map(|(id, _)| id));
            }
        }
        ids.extend(
            messages
                .iter()
                .filter(|m| !m.is_control() && map.target(m.collection).is_none())
                .map(|m| m.collection),
        );
        ids.retain(|id| map.target(*id).is_none());
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            let grown = map
                .extend(
                    &side.rest,
                    &side.run,
                    &side.rules,
                    &side.source_bucket,
                    &ids,
                )
                .await?;
            for id in &ids {
                if let (Some(p), Some(to)) = (side.run.path(*id), grown.target(*id)) {
                    tracing::info!(
                        "{}: collection {}.{} (source id {id:#x}) appeared during the run: mapped to the destination's id {to:#x}",
                        self.config.spec,
                        p.scope,
                        p.collection
                    );
                }
            }
            if let Ok(mut m) = self.collections.write() {
                *m = Some(Arc::new(grown));
            }
        }
        side.uid.store(uid, Ordering::SeqCst);
        Ok(())
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
        match self.collections() {
            Some(c) if c.target(m.collection).is_none() => {
                return Some(format!(
                    "its collection (id {:#x}) was never named by the source, so it has no place on the destination",
                    m.collection
                ));
            }
            // Written without COLLECTIONS, it would land in the default collection.
            None if m.collection != 0 => {
                return Some(format!(
                    "its collection (id {:#x}) is not the default one, and the run writes without collections (the destination's manifest could not be read when it started)",
                    m.collection
                ));
            }
            _ => {}
        }
        let n = self.map()?.num_vbuckets();
        let vb = self.vbucket(m, n);
        (usize::from(vb) >= n).then(|| {
            format!("in vbucket {vb}, but the destination has {n} vbuckets; use -x rehash=1")
        })
    }

    async fn connect(&self, endpoint: &str) -> Result<Link<Answer>, LinkError> {
        let conn = match self.collections() {
            Some(_) => {
                let mut h = self.config.handshake.clone();
                h.features.push(Feature::Collections);
                Connection::negotiate(endpoint, &h).await
            }
            None => Connection::negotiate(endpoint, &self.config.handshake).await,
        }
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
        let collections = self.collections();
        let mut id = first_id;
        let mut key = Vec::new();
        for m in msgs {
            let vb = self.vbucket(m, n);
            let w = plan.write_of(m, takes);
            // With collections, the key carries the destination's collection id (`refuse`
            // kept out every message whose collection is not mapped).
            let prefixed = collections
                .as_ref()
                .and_then(|c| c.key_into(m, &mut key))
                .is_some();
            encode_request(
                buf,
                w.opcode,
                vb,
                id,
                0,
                w.datatype,
                w.extras(),
                if prefixed { &key } else { &m.key },
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
