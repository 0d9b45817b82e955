//! Options common to every source and sink, as cbtransfer spells them.

use std::collections::BTreeMap;

use crate::collections::DataRules;
use std::time::Duration;

use regex::bytes::Regex;

use crate::batch::BatchLimits;
use crate::channel::Filter;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::spec::{parse_pairs, VbucketSet};

/// A user name and password (`-u/-p` for the source, `-U/-P` for the destination).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ***)", self.user)
    }
}

/// Everything a kind may need to know about the run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-b`: the source bucket.
    pub source_bucket: String,
    /// `-B`: the destination bucket (defaults to the source's).
    pub dest_bucket: Option<String>,
    /// `-u/-p`.
    pub source_auth: Option<Credentials>,
    /// `-U/-P`.
    pub dest_auth: Option<Credentials>,
    /// `-l`: only these vbuckets.
    pub vbuckets: Option<VbucketSet>,
    /// `-k`: only keys matching this regex.
    pub key: Option<Regex>,
    /// `-t`: workers (connections for a network sink, streams for a network source).
    pub threads: usize,
    /// `-n`: read and check, write nothing.
    pub dry_run: bool,
    /// `-v` count.
    pub verbose: u8,
    /// `-x`.
    pub extra: Extra,
    /// `--include-data`, `--exclude-data`, `--map-data`: which collections move, and where.
    pub data: DataRules,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source_bucket: "default".into(),
            dest_bucket: None,
            source_auth: None,
            dest_auth: None,
            vbuckets: None,
            key: None,
            threads: 4,
            dry_run: false,
            verbose: 0,
            extra: Extra::default(),
            data: DataRules::default(),
        }
    }
}

impl Options {
    /// The destination bucket: `-B`, or the source's.
    pub fn dest_bucket(&self) -> &str {
        self.dest_bucket.as_deref().unwrap_or(&self.source_bucket)
    }

    /// Batch limits from `-x batch_max_size,batch_max_bytes`.
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: self.extra.batch_max_size,
            max_bytes: self.extra.batch_max_bytes,
        }
    }

    /// Retry policy from `-x max_retry,backoff_cap`.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retry: self.extra.max_retry,
            cap: self.extra.backoff_cap,
            ..RetryPolicy::default()
        }
    }

    /// The filter the channel applies: `-l`, `-k` and `-x rehash`.
    pub fn filter(&self) -> Filter {
        Filter {
            vbuckets: self.vbuckets.clone(),
            key: self.key.clone(),
            rehash: self.extra.rehash.then_some(self.extra.num_vbuckets),
            ..Filter::default()
        }
    }
}

/// `-x KEY=VAL,...`: the engine's own keys typed, each kind's keys kept as text.
#[derive(Debug, Clone)]
pub struct Extra {
    /// Messages per batch (1000).
    pub batch_max_size: usize,
    /// Bytes per batch (400,000).
    pub batch_max_bytes: usize,
    /// Retries of a temporary failure (10).
    pub max_retry: u32,
    /// The longest pause between retries (10 s).
    pub backoff_cap: Duration,
    /// Recompute vbucket ids from keys (0).
    pub rehash: bool,
    /// Vbuckets of the destination, for rehash and for sources without a map (1024).
    pub num_vbuckets: u16,
    /// Seconds between progress lines when stderr is not a terminal (5).
    pub report: u64,
    kind: BTreeMap<String, String>,
}

impl Default for Extra {
    fn default() -> Self {
        Extra {
            batch_max_size: 1000,
            batch_max_bytes: 400_000,
            max_retry: 10,
            backoff_cap: Duration::from_secs(10),
            rehash: false,
            num_vbuckets: 1024,
            report: 5,
            kind: BTreeMap::new(),
        }
    }
}

/// The engine's `-x` keys, with their defaults, for help texts.
pub const ENGINE_KEYS: &[(&str, &str)] = &[
    ("batch_max_size", "1000: messages per batch"),
    ("batch_max_bytes", "400000: bytes per batch (K, M suffixes)"),
    ("max_retry", "10: retries of a temporary failure"),
    ("backoff_cap", "10: longest pause between retries, seconds"),
    ("rehash", "0: recompute vbucket ids from keys (1 to enable)"),
    (
        "num_vbuckets",
        "1024: vbuckets of the destination, for rehash",
    ),
    ("report", "5: seconds between progress lines"),
];

