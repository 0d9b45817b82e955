//! The one pipelined writer and retry driver of every network sink: the memcached, couchbase
//! and TAP sinks (and any future one) supply a [`Protocol`] (their encoding, their routing,
//! what each status means) and run as a [`PipelinedSink`]. Reconnect, resend, backoff and
//! the order of writes are done here, the same for all.
//!
//! ```text
//! batches ──route──▶ lane (endpoint, group % connections): a queue ──rounds──▶ one connection
//!                    a group (a vbucket: a key always has the same) always goes to one lane
//!
//! one round on the wire, request ids consecutive on the connection:
//!   write#n write#n+1 ... write#n+k-1 [barrier#n+k]   the last request is always answered
//!   (memcached: quiet SETQ/ADDQ/DELETEQ then a NOOP; TAP: the last message carries ACK)
//! answers: an explicit answer names its request id (a failure, an ack); the answer to a
//!   round's last request settles the round: every request of it without an answer succeeded
//! ```
//!
//! A protocol that encodes ahead ([`Protocol::encodes_ahead`]: memcached) has each message
//! encoded into its lane's next round as its batch is taken, in source order, its request id
//! given then: the copies of keys and values read each batch in order, where a lane's round
//! cut at sending holds every n-th message of several batches, scattered in memory. A hold or
//! a resend first puts the lane's messages encoded ahead back in its queue, in order, to be
//! encoded again when sent (their ids never reach the wire).
//!
//! The order contract, per group (and so per vbucket and per key):
//! - a group's messages go out in source order on one connection, which answers in order;
//! - a message answered "retry later" (TMPFAIL, ENOMEM, EBUSY) or "not my vbucket" *holds its
//!   group*: that message and every later message of its group (those already on the wire are
//!   voided: their answers no longer count) wait together for the backoff, then go out again,
//!   in order, routed afresh (after a map refresh for "not my vbucket"). So an older value is
//!   never written after a newer one; a later message may be written twice (at least once);
//! - a lost connection puts every unsettled request of its lane back at the head of the lane's
//!   queue, in order, and reconnects with backoff (up to `max_retry` attempts in a row without
//!   a settled round); the resend may write some messages twice, never out of order;
//! - each message is counted once, when it is settled (written, skipped or failed), however
//!   often it was sent; a batch is confirmed when its last message is settled;
//! - an authentication refusal (at connect, or answered to a write) is never retried: the run
//!   stops, naming the flags that give the credentials.
//!
//! Memory: batches stay in the driver until confirmed, and each holds its share of the
//! channel's byte budget until then, so what waits here is bounded by the channel's limits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::batch::{Ack, Delivery, KeyFailure};
use crate::channel::BatchReceiver;
use crate::error::Error;
use crate::message::Message;
use crate::pipeline::{Context, Sink};
use crate::retry::{RetryPolicy, Verdict};

/// The writing half of one connection.
#[async_trait]
pub trait LinkWriter: Send + 'static {
    /// Writes `buf` (one or many requests) whole, under the connection's timeout.
    async fn write(&mut self, buf: &[u8]) -> Result<(), String>;
}

/// The reading half of one connection.
#[async_trait]
pub trait LinkReader: Send + 'static {
    /// One answer as the protocol reads it.
    type Answer: Send + 'static;
    /// The next answer; `Ok(None)` when nothing came within `wait`. A close is an error.
    async fn read(&mut self, wait: Duration) -> Result<Option<Self::Answer>, String>;
}

/// A connected, authenticated connection (bucket selected) as a sink opened it.
pub struct Link<A> {
    pub writer: Box<dyn LinkWriter>,
    pub reader: Box<dyn LinkReader<Answer = A>>,
}

/// Why a connection could not be opened.
#[derive(Debug, Clone)]
pub enum LinkError {
    /// The destination refused the credentials, or wants some: never retried.
    Denied(String),
    /// Anything else (refused, reset, timed out): retried with backoff.
    Failed(String),
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The unit of order: messages of one group keep their order (a vbucket: every source
    /// gives a key the same one).
    pub group: u16,
    /// The index of the endpoint that takes it now, in [`Protocol::endpoints`]; `None` when no
    /// endpoint holds its vbucket at the moment (it waits for a fresher map).
    pub endpoint: Option<usize>,
}

/// What an answer read from a connection is.
#[derive(Debug)]
pub enum Heard<S> {
    /// The answer to request `id`, with its status.
    Answer { id: u32, status: S },
    /// A request of the peer (a NOOP of the destination): `reply` is written back.
    Request { reply: Option<Bytes> },
    /// Nothing the driver needs.
    Ignore,
    /// The connection is no longer trustworthy (a frame that answers nothing sent): it is
    /// dropped and everything unsettled on it is resent.
    Broken(String),
}

/// What a network sink supplies: its connections, routing, encoding and statuses.
#[async_trait]
pub trait Protocol: Send + Sync + 'static {
    /// One frame read from a connection.
    type Answer: Send + 'static;
    /// A status the destination answers to a write.
    type Status: Copy + Send + Sync + std::fmt::Display + 'static;

    /// The sink's spec (redacted), for errors.
    fn spec(&self) -> &str;

