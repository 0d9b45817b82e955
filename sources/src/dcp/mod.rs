//! `dcp://[user:pass@]host:port` (or `dcps://` over TLS): DCP streams of one node's vbuckets,
//! resumable.
//!
//! ```text
//! pump                                        node
//!  | HELLO (pump/VERSION; XATTR, XERROR, SELECT_BUCKET, JSON, SNAPPY, COLLECTIONS), SASL (the
//!  | strongest listed: SCRAM-SHA512 ... PLAIN), SELECT_BUCKET -b
//!  | GET_COLLECTIONS_MANIFEST (COLLECTIONS agreed) -> the run's manifest (pump::RunCollections)
//!  | DCP_OPEN producer [| INCLUDE_XATTRS when XATTR was agreed]
//!  | STAT "vbucket-seqno" ----------------------> vb_N:high_seqno ... (the end of each stream)
//!  | CONTROL connection_buffer_size / enable_noop / set_noop_interval
//!  | STREAM_REQ vb a, vb b, ... (all at once, start from the checkpoint file)
//!  |<--- failover log | ROLLBACK seqno (ask again from there)
//!  |     [value: {"collections": [ids]} with --include-data, resolved by name]
//!  |<--- SNAPSHOT_MARKER, MUTATION, DELETION, EXPIRATION ... STREAM_END per vbucket
//!  |<--- SYSTEM_EVENT (a scope or collection created or dropped, in seqno order)
//!  |<--- NOOP  --> answered at once
//!  | BUFFER_ACK n --> only once the sink confirmed the batch holding those n bytes
//! ```
//!
//! `-t` connections share the vbuckets. The stream of a vbucket ends at the high seqno the
//! node reported at the start; a node that does not answer STAT vbucket-seqno is streamed to
//! the end of its stream (end = u64::MAX, stop at STREAM_END). With `-x checkpoint=PATH`
//! every confirmed position is saved (see [`checkpoint`]) and a rerun resumes from it.
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | checkpoint | none | resume file (JSON, per vbucket uuid, seqno, snapshot) |
//! | timeout | 30 | seconds any network wait may take |
//! | sasl | the strongest listed | the SASL mechanism: PLAIN, SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1 |
//! | cacert, no_ssl_verify | system roots | the TLS trust of `dcps://` (`--cacert`, `--no-ssl-verify`) |
//!
//! With COLLECTIONS each key starts with its collection id in LEB128: the message gets the id
//! (`Message::collection`) and the key without it. A prefix that runs past the key, or an id
//! the manifest (as the stream's system events changed it) does not hold, stops the run with
//! an error naming the vbucket and seqno. A node that refuses COLLECTIONS streams the default
//! collection, as before.
//!
//! Values arrive as the node holds them when it agreed to SNAPPY (compressed) and XATTR
//! (with their xattrs), and travel to the sink with their datatype byte.

pub mod checkpoint;
mod stream;
#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchLimits, BatchSender, Error, Options, RunCollections, Source, SourceKind, Spec};
use pump_client::{Auth, Handshake};
use pump_protocol::collections::CollectionPath;
use pump_protocol::Feature;
use tokio_util::sync::CancellationToken;

use crate::net;
pub use checkpoint::{CheckpointFile, VbPosition};
pub use stream::{stream_connection, NodeConnections, Share, OPENING_WAIT};

/// `-x` keys of the DCP source.
pub const EXTRA_KEYS: &[&str] = &["checkpoint", "timeout", "sasl", "cacert", "no_ssl_verify"];

/// The `dcp://` source kind.
pub struct DcpSourceKind;

impl SourceKind for DcpSourceKind {
    fn name(&self) -> &'static str {
        "dcp"
    }
    fn syntax(&self) -> &'static str {
        "dcp://[USER:PASSWORD@]HOST:PORT (dcps:// over TLS)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        matches!(spec.scheme(), Some("dcp" | "dcps"))
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        EXTRA_KEYS
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let a = spec.authority()?;
        let vbuckets: Vec<u16> = match &options.vbuckets {
            Some(v) => v.iter().collect(),
            None => (0..options.extra.num_vbuckets).collect(),
        };
        Ok(Box::new(DcpSource {
            spec: spec.to_string(),
            addr: a.addr(),
            config: DcpConfig::from_options(spec, options)?,
            vbuckets,
        }))
    }
}

/// How to open DCP streams (shared with the `couchbase://` source).
#[derive(Debug, Clone)]
pub struct DcpConfig {
    pub auth: Option<Auth>,
    pub bucket: String,
    pub timeout: Duration,
    pub limits: BatchLimits,
    pub verbose: u8,
    /// Connections per node (`-t`).
    pub connections: usize,
    /// The flow-control window: CONTROL connection_buffer_size.
    pub buffer_size: u32,
    /// Seconds between the producer's NOOPs.
    pub noop_interval: u32,
    pub checkpoint: Option<PathBuf>,
    /// HELLO, SASL, SELECT_BUCKET, and TLS for `dcps://` or `couchbases://`.
    pub handshake: Handshake,
    /// Where the streams publish the bucket's manifest and its changes (the run's, set by
    /// the source's `run`).
    pub collections: Arc<RunCollections>,
    /// The STREAM_REQ filter (`--include-data`): what each stream is limited to, resolved
    /// against the manifest by name once it is read.
    pub filter: Option<Vec<CollectionPath>>,
}

