//! The memcached sink: the one writer ([`pump::deliver`]) speaking memcached's quiet writes.
//!
//! ```text
//! route   a plain memcached ignores vbuckets, but every source gives a key the same one (a
//!         hash of the key), so a message's vbucket is the unit of order: a key's writes
//!         always take the same one of the -t connections
//! round   SETQ|ADDQ|DELETEQ (opaque = request id) ... NOOP (opaque = the next id)
//! answers only failures, then the NOOP, which settles the round
//! ```
//!
//! Only SASL_AUTH, VERSION, the quiet writes and NOOP are ever sent: a plain memcached
//! desynchronises on other opcodes. A key memcached cannot hold (empty, or over 250 bytes)
//! fails without being sent.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pump::deliver::{DeliverConfig, Heard, Link, LinkError, PipelinedSink, Protocol, Route};
use pump::{Message, Verdict};
use pump_client::Auth;
use pump_protocol::datatype::{SNAPPY, XATTR};
use pump_protocol::packet::encode_request;
use pump_protocol::{Opcode, Packet, Status};

use super::MemcachedConfig;
use crate::net;
use crate::values::{shaped, Takes};

/// memcached refuses longer keys.
const MAX_KEY_LEN: usize = 250;

/// The memcached sink: [`MemcachedWire`] run by the one writer.
pub type MemcachedSink = PipelinedSink<MemcachedWire>;

/// Builds the sink for `config`; nothing is opened until it runs or is checked.
pub fn sink(config: MemcachedConfig) -> MemcachedSink {
    let deliver = DeliverConfig {
        connections: config.connections,
        depth: config.in_flight,
        round_items: config.round_items,
        retry: config.retry,
        timeout: config.timeout,
    };
    PipelinedSink::new(
        MemcachedWire {
            config: Arc::new(config),
            collections: std::sync::OnceLock::new(),
        },
        deliver,
    )
}

/// What the memcached sink supplies to the writer.
pub struct MemcachedWire {
    config: Arc<MemcachedConfig>,
    /// The source collections it takes (see `prepare`), in order; unset: the default
    /// collection.
    collections: std::sync::OnceLock<Vec<u32>>,
}

#[async_trait]
impl Protocol for MemcachedWire {
    type Answer = Packet;
    type Status = Status;

    fn spec(&self) -> &str {
        &self.config.spec
    }

    fn endpoints(&self) -> Vec<String> {
        vec![self.config.addr.clone()]
    }

    /// A message's vbucket is a hash of its key in every source (its CRC32, or the source
    /// cluster's own): a key's writes share it, and so one connection.
    fn route(&self, m: &Message) -> Route {
        Route {
            group: m.vbucket,
            endpoint: Some(0),
        }
    }

    /// memcached holds the default collection only: any other the source has is refused by
    /// name before anything is written, unless left out or mapped to the default one.
    async fn prepare(&self, ctx: &pump::pipeline::Context) -> Result<(), String> {
        let allowed = pump::collections::default_only(
            &ctx.collections,
            &ctx.options.data,
            &ctx.options.source_bucket,
            "memcached",
        )?;
        // Sorted for a binary search: no hash of each message's collection id.
        let mut allowed: Vec<u32> = allowed.into_iter().collect();
        allowed.sort_unstable();
        let _ = self.collections.set(allowed);
        Ok(())
    }

    fn refuse(&self, m: &Message) -> Option<String> {
        if !self.collections.get().map_or(m.collection == 0, |a| {
            a.binary_search(&m.collection).is_ok()
        }) {
            return Some(format!(
                "collection id {:#x} is not the default collection, the only one memcached holds",
                m.collection
            ));
        }
        (m.key.is_empty() || m.key.len() > MAX_KEY_LEN).then(|| {
            format!(
                "a memcached key has 1 to {MAX_KEY_LEN} bytes; this one has {}",
                m.key.len()
            )
        })
    }

