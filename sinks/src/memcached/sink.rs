//! The memcached sink: `-t` workers, each with one pipelined connection.
//!
//! A worker keeps up to `in_flight` batches on the wire. Each batch is one buffer of quiet
//! writes closed by a NOOP; the answers before the NOOP are the batch's failures, keyed by
//! opaque (the message's index in its batch). When the NOOP comes back the batch's round is
//! settled: temporary failures wait out a backoff and are resent alone, the rest is confirmed.
//! A lost connection is reopened (with backoff, up to max_retry) and every batch not yet
//! settled is resent whole: at least once, nothing lost.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pump::{Ack, BatchReceiver, Context, Delivery, Error, KeyFailure, Message, Sink, Verdict};
use pump_client::{Auth, ClientError, Duplex};
use pump_protocol::packet::encode_request;
use pump_protocol::{Opcode, Packet, Status, HEADER_LEN};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::MemcachedConfig;

/// The opaque of the NOOP that closes a batch.
const BARRIER: u32 = u32::MAX;
/// memcached refuses longer keys.
const MAX_KEY_LEN: usize = 250;

/// Writes every batch into one memcached over `connections` pipelined connections.
pub struct MemcachedSink {
    config: Arc<MemcachedConfig>,
}

impl MemcachedSink {
    /// A sink for `config`; nothing is opened until it runs.
    pub fn new(config: MemcachedConfig) -> Self {
        MemcachedSink {
            config: Arc::new(config),
        }
    }
}

