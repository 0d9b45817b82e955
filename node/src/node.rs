//! One node: a bucket, its KV listener, its persistence loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pump_protocol::VbucketState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::kv::{self, KvContext};
use crate::persist;
use crate::store::Bucket;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub bucket: String,
    pub vbuckets: u16,
    /// The state of every vbucket of a fresh bucket.
    pub initial_state: VbucketState,
    pub auth: Option<(String, String)>,
    /// Where the bucket is persisted, if anywhere.
    pub data: Option<PathBuf>,
    /// The connections the KV port serves at once (`--max-connections`).
    pub max_connections: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            bucket: "default".into(),
            vbuckets: 1024,
            initial_state: VbucketState::Active,
            auth: None,
            max_connections: crate::limits::DEFAULT_MAX_CONNECTIONS,
            data: None,
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    pub bucket: Arc<Bucket>,
    pub kv_addr: SocketAddr,
    stop: CancellationToken,
    /// Cancelled once the KV listener is closed (after `stop`).
    closed: CancellationToken,
    snapshot: Option<PathBuf>,
    saver: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Loads (or creates) the bucket and starts serving KV on `kv_addr`.
    pub async fn start(cfg: NodeConfig, kv_addr: SocketAddr) -> std::io::Result<Node> {
        let snapshot = match &cfg.data {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Some(d.join(format!("{}.snap", cfg.bucket)))
            }
            None => None,
        };
        let loaded = match &snapshot {
            Some(p) => persist::load(p)?,
            None => None,
        };
        let bucket = Arc::new(match loaded {
            Some(vbs) => Bucket::from_vbuckets(&cfg.bucket, vbs),
            None => Bucket::new(&cfg.bucket, cfg.vbuckets, cfg.initial_state),
        });
        let listener = TcpListener::bind(kv_addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("KV port {kv_addr}: {e}")))?;
        let kv_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let ctx = Arc::new(KvContext {
            bucket: bucket.clone(),
            auth: cfg.auth.clone(),
            started: Instant::now(),
            cap: crate::limits::ConnectionCap::new(cfg.max_connections),
        });
        let closed = CancellationToken::new();
        let serve = kv::serve(listener, ctx, stop.clone());
        let on_close = closed.clone();
        tokio::spawn(async move {
            // `serve` owns the listener: it is closed when `serve` returns, before the guard
            // (which also fires if the task panics) says so.
            let _closed = on_close.drop_guard();
            serve.await;
        });
        let saver = snapshot.clone().map(|path| {
            let b = bucket.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if b.take_dirty() {
                        let (b2, p2) = (b.clone(), path.clone());
                        let r = tokio::task::spawn_blocking(move || persist::save(&b2, &p2)).await;
                        if let Ok(Err(e)) = r {
                            tracing::warn!("persist {}: {e}", path.display());
                        }
                    }
                }
            })
        });
        Ok(Node {
            bucket,
            kv_addr,
            stop,
            closed,
            snapshot,
            saver,
        })
    }

    /// Stops serving: closes the listener and every connection.
    pub fn halt(&self) {
        self.stop.cancel();
    }

    /// Returns once the KV listener is closed: after `halt`, a connection is refused.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// True once halted.
    pub fn is_halted(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Writes the snapshot now (nothing without a data directory).
    pub async fn save(&self) -> std::io::Result<()> {
        if let Some(p) = self.snapshot.clone() {
            let b = self.bucket.clone();
            tokio::task::spawn_blocking(move || persist::save(&b, &p))
                .await
                .map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// Halts and writes the final snapshot.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.halt();
        if let Some(s) = self.saver.take() {
            s.abort();
        }
        if let Some(p) = self.snapshot.take() {
            let b = self.bucket.clone();
            tokio::task::spawn_blocking(move || persist::save(&b, &p))
                .await
                .map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(s) = self.saver.take() {
            s.abort();
        }
    }
}