    /// The flags that give this sink its credentials, named when they are refused.
    fn credential_flags(&self) -> &'static str {
        "-U/-P (or USER:PASSWORD@ in the URL)"
    }

    /// Learns what it needs before the first connection (a cluster's map); no write.
    async fn start(&self) -> Result<(), String> {
        Ok(())
    }

    /// Learns what it needs of the run once the source's first batch is there and before the
    /// first connection (the source's collections); a dry run never calls it.
    async fn prepare(&self, _ctx: &Context) -> Result<(), String> {
        Ok(())
    }

    /// Learns what a batch needs before its messages are routed (a collection the source
    /// created during the run: the destination creates it). An error fails the run.
    async fn admit(&self, _messages: &[Message]) -> Result<(), String> {
        Ok(())
    }

    /// The endpoints (`host:port`) messages are routed to, by index.
    fn endpoints(&self) -> Vec<String>;

    /// Where `m` goes.
    fn route(&self, m: &Message) -> Route;

    /// True when a group's endpoint never changes during a run (one server): the writer then
    /// keeps no count of each group's messages in flight, which a changing map needs (a
    /// group stays on its old connection until those are settled).
    fn fixed_routes(&self) -> bool {
        false
    }

    /// A reason `m` can never be written here (a key too long), or `None`.
    fn refuse(&self, _m: &Message) -> Option<String> {
        None
    }

    /// Opens a connection to `endpoint`: connected, authenticated, bucket selected.
    async fn connect(&self, endpoint: &str) -> Result<Link<Self::Answer>, LinkError>;

    /// Fetches the routing again (after "not my vbucket" or an unroutable message).
    async fn refresh(&self) -> Result<(), String> {
        Ok(())
    }

    /// Appends one round: `msgs[i]` as request id `first_id + i`, then, if the last message's
    /// request is not always answered, a closing request that is (id `first_id + len`).
    /// Returns the number of ids used (`len`, or `len + 1`).
    fn encode_round(&self, msgs: &[&Message], first_id: u32, buf: &mut BytesMut) -> u32;

    /// True when a round is its messages, each encoded alone by [`Protocol::encode_one`], then
    /// the closing request of [`Protocol::encode_close`], and a message's encoding depends on
    /// nothing that changes during the run. The writer then encodes each message into its
    /// lane's next round as its batch is taken, in source order, rather than when the round
    /// is sent (see the module docs). A protocol whose encoding follows a map that may change
    /// (a cluster's), or whose last message closes its round itself, keeps false.
    fn encodes_ahead(&self) -> bool {
        false
    }

    /// Appends `m` as request `id`, as [`Protocol::encode_round`] does within a round. Called
    /// only when [`Protocol::encodes_ahead`].
    fn encode_one(&self, _m: &Message, _id: u32, _buf: &mut BytesMut) {}

    /// Appends the request that closes a round, as request `id` (always answered); returns
    /// the ids it uses. Called only when [`Protocol::encodes_ahead`].
    fn encode_close(&self, _id: u32, _buf: &mut BytesMut) -> u32 {
        0
    }

    /// Reads one answer.
    fn hear(&self, answer: Self::Answer) -> Heard<Self::Status>;

    /// What `status` answered to `m` means.
    fn verdict(&self, m: &Message, status: Self::Status) -> Verdict;

    /// True when `status` means written whatever the message (an ack): such answers let a
    /// round settle without looking at each message.
    fn is_success(&self, status: Self::Status) -> bool;
}

/// How a [`PipelinedSink`] uses its connections.
#[derive(Debug, Clone)]
pub struct DeliverConfig {
    /// Connections per endpoint (`-t`).
    pub connections: usize,
    /// Rounds' worth of messages in flight per connection (`depth * round_items`).
    pub depth: usize,
    /// Messages per round at most.
    pub round_items: usize,
    /// Temporary statuses, "not my vbucket" and reconnects.
    pub retry: RetryPolicy,
    /// The longest wait for an answer, a connect or a write.
    pub timeout: Duration,
}

/// A network sink: a [`Protocol`] driven by the one writer (see the module docs).
pub struct PipelinedSink<P: Protocol> {
    protocol: Arc<P>,
    config: DeliverConfig,
}

impl<P: Protocol> PipelinedSink<P> {
    /// A sink speaking `protocol`; nothing is opened until it runs or is checked.
    pub fn new(protocol: P, config: DeliverConfig) -> Self {
        PipelinedSink {
            protocol: Arc::new(protocol),
            config,
        }
    }

    /// The protocol (tests look inside).
    pub fn protocol(&self) -> &P {
        &self.protocol
    }
}

/// The error of a connection that could not be opened.
fn connect_error<P: Protocol>(p: &P, endpoint: &str, e: LinkError) -> Error {
    match e {
        LinkError::Denied(why) => Error::sink(
            p.spec(),
            format!(
                "{endpoint}: {why}; authentication is not retried: check {}",
                p.credential_flags()
            ),
        ),
        LinkError::Failed(why) => Error::sink(p.spec(), format!("could not connect to {why}")),
    }
}

#[async_trait]
impl<P: Protocol> Sink for PipelinedSink<P> {
    /// Connects to every endpoint once (authenticating, selecting the bucket) and closes.
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        self.protocol
            .start()
            .await
            .map_err(|e| Error::sink(self.protocol.spec(), e))?;
        let endpoints = self.protocol.endpoints();
        if endpoints.is_empty() {
            return Err(Error::sink(self.protocol.spec(), "no endpoint to write to"));
        }
        for e in endpoints {
            let link = self
                .protocol
                .connect(&e)
                .await
                .map_err(|err| connect_error(&*self.protocol, &e, err))?;
            drop(link);
        }
        Ok(())
    }

    async fn run(self: Box<Self>, input: BatchReceiver, ctx: Context) -> Result<(), Error> {
        input.wait_first().await;
        self.protocol
            .prepare(&ctx)
            .await
            .map_err(|e| Error::sink(self.protocol.spec(), e))?;
        let mut d = Driver::new(self.protocol, self.config);
        let r = d.run(&input).await;
        d.shutdown();
        r
    }
}

/// A message of a batch held by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    batch: u32,
    index: u32,
}

/// A round on the wire: its messages are requests `first ..`, in order; `last` is the id of
/// the request that closes it (a NOOP after them, or the last message itself).
struct Round<S> {
    first: u32,
    last: u32,
    /// (message, group), in request order.
    slots: Vec<(Slot, u16)>,
    /// Explicit answers so far, by offset from `first` (failures, acks): few.
    answers: Vec<(u32, S)>,
    /// Offsets superseded by a resend (their group was held after they were sent): their
    /// answers no longer count. Few.
    void: Vec<u32>,
}

impl<S: Copy> Round<S> {
    /// The id `id` is one of this round's requests: its offset.
    fn offset(&self, id: u32) -> Option<u32> {
        let off = id.wrapping_sub(self.first);
        (off <= self.last.wrapping_sub(self.first)).then_some(off)
    }
}

