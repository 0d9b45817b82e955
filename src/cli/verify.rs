//! `pump verify A B`: do two item endpoints (backups, clusters, nodes, memcached, CSV) hold the
//! same items?
//!
//! ```text
//! pass 1  A and B read at once, each into a digest: per vbucket (from the key's hash, so two
//!         kinds that number vbuckets differently still compare), key hash -> hash of value,
//!         flags and expiry, the last version of a key winning (a deletion removes it)
//!         -> per vbucket: count and an order-free digest; the key hashes that differ
//! pass 2  only when something differs: A and B read again, only the source vbuckets that hold
//!         a differing key (-l), keeping those keys' bytes and metadata, to name them
//! ```
//! Output: the vbuckets that differ (counts and digests), then each key missing from B, extra
//! in B, or with a different value, flags or expiry; exit 1 when they differ. Memory: about
//! 24 bytes per key per side in pass 1.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use clap::Args;
use pump::pipeline::Context;
use pump::{BatchReceiver, Delivery, Error, Extra, Message, Options, Sink, Spec, VbucketSet};
use serde_json::{json, Value};

use super::credentials::CredentialArgs;
use super::{print_out, registry, Failure};

/// `pump verify`'s arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The first endpoint (any source: a backup directory, couchbase://, dcp://, memcached://, csv:FILE).
    pub a: String,
    /// The second endpoint.
    pub b: String,
    /// A's bucket.
    #[arg(short = 'b', long = "bucket-a", default_value = "default")]
    pub bucket_a: String,
    /// B's bucket (A's by default).
    #[arg(short = 'B', long = "bucket-b")]
    pub bucket_b: Option<String>,
    /// `-u/-p` for A, `-U/-P` for B.
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Only these vbuckets: 500,612,700-712.
    #[arg(short = 'l', long = "vbucket-list")]
    pub vbucket_list: Option<String>,
    /// Only keys matching this regular expression.
    #[arg(short = 'k', long = "key")]
    pub key: Option<String>,
    /// Streams of a network endpoint.
    #[arg(short = 't', long = "threads", default_value_t = 4)]
    pub threads: usize,
    /// Settings for both endpoints' kinds (timeout=30, allow_partial=1, ...).
    #[arg(short = 'x', long = "extra", default_value = "")]
    pub extra: String,
    /// At most this many keys listed per kind of difference.
    #[arg(long = "max-keys", default_value_t = 100)]
    pub max_keys: usize,
    /// One JSON object on standard output.
    #[arg(long)]
    pub json: bool,
    /// More output.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A key's state in pass 1: the hash of value, flags and expiry, and the vbucket its source
/// gave it (for pass 2's -l).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    value: u64,
    source_vb: u16,
}

/// A key's state in pass 2.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Full {
    key: Vec<u8>,
    value_len: usize,
    value_head: Vec<u8>,
    value: u64,
    flags: u32,
    expiry: u32,
}

#[derive(Debug, Default)]
struct Digest {
    /// Per vbucket (from the key's hash): key hash -> entry.
    vbuckets: BTreeMap<u16, HashMap<u64, Entry>>,
    /// Pass 2: the keys wanted, and what was found of them.
    wanted: Option<Arc<HashSet<u64>>>,
    found: HashMap<u64, Full>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn value_hash(m: &Message) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.value.hash(&mut h);
    m.flags.hash(&mut h);
    m.expiry.hash(&mut h);
    h.finish()
}

