//! `pump node`: one reference node (all vbuckets active) in the foreground.

use std::path::PathBuf;

use clap::Args;

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
    /// Directory where the bucket is persisted across restarts.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// SASL user required of clients (with --password).
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// SASL password.
    #[arg(long, requires = "user")]
    pub password: Option<String>,
}

/// Runs one node until SIGINT/SIGTERM.
pub async fn run(a: NodeArgs) -> Result<(), Failure> {
    let cfg = super::cluster::Up {
        nodes: 1,
        replicas: 0,
        kv_port: a.kv_port,
        rest_port: a.rest_port,
        spares: 0,
        recovery_api: pump_node::RecoveryApi::Both,
        bucket: a.bucket,
        vbuckets: a.vbuckets,
        data: a.data,
        user: a.user,
        password: a.password,
    };
    super::cluster::up(cfg, true).await
}