    /// One server: a vbucket's connection never changes.
    fn fixed_routes(&self) -> bool {
        true
    }

    async fn connect(&self, endpoint: &str) -> Result<Link<Packet>, LinkError> {
        let auth = self.config.credentials.as_ref().map(|c| Auth {
            user: c.user.clone(),
            password: c.password.clone(),
        });
        let conn = pump_client::open_probed(endpoint, auth.as_ref(), self.config.timeout)
            .await
            .map_err(|e| match net::link_error(e) {
                LinkError::Failed(why) => LinkError::Failed(format!("memcached at {why}")),
                denied => denied,
            })?;
        Ok(net::link(conn))
    }

    fn encode_round(&self, msgs: &[&Message], first_id: u32, buf: &mut BytesMut) -> u32 {
        let mut id = first_id;
        for m in msgs {
            self.encode_one(m, id, buf);
            id = id.wrapping_add(1);
        }
        msgs.len() as u32 + self.encode_close(id, buf)
    }

    /// A write's bytes depend on the message and `-a` alone: the writer encodes each as its
    /// batch is taken.
    fn encodes_ahead(&self) -> bool {
        true
    }

    #[inline]
    fn encode_one(&self, m: &Message, id: u32, buf: &mut BytesMut) {
        if m.is_removal() {
            encode_request(buf, Opcode::DeleteQ, m.vbucket, id, 0, 0, &[], &m.key, &[]);
            return;
        }
        let set = if self.config.add {
            Opcode::AddQ
        } else {
            Opcode::SetQ
        };
        let mut extras = [0u8; 8];
        extras[..4].copy_from_slice(&m.flags.to_be_bytes());
        extras[4..].copy_from_slice(&m.expiry.to_be_bytes());
        // Datatype stays 0: a plain memcached knows no datatypes. A compressed value is
        // decompressed, a value with xattrs written as its document body.
        if m.datatype & (SNAPPY | XATTR) == 0 {
            encode_request(buf, set, m.vbucket, id, 0, 0, &extras, &m.key, &m.value);
        } else {
            let (_, v) = shaped(m.datatype, &m.value, Takes::BODY);
            encode_request(buf, set, m.vbucket, id, 0, 0, &extras, &m.key, &v);
        }
    }

    /// A NOOP: the writes before it are quiet, and memcached answers it after them.
    fn encode_close(&self, id: u32, buf: &mut BytesMut) -> u32 {
        encode_request(buf, Opcode::Noop, 0, id, 0, 0, &[], &[], &[]);
        1
    }

    fn hear(&self, p: Packet) -> Heard<Status> {
        crate::net::hear_answer(p)
    }

    fn is_success(&self, status: Status) -> bool {
        status == Status::Success
    }