#[async_trait]
impl Sink for MemcachedSink {
    async fn run(self: Box<Self>, input: BatchReceiver, ctx: Context) -> Result<(), Error> {
        let mut workers = JoinSet::new();
        for _ in 0..self.config.connections {
            let worker = Worker {
                config: self.config.clone(),
                ctx: ctx.clone(),
                in_flight: VecDeque::new(),
                waiting: Vec::new(),
                reconnects: 0,
            };
            workers.spawn(worker.run(input.clone()));
        }
        while let Some(r) = workers.join_next().await {
            let r = r.unwrap_or_else(|e| {
                Err(Error::sink(
                    &self.config.spec,
                    format!("worker panicked: {e}"),
                ))
            });
            if let Err(e) = r {
                workers.abort_all();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A batch on the wire (or waiting to be resent), and what is known of it so far.
struct Pending {
    messages: Vec<Message>,
    ack: Ack,
    /// Indices of the messages sent in this round; `None`: every message.
    todo: Option<Vec<u32>>,
    /// Wire bytes of a round of every message.
    wire: usize,
    /// Retry rounds so far.
    attempt: u32,
    delivery: Delivery,
    round: Round,
}

/// Answers received for the current round, settled at its NOOP (or dropped when the
/// connection is lost and the round is resent).
#[derive(Default)]
struct Round {
    skipped: usize,
    /// Of `skipped`, per op (`Op::index`).
    skipped_ops: [usize; 3],
    failed: Vec<KeyFailure>,
    retry: Vec<(u32, Status)>,
}

impl Pending {
    /// Takes a batch; keys memcached cannot hold fail here without being sent.
    fn new(messages: Vec<Message>, ack: Ack) -> Pending {
        let mut delivery = Delivery::default();
        let mut wire = HEADER_LEN;
        for m in &messages {
            if m.key.is_empty() || m.key.len() > MAX_KEY_LEN {
                delivery.failed.push(KeyFailure {
                    key: m.key.clone(),
                    vbucket: m.vbucket,
                    reason: format!(
                        "a memcached key has 1 to {MAX_KEY_LEN} bytes; this one has {}",
                        m.key.len()
                    ),
                });
            } else {
                wire += HEADER_LEN + 8 + m.key.len() + m.value.len();
            }
        }
        // The common case sends every message and needs no list of them.
        let todo = (!delivery.failed.is_empty()).then(|| {
            (0..messages.len() as u32)
                .filter(|&i| {
                    let k = messages[i as usize].key.len();
                    (1..=MAX_KEY_LEN).contains(&k)
                })
                .collect()
        });
        Pending {
            messages,
            ack,
            todo,
            wire,
            attempt: 0,
            delivery,
            round: Round::default(),
        }
    }

    /// Messages sent in this round.
    fn sent(&self) -> usize {
        self.todo.as_ref().map_or(self.messages.len(), Vec::len)
    }

    /// The wire buffer of this round: one quiet write per message of `todo`, then the NOOP.
    fn encode(&self, add: bool) -> Bytes {
        let cap = match &self.todo {
            None => self.wire,
            Some(todo) => todo
                .iter()
                .map(|&i| {
                    let m = &self.messages[i as usize];
                    HEADER_LEN + 8 + m.key.len() + m.value.len()
                })
                .sum::<usize>(),
        };
        let mut buf = BytesMut::with_capacity(cap + HEADER_LEN);
        let set = if add { Opcode::AddQ } else { Opcode::SetQ };
        let mut put = |i: u32, m: &Message| {
            if m.is_removal() {
                encode_request(
                    &mut buf,
                    Opcode::DeleteQ,
                    m.vbucket,
                    i,
                    0,
                    0,
                    &[],
                    &m.key,
                    &[],
                );
            } else {
                let mut extras = [0u8; 8];
                extras[..4].copy_from_slice(&m.flags.to_be_bytes());
                extras[4..].copy_from_slice(&m.expiry.to_be_bytes());
                // Datatype stays 0: a plain memcached knows no datatypes.
                encode_request(&mut buf, set, m.vbucket, i, 0, 0, &extras, &m.key, &m.value);
            }
        };
        match &self.todo {
            None => {
                for (i, m) in self.messages.iter().enumerate() {
                    put(i as u32, m);
                }
            }
            Some(todo) => {
                for &i in todo {
                    put(i, &self.messages[i as usize]);
                }
            }
        }
        encode_request(&mut buf, Opcode::Noop, 0, BARRIER, 0, 0, &[], &[], &[]);
        buf.freeze()
    }

    /// Records one failure answer of this round.
    fn answer(&mut self, p: &Packet, add: bool) -> Result<(), String> {
        let i = p.opaque;
        let m = self
            .messages
            .get(i as usize)
            .ok_or_else(|| format!("an answer with opaque {i} matches no message sent"))?;
        let status = p.status();
        match Verdict::of(status, add && !m.is_removal(), m.is_removal()) {
            Verdict::Done => {}
            Verdict::Skip => {
                self.round.skipped += 1;
                self.round.skipped_ops[m.op.index()] += 1;
            }
            Verdict::Retry => self.round.retry.push((i, status)),
            Verdict::Reroute | Verdict::Fail => self.round.failed.push(KeyFailure {
                key: m.key.clone(),
                vbucket: m.vbucket,
                reason: reason(status, &p.value),
            }),
        }
        Ok(())
    }

    /// Settles the round at its NOOP: everything sent and not answered was written. Returns
    /// the messages to retry, with their status.
    fn settle(&mut self) -> Vec<(u32, Status)> {
        let r = std::mem::take(&mut self.round);
        let answered = r.skipped + r.failed.len() + r.retry.len();
        self.delivery.written += self.sent().saturating_sub(answered);
        self.delivery.skipped += r.skipped;
        for (i, n) in r.skipped_ops.iter().enumerate() {
            self.delivery.skipped_ops[i] += n;
        }
        self.delivery.failed.extend(r.failed);
        r.retry
    }
}

fn reason(status: Status, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

/// One connection's worth of work.
struct Worker {
    config: Arc<MemcachedConfig>,
    ctx: Context,
    /// Batches on the wire, in the order they were sent (answers come back in that order).
    in_flight: VecDeque<Pending>,
    /// Batches whose temporary failures wait out a backoff before being resent.
    waiting: Vec<(Instant, Pending)>,
    /// Reconnects since the last settled round.
    reconnects: u32,
}

enum Step {
    Batch(Option<pump::Batch>),
    Answer(Result<Packet, ClientError>),
    Due,
}

impl Worker {
    async fn run(mut self, input: BatchReceiver) -> Result<(), Error> {
        // Connect and authenticate before taking any batch: a bad password writes nothing.
        // A server that is down fails the run at once, naming it.
        let mut client = self.connect().await.map_err(|e| {
            if e.is_auth() {
                self.fatal(e)
            } else {
                Error::sink(
                    &self.config.spec,
                    format!("could not connect to memcached at {e}"),
                )
            }
        })?;
        let mut open = true;
        loop {
            let busy = self.in_flight.len() + self.waiting.len();
            if !open && busy == 0 {
                return Ok(());
            }
            let due = self.waiting.iter().map(|(t, _)| *t).min();
            let step = tokio::select! {
                biased;
                a = client.recv(), if !self.in_flight.is_empty() => Step::Answer(a),
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => Step::Due,
                b = input.recv(), if open && busy < self.config.in_flight => Step::Batch(b),
            };
            let result = match step {
                Step::Batch(None) => {
                    open = false;
                    Ok(())
                }
                Step::Batch(Some(batch)) => {
                    let (messages, ack) = batch.into_parts();
                    let p = Pending::new(messages, ack);
                    if p.sent() == 0 {
                        p.ack.confirm(p.delivery);
                        Ok(())
                    } else {
                        self.send(p, &mut client).await
                    }
                }
                Step::Answer(Ok(packet)) => self.answer(packet),
                Step::Answer(Err(e)) => Err(e),
                Step::Due => self.resend_due(&mut client).await,
            };
            if let Err(e) = result {
                client = self.recover(e).await?;
            }
        }
    }

    async fn connect(&self) -> Result<Duplex, ClientError> {
        let auth = self.config.credentials.as_ref().map(|c| Auth {
            user: c.user.clone(),
            password: c.password.clone(),
        });
        Duplex::open(
            &self.config.addr,
            auth.as_ref(),
            self.config.timeout,
            self.config.in_flight + 1,
        )
        .await
    }

    fn fatal(&self, e: ClientError) -> Error {
        Error::sink(&self.config.spec, format!("memcached at {e}"))
    }

    /// Puts a round on the wire.
    async fn send(&mut self, p: Pending, client: &mut Duplex) -> Result<(), ClientError> {
        let buf = p.encode(self.config.add);
        // Queued first, so that a failed send is resent by recover().
        self.in_flight.push_back(p);
        client.send(buf).await
    }

    fn answer(&mut self, packet: Packet) -> Result<(), ClientError> {
        let lost = |message: String| ClientError::Unexpected {
            peer: self.config.addr.clone(),
            message,
        };
        let Some(front) = self.in_flight.front_mut() else {
            return Err(lost(format!(
                "an answer ({:?}) to nothing in flight",
                packet.opcode
            )));
        };
        if packet.opcode != Opcode::Noop {
            if matches!(packet.status(), Status::AuthError | Status::Eaccess) {
                // memcached -S answers a write before authentication so, then hangs up.
                let why = reason(packet.status(), &packet.value);
                return Err(match &self.config.credentials {
                    None => ClientError::AuthRequired {
                        peer: self.config.addr.clone(),
                        reason: format!("a write answered {why}"),
                    },
                    Some(c) => ClientError::Auth {
                        peer: self.config.addr.clone(),
                        user: c.user.clone(),
                        reason: format!("a write answered {why}"),
                    },
                });
            }
            return front.answer(&packet, self.config.add).map_err(lost);
        }
        if packet.opaque != BARRIER {
            return Err(lost(format!(
                "a NOOP answer with opaque {} out of order",
                packet.opaque
            )));
        }
        let Some(mut p) = self.in_flight.pop_front() else {
            return Ok(());
        };
        // A settled round is progress: the reconnect budget starts afresh.
        self.reconnects = 0;
        let retry = p.settle();
        if retry.is_empty() {
            p.ack.confirm(p.delivery);
            return Ok(());
        }
        p.attempt += 1;
        match self.config.retry.backoff(p.attempt) {
            Some(pause) => {
                p.delivery.retries += 1;
                p.todo = Some(retry.iter().map(|(i, _)| *i).collect());
                self.waiting.push((Instant::now() + pause, p));
            }
            None => {
                for (i, status) in retry {
                    let m = &p.messages[i as usize];
                    p.delivery.failed.push(KeyFailure {
                        key: m.key.clone(),
                        vbucket: m.vbucket,
                        reason: format!("{status}, still after {} retries", p.attempt - 1),
                    });
                }
                p.ack.confirm(p.delivery);
            }
        }
        Ok(())
    }

    /// Resends the rounds whose backoff is over.
    async fn resend_due(&mut self, client: &mut Duplex) -> Result<(), ClientError> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].0 <= now {
                let (_, p) = self.waiting.swap_remove(i);
                self.send(p, client).await?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Reconnects after a lost connection and resends every round not settled, with backoff
    /// up to max_retry attempts; then fails naming the server.
    async fn recover(&mut self, first: ClientError) -> Result<Duplex, Error> {
        if first.is_auth() {
            return Err(self.fatal(first));
        }
        let mut last = first;
        loop {
            self.reconnects += 1;
            let attempt = self.reconnects;
            let Some(pause) = self.config.retry.backoff(attempt) else {
                return Err(Error::sink(
                    &self.config.spec,
                    format!(
                        "lost the connection to memcached at {} and could not get it back in {} attempts; last error: {last}",
                        self.config.addr,
                        attempt - 1
                    ),
                ));
            };
            tracing::warn!(
                "{}: {last}; reconnecting in {pause:?} (attempt {attempt})",
                self.config.spec
            );
            tokio::time::sleep(pause).await;
            self.ctx.stats.record_retries(1);
            let mut client = match self.connect().await {
                Ok(c) => c,
                Err(e) if e.is_auth() => return Err(self.fatal(e)),
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut resent = Ok(());
            for p in self.in_flight.iter_mut() {
                p.round = Round::default();
                resent = client.send(p.encode(self.config.add)).await;
                if resent.is_err() {
                    break;
                }
            }
            match resent {
                Ok(()) => return Ok(client),
                Err(e) => last = e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump::Batch;
    use pump_protocol::PacketCodec;
    use tokio_util::codec::Decoder;

    fn pending(messages: Vec<Message>) -> Pending {
        let (_, ack) = Batch::new(vec![]).into_parts();
        Pending::new(messages, ack)
    }

    #[test]
    fn a_round_is_quiet_writes_by_index_then_one_noop() {
        let mut del = Message::deletion("gone");
        del.vbucket = 7;
        let set = Message {
            flags: 0xdead_beef,
            expiry: 42,
            ..Message::mutation("k", "value")
        };
        let p = pending(vec![set, del]);
        let mut buf = BytesMut::from(&p.encode(false)[..]);
        let mut codec = PacketCodec::default();
        let a = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((a.opcode, a.opaque), (Opcode::SetQ, 0));
        assert_eq!(&a.extras[..], &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 42]);
        assert_eq!((&a.key[..], &a.value[..]), (&b"k"[..], &b"value"[..]));
        let b = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((b.opcode, b.opaque, b.vbucket()), (Opcode::DeleteQ, 1, 7));
        assert!(b.extras.is_empty() && b.value.is_empty());
        let c = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((c.opcode, c.opaque), (Opcode::Noop, BARRIER));
        assert!(buf.is_empty());
        let p = pending(vec![Message::mutation("k", "v")]);
        let a = codec
            .decode(&mut BytesMut::from(&p.encode(true)[..]))
            .unwrap()
            .unwrap();
        assert_eq!(a.opcode, Opcode::AddQ);
    }

    #[test]
    fn answers_settle_into_written_skipped_failed_and_retried() {
        let mut p = pending(vec![
            Message::mutation("ok", "v"),
            Message::mutation("big", "v"),
            Message::mutation("busy", "v"),
            Message::mutation("there", "v"),
            Message::deletion("absent"),
            Message::mutation("x".repeat(300), "v"),
        ]);
        assert_eq!(p.todo, Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(p.delivery.failed.len(), 1, "the 300-byte key fails unsent");
        let answer = |i: u32, s: Status| {
            Packet::response_to(&Packet::request(Opcode::SetQ).with_opaque(i), s)
                .with_value(&b"Too large."[..])
        };
        p.answer(&answer(1, Status::E2big), true).unwrap();
        p.answer(&answer(2, Status::Enomem), true).unwrap();
        p.answer(&answer(3, Status::KeyEexists), true).unwrap();
        p.answer(&answer(4, Status::KeyEnoent), true).unwrap();
        assert!(p.answer(&answer(99, Status::E2big), true).is_err());
        let retry = p.settle();
        assert_eq!(retry, vec![(2, Status::Enomem)]);
        assert_eq!((p.delivery.written, p.delivery.skipped), (1, 2));
        assert_eq!(p.delivery.failed.len(), 2);
        assert_eq!(&p.delivery.failed[1].key[..], b"big");
        assert!(
            p.delivery.failed[1].reason.contains("E2BIG"),
            "{:?}",
            p.delivery.failed[1]
        );
    }
}

/// The sink against a scripted server on 127.0.0.1: what it resends, and when.
#[cfg(test)]
mod server_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::{SinkExt, StreamExt};
    use pump::{BatchSender, Options, SinkKind, Source, Spec};
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

    async fn transfer(port: u16, n: usize) -> Result<pump::Summary, Error> {
        let mut options = Options {
            threads: 1,
            ..Options::default()
        };
        options.extra.backoff_cap = Duration::from_millis(20);
        let spec = Spec::parse(&format!("memcached://127.0.0.1:{port}")).unwrap();
        let sink = super::super::MemcachedKind.open(&spec, &options).unwrap();
        let messages = (0..n)
            .map(|i| Message::mutation(format!("k{i}"), "v"))
            .collect();
        tokio::time::timeout(
            Duration::from_secs(20),
            pump::run(Box::new(Messages(messages)), sink, Context::new(options)),
        )
        .await
        .expect("the transfer ended")
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

    #[tokio::test]
    async fn a_server_that_keeps_hanging_up_is_an_error_naming_it() {
        let (port, _seen) = server(|_, _| (None, true)).await;
        let err = transfer(port, 3).await.unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("lost the connection"), "{err}");
    }
}
