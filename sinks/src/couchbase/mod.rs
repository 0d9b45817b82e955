//! `couchbase://[user:pass@]host:restport` (or `http://...`): cluster-aware writes.
//!
//! ```text
//! GET /pools/default/buckets/<-B>  -> vBucketServerMap
//! for each batch, in order:
//!   split by the node holding each message's vbucket active (rehash with -x rehash=1)
//!   per node: SETQ/ADDQ/DELETEQ ... NOOP on one of that node's `-t` Pipelines (vbucket
//!   modulo -t, so a key's writes keep their order; several batches in flight on each)
//!   settle (in its own task): every status through pump::Verdict::of
//!     Done/Skip  counted             Fail     reported in Delivery.failed
//!     Retry      resent alone after RetryPolicy::backoff
//!     Reroute    (NOT_MY_VBUCKET) the map is fetched again and those messages re-routed
//!   then the batch's ack is confirmed
//! ```
//! A node that cannot be reached counts as temporary: its messages are retried (after a
//! fresh map) until max_retry, then the run fails naming it.
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | add | 0 | ADD instead of SET (`-a`): existing keys are skipped |
//! | timeout | 30 | seconds any network wait may take |
//! | pipeline_depth | 4 | batches in flight per node connection |

mod router;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchReceiver, Error, Options, Sink, SinkKind, Spec};

use crate::net;
pub use router::{Router, RouterConfig};

/// `-x` keys of the couchbase sink.
pub const EXTRA_KEYS: &[&str] = &["add", "timeout", "pipeline_depth"];

/// The `couchbase://` sink kind.
pub struct CouchbaseSinkKind;

impl SinkKind for CouchbaseSinkKind {
    fn name(&self) -> &'static str {
        "couchbase"
    }
    fn syntax(&self) -> &'static str {
        "couchbase://[USER:PASSWORD@]HOST:RESTPORT (or http://HOST:RESTPORT)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        matches!(spec.scheme(), Some("couchbase" | "http"))
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        EXTRA_KEYS
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error> {
        let a = spec.authority()?;
        let depth = options.extra.number("pipeline_depth", 4)?;
        if depth == 0 || depth > 1024 {
            return Err(Error::usage(format!(
                "-x pipeline_depth={depth}: expected 1 to 1024"
            )));
        }
        Ok(Box::new(CouchbaseSink {
            config: RouterConfig {
                spec: spec.to_string(),
                rest: pump::spec::RestUrl::of_authority(&a, None)
                    .base()
                    .to_string(),
                auth: net::auth(spec, options)?,
                bucket: options.dest_bucket().to_string(),
                add: options.extra.flag("add")?,
                rehash: options.extra.rehash,
                timeout: options.extra.timeout()?,
                retry: options.retry_policy(),
                depth: depth as usize,
                connections: options.threads.max(1),
            },
            dry_run: options.dry_run,
        }))
    }
}

/// Writes into a cluster.
pub struct CouchbaseSink {
    config: RouterConfig,
    dry_run: bool,
}

#[async_trait]
impl Sink for CouchbaseSink {
    async fn run(self: Box<Self>, input: BatchReceiver, _ctx: Context) -> Result<(), Error> {
        let router = Arc::new(Router::connect(self.config).await?);
        if self.dry_run {
            while let Some(batch) = input.recv().await {
                let n = batch.len();
                let (_, ack) = batch.into_parts();
                ack.confirm(pump::Delivery {
                    skipped: n,
                    ..pump::Delivery::default()
                });
            }
            return Ok(());
        }
        let mut settling = tokio::task::JoinSet::new();
        loop {
            let batch = tokio::select! {
                b = input.recv() => b,
                Some(r) = settling.join_next() => {
                    flatten(r)?;
                    continue;
                }
            };
            let Some(batch) = batch else { break };
            let (messages, ack) = batch.into_parts();
            let round = router.send(&messages, None).await?;
            let router = router.clone();
            settling.spawn(async move {
                let delivery = router.settle(messages, round).await?;
                ack.confirm(delivery);
                Ok::<(), Error>(())
            });
        }
        while let Some(r) = settling.join_next().await {
            flatten(r)?;
        }
        Ok(())
    }
}

fn flatten(r: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    r.unwrap_or_else(|e| Err(Error::sink("couchbase", format!("worker panicked: {e}"))))
}