    fn verdict(&self, m: &Message, status: Status) -> Verdict {
        Verdict::of(status, self.config.add && !m.is_removal(), m.is_removal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump::{Options, Spec};
    use pump_protocol::PacketCodec;
    use tokio_util::codec::Decoder;

    fn wire(add: bool) -> MemcachedWire {
        let mut o = Options::default();
        if add {
            o.extra.set("add", "1");
        }
        let c = MemcachedConfig::from_spec(&Spec::parse("memcached://h:1").unwrap(), &o).unwrap();
        MemcachedWire {
            config: Arc::new(c),
            collections: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn a_round_is_quiet_writes_by_request_id_then_one_noop() {
        let mut del = Message::deletion("gone");
        del.vbucket = 7;
        let set = Message {
            flags: 0xdead_beef,
            expiry: 42,
            ..Message::mutation("k", "value")
        };
        let mut buf = BytesMut::new();
        assert_eq!(wire(false).encode_round(&[&set, &del], 40, &mut buf), 3);
        let mut codec = PacketCodec::default();
        let a = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((a.opcode, a.opaque), (Opcode::SetQ, 40));
        assert_eq!(&a.extras[..], &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 42]);
        assert_eq!((&a.key[..], &a.value[..]), (&b"k"[..], &b"value"[..]));
        let b = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((b.opcode, b.opaque, b.vbucket()), (Opcode::DeleteQ, 41, 7));
        assert!(b.extras.is_empty() && b.value.is_empty());
        let c = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((c.opcode, c.opaque), (Opcode::Noop, 42));
        assert!(buf.is_empty());
        // Encoded ahead, message by message, then the NOOP: the same bytes.
        let w = wire(false);
        let (mut whole, mut ahead) = (BytesMut::new(), BytesMut::new());
        w.encode_round(&[&set, &del], 40, &mut whole);
        w.encode_one(&set, 40, &mut ahead);
        w.encode_one(&del, 41, &mut ahead);
        assert_eq!(w.encode_close(42, &mut ahead), 1);
        assert!(w.encodes_ahead());
        assert_eq!(whole, ahead);
        let mut buf = BytesMut::new();
        wire(true).encode_round(&[&Message::mutation("k", "v")], 0, &mut buf);
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().opcode,
            Opcode::AddQ
        );
    }

    #[test]
    fn statuses_mean_written_skipped_retried_failed_or_denied() {
        let w = wire(true);
        let (set, del) = (Message::mutation("k", "v"), Message::deletion("k"));
        assert_eq!(w.verdict(&set, Status::KeyEexists), Verdict::Skip);
        assert_eq!(w.verdict(&del, Status::KeyEnoent), Verdict::Skip);
        assert_eq!(w.verdict(&set, Status::Enomem), Verdict::Retry);
        assert_eq!(w.verdict(&set, Status::E2big), Verdict::Fail);
        assert_eq!(w.verdict(&set, Status::AuthError), Verdict::Denied);
        assert!(w.refuse(&Message::mutation("x".repeat(251), "v")).is_some());
        assert!(w.refuse(&Message::mutation("", "v")).is_some());
        assert!(w.refuse(&set).is_none());
        // A key's writes always take the same group.
        assert_eq!(w.route(&set), w.route(&del));
    }
}

/// The sink against a scripted server on 127.0.0.1: what it resends, and when.
#[cfg(test)]
mod server_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use pump::{BatchSender, Context, Error, Options, SinkKind, Source, Spec};
    use pump_protocol::PacketCodec;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    use super::*;

    struct Messages(Vec<Message>);

    #[async_trait]
    impl Source for Messages {
        async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
            out.send_messages(self.0).await
        }
    }

    /// What to answer to a write on connection N (None: nothing, the quiet success), and
    /// whether to hang up instead.
    type Script = fn(usize, &Packet) -> (Option<Status>, bool);

