//! Routing messages to the node that holds their vbucket, and settling each batch's statuses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use pump::{Delivery, Error, KeyFailure, Message, Op, RetryPolicy, Verdict};
use pump_client::pipeline::PendingReplies;
use pump_client::{Auth, ClientError, Connection, Pipeline, VbucketMap, WriteBatch};
use pump_protocol::{vbucket_of, Opcode, Status};
use tokio::sync::Mutex;

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
    /// Batches in flight per node connection.
    pub depth: usize,
    /// Connections per node (`-t`); a vbucket always uses the same one, so writes to a key
    /// keep their order.
    pub connections: usize,
}

struct State {
    map: Arc<VbucketMap>,
    pipelines: HashMap<(String, usize), Arc<Pipeline>>,
}

/// The cluster's map and one pipelined connection per node.
pub struct Router {
    config: RouterConfig,
    state: Mutex<State>,
}

/// One node's share of a round of sends.
pub struct Part {
    addr: String,
    slot: usize,
    indices: Vec<usize>,
    pending: Result<PendingReplies, ClientError>,
}

/// A round of sends: each node's share, and the messages no node holds.
pub struct Round {
    parts: Vec<Part>,
    unroutable: Vec<usize>,
}

impl Router {
    /// Fetches the map (connections open on first use).
    pub async fn connect(config: RouterConfig) -> Result<Router, Error> {
        let map = fetch(&config).await?;
        Ok(Router {
            config,
            state: Mutex::new(State {
                map: Arc::new(map),
                pipelines: HashMap::new(),
            }),
        })
    }

    /// Fetches the map again.
    pub async fn refresh(&self) -> Result<(), Error> {
        let map = fetch(&self.config).await?;
        tracing::debug!("{}: vbucket map refreshed", self.config.rest);
        self.state.lock().await.map = Arc::new(map);
        Ok(())
    }

    async fn pipeline(&self, addr: &str, slot: usize) -> Result<Arc<Pipeline>, ClientError> {
        let mut st = self.state.lock().await;
        let id = (addr.to_string(), slot);
        if let Some(p) = st.pipelines.get(&id) {
            return Ok(p.clone());
        }
        let c = &self.config;
        let conn = Connection::open(addr, c.auth.as_ref(), Some(&c.bucket), c.timeout).await?;
        let p = Arc::new(Pipeline::start(conn, c.depth));
        st.pipelines.insert(id, p.clone());
        Ok(p)
    }

    async fn forget(&self, addr: &str, slot: usize) {
        self.state
            .lock()
            .await
            .pipelines
            .remove(&(addr.to_string(), slot));
    }

    /// Sends `messages` (only the indexes in `which` when given), each to the node holding its
    /// vbucket in the current map.
    pub async fn send(
        &self,
        messages: &[Message],
        which: Option<&[usize]>,
    ) -> Result<Round, Error> {
        let map = self.state.lock().await.map.clone();
        let n = map.num_vbuckets();
        let slots = self.config.connections.max(1);
        let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        let mut unroutable = Vec::new();
        let all: Vec<usize>;
        let which = match which {
            Some(w) => w,
            None => {
                all = (0..messages.len()).collect();
                &all
            }
        };
        for &i in which {
            let m = &messages[i];
            let vb = if self.config.rehash {
                vbucket_of(&m.key, n as u16)
            } else {
                m.vbucket
            };
            if usize::from(vb) >= n {
                return Err(Error::sink(
                    &self.config.spec,
                    format!(
                        "key {:?} is in vbucket {vb} but the destination has {n} vbuckets; use -x rehash=1",
                        m.key_display()
                    ),
                ));
            }
            match map.active(vb) {
                Some(server) => groups
                    .entry((server, usize::from(vb) % slots))
                    .or_default()
                    .push(i),
                None => unroutable.push(i),
            }
        }
        let mut parts = Vec::with_capacity(groups.len());
        for ((server, slot), indices) in groups {
            let addr = map.servers[server].clone();
            let mut batch = WriteBatch::with_capacity(
                indices
                    .iter()
                    .map(|i| messages[*i].size() + 32)
                    .sum::<usize>(),
            );
            for &i in &indices {
                let m = &messages[i];
                let vb = if self.config.rehash {
                    vbucket_of(&m.key, n as u16)
                } else {
                    m.vbucket
                };
                if m.is_removal() {
                    batch.push(Opcode::DeleteQ, vb, 0, 0, &[], &m.key, &[]);
                } else {
                    let mut extras = [0u8; 8];
                    extras[..4].copy_from_slice(&m.flags.to_be_bytes());
                    extras[4..].copy_from_slice(&m.expiry.to_be_bytes());
                    let op = if self.config.add {
                        Opcode::AddQ
                    } else {
                        Opcode::SetQ
                    };
                    batch.push(op, vb, 0, m.datatype, &extras, &m.key, &m.value);
                }
            }
            let pending = match self.pipeline(&addr, slot).await {
                Ok(p) => p.send(batch).await,
                Err(e) => Err(e),
            };
            parts.push(Part {
                addr,
                slot,
                indices,
                pending,
            });
        }
        Ok(Round { parts, unroutable })
    }

