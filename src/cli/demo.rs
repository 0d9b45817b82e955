//! `pump demo`: the whole repair on the embedded default, in one command. Two local clusters of
//! reference nodes hold the same items; a node of the second fails over without replicas, so
//! its vbuckets are lost; `pump recover` brings them back from the first; a check reads both
//! clusters through the pump and compares every item.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use clap::Args;
use pump::{BatchWriter, Context, Delivery, Error, Message, Options, Spec, WriterSink};
use pump_node::{Cluster, ClusterConfig, NodeConfig, RecoveryApi};

use super::Failure;
use crate::repair::recover::{recover, RecoverRequest};

/// Arguments of `pump demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Items loaded into each cluster.
    #[arg(long, default_value_t = 100_000)]
    pub items: u64,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    pub nodes: u64,
    /// Print every recovered vbucket, not the first ten.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

async fn start(nodes: usize, spares: usize) -> Result<Arc<Cluster>, Failure> {
    Cluster::start(ClusterConfig {
        nodes,
        replicas: 0,
        node: NodeConfig::default(),
        kv_port: 0,
        rest_port: 0,
        spares,
        recovery_api: RecoveryApi::Both,
        tls: None,
    })
    .await
    .map_err(|e| Failure::Failed(format!("cannot start a local cluster: {e}")))
}

fn rest(c: &Cluster) -> String {
    format!("http://{}", c.lock().nodes[0].rest)
}

/// Runs `source -> sink` through the pump with default options.
async fn transfer(
    source: &str,
    sink: Box<dyn pump::Sink>,
    options: Options,
) -> Result<pump::Summary, Failure> {
    let registry = super::registry();
    let spec = Spec::parse(source)?;
    let source = registry.source_kind(&spec)?.open(&spec, &options)?;
    Ok(pump::run(source, sink, Context::new(options)).await?)
}

async fn load(c: &Cluster, items: u64) -> Result<pump::Summary, Failure> {
    let registry = super::registry();
    let options = Options::default();
    let spec = Spec::parse(&rest(c).replacen("http://", "couchbase://", 1))?;
    let sink = registry.sink_kind(&spec)?.open(&spec, &options)?;
    let summary = transfer(
        &format!("gen:max-items={items},min-value-size=100,prefix=demo_"),
        sink,
        options,
    )
    .await?;
    if summary.counts.failed > 0 {
        return Err(Failure::Failed(format!(
            "load: {} items failed",
            summary.counts.failed
        )));
    }
    Ok(summary)
}

/// key -> a hash of (flags, expiry, value), of every item a cluster holds.
type Contents = HashMap<Bytes, u64>;

/// A sink that keeps a fingerprint of every item it is given.
struct Fingerprints(Arc<Mutex<Contents>>);

#[async_trait]
impl BatchWriter for Fingerprints {
    async fn check(&mut self, _ctx: &pump::Context) -> Result<(), Error> {
        Ok(())
    }

    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for m in &messages {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (m.flags, m.expiry, &m.value[..]).hash(&mut h);
            all.insert(m.key.clone(), h.finish());
        }
        Ok(Delivery::all(messages.len()))
    }
}

async fn contents(c: &Cluster) -> Result<Contents, Failure> {
    let all = Arc::new(Mutex::new(Contents::new()));
    let sink = Box::new(WriterSink(Fingerprints(all.clone())));
    let source = rest(c).replacen("http://", "couchbase://", 1);
    transfer(&source, sink, Options::default()).await?;
    let out = std::mem::take(&mut *all.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(out)
}

/// Runs the demo; exit 1 when the check finds a difference.
pub async fn run(a: DemoArgs) -> Result<(), Failure> {
    let n = a.nodes as usize;
    eprintln!("pump demo: two local clusters, a failover, a recovery, a check\n");
    let from = start(n, 0).await?;
    let to = start(n, 1).await?;
    let (from_url, to_url) = (rest(&from), rest(&to));
    eprintln!("cluster A (the copy)     {n} nodes, REST {from_url}");
    eprintln!("cluster B (to repair)    {n} nodes + 1 spare, REST {to_url}");

    for (name, c) in [("A", &from), ("B", &to)] {
        let s = load(c, a.items).await?;
        eprintln!(
            "load {name}: {} items in {:.2} s ({:.0} items/s)",
            s.counts.items_written,
            s.elapsed.as_secs_f64(),
            s.counts.items_written as f64 / s.elapsed.as_secs_f64().max(1e-9)
        );
    }

    let (failed, spare) = {
        let s = to.lock();
        (s.nodes[1].otp.clone(), s.nodes[n].otp.clone())
    };
    to.failover(1).await.map_err(Failure::Failed)?;
    let missing = to.missing_vbuckets();
    eprintln!(
        "\nfailover of {failed} in B, no replicas: {} vbuckets have no copy left in B",
        missing.len()
    );

    eprintln!("\npump recover {from_url} {to_url} -a {spare} -r {failed}");
    let started = Instant::now();
    let report = recover(RecoverRequest {
        from: from_url.clone(),
        to: to_url.clone(),
        bucket_source: "default".into(),
        bucket_destination: "default".into(),
        source_auth: None,
        dest_auth: None,
        vbuckets: None,
        add_node: Some(spare),
        remove_node: Some(failed),
        dry_run: false,
        verbose: 0,
        threads: 4,
    })
    .await
    .map_err(|e| Failure::Failed(e.to_string()))?;
    let rows = if a.verbose > 0 { usize::MAX } else { 10 };
    super::recover::print_report(&report, started.elapsed().as_secs_f64(), rows);

    let (ca, cb) = (contents(&from).await?, contents(&to).await?);
    let still = to.missing_vbuckets();
    let differ: Vec<&Bytes> = ca
        .iter()
        .filter(|(k, h)| cb.get(*k) != Some(h))
        .map(|(k, _)| k)
        .collect();
    let extra = cb.keys().filter(|k| !ca.contains_key(*k)).count();
    eprintln!(
        "\ncheck: {} vbuckets missing in B; {} items in A, {} in B; {} differ or lack, {extra} extra",
        still.len(),
        ca.len(),
        cb.len(),
        differ.len()
    );
    from.shutdown().await.ok();
    to.shutdown().await.ok();
    if !still.is_empty() || !differ.is_empty() || extra > 0 || ca.len() as u64 != a.items {
        let first = differ
            .first()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        return Err(Failure::Failed(format!(
            "check failed: B is not whole or differs from A (first differing key: {first:?})"
        )));
    }
    eprintln!("check passed: B is whole again, every key, flags, expiry and value equal to A");
    Ok(())
}
