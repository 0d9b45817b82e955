//! `pump cluster up|failover`: a local cluster of reference nodes.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pump_client::error::with_causes;
use pump_node::cluster::TlsPorts;
use pump_node::tls::TlsIdentity;
use pump_node::{Cluster, ClusterConfig, Membership, NodeConfig, RecoveryApi};
use pump_protocol::meta::ConflictResolution;

use super::credentials::{NodeAuthArgs, SourceCredentialArgs};
use super::Failure;

/// Arguments of `pump cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start N nodes on loopback sharing one vbucket map, in the foreground.
    Up(Up),
    /// Fail a node over through the cluster's REST (POST /controller/failOver).
    Failover {
        /// The cluster's REST address, e.g. http://127.0.0.1:9000
        url: String,
        /// The node: its otpNode name (n_1@127.0.0.1), host:port, or index.
        node: String,
        /// The cluster's user and password (HTTP Basic), unless the URL holds them.
        #[command(flatten)]
        credentials: SourceCredentialArgs,
    },
}

/// Arguments of `pump cluster up`.
#[derive(Debug, Args)]
pub struct Up {
    /// Number of nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Replicas per vbucket (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub replicas: u8,
    /// First KV port (node i listens on K+i); 0 picks free ports.
    #[arg(long, default_value_t = 12000)]
    pub kv_port: u16,
    /// First REST port (node i listens on R+i); 0 picks free ports.
    #[arg(long, default_value_t = 9000)]
    pub rest_port: u16,
    /// Bucket name.
    #[arg(long, default_value = "default")]
    pub bucket: String,
    /// Number of vbuckets.
    #[arg(long, default_value_t = 1024)]
    pub vbuckets: u16,
    /// How the bucket resolves with-meta writes against its copy: seqno (revision, the
    /// default) or lww (last write wins: the higher cas).
    #[arg(long, default_value = "seqno", value_parser = conflict_resolution)]
    pub conflict_resolution: ConflictResolution,
    /// Directory where each node persists its bucket (DIR/node-i).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Spare nodes started after the members, holding nothing, for a recovery's replaceNode.
    #[arg(long, default_value_t = 0)]
    pub spares: usize,
    /// The recovery REST dialect(s) the nodes answer: both, design or shipped.
    #[arg(long, default_value = "both")]
    pub recovery_api: RecoveryApi,
    /// The user and password clients must give (SASL on the KV port).
    #[command(flatten)]
    pub auth: NodeAuthArgs,
    /// Connections each KV port serves at once; at it, the oldest connection not yet
    /// authenticated is closed for a new one (or the new one, when all have), and a line logged.
    #[arg(long, default_value_t = pump_node::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Serve the test hooks a test drives the nodes with (POST /pump/faults, /pump/rollback);
    /// without it they answer 404.
    #[arg(long)]
    pub test_hooks: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `--conflict-resolution`.
pub fn conflict_resolution(s: &str) -> Result<ConflictResolution, String> {
    ConflictResolution::parse(s).ok_or_else(|| format!("{s:?}: expected seqno or lww"))
}

/// TLS ports beside the plain ones: KV over TLS and HTTPS REST.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve TLS KV and HTTPS REST too; without --tls-cert, with a self-signed certificate
    /// for 127.0.0.1 and localhost, written to --tls-dir for clients to trust (--cacert).
    #[arg(long)]
    pub tls: bool,
    /// The certificate chain (PEM) of the TLS ports (implies --tls).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// First TLS KV port (node i listens on P+i); 0 picks free ports.
    #[arg(long, default_value_t = 13000)]
    pub tls_kv_port: u16,
    /// First HTTPS REST port (node i listens on P+i); 0 picks free ports.
    #[arg(long, default_value_t = 19000)]
    pub tls_rest_port: u16,
    /// Where a generated certificate (cert.pem) and key (key.pem) are written: --data, else
    /// the current directory.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

impl TlsArgs {
    /// The identity to serve with, and where its certificate was written; None without TLS.
    fn identity(&self, data: Option<&PathBuf>) -> Result<Option<(TlsIdentity, PathBuf)>, Failure> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let id = TlsIdentity::load(cert, key).map_err(Failure::Usage)?;
            return Ok(Some((id, cert.clone())));
        }
        if !self.tls {
            return Ok(None);
        }
        let dir = self
            .tls_dir
            .clone()
            .or_else(|| data.cloned())
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Failed(format!("--tls-dir {}: {e}", dir.display())))?;
        let id = TlsIdentity::self_signed().map_err(Failure::Failed)?;
        let cert = dir.join("cert.pem");
        id.write_cert(&cert)
            .and_then(|_| id.write_key(&dir.join("key.pem")))
            .map_err(|e| Failure::Failed(format!("{}: {e}", dir.display())))?;
        Ok(Some((id, cert)))
    }
}