/// Mixes a key and value hash into one term of a vbucket's order-free digest.
fn mix(k: u64, v: u64) -> u64 {
    let mut z = k ^ v.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sink both endpoints are read into.
struct DigestSink {
    digest: Arc<Mutex<Digest>>,
    num_vbuckets: u16,
}

#[async_trait]
impl Sink for DigestSink {
    /// A digest in memory: nothing to open or check.
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    async fn run(self: Box<Self>, input: BatchReceiver, _ctx: Context) -> Result<(), Error> {
        let wanted = self
            .digest
            .lock()
            .map_err(|_| Error::sink("verify", "digest lock poisoned"))?
            .wanted
            .clone();
        // Built apart from the shared state, handed over at the end.
        let mut vbuckets: BTreeMap<u16, HashMap<u64, Entry>> = BTreeMap::new();
        let mut found: HashMap<u64, Full> = HashMap::new();
        while let Some(batch) = input.recv().await {
            let (messages, ack) = batch.into_parts();
            for m in &messages {
                let kh = hash_of(&m.key);
                match &wanted {
                    Some(w) => {
                        if !w.contains(&kh) {
                            continue;
                        }
                        if m.is_removal() {
                            found.remove(&kh);
                        } else {
                            found.insert(
                                kh,
                                Full {
                                    key: m.key.to_vec(),
                                    value_len: m.value.len(),
                                    value_head: m.value[..m.value.len().min(64)].to_vec(),
                                    value: value_hash(m),
                                    flags: m.flags,
                                    expiry: m.expiry,
                                },
                            );
                        }
                    }
                    None => {
                        let vb = pump_protocol::vbucket_of(&m.key, self.num_vbuckets);
                        let map = vbuckets.entry(vb).or_default();
                        if m.is_removal() {
                            map.remove(&kh);
                        } else {
                            map.insert(
                                kh,
                                Entry {
                                    value: value_hash(m),
                                    source_vb: m.vbucket,
                                },
                            );
                        }
                    }
                }
            }
            ack.confirm(Delivery::all(messages.len()));
        }
        let mut d = self
            .digest
            .lock()
            .map_err(|_| Error::sink("verify", "digest lock poisoned"))?;
        d.vbuckets = vbuckets;
        d.found = found;
        Ok(())
    }
}

/// One endpoint: its spec and the options it is read with.
struct Endpoint {
    spec: Spec,
    options: Options,
}

impl Endpoint {
    /// Reads the endpoint into a digest (pass 2 when `wanted` is given, only `vbuckets`).
    async fn read(
        &self,
        wanted: Option<Arc<HashSet<u64>>>,
        vbuckets: Option<VbucketSet>,
    ) -> Result<Digest, Failure> {
        let registry = registry();
        let kind = registry.source_kind(&self.spec)?;
        if kind.payload() != pump::Payload::Items {
            return Err(Failure::Usage(format!(
                "{}: verify compares key-value items, not {}",
                self.spec,
                kind.payload()
            )));
        }
        let mut options = self.options.clone();
        if vbuckets.is_some() {
            options.vbuckets = vbuckets;
        }
        let source = kind.open(&self.spec, &options)?;
        let digest = Arc::new(Mutex::new(Digest {
            wanted,
            ..Digest::default()
        }));
        let sink = DigestSink {
            digest: digest.clone(),
            num_vbuckets: options.extra.num_vbuckets,
        };
        pump::run(source, Box::new(sink), Context::new(options)).await?;
        let mut d = digest
            .lock()
            .map_err(|_| Failure::Failed("verify: digest lock poisoned".into()))?;
        Ok(std::mem::take(&mut *d))
    }
}

/// A vbucket's number of keys and its order-free digest.
type VbDigest = (usize, u64);

/// A vbucket's count and digest.
fn summarise(map: Option<&HashMap<u64, Entry>>) -> VbDigest {
    match map {
        Some(m) => (
            m.len(),
            m.iter()
                .fold(0u64, |acc, (k, e)| acc.wrapping_add(mix(*k, e.value))),
        ),
        None => (0, 0),
    }
}

fn key_text(k: &[u8]) -> String {
    pump::message::key_display(k)
}

fn full_json(f: &Full) -> Value {
    json!({
        "value_bytes": f.value_len,
        "value_start": String::from_utf8_lossy(&f.value_head),
        "flags": f.flags,
        "expiry": f.expiry,
    })
}

/// Runs `pump verify`.
pub async fn run(args: VerifyArgs) -> Result<(), Failure> {
    let registry = registry();
    super::transfer::check_bare_word("A", &args.a, &registry)?;
    super::transfer::check_bare_word("B", &args.b, &registry)?;
    let (spec_a, spec_b) = (Spec::parse(&args.a)?, Spec::parse(&args.b)?);
    let (kind_a, kind_b) = (
        registry.source_kind(&spec_a)?,
        registry.source_kind(&spec_b)?,
    );
    let mut keys: Vec<&str> = kind_a.extra_keys().to_vec();
    keys.extend(kind_b.extra_keys());
    let extra = Extra::parse(&args.extra, &keys)?;
    if args.threads == 0 {
        return Err(Failure::Usage("-t/--threads must be at least 1".into()));
    }
    let key = args
        .key
        .as_deref()
        .map(|k| regex::bytes::Regex::new(k).map_err(|e| Failure::Usage(format!("-k {k:?}: {e}"))))
        .transpose()?;
    let vbuckets = args
        .vbucket_list
        .as_deref()
        .map(VbucketSet::parse)
        .transpose()?;
    let base = Options {
        key,
        vbuckets,
        threads: args.threads,
        verbose: args.verbose,
        extra,
        ..Options::default()
    };
    let a = Endpoint {
        spec: spec_a,
        options: Options {
            source_bucket: args.bucket_a.clone(),
            source_auth: args.credentials.source()?,
            ..base.clone()
        },
    };
    let b = Endpoint {
        spec: spec_b,
        options: Options {
            source_bucket: args.bucket_b.clone().unwrap_or(args.bucket_a.clone()),
            source_auth: args.credentials.dest()?,
            ..base
        },
    };
    let started = std::time::Instant::now();
    let (da, db) = tokio::try_join!(a.read(None, None), b.read(None, None))?;
    let pass1 = started.elapsed().as_secs_f64();
    let all_vbs: Vec<u16> = da
        .vbuckets
        .keys()
        .chain(db.vbuckets.keys())
        .copied()
        .collect::<std::collections::BTreeSet<u16>>()
        .into_iter()
        .collect();
    let (mut items_a, mut items_b) = (0usize, 0usize);
    let mut differing_vbs: Vec<(u16, VbDigest, VbDigest)> = Vec::new();
    for vb in &all_vbs {
        let sa = summarise(da.vbuckets.get(vb));
        let sb = summarise(db.vbuckets.get(vb));
        items_a += sa.0;
        items_b += sb.0;
        if sa != sb {
            differing_vbs.push((*vb, sa, sb));
        }
    }
    // The key hashes that differ, and the source vbuckets that hold them.
    let empty = HashMap::new();
    let mut wanted: HashSet<u64> = HashSet::new();
    let mut source_vbs: HashSet<u16> = HashSet::new();
    for (vb, _, _) in &differing_vbs {
        let ma = da.vbuckets.get(vb).unwrap_or(&empty);
        let mb = db.vbuckets.get(vb).unwrap_or(&empty);
        for (k, e) in ma {
            if mb.get(k).map(|x| x.value) != Some(e.value) {
                wanted.insert(*k);
                source_vbs.insert(e.source_vb);
            }
        }
        for (k, e) in mb {
            if ma.get(k).map(|x| x.value) != Some(e.value) {
                wanted.insert(*k);
                source_vbs.insert(e.source_vb);
            }
        }
    }
    drop((da, db));
    let (mut missing, mut extra, mut different) = (Vec::new(), Vec::new(), Vec::new());
    if !wanted.is_empty() {
        let wanted = Arc::new(wanted);
        let only = VbucketSet::from_ids(source_vbs.iter().copied());
        let (fa, fb) = tokio::try_join!(
            a.read(Some(wanted.clone()), Some(only.clone())),
            b.read(Some(wanted.clone()), Some(only))
        )?;
        for (k, x) in &fa.found {
            match fb.found.get(k) {
                None => missing.push(x.clone()),
                Some(y) if y != x => different.push((x.clone(), y.clone())),
                Some(_) => {}
            }
        }
        for (k, y) in &fb.found {
            if !fa.found.contains_key(k) {
                extra.push(y.clone());
            }
        }
        missing.sort_by(|x, y| x.key.cmp(&y.key));
        extra.sort_by(|x, y| x.key.cmp(&y.key));
        different.sort_by(|x, y| x.0.key.cmp(&y.0.key));
    }
    let equal = differing_vbs.is_empty();
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let v = json!({
            "a": a.spec.to_string(),
            "b": b.spec.to_string(),
            "equal": equal,
            "items": [items_a, items_b],
            "vbuckets_compared": all_vbs.len(),
            "vbuckets_differing": differing_vbs.iter().map(|(vb, sa, sb)| json!({
                "vbucket": vb,
                "a": {"items": sa.0, "digest": format!("{:016x}", sa.1)},
                "b": {"items": sb.0, "digest": format!("{:016x}", sb.1)},
            })).collect::<Vec<_>>(),
            "missing_in_b": missing.iter().take(args.max_keys).map(|f| key_text(&f.key)).collect::<Vec<_>>(),
            "extra_in_b": extra.iter().take(args.max_keys).map(|f| key_text(&f.key)).collect::<Vec<_>>(),
            "different": different.iter().take(args.max_keys).map(|(x, y)| json!({
                "key": key_text(&x.key), "a": full_json(x), "b": full_json(y),
            })).collect::<Vec<_>>(),
            "counts": {"missing_in_b": missing.len(), "extra_in_b": extra.len(), "different": different.len()},
            "seconds": secs,
        });
        print_out(&format!("{v}\n"))?;
    } else {
        let mut out = format!(
            "A {}: {items_a} items\nB {}: {items_b} items\n{} vbuckets compared in {pass1:.2} s\n",
            a.spec,
            b.spec,
            all_vbs.len()
        );
        for (vb, sa, sb) in differing_vbs.iter().take(args.max_keys) {
            out.push_str(&format!(
                "vbucket {vb} differs: A {} items, digest {:016x}; B {} items, digest {:016x}\n",
                sa.0, sa.1, sb.0, sb.1
            ));
        }
        for f in missing.iter().take(args.max_keys) {
            out.push_str(&format!("missing in B: {}\n", key_text(&f.key)));
        }
        for f in extra.iter().take(args.max_keys) {
            out.push_str(&format!("extra in B: {}\n", key_text(&f.key)));
        }
        for (x, y) in different.iter().take(args.max_keys) {
            let mut what = Vec::new();
            if x.flags != y.flags {
                what.push(format!("flags {} / {}", x.flags, y.flags));
            }
            if x.expiry != y.expiry {
                what.push(format!("expiry {} / {}", x.expiry, y.expiry));
            }
            if x.value_len != y.value_len || x.value_head != y.value_head || what.is_empty() {
                what.push(format!(
                    "value {} bytes {:?} / {} bytes {:?}",
                    x.value_len,
                    String::from_utf8_lossy(&x.value_head),
                    y.value_len,
                    String::from_utf8_lossy(&y.value_head)
                ));
            }
            out.push_str(&format!(
                "different: {}: {}\n",
                key_text(&x.key),
                what.join(", ")
            ));
        }
        out.push_str(&if equal {
            format!("equal: A and B hold the same {items_a} items ({secs:.2} s)\n")
        } else {
            format!(
                "differ: {} missing in B, {} extra in B, {} different, in {} vbuckets ({secs:.2} s)\n",
                missing.len(),
                extra.len(),
                different.len(),
                differing_vbs.len()
            )
        });
        print_out(&out)?;
    }
    if equal {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "{} and {} differ: {} missing in B, {} extra in B, {} different",
            a.spec,
            b.spec,
            missing.len(),
            extra.len(),
            different.len()
        )))
    }
}