    /// Serves connections one after another as `script` says. Returns the port and every key
    /// written, per connection.
    async fn server(script: Script) -> (u16, Arc<Mutex<Vec<Vec<Bytes>>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((s, _)) = l.accept().await {
                log.lock().unwrap().push(Vec::new());
                let mut f = Framed::new(s, PacketCodec::default());
                'conn: while let Some(Ok(p)) = f.next().await {
                    let answer = match p.opcode {
                        Opcode::Version => Some(Status::Success),
                        Opcode::Noop => Some(Status::Success),
                        _ => {
                            log.lock().unwrap()[conn].push(p.key.clone());
                            let (status, hang_up) = script(conn, &p);
                            if hang_up {
                                break 'conn;
                            }
                            status
                        }
                    };
                    if let Some(s) = answer {
                        f.send(Packet::response_to(&p, s)).await.unwrap();
                    }
                }
                conn += 1;
            }
        });
        (port, seen)
    }

    /// Runs `messages` into the server at `port` with `options` (`-t 1`, retries backing off
    /// at most 20 ms, and what the caller set).
    async fn run_into(
        port: u16,
        messages: Vec<Message>,
        mut options: Options,
    ) -> Result<pump::Summary, Error> {
        options.threads = 1;
        options.extra.backoff_cap = Duration::from_millis(20);
        let spec = Spec::parse(&format!("memcached://127.0.0.1:{port}")).unwrap();
        let sink = super::super::MemcachedKind.open(&spec, &options).unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            pump::run(Box::new(Messages(messages)), sink, Context::new(options)),
        )
        .await
        .expect("the transfer ended")
    }

    async fn transfer(port: u16, n: usize) -> Result<pump::Summary, Error> {
        // Each key in its own vbucket, as every source gives them (a hash of the key).
        let messages = (0..n)
            .map(|i| {
                let key = format!("k{i}");
                Message {
                    vbucket: pump_protocol::vbucket_of(key.as_bytes(), 1024),
                    ..Message::mutation(key, "v")
                }
            })
            .collect();
        run_into(port, messages, Options::default()).await
    }

    #[tokio::test]
    async fn only_the_messages_that_failed_temporarily_are_resent() {
        // k3 and k7 are busy the first time they are seen.
        let (port, seen) = server(|_, p| {
            let busy = &p.key[..] == b"k3" || &p.key[..] == b"k7";
            (busy.then_some(Status::Etmpfail), false)
        })
        .await;
        let summary = transfer(port, 10).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one connection");
        let keys: Vec<_> = seen[0].iter().map(|k| k.to_vec()).collect();
        // Every round after the first carries only k3 and k7, until max_retry.
        assert_eq!(keys.len(), 10 + 2 * 10, "{keys:?}");
        assert!(keys[10..].iter().all(|k| k == b"k3" || k == b"k7"));
        assert_eq!(summary.counts.items_written, 8);
        assert_eq!(summary.counts.failed, 2);
        assert!(
            summary.failures[0].reason.contains("ETMPFAIL"),
            "{:?}",
            summary.failures
        );
    }

    /// A write answered TMPFAIL holds its vbucket's later writes, even those already on the
    /// wire: they all go again after it, so the newer value of a key is the last written.
    #[tokio::test]
    async fn a_retried_write_is_followed_again_by_the_later_writes_of_its_vbucket() {
        static SEEN: std::sync::Mutex<Vec<(Bytes, Bytes)>> = std::sync::Mutex::new(Vec::new());
        let (port, _) = server(|_, p| {
            let mut seen = SEEN.lock().unwrap();
            seen.push((p.key.clone(), p.value.clone()));
            // The first write of "same" is refused, once.
            let first = &p.key[..] == b"same"
                && seen.iter().filter(|(k, _)| &k[..] == b"same").count() == 1;
            (first.then_some(Status::Etmpfail), false)
        })
        .await;
        let mut options = Options {
            threads: 1,
            ..Options::default()
        };
        options.extra.backoff_cap = Duration::from_millis(20);
        let spec = Spec::parse(&format!("memcached://127.0.0.1:{port}")).unwrap();
        let sink = super::super::MemcachedKind.open(&spec, &options).unwrap();
        let vb = |k: &str| pump_protocol::vbucket_of(k.as_bytes(), 1024);
        let msg = |k: &str, v: &str| Message {
            vbucket: vb(k),
            ..Message::mutation(k.to_string(), v.to_string())
        };
        let messages = vec![msg("same", "old"), msg("other", "x"), msg("same", "new")];
        let summary = tokio::time::timeout(
            Duration::from_secs(20),
            pump::run(Box::new(Messages(messages)), sink, Context::new(options)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(summary.counts.items_written, 3, "each counted once");
        let seen = SEEN.lock().unwrap().clone();
        let same: Vec<&[u8]> = seen
            .iter()
            .filter(|(k, _)| &k[..] == b"same")
            .map(|(_, v)| &v[..])
            .collect();
        // old (refused), new (voided: it followed a held write), then both again in order.
        assert_eq!(same, [&b"old"[..], b"new", b"old", b"new"], "{seen:?}");
        assert_eq!(
            seen.iter().filter(|(k, _)| &k[..] == b"other").count(),
            1,
            "another vbucket is not held"
        );
    }

    #[tokio::test]
    async fn a_connection_lost_mid_batch_is_reopened_and_the_batch_resent_whole() {
        // The first connection hangs up at the fifth write, before the NOOP.
        let (port, seen) = server(|conn, p| (None, conn == 0 && &p.key[..] == b"k4")).await;
        let summary = transfer(port, 10).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "reconnected once");
        let second: Vec<_> = seen[1].iter().map(|k| k.to_vec()).collect();
        let want: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
        assert_eq!(second, want);
        assert_eq!(summary.counts.items_written, 10);
        assert!(summary.counts.retries >= 1);
    }

    /// Runs `messages` into the server at `port` in rounds of two messages, one round on the
    /// wire at a time (`-x in_flight=1`): the rounds after it wait encoded ahead.
    async fn transfer_in_rounds_of_two(
        port: u16,
        messages: Vec<Message>,
    ) -> Result<pump::Summary, Error> {
        let mut options = Options::default();
        options.extra.batch_max_size = 2;
        options.extra.set("in_flight", "1");
        run_into(port, messages, options).await
    }

    /// A write answered TMPFAIL while the later writes of its vbucket wait encoded ahead: those
    /// are held with it and go again after it, in order, so the newest value is the last.
    #[tokio::test]
    async fn writes_encoded_ahead_of_a_retried_write_wait_for_it_and_keep_their_order() {
        static SEEN: std::sync::Mutex<Vec<Bytes>> = std::sync::Mutex::new(Vec::new());
        let (port, _) = server(|_, p| {
            let mut seen = SEEN.lock().unwrap();
            seen.push(p.value.clone());
            // The first write is refused, once.
            ((seen.len() == 1).then_some(Status::Etmpfail), false)
        })
        .await;
        let vbucket = pump_protocol::vbucket_of(b"same", 1024);
        let messages = (0..10)
            .map(|i| Message {
                vbucket,
                ..Message::mutation("same", format!("v{i}"))
            })
            .collect();
        let summary = transfer_in_rounds_of_two(port, messages).await.unwrap();
        assert_eq!(summary.counts.items_written, 10, "each counted once");
        let seen: Vec<String> = SEEN
            .lock()
            .unwrap()
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        // v0 (refused) and v1 (on the wire with it, voided), then all ten in order.
        let mut want = vec!["v0".to_string(), "v1".to_string()];
        want.extend((0..10).map(|i| format!("v{i}")));
        assert_eq!(seen, want);
    }

    /// A connection lost while rounds wait encoded ahead: the round on the wire and those
    /// go again, in order, on the new connection.
    #[tokio::test]
    async fn rounds_encoded_ahead_of_a_lost_connection_are_resent_in_order() {
        let (port, seen) = server(|conn, p| (None, conn == 0 && &p.key[..] == b"k4")).await;
        let messages = (0..10)
            .map(|i| {
                let key = format!("k{i}");
                Message {
                    vbucket: pump_protocol::vbucket_of(key.as_bytes(), 1024),
                    ..Message::mutation(key, "v")
                }
            })
            .collect();
        let summary = transfer_in_rounds_of_two(port, messages).await.unwrap();
        assert_eq!(summary.counts.items_written, 10);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "reconnected once");
        let second: Vec<_> = seen[1].iter().map(|k| k.to_vec()).collect();
        let want: Vec<Vec<u8>> = (4..10).map(|i| format!("k{i}").into_bytes()).collect();
        assert_eq!(second, want, "from the round that was on the wire on");
    }

    #[tokio::test]
    async fn a_server_that_keeps_hanging_up_is_an_error_naming_it() {
        let (port, _seen) = server(|_, _| (None, true)).await;
        let err = transfer(port, 3).await.unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("lost the connection"), "{err}");
    }
}