enum Conn {
    /// Not connected: connect at `due` (attempt `attempt`, 0 for the first).
    Down {
        due: Instant,
        attempt: u32,
    },
    Connecting {
        attempt: u32,
    },
    Up {
        tx: mpsc::Sender<Bytes>,
        generation: u64,
        outstanding: Arc<AtomicUsize>,
        tasks: [tokio::task::JoinHandle<()>; 2],
        /// Connection attempts since the last settled round.
        attempt: u32,
    },
}

struct Lane<S> {
    endpoint: String,
    conn: Conn,
    /// Routed, not yet sent, encoded when their round is sent: (slot, group).
    queue: VecDeque<(Slot, u16)>,
    /// Routed, not yet sent, encoded as they were taken ([`Protocol::encodes_ahead`]): rounds
    /// in order, closed but the last. A message is encoded ahead only while `queue` is empty,
    /// so that these always come after `queue`'s; anything that takes messages out of order
    /// (a hold, a resend) first puts them back in `queue` ([`Lane::unstage`]).
    ahead: VecDeque<Encoded>,
    /// Rounds sent, not yet settled, in id order.
    wire: VecDeque<Round<S>>,
    /// Messages in those rounds.
    in_flight: usize,
    /// The id of the next request.
    next_id: u32,
    /// The bytes of the last round encoded ahead: the next one's first capacity.
    round_bytes: usize,
}

/// A round encoded ahead: its requests from id `first` on, and their messages in order.
struct Encoded {
    bytes: BytesMut,
    first: u32,
    slots: Vec<(Slot, u16)>,
    /// The ids it uses once closed ([`Protocol::encode_close`] appended); `None` while open.
    used: Option<u32>,
}

impl<S> Lane<S> {
    /// True when it holds messages not yet sent.
    fn has_unsent(&self) -> bool {
        !self.queue.is_empty() || !self.ahead.is_empty()
    }

    /// Puts the messages encoded ahead back in `queue`, in order, their bytes dropped (the ids
    /// they had never reach the wire): they are encoded again when sent.
    fn unstage(&mut self) {
        for e in self.ahead.drain(..) {
            self.queue.extend(e.slots);
        }
    }

    /// Appends `m` (slot `slot` of group `group`) to the round being encoded ahead, opening
    /// one as needed, and closes that round once it holds `round` messages.
    #[inline]
    fn stage<P: Protocol>(&mut self, p: &P, round: usize, slot: Slot, group: u16, m: &Message) {
        if self.ahead.back().is_none_or(|e| e.used.is_some()) {
            let capacity = self.round_bytes.max(m.size() + ROUND_OVERHEAD);
            self.ahead.push_back(Encoded {
                bytes: BytesMut::with_capacity(capacity),
                first: self.next_id,
                slots: Vec::with_capacity(round),
                used: None,
            });
        }
        let Some(e) = self.ahead.back_mut() else {
            return;
        };
        p.encode_one(m, self.next_id, &mut e.bytes);
        self.next_id = self.next_id.wrapping_add(1);
        e.slots.push((slot, group));
        if e.slots.len() >= round {
            self.close(p);
        }
    }

    /// Queues `m` (slot `slot` of group `group`): encoded ahead into a round of `round`
    /// messages when `ahead` gives the protocol and nothing waits in `queue` before it.
    #[inline]
    fn enqueue<P: Protocol>(
        &mut self,
        ahead: Option<&P>,
        round: usize,
        slot: Slot,
        group: u16,
        m: &Message,
    ) {
        match ahead {
            Some(p) if self.queue.is_empty() => self.stage(p, round, slot, group, m),
            _ => self.queue.push_back((slot, group)),
        }
    }

    /// Closes the last round encoded ahead, when it is open.
    fn close<P: Protocol>(&mut self, p: &P) {
        let Some(e) = self.ahead.back_mut().filter(|e| e.used.is_none()) else {
            return;
        };
        let close = p.encode_close(self.next_id, &mut e.bytes);
        self.next_id = self.next_id.wrapping_add(close);
        e.used = Some(e.slots.len() as u32 + close);
        self.round_bytes = e.bytes.len() + ROUND_OVERHEAD;
    }
}

struct BatchState {
    messages: Vec<Message>,
    ack: Option<Ack>,
    left: usize,
    delivery: Delivery,
}

/// A held group: its messages in order, waiting for `due`.
struct Held {
    slots: Vec<Slot>,
    due: Instant,
    /// Refresh the routing before they go out again.
    refresh: bool,
    /// The status that held it, for the failure after the last attempt.
    why: String,
    /// The group is held because no endpoint takes it (not a status).
    unroutable: bool,
}

#[derive(Default)]
struct Group {
    /// The lane its unsettled messages are on (sticky while `pending > 0`).
    lane: Option<usize>,
    /// Its messages queued, on the wire or held.
    pending: u32,
    held: Option<Box<Held>>,
}

enum Event<A> {
    Answer(usize, u64, A),
    Down(usize, u64, String),
    Connected(usize, Result<Link<A>, LinkError>),
}

struct Driver<P: Protocol> {
    p: Arc<P>,
    config: DeliverConfig,
    lanes: Vec<Lane<P::Status>>,
    /// Per endpoint index of the protocol, its lanes (one per connection).
    endpoint_lanes: Vec<Vec<usize>>,
    groups: Vec<Group>,
    batches: Vec<Option<BatchState>>,
    free: Vec<u32>,
    live_batches: usize,
    /// Resends of each message (only those resent).
    attempts: HashMap<Slot, u32>,
    /// The groups that are held, in no order.
    held: Vec<u16>,
    /// The protocol's routes never change ([`Protocol::fixed_routes`]).
    fixed: bool,
    /// The protocol encodes messages ahead ([`Protocol::encodes_ahead`]).
    ahead: bool,
    queued: usize,
    events_tx: mpsc::Sender<Event<P::Answer>>,
    events: mpsc::Receiver<Event<P::Answer>>,
    next_generation: u64,
}

