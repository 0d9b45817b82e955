//! `couchbase://[user:pass@]host:restport` (or `http://...`): cluster-aware writes.
//!
//! ```text
//! GET /pools/default/buckets/<-B>  -> vBucketServerMap
//! the one writer (pump::deliver) drives router.rs's protocol:
//!   route     each message to the node holding its vbucket active (rehash with -x rehash=1),
//!             on one of that node's -t connections (vbucket modulo -t: a key's writes keep
//!             their order); SETQ/ADDQ/DELETEQ ... NOOP rounds, several in flight on each
//!   statuses  through pump::Verdict::of
//!     Done/Skip  counted             Fail     reported by key
//!     Retry      the vbucket's writes from that one on wait out a backoff, then go again
//!     Reroute    (NOT_MY_VBUCKET) the same, after a fresh map: re-routed in order
//! ```
//! A node whose connection is lost is reconnected with backoff and everything unsettled on it
//! resent, until max_retry attempts in a row; then the run fails naming it. A dry run fetches
//! the map and connects to every node (authenticated, bucket selected).
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | add | 0 | ADD instead of SET (`-a`): existing keys are skipped |
//! | timeout | 30 | seconds any network wait may take |
//! | pipeline_depth | 4 | rounds in flight per node connection |

mod router;
#[cfg(test)]
mod tests;

use pump::deliver::{DeliverConfig, PipelinedSink};
use pump::{Error, Options, Sink, SinkKind, Spec};

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
        let config = RouterConfig {
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
        };
        let deliver = DeliverConfig {
            connections: config.connections,
            depth: config.depth,
            round_items: options.extra.batch_max_size,
            retry: config.retry,
            timeout: config.timeout,
        };
        Ok(Box::new(PipelinedSink::new(Router::new(config), deliver)))
    }
}

/// Writes into a cluster: the [`Router`] run by the one writer.
pub type CouchbaseSink = PipelinedSink<Router>;
