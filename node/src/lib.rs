//! The reference data node and local cluster.
//!
//! ```text
//! store.rs    a bucket of vbuckets: items, seqnos, tombstones, failover logs, per-vbucket locks,
//!             the manifest; keys kept with their collection id, system events as items
//! collections.rs the bucket's scopes and collections: changes, their events, the REST routes
//! persist.rs  the bucket snapshot file (--data DIR)
//! kv/         the KV port: memcached binary protocol as Couchbase speaks it, pipelined (HELLO,
//!             SASL, SELECT_BUCKET, GET_CLUSTER_CONFIG, GET_ERROR_MAP, items, with-meta, TAP in)
//! auth.rs     the node's user and the server side of SASL (PLAIN, SCRAM-SHA512/256/1)
//! value.rs    values as stored and as each connection sees them (JSON, SNAPPY, XATTR)
//! config.rs   the cluster map a node serves over KV and as REST's terse bucket config
//! tls.rs      the certificate of the TLS KV port and HTTPS REST (given, or self-signed)
//! limits.rs   what one client may cost: the connection cap, small bodies and short silence
//!             before authentication
//! tap.rs      the TAP producer (TAP_CONNECT)
//! dcp.rs      the DCP producer (DCP_OPEN), flow control, noops
//! node.rs     one node: bucket + KV listener + persistence
//! cluster.rs  N nodes sharing one vbucket map, in-process replication, failover
//! recovery.rs the vbuckets a failover lost: both recovery REST dialects, on the cluster state
//! rest.rs     the REST port (the map as Couchbase's REST shows it, the recovery API)
//! rest_guard.rs who may use it: HTTP Basic with the node's credentials, test hooks only when on
//! sds/        a reference OpenIO SDS proxy (oio-proxy 7 or 9) over local meta2 volumes: meta1,
//!             its cache, the services' elections (also as read-only ZooKeeper nodes)
//! ```

pub mod auth;
pub mod cluster;
pub mod collections;
pub mod config;
pub mod dcp;
pub mod kv;
pub mod limits;
pub mod node;
pub mod persist;
pub mod recovery;
pub mod rest;
pub mod rest_guard;
pub mod sds;
pub mod store;
pub mod tap;
pub mod tls;
pub mod value;

pub use cluster::{Cluster, ClusterConfig, ClusterState, Membership, NodeInfo};
pub use node::{Node, NodeConfig};
pub use recovery::{RecoveryApi, Refusal};
pub use store::Bucket;