impl<P: Protocol> Driver<P> {
    fn new(p: Arc<P>, config: DeliverConfig) -> Self {
        let (events_tx, events) = mpsc::channel(4096);
        let fixed = p.fixed_routes();
        let ahead = p.encodes_ahead();
        Driver {
            p,
            config,
            lanes: Vec::new(),
            endpoint_lanes: Vec::new(),
            groups: (0..=u16::MAX).map(|_| Group::default()).collect(),
            batches: Vec::new(),
            free: Vec::new(),
            live_batches: 0,
            attempts: HashMap::new(),
            held: Vec::new(),
            fixed,
            ahead,
            queued: 0,
            events_tx,
            events,
            next_generation: 1,
        }
    }

    fn fatal(&self, message: impl std::fmt::Display) -> Error {
        Error::sink(self.p.spec(), message)
    }

    /// A write answered with a refusal of the credentials (`what`: the status and endpoint).
    fn denied(&self, what: &str) -> Error {
        self.fatal(format!(
            "a write answered {what}: the server requires authentication, or refused it; authentication is not retried: check {}",
            self.p.credential_flags()
        ))
    }

    /// The lanes of the protocol's endpoints now, created as needed.
    fn map_endpoints(&mut self) {
        let endpoints = self.p.endpoints();
        let n = self.config.connections.max(1);
        self.endpoint_lanes = endpoints
            .iter()
            .map(|e| {
                let mut ids: Vec<usize> = self
                    .lanes
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| &l.endpoint == e)
                    .map(|(i, _)| i)
                    .collect();
                while ids.len() < n {
                    self.lanes.push(Lane {
                        endpoint: e.clone(),
                        conn: Conn::Down {
                            due: Instant::now(),
                            attempt: 0,
                        },
                        queue: VecDeque::new(),
                        ahead: VecDeque::new(),
                        wire: VecDeque::new(),
                        in_flight: 0,
                        next_id: 0,
                        round_bytes: 0,
                    });
                    ids.push(self.lanes.len() - 1);
                }
                ids
            })
            .collect();
    }

    /// Connects every lane at once; any failure stops the run (a destination that is not
    /// there at the start is named at once).
    async fn connect_all(&mut self) -> Result<(), Error> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, lane) in self.lanes.iter().enumerate() {
            let (p, e) = (self.p.clone(), lane.endpoint.clone());
            tasks.spawn(async move { (i, p.connect(&e).await) });
        }
        while let Some(r) = tasks.join_next().await {
            let (i, r) = r.map_err(|e| self.fatal(format!("a connect task failed: {e}")))?;
            match r {
                Ok(link) => self.up(i, link, 0),
                Err(e) => {
                    let endpoint = self.lanes[i].endpoint.clone();
                    return Err(connect_error(&*self.p, &endpoint, e));
                }
            }
        }
        Ok(())
    }

    fn up(&mut self, lane: usize, link: Link<P::Answer>, attempt: u32) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let outstanding = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::channel::<Bytes>(self.config.depth + 64);
        let Link {
            mut writer,
            mut reader,
        } = link;
        let events = self.events_tx.clone();
        let writer_task = tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                if let Err(e) = writer.write(&buf).await {
                    let _ = events.send(Event::Down(lane, generation, e)).await;
                    return;
                }
            }
        });
        let events = self.events_tx.clone();
        let (waiting, timeout) = (outstanding.clone(), self.config.timeout);
        let reader_task = tokio::spawn(async move {
            loop {
                match reader.read(timeout).await {
                    Ok(Some(a)) => {
                        if events
                            .send(Event::Answer(lane, generation, a))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) if waiting.load(Ordering::Relaxed) == 0 => {}
                    Ok(None) => {
                        let why = format!(
                            "no answer within {:.1}s while waiting for a round's answers",
                            timeout.as_secs_f64()
                        );
                        let _ = events.send(Event::Down(lane, generation, why)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = events.send(Event::Down(lane, generation, e)).await;
                        return;
                    }
                }
            }
        });
        self.lanes[lane].conn = Conn::Up {
            tx,
            generation,
            outstanding,
            tasks: [writer_task, reader_task],
            attempt,
        };
    }

    fn shutdown(&mut self) {
        for lane in &mut self.lanes {
            if let Conn::Up { tasks, .. } = &lane.conn {
                for t in tasks {
                    t.abort();
                }
            }
            lane.conn = Conn::Down {
                due: Instant::now(),
                attempt: 0,
            };
        }
    }

    async fn run(&mut self, input: &BatchReceiver) -> Result<(), Error> {
        self.p.start().await.map_err(|e| self.fatal(e))?;
        self.map_endpoints();
        if self.lanes.is_empty() {
            return Err(self.fatal("no endpoint to write to"));
        }
        self.connect_all().await?;
        let mut open = true;
        let limit = self.config.round_items.max(1) * 2;
        loop {
            // Every batch already waiting is taken first, so that a lane sends full rounds;
            // a partial one goes when nothing more is waiting (or its connection is idle).
            let mut waiting = open;
            while open && self.queued < limit {
                match input.recv().now_or_never() {
                    Some(Some(b)) => self.admit_and_take(b).await?,
                    Some(None) => open = false,
                    None => {
                        waiting = false;
                        break;
                    }
                }
            }
            self.send_rounds(!waiting || !open)?;
            if !open && self.live_batches == 0 {
                return Ok(());
            }
            let due = self.next_due();
            tokio::select! {
                biased;
                ev = self.events.recv() => {
                    if let Some(ev) = ev {
                        self.event(ev)?;
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.wake().await?;
                }
                b = input.recv(), if open && self.queued < limit => match b {
                    Some(b) => self.admit_and_take(b).await?,
                    None => open = false,
                },
            }
        }
    }

    /// The earliest held group or down lane to wake.
    fn next_due(&self) -> Option<Instant> {
        let lanes = self.lanes.iter().filter_map(|l| match &l.conn {
            Conn::Down { due, .. } if l.has_unsent() || !l.wire.is_empty() => Some(*due),
            _ => None,
        });
        let held = self
            .held
            .iter()
            .filter_map(|g| self.groups[*g as usize].held.as_ref().map(|h| h.due));
        lanes.chain(held).min()
    }

    /// The message a slot names (a slot always names a message of a live batch).
    fn message(&self, s: Slot) -> Option<&Message> {
        message_of(&self.batches, s)
    }

    /// [`Protocol::admit`], then [`Driver::take`].
    async fn admit_and_take(&mut self, batch: crate::batch::Batch) -> Result<(), Error> {
        self.p
            .admit(&batch.messages)
            .await
            .map_err(|e| self.fatal(e))?;
        self.take(batch);
        Ok(())
    }

    /// Takes a batch from the channel: each message routed to its lane (or its held group).
    fn take(&mut self, batch: crate::batch::Batch) {
        let (messages, ack) = batch.into_parts();
        if messages.is_empty() {
            ack.confirm(Delivery::default());
            return;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.batches.push(None);
                (self.batches.len() - 1) as u32
            }
        };
        // Each message to its lane (or its held group) as it is read; the few that are not
        // sent (control messages, refused keys) are settled once the batch is in the slab.
        let mut unsent: Vec<(Slot, Settle)> = Vec::new();
        for (index, m) in messages.iter().enumerate() {
            let slot = Slot {
                batch: id,
                index: index as u32,
            };
            if m.is_control() {
                unsent.push((slot, Settle::Skipped));
            } else if let Some(why) = self.p.refuse(m) {
                unsent.push((slot, Settle::Failed(why)));
            } else {
                let route = self.p.route(m);
                if let Some(l) = self.place(slot, route) {
                    let ahead = self.ahead.then_some(&*self.p);
                    let round = self.config.round_items.max(1);
                    self.lanes[l].enqueue(ahead, round, slot, route.group, m);
                }
            }
        }
        let n = messages.len();
        self.batches[id as usize] = Some(BatchState {
            messages,
            ack: Some(ack),
            left: n,
            delivery: Delivery::default(),
        });
        self.live_batches += 1;
        for (slot, how) in unsent {
            self.settle(slot, how);
        }
    }

    /// Counts a message as its group's and finds its lane, which the caller then queues it
    /// on ([`Lane::enqueue`]); `None` when it waits with its group instead (held, or no
    /// endpoint takes it now).
    #[inline]
    fn place(&mut self, slot: Slot, route: Route) -> Option<usize> {
        if self.fixed && self.held.is_empty() {
            // Nothing held and nothing to count (the common case of one server): the group's
            // lane without reading its state, whose line the reading of the data has usually
            // evicted by then (a cache miss per message).
            if let Some(ls) = route.endpoint.and_then(|e| self.endpoint_lanes.get(e)) {
                self.queued += 1;
                return Some(lane_of(ls, route.group));
            }
        }
        let g = &mut self.groups[route.group as usize];
        if !self.fixed {
            g.pending += 1;
        }
        if let Some(h) = &mut g.held {
            h.slots.push(slot);
            return None;
        }
        let lane = match (g.lane, route.endpoint) {
            (Some(l), _) if g.pending > 1 => Some(l),
            (_, Some(e)) => self
                .endpoint_lanes
                .get(e)
                .map(|ls| lane_of(ls, route.group)),
            (_, None) => None,
        };
        match lane {
            Some(l) => {
                g.lane = Some(l);
                self.queued += 1;
                Some(l)
            }
            None => {
                // No endpoint takes it now: it waits, with its group, for a fresher map.
                let attempt = self.attempts.entry(slot).or_insert(0);
                *attempt += 1;
                let due = Instant::now()
                    + self
                        .config
                        .retry
                        .backoff(*attempt)
                        .unwrap_or(Duration::ZERO);
                g.held = Some(Box::new(Held {
                    slots: vec![slot],
                    due,
                    refresh: true,
                    why: "no server holds its vbucket".into(),
                    unroutable: true,
                }));
                self.held.push(route.group);
                None
            }
        }
    }

    /// Sends what each connected lane has queued, a round at a time, while its window of
    /// messages on the wire has room.
    /// With `partial` false, a lane that has messages on the wire sends full rounds only.
    fn send_rounds(&mut self, partial: bool) -> Result<(), Error> {
        // The window is in messages, not rounds: a batch split over -t connections makes
        // rounds smaller, and a connection must keep as much on the wire.
        let window = self.config.depth * self.config.round_items.max(1);
        let max_rounds = MAX_ROUNDS_PER_DEPTH * self.config.depth;
        for l in 0..self.lanes.len() {
            loop {
                let lane = &mut self.lanes[l];
                let Conn::Up {
                    tx, outstanding, ..
                } = &lane.conn
                else {
                    break;
                };
                let round = self.config.round_items.max(1);
                if !lane.has_unsent() || lane.in_flight >= window || lane.wire.len() >= max_rounds {
                    break;
                }
                if lane.queue.is_empty() {
                    // Encoded ahead: a closed round is full; the open one is a partial round.
                    // Only the last round can be open: then it is the only one.
                    let open = lane.ahead.front().is_some_and(|e| e.used.is_none());
                    if open && !partial && lane.in_flight > 0 {
                        break;
                    }
                    let (tx, outstanding) = (tx.clone(), outstanding.clone());
                    if open {
                        lane.close(&*self.p);
                    }
                    let Some(e) = lane.ahead.pop_front() else {
                        break;
                    };
                    let used = e.used.unwrap_or(e.slots.len() as u32).max(1);
                    self.queued -= e.slots.len();
                    lane.in_flight += e.slots.len();
                    lane.wire.push_back(Round {
                        first: e.first,
                        last: e.first.wrapping_add(used - 1),
                        slots: e.slots,
                        answers: Vec::new(),
                        void: Vec::new(),
                    });
                    outstanding.fetch_add(1, Ordering::Relaxed);
                    if tx.try_send(e.bytes.freeze()).is_err() {
                        self.lane_down(l, "the connection's writer stopped".into())?;
                    }
                    continue;
                }
                if !partial && lane.queue.len() < round && lane.in_flight > 0 {
                    break;
                }
                let (tx, outstanding) = (tx.clone(), outstanding.clone());
                let take = lane.queue.len().min(self.config.round_items.max(1));
                let slots: Vec<(Slot, u16)> = lane.queue.drain(..take).collect();
                let first = lane.next_id;
                self.queued -= take;
                let (used, bytes) = {
                    let batches = &self.batches;
                    let msgs: Vec<&Message> = slots
                        .iter()
                        .filter_map(|(s, _)| message_of(batches, *s))
                        .collect();
                    if msgs.len() != slots.len() {
                        return Err(self.fatal("a message to send is gone (a bug)"));
                    }
                    // A buffer of the round's size: one allocation, no growth while encoding.
                    let estimate: usize = msgs
                        .iter()
                        .map(|m| m.size() + ROUND_OVERHEAD)
                        .sum::<usize>()
                        + ROUND_OVERHEAD;
                    warm(&msgs);
                    let mut buf = BytesMut::with_capacity(estimate);
                    let used = self.p.encode_round(&msgs, first, &mut buf);
                    (used.max(1), buf.freeze())
                };
                let lane = &mut self.lanes[l];
                lane.next_id = first.wrapping_add(used);
                lane.in_flight += slots.len();
                lane.wire.push_back(Round {
                    first,
                    last: first.wrapping_add(used - 1),
                    slots,
                    answers: Vec::new(),
                    void: Vec::new(),
                });
                outstanding.fetch_add(1, Ordering::Relaxed);
                if tx.try_send(bytes).is_err() {
                    self.lane_down(l, "the connection's writer stopped".into())?;
                }
            }
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<P::Answer>) -> Result<(), Error> {
        match ev {
            Event::Answer(l, generation, a) => {
                if !self.current(l, generation) {
                    return Ok(());
                }
                match self.p.hear(a) {
                    Heard::Answer { id, status } => self.answer(l, id, status),
                    Heard::Request { reply } => {
                        if let (Some(reply), Conn::Up { tx, .. }) = (reply, &self.lanes[l].conn) {
                            if tx.try_send(reply).is_err() {
                                return self.lane_down(l, "the connection's writer stopped".into());
                            }
                        }
                        Ok(())
                    }
                    Heard::Ignore => Ok(()),
                    Heard::Broken(why) => self.lane_down(l, why),
                }
            }
            Event::Down(l, generation, why) => {
                if self.current(l, generation) {
                    self.lane_down(l, why)
                } else {
                    Ok(())
                }
            }
            Event::Connected(l, r) => {
                let Conn::Connecting { attempt } = self.lanes[l].conn else {
                    return Ok(());
                };
                match r {
                    Ok(link) => {
                        self.up(l, link, attempt);
                        Ok(())
                    }
                    Err(LinkError::Denied(why)) => {
                        let endpoint = self.lanes[l].endpoint.clone();
                        Err(connect_error(&*self.p, &endpoint, LinkError::Denied(why)))
                    }
                    Err(LinkError::Failed(why)) => self.schedule_reconnect(l, attempt, why),
                }
            }
        }
    }

    fn current(&self, l: usize, generation: u64) -> bool {
        matches!(self.lanes[l].conn, Conn::Up { generation: g, .. } if g == generation)
    }

    /// One answer of lane `l`: recorded, and when it closes the oldest round, the round is
    /// settled.
    fn answer(&mut self, l: usize, id: u32, status: P::Status) -> Result<(), Error> {
        let lane = &mut self.lanes[l];
        let Some(r) = lane.wire.iter().position(|r| r.offset(id).is_some()) else {
            return self.lane_down(
                l,
                format!("an answer to request {id}, which is not in flight"),
            );
        };
        let round = &mut lane.wire[r];
        let off = id.wrapping_sub(round.first);
        if id == round.last && r > 0 {
            let oldest = lane.wire[0].last;
            return self.lane_down(
                l,
                format!("the answer closing a later round ({id}) came before {oldest}'s"),
            );
        }
        round.answers.push((off, status));
        if id != round.last {
            // A refusal of the credentials is final at once: the server may hang up before
            // the round's end is answered.
            let denied = match round.slots.get(off as usize) {
                Some((slot, _)) if !round.void.contains(&off) => message_of(&self.batches, *slot)
                    .is_some_and(|m| self.p.verdict(m, status) == Verdict::Denied),
                _ => false,
            };
            if denied {
                let endpoint = self.lanes[l].endpoint.clone();
                return Err(self.denied(&format!("{status} from {endpoint}")));
            }
            return Ok(());
        }
        // The oldest round is answered: settle it.
        let Some(mut round) = lane.wire.pop_front() else {
            return Ok(());
        };
        lane.in_flight -= round.slots.len();
        if let Conn::Up {
            outstanding,
            attempt,
            ..
        } = &mut lane.conn
        {
            outstanding.fetch_sub(1, Ordering::Relaxed);
            *attempt = 0;
        }
        let n = round.slots.len();
        if round.void.is_empty()
            && round
                .answers
                .iter()
                .all(|(o, st)| *o as usize >= n || self.p.is_success(*st))
        {
            // Every message succeeded quietly (the only answer closed the round): settled in
            // runs of one batch.
            self.settle_written(&round.slots);
            return Ok(());
        }
        let endpoint = lane.endpoint.clone();
        // The answers in request order, walked beside the messages.
        round.answers.sort_by_key(|(o, _)| *o);
        let mut next_answer = 0;
        for i in 0..round.slots.len() {
            let off = i as u32;
            let mut status = None;
            while let Some((o, st)) = round.answers.get(next_answer) {
                if *o > off {
                    break;
                }
                if *o == off {
                    status = Some(*st);
                }
                next_answer += 1;
            }
            if round.void.contains(&off) {
                continue;
            }
            let (slot, group) = round.slots[i];
            let verdict = match status {
                // Quiet: no answer is success.
                None => Verdict::Done,
                Some(st) => match self.message(slot) {
                    Some(m) => self.p.verdict(m, st),
                    None => continue,
                },
            };
            let reason = || match status {
                Some(st) => format!("{st} from {endpoint}"),
                None => String::new(),
            };
            match verdict {
                Verdict::Done => self.settle_group(slot, group, Settle::Written),
                Verdict::Skip => self.settle_group(slot, group, Settle::Skipped),
                Verdict::Fail => self.settle_group(slot, group, Settle::Failed(reason())),
                Verdict::Denied => return Err(self.denied(&reason())),
                Verdict::Retry | Verdict::Reroute => {
                    // The rest of this round's messages of the group go with it, in order.
                    let mut following = Vec::new();
                    for j in i + 1..round.slots.len() {
                        let (later, g) = round.slots[j];
                        if g == group && !round.void.contains(&(j as u32)) {
                            round.void.push(j as u32);
                            following.push(later);
                        }
                    }
                    let refresh = verdict == Verdict::Reroute;
                    self.hold(l, slot, group, following, reason(), refresh);
                }
            }
        }
        Ok(())
    }

    /// Settles messages written quietly: their groups' counts, and their batches in runs.
    fn settle_written(&mut self, slots: &[(Slot, u16)]) {
        if !self.fixed {
            for (_, group) in slots {
                self.release_pending(*group);
            }
        }
        let mut i = 0;
        while i < slots.len() {
            let batch = slots[i].0.batch;
            let run = slots[i..]
                .iter()
                .take_while(|(s, _)| s.batch == batch)
                .count();
            if self.attempts.is_empty() {
                self.settle_run(batch, run);
            } else {
                for (slot, _) in &slots[i..i + run] {
                    self.settle(*slot, Settle::Written);
                }
            }
            i += run;
        }
    }

    /// Settles a message of a group that was on the wire.
    fn settle_group(&mut self, slot: Slot, group: u16, how: Settle) {
        self.release_pending(group);
        self.settle(slot, how);
    }

    fn release_pending(&mut self, group: u16) {
        if self.fixed {
            return;
        }
        let g = &mut self.groups[group as usize];
        g.pending = g.pending.saturating_sub(1);
        if g.pending == 0 && g.held.is_none() {
            g.lane = None;
        }
    }

    /// Holds `group` from message `slot` on (see the module docs): the message and every
    /// later one of its group, on the wire (voided) or queued, wait for the backoff.
    fn hold(
        &mut self,
        l: usize,
        slot: Slot,
        group: u16,
        following: Vec<Slot>,
        why: String,
        refresh: bool,
    ) {
        // Messages are taken out of the lane's order below: none stays encoded ahead.
        self.lanes[l].unstage();
        let attempt = {
            let a = self.attempts.entry(slot).or_insert(0);
            *a += 1;
            *a
        };
        let Some(pause) = self.config.retry.backoff(attempt) else {
            // Attempts used up: this message fails; the group goes on (the messages that
            // followed it in this round go out again, in order).
            self.attempts.remove(&slot);
            self.settle_group(
                slot,
                group,
                Settle::Failed(format!("{why}, still after {} retries", attempt - 1)),
            );
            let lane = &mut self.lanes[l];
            for s in following.into_iter().rev() {
                lane.queue.push_front((s, group));
                self.queued += 1;
            }
            return;
        };
        self.count_retry(slot);
        let mut slots = vec![slot];
        slots.extend(following);
        let lane = &mut self.lanes[l];
        for round in lane.wire.iter_mut() {
            for (j, (later, g)) in round.slots.iter().enumerate() {
                if *g == group && !round.void.contains(&(j as u32)) {
                    round.void.push(j as u32);
                    slots.push(*later);
                }
            }
        }
        let before = lane.queue.len();
        lane.queue.retain(|(s, g)| {
            if *g == group {
                slots.push(*s);
                false
            } else {
                true
            }
        });
        self.queued -= before - self.lanes[l].queue.len();
        let g = &mut self.groups[group as usize];
        match &mut g.held {
            // Held again while being released: keep the order, older first.
            Some(h) => {
                slots.append(&mut h.slots);
                h.slots = slots;
                h.refresh |= refresh;
            }
            None => {
                g.held = Some(Box::new(Held {
                    slots,
                    due: Instant::now() + pause,
                    refresh,
                    why,
                    unroutable: false,
                }));
                self.held.push(group);
            }
        }
    }

    fn count_retry(&mut self, slot: Slot) {
        if let Some(b) = self.batches[slot.batch as usize].as_mut() {
            b.delivery.retries += 1;
        }
    }

    /// Releases the held groups that are due (refreshing the routing first when one asks),
    /// and starts the reconnects that are due.
    async fn wake(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        let groups = &self.groups;
        let due: Vec<u16> = self
            .held
            .iter()
            .copied()
            .filter(|g| {
                groups[*g as usize]
                    .held
                    .as_ref()
                    .is_some_and(|h| h.due <= now)
            })
            .collect();
        self.held.retain(|g| !due.contains(g));
        if !due.is_empty() {
            let refresh = due.iter().any(|g| {
                self.groups[*g as usize]
                    .held
                    .as_ref()
                    .is_some_and(|h| h.refresh)
            });
            if refresh {
                if let Err(e) = self.p.refresh().await {
                    tracing::warn!("{}: {e}; routing with the map held", self.p.spec());
                }
                self.map_endpoints();
            }
            for group in due {
                self.release(group);
            }
        }
        for l in 0..self.lanes.len() {
            let Conn::Down { due, attempt, .. } = &self.lanes[l].conn else {
                continue;
            };
            if *due > now || (!self.lanes[l].has_unsent() && self.lanes[l].wire.is_empty()) {
                continue;
            }
            let attempt = *attempt;
            self.lanes[l].conn = Conn::Connecting { attempt };
            let (p, e, events) = (
                self.p.clone(),
                self.lanes[l].endpoint.clone(),
                self.events_tx.clone(),
            );
            tokio::spawn(async move {
                let r = p.connect(&e).await;
                let _ = events.send(Event::Connected(l, r)).await;
            });
        }
        Ok(())
    }

    /// Sends a held group's messages again, in order, each routed afresh.
    fn release(&mut self, group: u16) {
        let Some(held) = self.groups[group as usize].held.take() else {
            return;
        };
        let g = &mut self.groups[group as usize];
        if !self.fixed {
            g.pending = g.pending.saturating_sub(held.slots.len() as u32);
        }
        g.lane = None;
        let mut slots = held.slots.into_iter();
        while let Some(slot) = slots.next() {
            let Some(m) = self.message(slot) else {
                continue;
            };
            let route = self.p.route(m);
            if route.endpoint.is_none() && held.unroutable {
                // Still no endpoint: its first message used an attempt; out of attempts,
                // the whole group fails.
                let attempt = self.attempts.get(&slot).copied().unwrap_or(0);
                if self.config.retry.backoff(attempt + 1).is_none() {
                    let why = format!("{}, still after {attempt} retries", held.why);
                    self.attempts.remove(&slot);
                    self.settle(slot, Settle::Failed(why.clone()));
                    for s in slots.by_ref() {
                        self.settle(s, Settle::Failed(why.clone()));
                    }
                    return;
                }
            }
            if let Some(l) = self.place(slot, route) {
                let ahead = self.ahead.then_some(&*self.p);
                let round = self.config.round_items.max(1);
                match message_of(&self.batches, slot) {
                    Some(m) => self.lanes[l].enqueue(ahead, round, slot, route.group, m),
                    None => self.lanes[l].queue.push_back((slot, route.group)),
                }
            }
        }
    }

    /// Lane `l` lost its connection: every unsettled request goes back to the head of its
    /// queue, in order, and it reconnects after a backoff.
    fn lane_down(&mut self, l: usize, why: String) -> Result<(), Error> {
        let lane = &mut self.lanes[l];
        lane.unstage();
        let attempt = match &lane.conn {
            Conn::Up { tasks, attempt, .. } => {
                for t in tasks {
                    t.abort();
                }
                *attempt
            }
            Conn::Down { attempt, .. } | Conn::Connecting { attempt } => *attempt,
        };
        let mut back: Vec<(Slot, u16)> = Vec::with_capacity(lane.in_flight + lane.queue.len());
        for round in lane.wire.drain(..) {
            for (j, s) in round.slots.into_iter().enumerate() {
                if !round.void.contains(&(j as u32)) {
                    back.push(s);
                }
            }
        }
        lane.in_flight = 0;
        self.queued += back.len();
        let resent: Vec<Slot> = back.iter().map(|(s, _)| *s).collect();
        back.extend(lane.queue.drain(..));
        lane.queue = back.into();
        for slot in resent {
            self.count_retry(slot);
        }
        self.schedule_reconnect(l, attempt, why)
    }

    fn schedule_reconnect(&mut self, l: usize, attempt: u32, why: String) -> Result<(), Error> {
        let next = attempt + 1;
        let lane = &mut self.lanes[l];
        let Some(pause) = self.config.retry.backoff(next) else {
            return Err(Error::sink(
                self.p.spec(),
                format!(
                    "lost the connection to {} and could not get it back in {attempt} attempts; last error: {why}",
                    lane.endpoint
                ),
            ));
        };
        tracing::warn!(
            "{}: {}: {why}; reconnecting in {pause:?} (attempt {next})",
            self.p.spec(),
            lane.endpoint
        );
        lane.conn = Conn::Down {
            due: Instant::now() + pause,
            attempt: next,
        };
        Ok(())
    }

    /// Records `n` messages of `batch` written; confirms the batch after its last message.
    fn settle_run(&mut self, batch: u32, n: usize) {
        let Some(b) = self.batches[batch as usize].as_mut() else {
            return;
        };
        b.delivery.written += n;
        b.left -= n;
        if b.left == 0 {
            self.finish_batch(batch);
        }
    }

    fn finish_batch(&mut self, batch: u32) {
        if let Some(mut b) = self.batches[batch as usize].take() {
            if let Some(ack) = b.ack.take() {
                ack.confirm(std::mem::take(&mut b.delivery));
            }
        }
        self.free.push(batch);
        self.live_batches -= 1;
    }

    /// Records how one message ended; confirms its batch after its last message.
    fn settle(&mut self, slot: Slot, how: Settle) {
        let Some(b) = self.batches[slot.batch as usize].as_mut() else {
            return;
        };
        match how {
            Settle::Written => b.delivery.written += 1,
            Settle::Skipped => {
                let op = b.messages[slot.index as usize].op;
                b.delivery.skip(op);
            }
            Settle::Failed(why) => {
                let f = KeyFailure::of(&b.messages[slot.index as usize], why);
                b.delivery.failed.push(f);
            }
        }
        if !self.attempts.is_empty() {
            self.attempts.remove(&slot);
        }
        b.left -= 1;
        if b.left == 0 {
            self.finish_batch(slot.batch);
        }
    }
}

