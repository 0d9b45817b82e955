//! `memcached://[user:password@]host:port`: writes into a memcached (or any server of the
//! memcached binary protocol) with pipelined quiet writes.
//!
//! ```text
//! mod.rs         MemcachedKind and MemcachedConfig: the spec, validated without I/O
//! sink.rs        MemcachedWire: the quiet-write protocol the one writer (pump::deliver)
//!                drives over -t connections, a key always on the same one
//! ```
//!
//! On the wire, one round is one buffer:
//!
//! ```text
//! SETQ|ADDQ|DELETEQ (opaque = request id) ... NOOP (opaque = the next id)
//! ```
//!
//! Quiet writes answer only on failure and replies keep request order, so the NOOP's answer
//! says the whole round was processed. A plain memcached has no vbuckets: the unit of order
//! is the key. Only SASL_AUTH, VERSION, the quiet writes and NOOP are sent: other opcodes
//! desynchronise a plain memcached.
//!
//! | `-x` key | meaning |
//! |---|---|
//! | add | 1: ADDQ instead of SETQ (the CLI's `--add`); existing keys are kept and counted as skipped |
//! | in_flight | rounds in flight per connection (4) |
//! | timeout | seconds to wait for any answer of the server (30) |

mod sink;

use std::time::Duration;

use pump::{Credentials, Error, Options, RetryPolicy, Sink, SinkKind, Spec};

pub use sink::{sink, MemcachedSink, MemcachedWire};

/// The `memcached://` sink kind.
pub struct MemcachedKind;

impl SinkKind for MemcachedKind {
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
        &["add", "in_flight", "timeout"]
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error> {
        Ok(Box::new(sink(MemcachedConfig::from_spec(spec, options)?)))
    }
}

/// What the sink needs to know, checked without I/O.
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// The spec as the user wrote it, password hidden: every error names it.
    pub spec: String,
    /// `host:port`.
    pub addr: String,
    /// From the URL, else `-U/-P`.
    pub credentials: Option<Credentials>,
    /// ADDQ instead of SETQ.
    pub add: bool,
    /// Connections (`-t`).
    pub connections: usize,
    /// Rounds in flight per connection.
    pub in_flight: usize,
    /// Messages per round at most (`-x batch_max_size`).
    pub round_items: usize,
    /// The longest wait for an answer, and for a connect.
    pub timeout: Duration,
    /// Temporary statuses and reconnects.
    pub retry: RetryPolicy,
}

impl MemcachedConfig {
    /// Reads the spec and options; a path, a bad port or a bad `-x` value is a usage error.
    pub fn from_spec(spec: &Spec, options: &Options) -> Result<MemcachedConfig, Error> {
        let a = spec.authority()?;
        if !a.path.is_empty() && a.path != "/" {
            return Err(Error::usage(format!(
                "{spec}: a memcached has no buckets or paths; expected memcached://[USER:PASSWORD@]HOST:PORT"
            )));
        }
        let credentials = a.credentials(options.dest_auth.as_ref());
        let x = &options.extra;
        let in_flight = x.number("in_flight", 4)?;
        if !(1..=64).contains(&in_flight) {
            return Err(Error::usage("-x in_flight: expected 1 to 64"));
        }
        Ok(MemcachedConfig {
            spec: spec.to_string(),
            addr: a.addr(),
            credentials,
            add: x.flag("add")?,
            connections: options.threads.max(1),
            in_flight: in_flight as usize,
            round_items: x.batch_max_size,
            timeout: x.timeout()?,
            retry: options.retry_policy(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_gives_address_credentials_and_add() {
        let mut o = Options::default();
        o.extra.set("add", "1");
        let c = MemcachedConfig::from_spec(
            &Spec::parse("memcached://u:pw@127.0.0.1:11211").unwrap(),
            &o,
        )
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:11211");
        assert_eq!(c.credentials.as_ref().unwrap().password, "pw");
        assert!(c.add);
        assert!(!c.spec.contains("pw"), "{}", c.spec);
    }

    #[test]
    fn credentials_fall_back_to_dest_auth_and_bad_specs_are_usage_errors() {
        let o = Options {
            dest_auth: Some(Credentials {
                user: "a".into(),
                password: "b".into(),
            }),
            ..Options::default()
        };
        let c = MemcachedConfig::from_spec(&Spec::parse("memcached://h:1").unwrap(), &o).unwrap();
        assert_eq!(c.credentials.unwrap().user, "a");
        for bad in ["memcached://h", "memcached:h:1", "memcached://h:1/bucket"] {
            let e = MemcachedConfig::from_spec(&Spec::parse(bad).unwrap(), &o).unwrap_err();
            assert!(e.is_usage(), "{bad}: {e}");
        }
    }
}
