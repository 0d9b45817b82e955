//! One node: a bucket, its KV listener, its persistence loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pump_protocol::meta::ConflictResolution;
use pump_protocol::VbucketState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Users;
use crate::kv::{self, Counters, KvContext};
use crate::persist;
use crate::store::Bucket;
use crate::tls::TlsIdentity;

/// How a node is set up. Its `Debug` shows the user and never the password.
#[derive(Clone)]
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
    /// The certificate of the TLS KV port (and HTTPS REST), if one is served.
    pub tls: Option<TlsIdentity>,
    /// The bucket's conflictResolutionType: how with-meta writes are resolved.
    pub conflict_resolution: ConflictResolution,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("bucket", &self.bucket)
            .field("vbuckets", &self.vbuckets)
            .field("initial_state", &self.initial_state)
            .field("auth", &self.auth.as_ref().map(|(user, _)| (user, "***")))
            .field("data", &self.data)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls)
            .field("conflict_resolution", &self.conflict_resolution)
            .finish()
    }
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
            tls: None,
            conflict_resolution: ConflictResolution::Seqno,
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    pub bucket: Arc<Bucket>,
    pub kv_addr: SocketAddr,
    /// The TLS KV port, when the node serves one.
    pub kv_tls_addr: Option<SocketAddr>,
    pub(crate) ctx: Arc<KvContext>,
    stop: CancellationToken,
    /// Cancelled once the KV listener is closed (after `stop`).
    closed: CancellationToken,
    snapshot: Option<PathBuf>,
    saver: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Loads (or creates) the bucket and starts serving KV on `kv_addr`.
    pub async fn start(cfg: NodeConfig, kv_addr: SocketAddr) -> std::io::Result<Node> {
        Node::start_with_tls(cfg, kv_addr, None).await
    }

    /// As [`Node::start`], and TLS KV on `tls_addr` when given (with `cfg.tls`, or a
    /// self-signed certificate when none is configured).
    pub async fn start_with_tls(
        mut cfg: NodeConfig,
        kv_addr: SocketAddr,
        tls_addr: Option<SocketAddr>,
    ) -> std::io::Result<Node> {
        if tls_addr.is_some() && cfg.tls.is_none() {
            cfg.tls = Some(TlsIdentity::self_signed().map_err(std::io::Error::other)?);
        }
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
        let bucket = Arc::new(
            match loaded {
                Some((vbs, manifest)) => Bucket::from_parts(&cfg.bucket, vbs, manifest),
                None => Bucket::new(&cfg.bucket, cfg.vbuckets, cfg.initial_state),
            }
            .with_conflict_resolution(cfg.conflict_resolution),
        );
        let listener = TcpListener::bind(kv_addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("KV port {kv_addr}: {e}")))?;
        let kv_addr = listener.local_addr()?;
        let tls_listener = match tls_addr {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let kv_tls_addr = tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let stop = CancellationToken::new();
        let users = match cfg.auth.clone() {
            // Deriving the SCRAM secrets is deliberately slow: off the runtime's threads.
            Some((u, p)) => Some(
                tokio::task::spawn_blocking(move || Users::new(&u, &p))
                    .await
                    .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let ctx = Arc::new(KvContext {
            bucket: bucket.clone(),
            users,
            started: Instant::now(),
            cap: crate::limits::ConnectionCap::new(cfg.max_connections),
            config: Default::default(),
            counters: Counters::default(),
        });
        let closed = CancellationToken::new();
        let serve = kv::serve(listener, ctx.clone(), stop.clone(), None);
        let on_close = closed.clone();
        let tls_serve = match (tls_listener, &cfg.tls) {
            (Some(l), Some(id)) => {
                Some(kv::serve(l, ctx.clone(), stop.clone(), Some(id.acceptor())))
            }
            _ => None,
        };
        tokio::spawn(async move {
            // `serve` owns the listeners: they are closed when it returns, before the guard
            // (which also fires if the task panics) says so.
            let _closed = on_close.drop_guard();
            match tls_serve {
                Some(t) => {
                    tokio::join!(serve, t);
                }
                None => serve.await,
            }
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
            kv_tls_addr,
            ctx,
            stop,
            closed,
            snapshot,
            saver,
        })
    }

    /// What the node counted (snappy values in and out, logins per mechanism, HELLOs).
    pub fn counters(&self) -> &Counters {
        &self.ctx.counters
    }

    /// The cluster map slot this node serves GET_CLUSTER_CONFIG from.
    pub fn config(&self) -> &crate::config::ConfigSlot {
        &self.ctx.config
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_user_and_never_the_password() {
        let cfg = NodeConfig {
            auth: Some(("admin".into(), "p@ss:w0rd-Secret".into())),
            ..NodeConfig::default()
        };
        let cluster = crate::ClusterConfig {
            nodes: 1,
            replicas: 0,
            node: cfg.clone(),
            kv_port: 0,
            rest_port: 0,
            spares: 0,
            recovery_api: crate::RecoveryApi::default(),
            tls: None,
        };
        for text in [
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{cluster:?}"),
        ] {
            assert!(text.contains("admin") && text.contains("***"), "{text}");
            for part in ["p@ss", "w0rd", "Secret"] {
                assert!(!text.contains(part), "{part} in {text}");
            }
        }
    }
}
