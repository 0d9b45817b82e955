//! A local cluster: N nodes in one process sharing one vbucket map.
//!
//! ```text
//! vbucket i: active on node i % N, replica on (i + 1) % N with one replica
//! node i:    REST port R + i, KV port K + i (0 = free ports)
//! spares:    nodes K+N.. that run but hold nothing until `replaceNode` adds them
//! failover:  the node halts; its active vbuckets are promoted where a replica lives, else -1
//! ```
//!
//! The recovery of the vbuckets a failover left without a copy is in [`crate::recovery`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use pump_protocol::VbucketState;

use crate::node::{Node, NodeConfig};
use crate::recovery::{RecoveryApi, ShippedRecovery};
use crate::tls::TlsIdentity;

/// How a cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nodes: usize,
    pub replicas: usize,
    pub node: NodeConfig,
    /// First KV port (0 = free ports).
    pub kv_port: u16,
    /// First REST port (0 = free ports).
    pub rest_port: u16,
    /// Nodes started after the members, holding nothing, for `replaceNode` to add.
    pub spares: usize,
    /// The recovery REST dialect(s) the nodes answer.
    pub recovery_api: RecoveryApi,
    /// TLS KV and HTTPS REST ports beside the plain ones, if any.
    pub tls: Option<TlsPorts>,
}

/// The first TLS KV port and the first HTTPS REST port (node i listens on P+i; 0 = free ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsPorts {
    pub kv: u16,
    pub rest: u16,
}

/// A node's place in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Serves its vbuckets.
    Active,
    /// Runs, holds nothing, can be added by `replaceNode`.
    Spare,
    /// Failed over: halted, its vbuckets promoted or missing.
    Failed,
    /// Failed over, then removed by `replaceNode`.
    Removed,
}

impl Membership {
    /// As `clusterMembership` of `/pools/default` shows it.
    pub fn as_rest(self) -> &'static str {
        match self {
            Membership::Active => "active",
            Membership::Spare => "inactiveAdded",
            Membership::Failed => "inactiveFailed",
            Membership::Removed => "inactiveRemoved",
        }
    }
}

/// What REST reports of a node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub kv: SocketAddr,
    pub rest: SocketAddr,
    /// The TLS KV port, if served.
    pub kv_tls: Option<SocketAddr>,
    /// The HTTPS REST port, if served.
    pub rest_tls: Option<SocketAddr>,
    pub otp: String,
    pub membership: Membership,
}

/// The map and the nodes, as the REST API shows them.
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub bucket: String,
    /// The bucket's conflictResolutionType.
    pub conflict_resolution: pump_protocol::meta::ConflictResolution,
    pub replicas: usize,
    pub nodes: Vec<NodeInfo>,
    /// Per vbucket: [active, replica...], -1 = none.
    pub map: Vec<Vec<i32>>,
    /// Bumped each time the map is published again.
    pub revision: u64,
    /// The node the last `replaceNode` added: where missing vbuckets go.
    pub added: Option<usize>,
    /// A recovery started with `startRecovery`.
    pub recovery: Option<ShippedRecovery>,
    pub recovery_api: RecoveryApi,
    /// Test hook: route name -> statuses to answer instead of serving it, in order.
    pub faults: std::collections::HashMap<String, Vec<u16>>,
    /// `/pump/...` (faults, rollback) is served (`--test-hooks`); 404 otherwise.
    pub test_hooks: bool,
    /// The credentials every REST request but `GET /pools` must carry (the KV port's).
    pub rest_auth: Option<crate::rest_guard::RestAuth>,
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub state: Mutex<ClusterState>,
    pub nodes: Vec<Node>,
    tls: Option<TlsIdentity>,
}

fn port(base: u16, i: usize) -> u16 {
    if base == 0 {
        0
    } else {
        base.saturating_add(i as u16)
    }
}

impl Cluster {
    /// Starts the nodes (node i persists in DATA/node-i) and their REST ports.
    pub async fn start(cfg: ClusterConfig) -> std::io::Result<Arc<Cluster>> {
        Self::start_with(cfg, true).await
    }

