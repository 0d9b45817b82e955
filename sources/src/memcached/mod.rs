//! `memcached://[user:password@]host:port`: every item of a running memcached, with its key,
//! value, flags and expiry.
//!
//! ```text
//! mod.rs      MemcachedKind and MemcachedConfig: the spec, validated without I/O
//! metadump.rs the key listing: `lru_crawler metadump all` on a text connection
//! source.rs   MemcachedSource: values fetched with pipelined GETKQ + NOOP, sent in batches
//! ```
//!
//! The listing gives each key (URL-encoded) with its absolute expiry (`exp=-1`: none); the
//! binary connection then fetches the values and flags. A key that vanished between listing
//! and fetching (expired, evicted, deleted) is skipped and counted. Messages carry
//! `vbucket = vbucket_of(key, num_vbuckets)` (`-x num_vbuckets`, 1024), so `-l` and backups
//! work as with a Couchbase source.
//!
//! With SASL (`-S`) a memcached turns its text protocol off, and with it the metadump: such a
//! server cannot be listed.

mod metadump;
mod source;

use std::time::Duration;

use pump::{Credentials, Error, Options, Source, SourceKind, Spec};

pub use metadump::{parse_line, Listed};
pub use source::MemcachedSource;

/// The `memcached://` source kind.
pub struct MemcachedKind;

impl SourceKind for MemcachedKind {
    fn name(&self) -> &'static str {
        "memcached"
    }
    fn syntax(&self) -> &'static str {
        "memcached://[USER:PASSWORD@]HOST:PORT"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("memcached")
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["timeout"]
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        Ok(Box::new(MemcachedSource::new(MemcachedConfig::from_spec(
            spec, options,
        )?)))
    }
}

/// What the source needs to know, checked without I/O.
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// The spec, password hidden.
    pub spec: String,
    /// `host:port`.
    pub addr: String,
    /// From the URL, else `-u/-p`.
    pub credentials: Option<Credentials>,
    /// Keys per GETKQ round (and per batch).
    pub batch_items: usize,
    /// vbuckets to hash keys over.
    pub num_vbuckets: u16,
    /// The longest wait for any answer.
    pub timeout: Duration,
}

impl MemcachedConfig {
    /// Reads the spec and options.
    pub fn from_spec(spec: &Spec, options: &Options) -> Result<MemcachedConfig, Error> {
        let a = spec.authority()?;
        if !a.path.is_empty() && a.path != "/" {
            return Err(Error::usage(format!(
                "{spec}: a memcached has no buckets or paths; expected memcached://HOST:PORT"
            )));
        }
        let credentials = a.credentials(options.source_auth.as_ref());
        Ok(MemcachedConfig {
            spec: spec.to_string(),
            addr: format!("{}:{}", a.host, a.port),
            credentials,
            batch_items: options.extra.batch_max_size.max(1),
            num_vbuckets: options.extra.num_vbuckets,
            timeout: options.extra.timeout()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_gives_the_address_and_refuses_paths() {
        let o = Options::default();
        let c =
            MemcachedConfig::from_spec(&Spec::parse("memcached://127.0.0.1:11211").unwrap(), &o)
                .unwrap();
        assert_eq!((c.addr.as_str(), c.num_vbuckets), ("127.0.0.1:11211", 1024));
        let e =
            MemcachedConfig::from_spec(&Spec::parse("memcached://h:1/b").unwrap(), &o).unwrap_err();
        assert!(e.is_usage());
    }
}
