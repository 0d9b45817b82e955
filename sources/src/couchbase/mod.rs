//! `couchbase://[user:pass@]host:restport` (or `http://...`, as cbtransfer accepts; or
//! `couchbases://host:httpsport`, REST over HTTPS and KV over TLS): every vbucket of a bucket,
//! each from its active node.
//!
//! ```text
//! GET http://host:restport/pools/default/buckets/<-b>   (-u/-p as HTTP basic auth)
//!   -> vBucketServerMap {serverList, vBucketMap}
//! (couchbases: GET https://host:port/pools/default/b/<-b>, each node at its kvSSL port)
//! group the vbuckets (-l, or all of the map) by active server
//! stream every group from its node, nodes in parallel:
//!   DCP (default; -x checkpoint=PATH resumes)  or  TAP with LIST_VBUCKETS (-x stream=tap)
//! ```
//! A vbucket with no active copy (-1) fails the run before anything is read: a backup
//! missing vbuckets would be silently incomplete.
//!
//! | -x key | default | meaning |
//! |---|---|---|
//! | stream | dcp | `dcp` or `tap` |
//! | checkpoint | none | DCP resume file |
//! | tap_backfill | 0 | TAP: BACKFILL since 0 instead of DUMP |
//! | timeout | 30 | seconds any network wait may take |
//! | sasl | the strongest listed | the SASL mechanism: PLAIN, SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1 |
//! | cacert, no_ssl_verify | system roots | the TLS trust of `couchbases://` (`--cacert`, `--no-ssl-verify`) |

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchSender, Error, Options, Source, SourceKind, Spec};
use pump_client::{Auth, VbucketMap};

use crate::dcp::{self, DcpConfig};
use crate::net;
use crate::tap::{self, TapConfig};
use tokio_util::sync::CancellationToken;

/// `-x` keys of the couchbase source.
pub const EXTRA_KEYS: &[&str] = &[
    "stream",
    "checkpoint",
    "tap_backfill",
    "timeout",
    "sasl",
    "cacert",
    "no_ssl_verify",
];

/// The `couchbase://` source kind.
pub struct CouchbaseSourceKind;

impl SourceKind for CouchbaseSourceKind {
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
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let a = spec.authority()?;
        let stream = match options.extra.get("stream").unwrap_or("dcp") {
            "dcp" => Stream::Dcp(DcpConfig::from_options(spec, options)?),
            "tap" => Stream::Tap(TapConfig::from_options(spec, options)?),
            other => {
                return Err(Error::usage(format!(
                    "-x stream={other}: expected dcp or tap"
                )))
            }
        };
        let tls = matches!(spec.scheme(), Some("couchbases" | "https"));
        Ok(Box::new(CouchbaseSource {
            spec: spec.to_string(),
            rest: format!("{}://{}", if tls { "https" } else { "http" }, a.addr()),
            tls: tls.then(|| net::tls_client(options)).transpose()?,
            auth: net::auth(spec, options)?,
            bucket: options.source_bucket.clone(),
            vbuckets: options.vbuckets.as_ref().map(|v| v.iter().collect()),
            timeout: options.extra.timeout()?,
            stream,
        }))
    }
}

/// Which protocol streams each node.
#[derive(Debug, Clone)]
pub enum Stream {
    Dcp(DcpConfig),
    Tap(TapConfig),
}

/// A whole bucket of a cluster.
pub struct CouchbaseSource {
    spec: String,
    rest: String,
    /// REST over HTTPS and KV over TLS, as `couchbases://` asks.
    tls: Option<pump_client::TlsClient>,
    auth: Option<Auth>,
    bucket: String,
    vbuckets: Option<Vec<u16>>,
    timeout: std::time::Duration,
    stream: Stream,
}

#[async_trait]
impl Source for CouchbaseSource {
    async fn run(self: Box<Self>, out: BatchSender, ctx: Context) -> Result<(), Error> {
        let stream = match &self.stream {
            Stream::Dcp(c) => Stream::Dcp(DcpConfig {
                collections: ctx.collections.clone(),
                ..c.clone()
            }),
            Stream::Tap(c) => Stream::Tap(c.clone()),
        };
        let map = VbucketMap::fetch_with(
            &self.rest,
            &self.bucket,
            self.auth.as_ref(),
            self.timeout,
            self.tls.as_ref(),
        )
        .await
        .map_err(|e| Error::source(&self.spec, e))?;
        let wanted: Vec<u16> = match &self.vbuckets {
            Some(v) => v.clone(),
            None => (0..map.num_vbuckets() as u16).collect(),
        };
        let (groups, unowned) = map.by_active_server(wanted);
        if !unowned.is_empty() {
            return Err(Error::source(
                &self.spec,
                format!(
                    "{} vbuckets have no active node in the map (first: {:?}); fail them over or pass -l without them",
                    unowned.len(),
                    &unowned[..unowned.len().min(8)]
                ),
            ));
        }
        let ckpt = match &self.stream {
            Stream::Dcp(c) => c.load_checkpoint()?,
            Stream::Tap(_) => None,
        };
        let mut tasks = tokio::task::JoinSet::new();
        // Each node's streams read: the source has read everything (see Context::source_done).
        let mut nodes_read = Vec::new();
        for (server, vbs) in groups {
            let addr = map.servers[server].clone();
            let (spec, out, stream, ckpt) =
                (self.spec.clone(), out.clone(), stream.clone(), ckpt.clone());
            let read = CancellationToken::new();
            nodes_read.push(read.clone());
            tasks.spawn(async move {
                match stream {
                    Stream::Dcp(c) => {
                        dcp::stream_node(&spec, &addr, &c, vbs, &out, ckpt, Some(read))
                            .await
                            .map(|_| ())
                    }
                    Stream::Tap(c) => tap::stream(&spec, &addr, &c, Some(vbs), &out).await,
                }
            });
        }
        let all_read = matches!(self.stream, Stream::Dcp(_)).then(|| {
            let done = ctx.source_done.clone();
            tokio::spawn(async move {
                for node in nodes_read {
                    node.cancelled().await;
                }
                done.cancel();
            })
        });
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            let r = r.unwrap_or_else(|e| {
                Err(Error::source(&self.spec, format!("worker panicked: {e}")))
            });
            if let Err(e) = r {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
                }
            }
        }
        if let Some(watch) = all_read {
            watch.abort();
        }
        if let Some(c) = &ckpt {
            if let Ok(mut f) = c.lock() {
                f.save()?;
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