/// Rounds a connection may have on the wire, per round of `depth` (small rounds, when the
/// messages trickle in, each cost an answer).
const MAX_ROUNDS_PER_DEPTH: usize = 8;

/// Bytes a request adds to its message's key, value and meta, at most (a header and extras).
const ROUND_OVERHEAD: usize = 24 + 48;

/// Reads the first and last byte of each message's key and value before a round is encoded.
/// With `-t` connections a lane's round holds every n-th message of several batches, whose
/// bytes lie scattered in memory, and the encoding's copies waited for them one message at a
/// time; loads that depend on nothing overlap, so the copies then find the bytes in the cache.
fn warm(msgs: &[&Message]) {
    let mut x = 0u8;
    for m in msgs {
        for b in [&m.key, &m.value] {
            if let (Some(first), Some(last)) = (b.first(), b.last()) {
                x ^= first ^ last;
            }
        }
    }
    std::hint::black_box(x);
}

/// The lane of `group` among an endpoint's lanes `ls` (never empty): a group always takes the
/// same one.
#[inline]
fn lane_of(ls: &[usize], group: u16) -> usize {
    let n = ls.len();
    // -t is usually a power of two: a mask rather than a division per message.
    if n.is_power_of_two() {
        ls[group as usize & (n - 1)]
    } else {
        ls[group as usize % n]
    }
}

/// The message `s` names, while its batch is live.
fn message_of(batches: &[Option<BatchState>], s: Slot) -> Option<&Message> {
    batches
        .get(s.batch as usize)?
        .as_ref()?
        .messages
        .get(s.index as usize)
}

/// How a message ended.
enum Settle {
    Written,
    Skipped,
    Failed(String),
}

impl<A> std::fmt::Debug for Link<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}
