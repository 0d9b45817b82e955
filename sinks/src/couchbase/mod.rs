//! `couchbase://[user:pass@]host:restport` (or `http://...`; `couchbases://host:httpsport` over
//! TLS): cluster-aware writes.
//!
//! ```text
//! GET /pools/default/buckets/<-B>  -> vBucketServerMap
//! the one writer (pump::deliver) drives router.rs's protocol:
//!   route     each message to the node holding its vbucket active (rehash with -x rehash=1),
//!             on one of that node's -t connections (vbucket modulo -t: a key's writes keep
//!             their order); SETQ_WITH_META/ADDQ_WITH_META/DELQ_WITH_META (write.rs;
//!             SETQ/ADDQ/DELETEQ with -x conflict_resolve=0) ... NOOP rounds, several in
//!             flight on each
//!   statuses  through pump::Verdict::of
//!     Done/Skip  counted (a with-meta write that lost conflict resolution, KEY_EEXISTS,
//!                is skipped)         Fail     reported by key
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
//! | conflict_resolve | 1 | write with metadata (cas, rev seqno, flags, expiry, datatype, xattrs) and let the bucket resolve conflicts; 0: plain SET/DELETE |
//! | timeout | 30 | seconds any network wait may take |
//! | pipeline_depth | 4 | rounds in flight per node connection |
//! | sasl | the strongest listed | the SASL mechanism: PLAIN, SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1 |
//! | cacert, no_ssl_verify | system roots | the TLS trust of `couchbases://` (`--cacert`, `--no-ssl-verify`) |
//!
//! Each node connection says HELLO (JSON, SNAPPY, XATTR, XERROR, SELECT_BUCKET): a value goes
//! out compressed with its datatype where the node agreed to SNAPPY, decompressed elsewhere;
//! xattrs go with a with-meta write where the node agreed to XATTR, and are left out of a
//! plain SET (the document body is written). A lww bucket (its conflictResolutionType) gets
//! FORCE_ACCEPT_WITH_META_OPS, as it requires.

mod router;
#[cfg(test)]
mod tests;
mod write;

use pump::deliver::{DeliverConfig, PipelinedSink};
use pump::{Error, Options, Sink, SinkKind, Spec};

use crate::net;
pub use router::{Router, RouterConfig};

/// `-x` keys of the couchbase sink.
pub const EXTRA_KEYS: &[&str] = &[
    "add",
    "conflict_resolve",
    "timeout",
    "pipeline_depth",
    "sasl",
    "cacert",
    "no_ssl_verify",
];

/// The `couchbase://` sink kind.
pub struct CouchbaseSinkKind;

impl SinkKind for CouchbaseSinkKind {
    fn name(&self) -> &'static str {
        "couchbase"
    }
    fn syntax(&self) -> &'static str {
        "couchbase://[USER:PASSWORD@]HOST:RESTPORT (or http://HOST:RESTPORT; couchbases:// over TLS)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        matches!(
            spec.scheme(),
            Some("couchbase" | "http" | "couchbases" | "https")
        )
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
        let tls = matches!(spec.scheme(), Some("couchbases" | "https"));
        let auth = net::auth(spec, options)?;
        let config = RouterConfig {
            spec: spec.to_string(),
            rest: format!("{}://{}", if tls { "https" } else { "http" }, a.addr()),
            handshake: net::handshake(auth.clone(), options.dest_bucket(), options, tls)?,
            auth,
            bucket: options.dest_bucket().to_string(),
            add: options.extra.flag("add")?,
            with_meta: conflict_resolve(options)?,
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

/// `-x conflict_resolve`: 1 (the default) or 0.
fn conflict_resolve(options: &Options) -> Result<bool, Error> {
    match options.extra.number("conflict_resolve", 1)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(Error::usage(format!(
            "-x conflict_resolve={n}: expected 0 (plain SET/DELETE) or 1 (with metadata)"
        ))),
    }
}