impl DcpConfig {
    /// Reads credentials, bucket, `-t`, `-x checkpoint` and `-x timeout`; the window is ten
    /// batches' worth of bytes (between 1 MiB and 64 MiB).
    pub fn from_options(spec: &Spec, options: &Options) -> Result<DcpConfig, Error> {
        let timeout = options.extra.timeout()?;
        let limits = options.batch_limits();
        let auth = net::auth(spec, options)?;
        let tls = matches!(spec.scheme(), Some("dcps" | "couchbases" | "https"));
        let mut handshake = net::handshake(auth.clone(), &options.source_bucket, options, tls)?;
        // Every collection, keys with their collection id, and the system events.
        handshake.features.push(Feature::Collections);
        Ok(DcpConfig {
            handshake,
            collections: Arc::new(RunCollections::default()),
            filter: options.data.stream_paths(&options.source_bucket),
            auth,
            bucket: options.source_bucket.clone(),
            timeout,
            limits,
            verbose: options.verbose,
            connections: options.threads.max(1),
            buffer_size: (limits.max_bytes.saturating_mul(10)).clamp(1 << 20, 64 << 20) as u32,
            noop_interval: (timeout.as_secs() / 2).clamp(1, 120) as u32,
            checkpoint: options.extra.get("checkpoint").map(PathBuf::from),
        })
    }

    /// Loads the checkpoint file, if one is configured.
    pub fn load_checkpoint(&self) -> Result<Option<Arc<Mutex<CheckpointFile>>>, Error> {
        self.checkpoint
            .as_deref()
            .map(|p| CheckpointFile::load(p).map(|c| Arc::new(Mutex::new(c))))
            .transpose()
    }
}

/// DCP streams of one node.
pub struct DcpSource {
    spec: String,
    addr: String,
    config: DcpConfig,
    vbuckets: Vec<u16>,
}

#[async_trait]
impl Source for DcpSource {
    async fn run(self: Box<Self>, out: BatchSender, ctx: Context) -> Result<(), Error> {
        let ckpt = self.config.load_checkpoint()?;
        let config = DcpConfig {
            collections: ctx.collections.clone(),
            ..self.config
        };
        let asked = self.vbuckets.len();
        // The node is this source's only one: once its streams are read, so is the source.
        let read_all = Some(ctx.source_done.clone());
        let live = stream_node(
            &self.spec,
            &self.addr,
            &config,
            self.vbuckets,
            &out,
            ckpt,
            read_all,
        )
        .await?;
        if live == 0 && asked > 0 {
            return Err(net::no_live_vbucket(&self.spec, &self.addr, Some(asked)));
        }
        Ok(())
    }
}

/// Streams `vbuckets` of the node at `addr` over `config.connections` connections; returns
/// how many of them the node holds in a state it streams (all, when it does not say).
/// `read_all` is cancelled once every stream has been read and handed over, before the sink
/// confirmed the last batches.
pub async fn stream_node(
    spec: &str,
    addr: &str,
    config: &DcpConfig,
    vbuckets: Vec<u16>,
    out: &BatchSender,
    ckpt: Option<Arc<Mutex<CheckpointFile>>>,
    read_all: Option<CancellationToken>,
) -> Result<usize, Error> {
    if vbuckets.is_empty() {
        if let Some(t) = read_all {
            t.cancel();
        }
        return Ok(0);
    }
    let n = config.connections.min(vbuckets.len()).max(1);
    let per = vbuckets.len().div_ceil(n);
    let mut tasks = tokio::task::JoinSet::new();
    let chunks: Vec<Vec<u16>> = vbuckets.chunks(per).map(<[u16]>::to_vec).collect();
    let node = NodeConnections::new(chunks.len(), read_all);
    for (index, vbuckets) in chunks.into_iter().enumerate() {
        let (spec, addr, config, out, ckpt) = (
            spec.to_string(),
            addr.to_string(),
            config.clone(),
            out.clone(),
            ckpt.clone(),
        );
        let share = Share {
            index,
            vbuckets,
            node: node.clone(),
        };
        tasks.spawn(
            async move { stream_connection(&spec, &addr, &config, share, &out, ckpt).await },
        );
    }
    let mut first_err = None;
    let mut live = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Error::source(spec, format!("worker panicked: {e}"))));
        match r {
            Ok(n) => live += n,
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    // One connection failed: the others stop too (what they confirmed is saved).
                    tasks.abort_all();
                }
            }
        }
    }
    if let Some(c) = &ckpt {
        c.lock()
            .map_err(|_| Error::source(spec, "checkpoint lock poisoned"))?
            .save()?;
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            refresh_manifest(spec, addr, config).await?;
            Ok(live)
        }
    }
}

/// Reads the bucket's manifest again once the streams ended (when they had collections): a
/// change after the streams' end seqnos (a collection dropped while they ran) is then in the
/// run's manifest too.
async fn refresh_manifest(spec: &str, addr: &str, config: &DcpConfig) -> Result<(), Error> {
    if config.collections.manifest().is_none() {
        return Ok(());
    }
    let err = |e: pump_client::ClientError| Error::source(spec, e);
    let mut conn = pump_client::Connection::negotiate(addr, &config.handshake)
        .await
        .map_err(err)?;
    let r = conn
        .request(
            pump_protocol::Packet::request(pump_protocol::Opcode::GetCollectionsManifest),
            "GET_COLLECTIONS_MANIFEST",
        )
        .await
        .map_err(err)?;
    if r.status() == pump_protocol::Status::Success {
        let m = pump_protocol::collections::Manifest::from_json(&r.value)
            .map_err(|e| Error::source(spec, format!("{addr}: the bucket's manifest: {e}")))?;
        config.collections.publish(m);
    }
    Ok(())
}