    /// Starts a one-node cluster that persists in DATA itself (`pump node`).
    pub async fn start_single(mut cfg: ClusterConfig) -> std::io::Result<Arc<Cluster>> {
        cfg.nodes = 1;
        Self::start_with(cfg, false).await
    }

    async fn start_with(cfg: ClusterConfig, subdirs: bool) -> std::io::Result<Arc<Cluster>> {
        let n = cfg.nodes.max(1);
        let replicas = cfg.replicas.min(n - 1);
        let nvb = cfg.node.vbuckets;
        let mut node_cfg = cfg.node.clone();
        if cfg.tls.is_some() && node_cfg.tls.is_none() {
            // One certificate for every node, so one file is all a client has to trust.
            node_cfg.tls = Some(TlsIdentity::self_signed().map_err(std::io::Error::other)?);
        }
        let mut nodes = Vec::with_capacity(n + cfg.spares);
        for i in 0..n + cfg.spares {
            let mut nc = node_cfg.clone();
            nc.initial_state = VbucketState::Dead;
            if let (Some(d), true) = (&cfg.node.data, subdirs) {
                nc.data = Some(d.join(format!("node-{i}")));
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(cfg.kv_port, i)));
            let tls_addr = cfg
                .tls
                .map(|t| SocketAddr::from((Ipv4Addr::LOCALHOST, port(t.kv, i))));
            nodes.push(Node::start_with_tls(nc, addr, tls_addr).await?);
        }
        let map: Vec<Vec<i32>> = (0..nvb as usize)
            .map(|vb| {
                let mut row = vec![(vb % n) as i32];
                if replicas > 0 {
                    row.push(((vb + 1) % n) as i32);
                }
                row
            })
            .collect();
        for (vb, row) in map.iter().enumerate() {
            let vb = vb as u16;
            let a = &nodes[row[0] as usize];
            if a.bucket.state(vb) != Some(VbucketState::Active) {
                a.bucket.set_state(vb, VbucketState::Active);
            }
            if let Some(&r) = row.get(1) {
                let rb = &nodes[r as usize].bucket;
                if rb.state(vb) != Some(VbucketState::Replica) {
                    rb.set_state(vb, VbucketState::Replica);
                }
                a.bucket.set_replica(vb, Some(rb.clone()));
            }
        }
        let mut infos = Vec::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            infos.push(NodeInfo {
                kv: node.kv_addr,
                rest: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                kv_tls: node.kv_tls_addr,
                rest_tls: None,
                otp: format!("n_{i}@127.0.0.1"),
                membership: if i < n {
                    Membership::Active
                } else {
                    Membership::Spare
                },
            });
        }
        let cluster = Arc::new(Cluster {
            state: Mutex::new(ClusterState {
                bucket: cfg.node.bucket.clone(),
                conflict_resolution: cfg.node.conflict_resolution,
                replicas,
                nodes: infos,
                map,
                revision: 1,
                added: None,
                recovery: None,
                recovery_api: cfg.recovery_api,
                faults: Default::default(),
                test_hooks: false,
                rest_auth: cfg
                    .node
                    .auth
                    .as_ref()
                    .map(|(u, p)| crate::rest_guard::RestAuth::new(u, p)),
            }),
            nodes,
            tls: if cfg.tls.is_some() {
                node_cfg.tls.clone()
            } else {
                None
            },
        });
        for i in 0..n + cfg.spares {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(cfg.rest_port, i)));
            let bound = crate::rest::serve(cluster.clone(), addr).await?;
            cluster.lock().nodes[i].rest = bound;
            if let (Some(t), Some(id)) = (cfg.tls, &node_cfg.tls) {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(t.rest, i)));
                let bound = crate::rest::serve_tls(cluster.clone(), addr, id.acceptor()).await?;
                cluster.lock().nodes[i].rest_tls = Some(bound);
            }
            cluster.nodes[i].config().attach(&cluster, i);
        }
        Ok(cluster)
    }

    /// Test hook (`--test-hooks`): rolls vbucket `vb` back to `seqno` on its active node (see
    /// [`crate::store::Vbucket::roll_back`]); returns the new uuid, or why it cannot.
    pub fn roll_back(&self, vb: u16, seqno: u64) -> Result<u64, String> {
        let node = {
            let s = self.lock();
            if !s.test_hooks {
                return Err("test hooks are off: start the node with --test-hooks".into());
            }
            let row = s
                .map
                .get(vb as usize)
                .ok_or_else(|| format!("no vbucket {vb}"))?;
            usize::try_from(row[0]).map_err(|_| format!("vbucket {vb} has no active node"))?
        };
        let mut v = self.nodes[node]
            .bucket
            .vb(vb)
            .ok_or_else(|| format!("no vbucket {vb}"))?;
        if seqno > v.high_seqno {
            return Err(format!(
                "vbucket {vb} is at seqno {}: nothing after {seqno} to roll back",
                v.high_seqno
            ));
        }
        v.roll_back(seqno);
        Ok(v.uuid())
    }

    /// The certificate the TLS ports present, if the cluster serves TLS.
    pub fn tls_identity(&self) -> Option<&TlsIdentity> {
        self.tls.as_ref()
    }

    /// Locks the shared state.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of a node named by otpNode, host:port (KV or REST) or index.
    pub fn find(&self, name: &str) -> Option<usize> {
        let s = self.lock();
        s.nodes
            .iter()
            .position(|n| n.otp == name || n.kv.to_string() == name || n.rest.to_string() == name)
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < s.nodes.len()))
    }

    /// Fails node `i` over: it halts, its vbuckets are promoted or left at -1. Returns once its
    /// KV port refuses connections.
    pub async fn failover(&self, i: usize) -> Result<(), String> {
        self.fail_node(i)?;
        self.nodes[i].closed().await;
        Ok(())
    }

    /// The map and state change of a failover; the node's listener closes after it.
    fn fail_node(&self, i: usize) -> Result<(), String> {
        let mut s = self.lock();
        let info = s.nodes.get_mut(i).ok_or_else(|| format!("no node {i}"))?;
        match info.membership {
            Membership::Active => {}
            Membership::Spare => return Err(format!("{} is a spare: it holds nothing", info.otp)),
            _ => return Err(format!("{} is already failed over", info.otp)),
        }
        info.membership = Membership::Failed;
        self.nodes[i].halt();
        let failed = i as i32;
        for vb in 0..s.map.len() {
            let row = &mut s.map[vb];
            let vbid = vb as u16;
            if row[0] == failed {
                let promoted = row
                    .iter()
                    .skip(1)
                    .copied()
                    .find(|r| *r >= 0 && *r != failed);
                match promoted {
                    Some(r) => {
                        let b = &self.nodes[r as usize].bucket;
                        b.set_state(vbid, VbucketState::Active);
                        b.set_replica(vbid, None);
                        row[0] = r;
                        for x in row.iter_mut().skip(1) {
                            *x = -1;
                        }
                    }
                    None => row[0] = -1,
                }
            } else {
                let active = row[0];
                for x in row.iter_mut().skip(1) {
                    if *x == failed {
                        *x = -1;
                        if active >= 0 {
                            self.nodes[active as usize].bucket.set_replica(vbid, None);
                        }
                    }
                }
            }
        }
        s.revision += 1;
        Ok(())
    }

    /// Test hook: the next call of `route` answers `status` (queued after earlier ones).
    pub fn inject_fault(&self, route: &str, status: u16) {
        self.lock()
            .faults
            .entry(route.to_string())
            .or_default()
            .push(status);
    }

    /// The injected status for `route`, consumed, if any.
    pub fn take_fault(&self, route: &str) -> Option<u16> {
        let mut s = self.lock();
        let q = s.faults.get_mut(route)?;
        (!q.is_empty()).then(|| q.remove(0))
    }

    /// Stops every node, writing their snapshots.
    pub async fn shutdown(&self) -> std::io::Result<()> {
        for n in &self.nodes {
            n.halt();
            n.save().await?;
        }
        Ok(())
    }
}
