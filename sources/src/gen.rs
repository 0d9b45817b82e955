//! `gen:[max-items=N,min-value-size=N,prefix=S,json=0|1,...]`: generated items, as
//! cbtransfer's `gen:` source makes them, for benchmarks and demos.
//!
//! Keys are `<prefix><index>`, vbucket ids are the real CRC32 hash of the key, values are
//! `min-value-size` bytes (a JSON document padded to that size with `json=1`).
//!
//! | key | default | meaning |
//! |---|---|---|
//! | max-items | 10000 | items to generate |
//! | min-value-size | 10 | bytes per value |
//! | prefix | `pymc` | key prefix |
//! | json | 0 | values are JSON documents (datatype JSON) |
//! | low-compression | 0 | random value bytes instead of a repeated pattern |
//! | flags | 0 | item flags |
//! | expiry | 0 | item expiry |
//! | vbuckets | 1024 | vbuckets to hash keys over |
//! | start | 0 | first index |

use std::fmt::Write as _;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use pump::pipeline::Context;
use pump::{BatchSender, Error, Message, Options, Source, SourceKind, Spec};
use rand::RngCore;

/// The `gen:` kind.
pub struct GenKind;

impl SourceKind for GenKind {
    fn name(&self) -> &'static str {
        "gen"
    }
    fn syntax(&self) -> &'static str {
        "gen:[max-items=N,min-value-size=N,prefix=S,json=0|1,low-compression=0|1,flags=N,expiry=N,vbuckets=N,start=N]"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("gen")
    }
    fn open(&self, spec: &Spec, _options: &Options) -> Result<Box<dyn Source>, Error> {
        Ok(Box::new(GenSource {
            config: GenConfig::from_spec(spec)?,
        }))
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    pub max_items: u64,
    pub min_value_size: usize,
    pub prefix: String,
    pub json: bool,
    pub low_compression: bool,
    pub flags: u32,
    pub expiry: u32,
    pub vbuckets: u16,
    pub start: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            max_items: 10_000,
            min_value_size: 10,
            prefix: "pymc".into(),
            json: false,
            low_compression: false,
            flags: 0,
            expiry: 0,
            vbuckets: 1024,
            start: 0,
        }
    }
}

impl GenConfig {
    /// Reads the spec's parameters; an unknown key or a bad number is a usage error naming it.
    pub fn from_spec(spec: &Spec) -> Result<GenConfig, Error> {
        let mut c = GenConfig::default();
        for (k, v) in spec.params()? {
            let bad = || Error::usage(format!("{spec}: {k}={v} is not a valid value"));
            match k.as_str() {
                "max_items" => c.max_items = v.parse().map_err(|_| bad())?,
                "min_value_size" => c.min_value_size = v.parse().map_err(|_| bad())?,
                "prefix" => c.prefix = v,
                "json" => c.json = flag(&v).ok_or_else(bad)?,
                "low_compression" => c.low_compression = flag(&v).ok_or_else(bad)?,
                "flags" => c.flags = v.parse().map_err(|_| bad())?,
                "expiry" => c.expiry = v.parse().map_err(|_| bad())?,
                "vbuckets" => c.vbuckets = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
                "start" => c.start = v.parse().map_err(|_| bad())?,
                _ => {
                    return Err(Error::usage(format!(
                        "{spec}: unknown key {k:?}; gen: takes max-items, min-value-size, prefix, json, low-compression, flags, expiry, vbuckets, start"
                    )))
                }
            }
        }
        if c.min_value_size > 20 * 1024 * 1024 {
            return Err(Error::usage(format!("{spec}: min-value-size above 20 MiB")));
        }
        Ok(c)
    }

    /// The key of item `i`.
    pub fn key(&self, i: u64) -> String {
        format!("{}{}", self.prefix, i)
    }
}

