//! A local cluster: N nodes in one process sharing one vbucket map.
//!
//! ```text
//! vbucket i: active on node i % N, replica on (i + 1) % N with one replica
//! node i:    REST port R + i, KV port K + i (0 = free ports)
//! failover:  the node halts; its active vbuckets are promoted where a replica lives, else -1
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use pump_protocol::VbucketState;

use crate::node::{Node, NodeConfig};

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
}

/// What REST reports of a node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub kv: SocketAddr,
    pub rest: SocketAddr,
    pub otp: String,
    pub failed: bool,
}

/// The map and the nodes, as the REST API shows them.
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub bucket: String,
    pub replicas: usize,
    pub nodes: Vec<NodeInfo>,
    /// Per vbucket: [active, replica...], -1 = none.
    pub map: Vec<Vec<i32>>,
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub state: Mutex<ClusterState>,
    pub nodes: Vec<Node>,
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
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut nc = cfg.node.clone();
            nc.initial_state = VbucketState::Dead;
            if let (Some(d), true) = (&cfg.node.data, subdirs) {
                nc.data = Some(d.join(format!("node-{i}")));
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(cfg.kv_port, i)));
            nodes.push(Node::start(nc, addr).await?);
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
                otp: format!("n_{i}@127.0.0.1"),
                failed: false,
            });
        }
        let cluster = Arc::new(Cluster {
            state: Mutex::new(ClusterState {
                bucket: cfg.node.bucket.clone(),
                replicas,
                nodes: infos,
                map,
            }),
            nodes,
        });
        for i in 0..n {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port(cfg.rest_port, i)));
            let bound = crate::rest::serve(cluster.clone(), addr).await?;
            cluster.lock().nodes[i].rest = bound;
        }
        Ok(cluster)
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

    /// Fails node `i` over: it halts, its vbuckets are promoted or left at -1.
    pub fn failover(&self, i: usize) -> Result<(), String> {
        let mut s = self.lock();
        let info = s.nodes.get_mut(i).ok_or_else(|| format!("no node {i}"))?;
        if info.failed {
            return Err(format!("{} is already failed over", info.otp));
        }
        info.failed = true;
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
        Ok(())
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