    /// Waits for a round's statuses and resends what must be resent until every message is
    /// written, skipped or failed.
    pub async fn settle(
        &self,
        messages: Vec<Message>,
        mut round: Round,
    ) -> Result<Delivery, Error> {
        let mut delivery = Delivery::default();
        let mut attempt = 0u32;
        loop {
            let mut again: Vec<usize> = Vec::new();
            let mut reasons: HashMap<usize, String> = HashMap::new();
            let mut refresh = false;
            let mut broken: Option<String> = None;
            for &i in &round.unroutable {
                again.push(i);
                reasons.insert(i, "no node holds its vbucket active".into());
                refresh = true;
            }
            for part in round.parts {
                let replies = match part.pending {
                    Ok(p) => p.wait().await,
                    Err(e) => Err(e),
                };
                let replies = match replies {
                    Ok(r) => r,
                    Err(e) => {
                        self.forget(&part.addr, part.slot).await;
                        again.extend(&part.indices);
                        broken = Some(e.to_string());
                        refresh = true;
                        continue;
                    }
                };
                let mut statuses = vec![Status::Success; part.indices.len()];
                for (j, s) in &replies.failures {
                    if let Some(slot) = statuses.get_mut(*j as usize) {
                        *slot = *s;
                    }
                }
                for (j, &i) in part.indices.iter().enumerate() {
                    let m = &messages[i];
                    let status = statuses[j];
                    match Verdict::of(
                        status,
                        self.config.add && m.op == Op::Mutation,
                        m.is_removal(),
                    ) {
                        Verdict::Done => delivery.written += 1,
                        Verdict::Skip => delivery.skip(m.op),
                        Verdict::Retry => {
                            again.push(i);
                            reasons.insert(i, format!("{status} from {}", part.addr));
                        }
                        Verdict::Reroute => {
                            again.push(i);
                            reasons.insert(i, format!("{status} from {}", part.addr));
                            refresh = true;
                        }
                        Verdict::Fail => delivery.failed.push(KeyFailure {
                            key: m.key.clone(),
                            vbucket: m.vbucket,
                            reason: format!("{status} from {}", part.addr),
                        }),
                    }
                }
            }
            if again.is_empty() {
                return Ok(delivery);
            }
            attempt += 1;
            let Some(pause) = self.config.retry.backoff(attempt) else {
                if let Some(e) = broken {
                    return Err(Error::sink(
                        &self.config.spec,
                        format!("{e} (gave up after {} retries)", attempt - 1),
                    ));
                }
                for i in again {
                    let m = &messages[i];
                    delivery.failed.push(KeyFailure {
                        key: m.key.clone(),
                        vbucket: m.vbucket,
                        reason: format!(
                            "still {} after {} retries",
                            reasons.remove(&i).unwrap_or_default(),
                            attempt - 1
                        ),
                    });
                }
                return Ok(delivery);
            };
            tokio::time::sleep(pause).await;
            if refresh {
                if let Err(e) = self.refresh().await {
                    tracing::warn!("{e}; retrying with the old map");
                }
            }
            again.sort_unstable();
            delivery.retries += again.len() as u64;
            round = self.send(&messages, Some(&again)).await?;
        }
    }
}

async fn fetch(c: &RouterConfig) -> Result<VbucketMap, Error> {
    VbucketMap::fetch(&c.rest, &c.bucket, c.auth.as_ref(), c.timeout)
        .await
        .map_err(|e| Error::sink(&c.spec, e))
}