fn flag(v: &str) -> Option<bool> {
    match v {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Generates `max_items` items.
pub struct GenSource {
    config: GenConfig,
}

impl GenSource {
    /// A generator for `config`.
    pub fn new(config: GenConfig) -> Self {
        GenSource { config }
    }

    /// Builds items `from..to` into one buffer and slices the messages out of it.
    fn build(&self, from: u64, to: u64, pattern: &Bytes) -> Vec<Message> {
        let c = &self.config;
        let n = (to - from) as usize;
        let per_item = c.prefix.len() + 20 + if c.json { c.min_value_size + 96 } else { 0 };
        let mut buf = BytesMut::with_capacity(n * per_item);
        let mut spans = Vec::with_capacity(n);
        let mut tmp = String::new();
        for i in from..to {
            let k0 = buf.len();
            buf.put_slice(c.prefix.as_bytes());
            tmp.clear();
            let _ = write!(tmp, "{i}");
            buf.put_slice(tmp.as_bytes());
            let k1 = buf.len();
            if c.json {
                tmp.clear();
                let _ = write!(
                    tmp,
                    "{{\"name\":\"{}{i}\",\"index\":{i},\"age\":{},\"body\":\"",
                    c.prefix,
                    i % 100
                );
                buf.put_slice(tmp.as_bytes());
                let pad = c.min_value_size.saturating_sub(tmp.len() + 2);
                buf.put_slice(&pattern[..pad.min(pattern.len())]);
                buf.put_slice(b"\"}");
            }
            spans.push((k0, k1, buf.len()));
        }
        let buf = buf.freeze();
        spans
            .into_iter()
            .enumerate()
            .map(|(j, (k0, k1, v1))| {
                let key = buf.slice(k0..k1);
                let value = if c.json {
                    buf.slice(k1..v1)
                } else {
                    pattern.clone()
                };
                Message {
                    vbucket: pump_protocol::vbucket_of(&key, c.vbuckets),
                    key,
                    value,
                    flags: c.flags,
                    expiry: c.expiry,
                    seqno: from + j as u64 + 1,
                    datatype: if c.json { 0x01 } else { 0 },
                    ..Message::default()
                }
            })
            .collect()
    }
}

#[async_trait]
impl Source for GenSource {
    async fn run(self: Box<Self>, out: BatchSender, ctx: Context) -> Result<(), Error> {
        let c = &self.config;
        out.stats().set_expected(c.max_items);
        let pattern: Vec<u8> = if c.low_compression {
            let mut v = vec![0u8; c.min_value_size];
            rand::rng().fill_bytes(&mut v);
            // Keep it printable so every sink (CSV, stdout) shows it plainly.
            v.iter_mut().for_each(|b| *b = b'a' + (*b % 26));
            v
        } else {
            (0..c.min_value_size)
                .map(|i| b'0' + (i % 10) as u8)
                .collect()
        };
        // Every plain value shares this one pattern. Made static (one allocation per run, never
        // freed), cloning it costs nothing, where a shared count would be bumped by the source
        // and dropped by the sink for every message, from two threads.
        let pattern = Bytes::from_static(Box::leak(pattern.into_boxed_slice()));
        let per_batch = ctx.options.extra.batch_max_size.max(1) as u64;
        let per_batch = match ctx
            .options
            .extra
            .batch_max_bytes
            .checked_div(c.min_value_size)
        {
            Some(fit) => per_batch.min(fit.max(1) as u64),
            None => per_batch,
        };
        let end = c.start + c.max_items;
        let mut i = c.start;
        while i < end {
            let to = (i + per_batch).min(end);
            out.send_messages(self.build(i, to, &pattern)).await?;
            i = to;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_keys_parse_and_unknown_ones_are_refused() {
        let spec = Spec::parse("gen:max-items=5,min-value-size=20,prefix=k_,json=1").unwrap();
        let c = GenConfig::from_spec(&spec).unwrap();
        assert_eq!(
            (c.max_items, c.min_value_size, c.prefix.as_str(), c.json),
            (5, 20, "k_", true)
        );
        let err = GenConfig::from_spec(&Spec::parse("gen:colour=blue").unwrap()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(GenConfig::from_spec(&Spec::parse("gen:max-items=lots").unwrap()).is_err());
    }

    #[test]
    fn items_have_real_vbucket_ids_and_sized_values() {
        let g = GenSource::new(GenConfig {
            prefix: String::new(),
            min_value_size: 100,
            ..GenConfig::default()
        });
        let pattern: Bytes = vec![b'x'; 100].into();
        let msgs = g.build(0, 50, &pattern);
        assert_eq!(msgs.len(), 50);
        for m in &msgs {
            assert_eq!(m.vbucket, pump_protocol::vbucket_of(&m.key, 1024));
            assert_eq!(m.value.len(), 100);
        }
        assert!(msgs.iter().any(|m| m.vbucket != msgs[0].vbucket));
    }

    #[test]
    fn json_values_parse_as_json_of_at_least_the_minimum_size() {
        let g = GenSource::new(GenConfig {
            json: true,
            min_value_size: 200,
            ..GenConfig::default()
        });
        let pattern: Bytes = vec![b'x'; 200].into();
        for m in g.build(0, 10, &pattern) {
            let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
            assert_eq!(v["name"], format!("pymc{}", m.seqno - 1));
            assert!(m.value.len() >= 200, "{}", m.value.len());
            assert_eq!(m.datatype, 1);
        }
    }
}