/// Runs `pump cluster ...`.
pub async fn run(a: ClusterArgs) -> Result<(), Failure> {
    match a.command {
        ClusterCommand::Up(up_args) => up(up_args, false).await,
        ClusterCommand::Failover {
            url,
            node,
            credentials,
        } => failover(&url, &node, credentials.credentials()?).await,
    }
}

/// Starts the nodes, prints one line per node, waits for SIGINT/SIGTERM, stops them.
/// `single`: a standalone node (data in DIR itself, not DIR/node-0).
pub async fn up(a: Up, single: bool) -> Result<(), Failure> {
    if a.nodes == 0 {
        return Err(Failure::Usage("--nodes must be at least 1".into()));
    }
    if a.vbuckets == 0 {
        return Err(Failure::Usage("--vbuckets must be at least 1".into()));
    }
    let tls = a.tls.identity(a.data.as_ref())?;
    let node = NodeConfig {
        bucket: a.bucket,
        vbuckets: a.vbuckets,
        auth: a.auth.auth()?,
        max_connections: a.max_connections,
        data: a.data.clone(),
        tls: tls.as_ref().map(|(id, _)| id.clone()),
        conflict_resolution: a.conflict_resolution,
        ..NodeConfig::default()
    };
    let cfg = ClusterConfig {
        nodes: a.nodes,
        replicas: usize::from(a.replicas),
        node,
        kv_port: a.kv_port,
        rest_port: a.rest_port,
        spares: a.spares,
        recovery_api: a.recovery_api,
        tls: tls.as_ref().map(|_| TlsPorts {
            kv: a.tls.tls_kv_port,
            rest: a.tls.tls_rest_port,
        }),
    };
    let cluster = if single {
        Cluster::start_single(cfg).await
    } else {
        Cluster::start(cfg).await
    }
    .map_err(|e| Failure::Failed(format!("cannot start: {e}")))?;
    cluster.lock().test_hooks = a.test_hooks;
    {
        let s = cluster.lock();
        for (i, n) in s.nodes.iter().enumerate() {
            let spare = if n.membership == Membership::Spare {
                " spare"
            } else {
                ""
            };
            let tls = match (n.kv_tls, n.rest_tls) {
                (Some(k), Some(r)) => format!(" kvs={k} https={r}"),
                _ => String::new(),
            };
            println!(
                "node {i} kv={} rest={} otp={}{tls}{spare}",
                n.kv, n.rest, n.otp
            );
        }
    }
    if let Some((_, cert)) = &tls {
        println!("tls cert={}", cert.display());
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    wait_for_stop().await;
    cluster
        .shutdown()
        .await
        .map_err(|e| Failure::Failed(format!("stopping: {e}")))
}

pub(super) async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn failover(
    url: &str,
    node: &str,
    credentials: Option<pump::Credentials>,
) -> Result<(), Failure> {
    let rest = pump::spec::RestUrl::parse(url)?.or_credentials(credentials);
    let base = rest.base();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    // Resolve an index or host:port to the otpNode name through the node list.
    let with_auth = |r: reqwest::RequestBuilder| match rest.credentials() {
        Some(c) => r.basic_auth(&c.user, Some(&c.password)),
        None => r,
    };
    let pool: serde_json::Value = with_auth(client.get(format!("{base}/pools/default")))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Failure::Failed(format!("{base}: {}", with_causes(&e))))?
        .json()
        .await
        .map_err(|e| Failure::Failed(format!("{base}/pools/default: {}", with_causes(&e))))?;
    let nodes = pool["nodes"].as_array().cloned().unwrap_or_default();
    let otp = nodes
        .iter()
        .enumerate()
        .find(|(i, n)| {
            n["otpNode"] == node
                || n["hostname"] == node
                || i.to_string() == node
                || n["hostname"]
                    .as_str()
                    .and_then(|h| h.rsplit_once(':'))
                    .zip(n["ports"]["direct"].as_u64())
                    .is_some_and(|((host, _), kv)| format!("{host}:{kv}") == node)
        })
        .and_then(|(_, n)| n["otpNode"].as_str().map(str::to_string))
        .ok_or_else(|| Failure::Usage(format!("{node}: no such node in {base}")))?;
    let r = with_auth(client.post(format!("{base}/controller/failOver")))
        .form(&[("otpNode", &otp)])
        .send()
        .await
        .map_err(|e| Failure::Failed(format!("{base}: {}", with_causes(&e))))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Failure::Failed(format!(
            "failover of {otp}: HTTP {status}: {body}"
        )));
    }
    println!("failed over {otp}");
    Ok(())
}