impl Extra {
    /// Parses `k=v,k=v`. `kind_keys` are the keys the chosen source and sink accept besides
    /// the engine's; any other key is a usage error that lists the accepted ones.
    pub fn parse(s: &str, kind_keys: &[&str]) -> Result<Extra, Error> {
        let pairs = parse_pairs(s).map_err(|e| Error::usage(format!("-x: {e}")))?;
        let mut x = Extra::default();
        for (k, v) in pairs {
            let bad = |what: &str| Error::usage(format!("-x {k}={v}: {what}"));
            match k.as_str() {
                "batch_max_size" => {
                    x.batch_max_size =
                        positive(&v).ok_or_else(|| bad("expected a positive count"))?
                }
                "batch_max_bytes" => {
                    x.batch_max_bytes = parse_size(&v)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| bad("expected a positive size: 400000, 512K, 4M"))?
                }
                "max_retry" => x.max_retry = v.parse().map_err(|_| bad("expected a count"))?,
                "backoff_cap" => {
                    let secs: f64 = v.parse().map_err(|_| bad("expected seconds"))?;
                    if !(0.0..=3600.0).contains(&secs) {
                        return Err(bad("expected 0 to 3600 seconds"));
                    }
                    x.backoff_cap = Duration::from_secs_f64(secs);
                }
                "rehash" => x.rehash = parse_bool(&v).ok_or_else(|| bad("expected 0 or 1"))?,
                "num_vbuckets" => {
                    x.num_vbuckets = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("expected 1 to 65535"))?
                }
                "report" => x.report = positive(&v).ok_or_else(|| bad("expected seconds"))? as u64,
                other if kind_keys.contains(&other) => {
                    x.kind.insert(k, v);
                }
                _ => {
                    let mut known: Vec<&str> = ENGINE_KEYS.iter().map(|(k, _)| *k).collect();
                    known.extend(kind_keys);
                    return Err(Error::usage(format!(
                        "-x {k}: unknown key; known keys here: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(x)
    }

    /// A kind's key as text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.kind.get(key).map(String::as_str)
    }

    /// A kind's key as a flag (`1`, `true`, `yes`).
    pub fn flag(&self, key: &str) -> Result<bool, Error> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => {
                parse_bool(v).ok_or_else(|| Error::usage(format!("-x {key}={v}: expected 0 or 1")))
            }
        }
    }

    /// A kind's key as a number, or `default`.
    pub fn number(&self, key: &str, default: u64) -> Result<u64, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Error::usage(format!("-x {key}={v}: expected a number"))),
        }
    }

    /// A kind's key as a positive size in bytes (`65536`, `64K`, `256M`, `1G`), or `default`.
    pub fn size(&self, key: &str, default: u64) -> Result<u64, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_size(v).ok_or_else(|| {
                Error::usage(format!(
                    "-x {key}={v}: expected a positive size: 65536, 64K, 256M, 1G"
                ))
            }),
        }
    }

    /// `-x timeout=SECONDS` (30 by default, at least 1): the longest any network wait may take.
    pub fn timeout(&self) -> Result<Duration, Error> {
        match self.number("timeout", 30)? {
            0 => Err(Error::usage("-x timeout=0: expected at least 1 second")),
            secs => Ok(Duration::from_secs(secs)),
        }
    }

    /// Sets a kind's key (embedders and tests).
    pub fn set(&mut self, key: &str, value: &str) {
        self.kind.insert(key.to_string(), value.to_string());
    }
}

/// A positive size in bytes: digits, then optionally K, M or G (KiB, MiB, GiB: 1024 based,
/// either case, with or without a trailing B or iB).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return None,
    };
    n.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)?
        .checked_mul(1 << shift)
}

fn positive(v: &str) -> Option<usize> {
    v.parse::<usize>().ok().filter(|n| *n > 0)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_thirty_seconds_unless_set_and_never_zero() {
        let mut x = Extra::default();
        assert_eq!(x.timeout().unwrap(), Duration::from_secs(30));
        x.set("timeout", "5");
        assert_eq!(x.timeout().unwrap(), Duration::from_secs(5));
        x.set("timeout", "0");
        assert!(x.timeout().unwrap_err().is_usage());
    }

    #[test]
    fn extra_parses_engine_and_kind_keys_and_rejects_unknown_ones() {
        let x = Extra::parse(
            "batch_max_size=50,batch_max_bytes=1000,rehash=1,add=1",
            &["add"],
        )
        .unwrap();
        assert_eq!(
            (x.batch_max_size, x.batch_max_bytes, x.rehash),
            (50, 1000, true)
        );
        assert!(x.flag("add").unwrap());
        let err = Extra::parse("nope=1", &["add"]).unwrap_err();
        assert!(err.is_usage());
        assert!(
            err.to_string().contains("nope") && err.to_string().contains("add"),
            "{err}"
        );
        assert!(Extra::parse("batch_max_size=0", &[]).is_err());
        // A kind's own key is unknown unless that kind is in the transfer.
        assert!(Extra::parse("cbb_max_mb=1", &[]).is_err());
        assert_eq!(
            Extra::parse("cbb_max_mb=1", &["cbb_max_mb"])
                .unwrap()
                .number("cbb_max_mb", 7)
                .unwrap(),
            1
        );
        assert_eq!(
            Extra::parse("batch_max_bytes=512K", &[])
                .unwrap()
                .batch_max_bytes,
            512 << 10
        );
        assert!(Extra::parse("max_retry=x", &[])
            .unwrap_err()
            .to_string()
            .contains("max_retry=x"));
    }

    #[test]
    fn sizes_take_k_m_g_suffixes_and_refuse_zero_overflow_and_junk() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("256m"), Some(256 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("3MB"), Some(3 << 20));
        for bad in [
            "",
            "0",
            "0M",
            "M",
            "-1",
            "1.5M",
            "12T",
            "1 M x",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_size("17179869184G"), None, "overflows u64");
        let mut x = Extra::default();
        assert_eq!(x.size("sort_memory", 7).unwrap(), 7);
        x.set("sort_memory", "16M");
        assert_eq!(x.size("sort_memory", 7).unwrap(), 16 << 20);
        x.set("sort_memory", "lots");
        let e = x.size("sort_memory", 7).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("sort_memory=lots"),
            "{e}"
        );
    }
}
