//! `pump node`: one reference node (all vbuckets active) in the foreground; with `--sds NS`,
//! the reference OpenIO SDS proxy over local meta2 volumes instead.

use std::path::PathBuf;

use clap::Args;

use pump_node::sds::{Meta2Service, OioVersion, SdsConfig, SdsProxy};

use super::credentials::NodeAuthArgs;
use super::Failure;

/// Arguments of `pump node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// KV (memcached binary protocol) port; 0 picks a free one.
    #[arg(long, default_value_t = 12000)]
    pub kv_port: u16,
    /// REST port; 0 picks a free one.
    #[arg(long, default_value_t = 9000)]
    pub rest_port: u16,
    /// Bucket name.
    #[arg(long, default_value = "default")]
    pub bucket: String,
    /// Number of vbuckets.
    #[arg(long, default_value_t = 1024)]
    pub vbuckets: u16,
    /// How the bucket resolves with-meta writes: seqno (revision) or lww (last write wins).
    #[arg(long, default_value = "seqno", value_parser = super::cluster::conflict_resolution)]
    pub conflict_resolution: pump_protocol::meta::ConflictResolution,
    /// Directory where the bucket is persisted across restarts.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The user and password clients must give (SASL on the KV port).
    #[command(flatten)]
    pub auth: NodeAuthArgs,
    /// Connections each KV port serves at once; at it, the oldest connection not yet
    /// authenticated is closed for a new one (or the new one, when all have), and a line logged.
    #[arg(long, default_value_t = pump_node::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Serve the reference SDS proxy for namespace NS (with --meta2) instead of a data node.
    #[arg(long, value_name = "NS", requires = "meta2")]
    pub sds: Option<String>,
    /// A meta2 service the proxy emulates: ADDRESS=VOLUME (repeat).
    #[arg(long = "meta2", value_name = "ADDRESS=VOLUME", value_parser = meta2_service, requires = "sds")]
    pub meta2: Vec<Meta2Service>,
    /// The proxy's meta1 store, a JSON file shared by the proxies of one namespace (built
    /// from the volumes' sys.peers when absent); in memory without it.
    #[arg(long, requires = "sds")]
    pub meta1: Option<PathBuf>,
    /// The proxy's port (the SDS sandbox uses 6000); 0 picks a free one.
    #[arg(long, default_value_t = 6000)]
    pub proxy_port: u16,
    /// The oio-proxy the reference answers as: 7 (oio-sds 7.x) or 9 (9.0 and later, where a
    /// call to the master takes at most one service_id).
    #[arg(long, value_name = "7|9", default_value = "9", requires = "sds")]
    pub oio_version: OioVersion,
    /// Serve the test hooks: the proxy's (/pump/faults, /pump/member, /pump/requests) with
    /// --sds, the data node's (POST /pump/rollback) otherwise.
    #[arg(long)]
    pub test_hooks: bool,
    #[command(flatten)]
    pub tls: super::cluster::TlsArgs,
}

fn meta2_service(s: &str) -> Result<Meta2Service, String> {
    let p = pump_meta2::Peer::parse(s).map_err(|e| e.to_string())?;
    if !p.volume.is_dir() {
        return Err(format!("{}: no such directory", p.volume.display()));
    }
    Ok(Meta2Service {
        address: p.address,
        volume: p.volume,
    })
}

/// Serves the reference SDS proxy until SIGINT/SIGTERM; prints its address first.
async fn run_sds(ns: String, a: NodeArgs) -> Result<(), Failure> {
    let mut seen = std::collections::BTreeSet::new();
    for s in &a.meta2 {
        if !seen.insert(&s.address) {
            return Err(Failure::Usage(format!(
                "--meta2 {}: given twice",
                s.address
            )));
        }
    }
    let config = SdsConfig {
        ns: ns.clone(),
        services: a.meta2,
        meta1: a.meta1,
        version: a.oio_version,
        test_hooks: a.test_hooks,
    };
    let proxy = SdsProxy::new(config).map_err(Failure::Failed)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.proxy_port));
    let (bound, zk) = pump_node::sds::serve(std::sync::Arc::new(proxy), addr)
        .await
        .map_err(|e| Failure::Failed(format!("proxy port {addr}: {e}")))?;
    println!(
        "sds proxy ns={ns} url=http://{bound} oio-version={} zookeeper={zk}",
        a.oio_version
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
    super::cluster::wait_for_stop().await;
    Ok(())
}

/// Runs one node until SIGINT/SIGTERM.
pub async fn run(a: NodeArgs) -> Result<(), Failure> {
    if let Some(ns) = a.sds.clone() {
        return run_sds(ns, a).await;
    }
    let cfg = super::cluster::Up {
        nodes: 1,
        replicas: 0,
        kv_port: a.kv_port,
        rest_port: a.rest_port,
        spares: 0,
        recovery_api: pump_node::RecoveryApi::Both,
        bucket: a.bucket,
        vbuckets: a.vbuckets,
        conflict_resolution: a.conflict_resolution,
        data: a.data,
        auth: a.auth,
        max_connections: a.max_connections,
        test_hooks: a.test_hooks,
        tls: a.tls,
    };
    super::cluster::up(cfg, true).await
}
