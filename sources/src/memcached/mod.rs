//! `memcached://[user:password@]host:port`: every item of a running memcached, with its key,
//! value, flags and expiry.
//!
//! ```text
//! mod.rs      MemcachedKind and MemcachedConfig: the spec, validated without I/O
//! metadump.rs the key listing: `lru_crawler metadump hash` (or `all`) on a text connection
//! spool.rs    the listing drained into an unlinked file as fast as it comes, read back in rounds
//! source.rs   MemcachedSource: values fetched with pipelined GETKQ + NOOP, sent in batches
//! ```
//!
//! The listing (`lru_crawler metadump hash`, or `all` on a memcached without the hash walk)
//! gives each key (URL-encoded) with its absolute expiry (`exp=-1`: none); the binary
//! connection then fetches the values and flags. Nothing is kept per key, so the source's
//! memory stays flat however many items the server holds (the `memcached_source` bench prints
//! it at 1 M and 10 M items). A key that vanished between listing
//! and fetching (expired, evicted, deleted) is skipped and counted. Messages carry
//! `vbucket = vbucket_of(key, num_vbuckets)` (`-x num_vbuckets`, 1024), so `-l` and backups
//! work as with a Couchbase source.
//!
//! With SASL (`-S`) a memcached turns its text protocol off, and with it the metadump: such a
//! server cannot be listed.

mod metadump;
mod source;
mod spool;

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
            addr: a.addr(),
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

    /// A memcached whose crawler misses `missed` in its first metadump, as a real one's LRU
    /// walk does when the item moves between queues during the walk. With `hash` false it
    /// answers BADCLASS to the hash walk, as a memcached older than it does. Text connections
    /// get `stats` and the metadump; binary ones (first byte 0x80) VERSION, GETKQ and NOOP.
    async fn flaky_crawler(
        items: Vec<(&'static str, &'static str)>,
        missed: &'static str,
        hash: bool,
    ) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (l, addr) = crate::testutil::listen().await;
        let dumps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let items = items.clone();
                let dumps = dumps.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    if s.peek(&mut first).await.unwrap_or(0) == 1 && first[0] == 0x80 {
                        let mut peer = crate::testutil::Peer(tokio_util::codec::Framed::new(
                            s,
                            pump_protocol::PacketCodec::default(),
                        ));
                        while let Some(req) = peer.recv().await {
                            let hit = items.iter().find(|(k, _)| k.as_bytes() == &req.key[..]);
                            let answer = match (req.opcode, hit) {
                                (pump_protocol::Opcode::GetKQ, None) => continue,
                                (pump_protocol::Opcode::GetKQ, Some((k, v))) => {
                                    pump_protocol::Packet::response_to(
                                        &req,
                                        pump_protocol::Status::Success,
                                    )
                                    .with_extras(vec![0, 0, 0, 7])
                                    .with_key(k.as_bytes().to_vec())
                                    .with_value(v.as_bytes().to_vec())
                                }
                                _ => pump_protocol::Packet::response_to(
                                    &req,
                                    pump_protocol::Status::Success,
                                ),
                            };
                            peer.send(answer).await;
                        }
                        return;
                    }
                    let mut s = BufReader::new(s);
                    let mut line = String::new();
                    while s.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let reply = match line.trim() {
                            "stats" => {
                                format!("STAT pid 1\r\nSTAT curr_items {}\r\nEND\r\n", items.len())
                            }
                            "lru_crawler metadump hash" if !hash => {
                                "BADCLASS invalid class id\r\n".to_string()
                            }
                            "lru_crawler metadump all" | "lru_crawler metadump hash" => {
                                let n = dumps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let mut out = String::new();
                                for (k, _) in items.iter().filter(|(k, _)| n > 0 || *k != missed) {
                                    out.push_str(&format!(
                                        "key={k} exp=-1 la=1 cas=1 fetch=no cls=1 size=70\n"
                                    ));
                                }
                                out + "END\r\n"
                            }
                            other => panic!("unexpected {other:?}"),
                        };
                        s.get_mut().write_all(reply.as_bytes()).await.unwrap();
                        line.clear();
                    }
                });
            }
        });
        addr
    }

    /// A listing short of `curr_items` is followed by another that reads every key again:
    /// the missed key arrives, the others twice (at least once; nothing is kept per key).
    /// With or without the hash walk (an older memcached answers BADCLASS to it).
    #[tokio::test]
    async fn a_listing_short_of_curr_items_is_listed_and_read_again() {
        for hash in [true, false] {
            let items = vec![("a", "1"), ("b", "2"), ("missed", "3"), ("c", "4")];
            let addr = flaky_crawler(items.clone(), "missed", hash).await;
            let options = Options::default();
            let spec = Spec::parse(&format!("memcached://{addr}")).unwrap();
            let source = MemcachedKind.open(&spec, &options).unwrap();
            let sink = crate::testutil::Collect::default();
            crate::testutil::run(source, sink.clone(), options)
                .await
                .unwrap();
            let all: Vec<(String, String, u32)> = sink
                .messages()
                .iter()
                .map(|m| {
                    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                    (s(&m.key), s(&m.value), m.flags)
                })
                .collect();
            assert_eq!(all.len(), 3 + 4, "hash walk {hash}: two passes");
            let mut got = all.clone();
            got.sort();
            got.dedup();
            let want: Vec<(String, String, u32)> =
                [("a", "1"), ("b", "2"), ("c", "4"), ("missed", "3")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string(), 7))
                    .collect();
            assert_eq!(got, want, "hash walk {hash}");
        }
    }
}
