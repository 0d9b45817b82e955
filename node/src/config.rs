//! The cluster map as the data port serves it (GET_CLUSTER_CONFIG, NOT_MY_VBUCKET answers) and
//! as REST serves its terse form (`/pools/default/b/<bucket>`, `/pools/default/nodeServices`).
//!
//! ```text
//! bucket config (after SELECT_BUCKET):
//! {"rev": R, "revEpoch": 1, "name": B, "uuid": U, "bucketType": "membase",
//!  "conflictResolutionType": "seqno" or "lww",
//!  "nodeLocator": "vbucket", "bucketCapabilitiesVer": "", "bucketCapabilities": [...],
//!  "nodes":    [{"hostname": "$HOST:REST", "ports": {"direct": KV}}, ...],
//!  "nodesExt": [{"services": {"mgmt": REST, "kv": KV [, "kvSSL", "mgmtSSL"]},
//!                "hostname": "$HOST", "thisNode": true}, ...],
//!  "clusterCapabilitiesVer": [1, 0], "clusterCapabilities": {},
//!  "vBucketServerMap": {"hashAlgorithm": "CRC", "numReplicas": N,
//!                       "serverList": ["$HOST:KV", ...], "vBucketMap": [[a, r], ...]}}
//! global config (no bucket selected): the same without name, uuid, bucket* and the map
//! ```
//!
//! Every node of the local cluster listens on loopback, so every host is `$HOST`, which a
//! client replaces with the address it reached the node at (as a real server publishes a node
//! that has not been renamed from 127.0.0.1). `thisNode` marks the node that answers. The
//! rendered JSON is cached per node until the cluster state changes.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterState};

/// The Couchbase Server version the node's REST answers as (what tools compare against).
pub const SERVER_VERSION: &str = "7.6.0-0000-community";
/// ns_server's cluster compatibility of that version (major * 65536 + minor).
pub const CLUSTER_COMPATIBILITY: u32 = 7 * 65536 + 6;

/// The placeholder a client replaces with the host it connected to.
pub const HOST: &str = "$HOST";

/// The bucket capabilities the node announces: what it implements of Couchbase's list.
pub const BUCKET_CAPABILITIES: &[&str] = &[
    "dcp",
    "cbhello",
    "touch",
    "cccp",
    "xdcrCheckpointing",
    "nodesExt",
    "xattr",
];

/// Where a node finds the cluster's state, once the cluster has started it.
#[derive(Debug, Default)]
pub struct ConfigSlot {
    cluster: OnceLock<(Weak<Cluster>, usize)>,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    fingerprint: u64,
    bucket: Bytes,
    global: Bytes,
    revision: u64,
}

/// One rendering of the config.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The map's revision (rev); the epoch is always 1.
    pub revision: u64,
    pub json: Bytes,
}

impl ConfigSlot {
    /// Ties the node (index `index` of the cluster) to the cluster's state.
    pub fn attach(&self, cluster: &Arc<Cluster>, index: usize) {
        let _ = self.cluster.set((Arc::downgrade(cluster), index));
    }

    /// The bucket config as this node serves it; None when the node is not in a cluster.
    pub fn bucket(&self) -> Option<Rendered> {
        self.render(true)
    }

    /// The global (bucket-less) config.
    pub fn global(&self) -> Option<Rendered> {
        self.render(false)
    }

    fn render(&self, bucket: bool) -> Option<Rendered> {
        let (weak, index) = self.cluster.get()?;
        let cluster = weak.upgrade()?;
        let s = cluster.lock();
        let fingerprint = fingerprint(&s);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cache.as_ref().is_some_and(|c| c.fingerprint == fingerprint);
        if !fresh {
            *cache = Some(Cached {
                fingerprint,
                bucket: Bytes::from(bucket_config(&s, *index, true).to_string()),
                global: Bytes::from(bucket_config(&s, *index, false).to_string()),
                revision: s.revision,
            });
        }
        let c = cache.as_ref()?;
        Some(Rendered {
            revision: c.revision,
            json: if bucket {
                c.bucket.clone()
            } else {
                c.global.clone()
            },
        })
    }
}

/// What the config depends on.
fn fingerprint(s: &ClusterState) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.revision.hash(&mut h);
    s.map.hash(&mut h);
    for n in &s.nodes {
        (n.kv, n.rest, n.kv_tls, n.rest_tls, n.membership as u8).hash(&mut h);
    }
    h.finish()
}

/// The bucket's uuid: stable for a bucket name within a cluster.
pub fn bucket_uuid(s: &ClusterState) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.bucket.hash(&mut h);
    s.nodes.first().map(|n| n.rest).hash(&mut h);
    format!("{:016x}{:016x}", h.finish(), h.finish().rotate_left(17))
}

/// `nodesExt` entry of node `i`.
fn node_ext(s: &ClusterState, i: usize, this: usize) -> Value {
    let n = &s.nodes[i];
    let mut services = json!({"mgmt": n.rest.port(), "kv": n.kv.port()});
    if let Some(t) = n.kv_tls {
        services["kvSSL"] = json!(t.port());
    }
    if let Some(t) = n.rest_tls {
        services["mgmtSSL"] = json!(t.port());
    }
    let mut v = json!({"services": services, "hostname": HOST});
    if i == this {
        v["thisNode"] = json!(true);
    }
    v
}

/// The config node `this` serves: with the bucket and its map, or the global one.
pub fn bucket_config(s: &ClusterState, this: usize, with_bucket: bool) -> Value {
    let nodes_ext: Vec<Value> = (0..s.nodes.len()).map(|i| node_ext(s, i, this)).collect();
    let mut v = json!({
        "rev": s.revision,
        "revEpoch": 1,
        "nodesExt": nodes_ext,
        "clusterCapabilitiesVer": [1, 0],
        "clusterCapabilities": {},
    });
    if with_bucket {
        let nodes: Vec<Value> = s
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut node = json!({
                    "hostname": format!("{HOST}:{}", n.rest.port()),
                    "ports": {"direct": n.kv.port()},
                });
                if i == this {
                    node["thisNode"] = json!(true);
                }
                node
            })
            .collect();
        v["name"] = json!(s.bucket);
        v["uuid"] = json!(bucket_uuid(s));
        v["bucketType"] = json!("membase");
        v["conflictResolutionType"] = json!(s.conflict_resolution.as_str());
        v["nodeLocator"] = json!("vbucket");
        v["bucketCapabilitiesVer"] = json!("");
        v["bucketCapabilities"] = json!(BUCKET_CAPABILITIES);
        v["nodes"] = json!(nodes);
        v["vBucketServerMap"] = json!({
            "hashAlgorithm": "CRC",
            "numReplicas": s.replicas,
            "serverList": s.nodes.iter().map(|n| format!("{HOST}:{}", n.kv.port())).collect::<Vec<_>>(),
            "vBucketMap": s.map,
        });
    }
    v
}
