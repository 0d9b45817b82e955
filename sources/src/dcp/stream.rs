//! One DCP connection: open, stream its vbuckets, answer NOOPs, ack what the sink confirmed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pump::checkpoint::Ticket;
use pump::{Batch, BatchBuilder, BatchSender, Checkpoint, Error, Message, Op};
use pump_client::{Answer, ClientError, Connection, Next, ReadHalf, WriteHalf};
use pump_protocol::collections::{split_key, CollectionPath, Manifest, StreamFilter, SystemEvent};
use pump_protocol::dcp::{
    noop_reply, open_flags, DcpItem, DcpMessage, StreamEndReason, StreamReqReply, StreamRequest,
};
use pump_protocol::{Feature, Magic, Opcode, Packet, Status};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use tokio_util::sync::CancellationToken;

use super::checkpoint::{CheckpointFile, VbPosition};
use super::DcpConfig;
use crate::net::{Acker, IDLE_FLUSH};

/// Rollbacks of one vbucket tolerated in a run before giving up.
const MAX_ROLLBACKS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Requested,
    Open,
    Done,
}

#[derive(Debug)]
struct VbStream {
    req: StreamRequest,
    /// The node's high seqno at the start (u64::MAX when unknown): where the stream ends.
    high: u64,
    state: State,
    uuid: u64,
    snap: (u64, u64),
    rollbacks: u32,
}

/// What a settled batch moves: per vbucket, its position after the batch, and the DCP bytes
/// read for it (its BUFFER_ACK).
struct Confirmed {
    ticket: Ticket,
    positions: Vec<(u16, VbPosition)>,
    bytes: u64,
}

/// More than the header and extras a DCP mutation or deletion adds to its key, value and
/// meta: what the flow-control window is not credited for a failed message (crediting less
/// than was read is safe; more is not).
const DCP_FRAME_OVERHEAD: u64 = 24 + 64;

/// A connection streaming at most this many vbuckets asks `STAT vbucket-seqno N` for each
/// rather than the whole bucket's (3 stats per vbucket: 3,072 packets for 1,024 vbuckets on
/// every connection of every small job of `pump worker`).
const PER_VBUCKET_STATS: usize = 16;

/// The STAT requests that ask where `vbuckets` end: `STAT vbucket-seqno N` for each when they
/// are few, the whole bucket's otherwise.
fn high_seqno_requests(vbuckets: &[u16]) -> Vec<Packet> {
    let stat = |group: String| Packet::request(Opcode::Stat).with_key(group.into_bytes());
    if vbuckets.len() <= PER_VBUCKET_STATS {
        vbuckets
            .iter()
            .map(|vb| stat(format!("vbucket-seqno {vb}")))
            .collect()
    } else {
        vec![stat("vbucket-seqno".to_string())]
    }
}

/// High seqnos of `vbuckets` from the answers to [`high_seqno_requests`], or `None` when the
/// node does not answer `STAT vbucket-seqno`. A node without the one-vbucket form is asked
/// the whole bucket's.
async fn high_seqnos(
    conn: &mut Connection,
    vbuckets: &[u16],
    answers: &[Answer],
) -> Result<Option<HashMap<u16, u64>>, ClientError> {
    if vbuckets.len() <= PER_VBUCKET_STATS {
        let mut stats = Vec::new();
        let mut not_here = 0;
        let mut one_vbucket_form = true;
        for a in answers {
            match a.last().status() {
                Status::Success => stats.extend(a.stats()),
                // Dead or absent on this node: not listed, so not counted as live.
                Status::NotMyVbucket => not_here += 1,
                _ => {
                    one_vbucket_form = false;
                    break;
                }
            }
        }
        if one_vbucket_form && (!stats.is_empty() || not_here > 0) {
            return Ok(Some(parse_high_seqnos(stats)));
        }
        return match conn.stats("vbucket-seqno").await {
            Ok(s) => Ok(Some(parse_high_seqnos(s))),
            Err(ClientError::Status { .. }) => Ok(None),
            Err(e) => Err(e),
        };
    }
    Ok(answers
        .first()
        .filter(|a| a.last().status() == Status::Success)
        .map(|a| parse_high_seqnos(a.stats())))
}

/// `vb_N:high_seqno` of each vbucket in a `STAT vbucket-seqno` answer.
fn parse_high_seqnos(stats: Vec<(String, String)>) -> HashMap<u16, u64> {
    let mut out = HashMap::new();
    for (k, v) in stats {
        let Some(rest) = k.strip_prefix("vb_") else {
            continue;
        };
        let Some((vb, field)) = rest.split_once(':') else {
            continue;
        };
        if field != "high_seqno" {
            continue;
        }
        if let (Ok(vb), Ok(seq)) = (vb.parse::<u16>(), v.parse::<u64>()) {
            out.insert(vb, seq);
        }
    }
    out
}

/// A node's connections, as they open their streams and as they finish reading them.
///
/// Opening: each answer to a STREAM_REQ brings a uuid and a failover log that must be in the
/// checkpoint file before a batch of that vbucket leaves; a connection whose streams are all
/// answered waits (at most [`OPENING_WAIT`]) for the other connections' answers before its
/// first save, so that one save holds them all rather than one save (a file written and
/// synced) per connection. A connection whose own streams are not all answered saves at once:
/// it never waits on itself.
///
/// Reading: once every connection has handed its last batch over (its streams ended),
/// `read_all` is cancelled: what remains is waiting for the sink's confirmations and the
/// checkpoint's last save. `pump worker` starts reading its next job then.
#[derive(Debug)]
pub struct NodeConnections {
    pending: AtomicUsize,
    all_in: Notify,
    reading: AtomicUsize,
    read_all: Option<CancellationToken>,
}

/// How long a connection's first save waits for the node's other connections to have their
/// streams' answers.
pub const OPENING_WAIT: Duration = Duration::from_millis(100);

impl NodeConnections {
    /// `connections` connections, none of them answered yet; `read_all` is cancelled once they
    /// have all read everything.
    pub fn new(connections: usize, read_all: Option<CancellationToken>) -> Arc<NodeConnections> {
        Arc::new(NodeConnections {
            pending: AtomicUsize::new(connections),
            all_in: Notify::new(),
            reading: AtomicUsize::new(connections),
            read_all,
        })
    }

    /// One connection has handed its last batch over.
    fn read_everything(&self) {
        if self.reading.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(t) = &self.read_all {
                t.cancel();
            }
        }
    }

    /// Whether every connection has its streams' answers (or has ended).
    fn all_answered(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Waits until every connection has its answers, at most `bound`.
    async fn wait(&self, bound: Duration) {
        let notified = self.all_in.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.all_answered() {
            return;
        }
        let _ = tokio::time::timeout(bound, notified).await;
    }
}

/// One connection's part in [`NodeConnections`]: counted as answered once, when its streams
/// are, or when it ends (however it ends).
struct ConnectionTurn {
    node: Arc<NodeConnections>,
    answered: bool,
}

impl ConnectionTurn {
    fn answered(&mut self) {
        if !std::mem::replace(&mut self.answered, true)
            && self.node.pending.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.node.all_in.notify_waiters();
        }
    }
}

impl Drop for ConnectionTurn {
    fn drop(&mut self) {
        self.answered();
    }
}

/// One connection's share of a node's streams.
#[derive(Debug)]
pub struct Share {
    /// The connection's number among the node's.
    pub index: usize,
    pub vbuckets: Vec<u16>,
    /// The node's connections, as they open and finish reading their streams.
    pub node: Arc<NodeConnections>,
}

/// Streams `share.vbuckets` over one connection to `addr`; returns how many of them the node
/// listed in `STAT vbucket-seqno` (every one, when it does not answer it): a vbucket it does
/// not list is dead or absent there, and is not streamed.
pub async fn stream_connection(
    spec: &str,
    addr: &str,
    config: &DcpConfig,
    share: Share,
    out: &BatchSender,
    ckpt: Option<Arc<Mutex<CheckpointFile>>>,
) -> Result<usize, Error> {
    let Share {
        index,
        vbuckets,
        node,
    } = share;
    let mut turn = ConnectionTurn {
        node,
        answered: false,
    };
    let err = |e: ClientError| crate::net::source_error(spec, e);
    let mut conn = Connection::negotiate(addr, &config.handshake)
        .await
        .map_err(err)?;
    let xattrs = conn.features().contains(Feature::Xattr);
    let collections = conn.features().contains(Feature::Collections);
    // The manifest and where each vbucket ends, in one round trip.
    let mut asked = Vec::new();
    if collections {
        asked.push(Packet::request(Opcode::GetCollectionsManifest));
    }
    asked.extend(high_seqno_requests(&vbuckets));
    let mut answers = conn
        .pipeline(asked, "GET_COLLECTIONS_MANIFEST and STAT vbucket-seqno")
        .await
        .map_err(err)?;
    // The stream filter's value, when the run is limited to some collections.
    let mut filter_value = None;
    if collections {
        let a = answers.remove(0);
        let r = a.last();
        if r.status() != Status::Success {
            return Err(Error::source(
                spec,
                format!("{addr}: GET_COLLECTIONS_MANIFEST failed: {}", r.status()),
            ));
        }
        let manifest = Manifest::from_json(&r.value)
            .map_err(|e| Error::source(spec, format!("{addr}: the bucket's manifest: {e}")))?;
        if let Some(paths) = &config.filter {
            filter_value = Some(
                stream_filter(&manifest, paths)
                    .map_err(|e| Error::source(spec, format!("{addr}: {e}")))?,
            );
        }
        config.collections.publish(manifest);
    } else if config.filter.is_some() {
        return Err(Error::source(
            spec,
            format!("{addr}: the node does not do collections (no COLLECTIONS in HELLO): cannot stream only some of them"),
        ));
    }
    let highs = high_seqnos(&mut conn, &vbuckets, &answers)
        .await
        .map_err(err)?;
    if highs.is_none() && config.verbose > 0 {
        tracing::warn!("{addr}: no STAT vbucket-seqno; streaming each vbucket to its STREAM_END");
    }
    let name = format!("pump-{}-{index}", std::process::id());
    let open = DcpMessage::Open {
        opaque: 0,
        name: Bytes::from(name),
        seqno: 0,
        flags: if xattrs {
            open_flags::PRODUCER | open_flags::INCLUDE_XATTRS
        } else {
            open_flags::PRODUCER
        },
    };
    // The producer and its settings, in one round trip (a node answers in order: the
    // settings reach the producer DCP_OPEN made; the noop interval matters only once
    // enable_noop is agreed).
    let answers = conn
        .pipeline(
            vec![
                open.to_packet(),
                control("connection_buffer_size", &config.buffer_size.to_string()),
                control("enable_noop", "true"),
                control("set_noop_interval", &config.noop_interval.to_string()),
            ],
            "DCP_OPEN and DCP_CONTROL",
        )
        .await
        .map_err(err)?;
    let opened = answers[0].last().status();
    if opened != Status::Success {
        return Err(err(ClientError::Status {
            peer: addr.to_string(),
            what: "DCP_OPEN as a producer".to_string(),
            status: opened,
        }));
    }
    let flow_control = answers[1].last().status() == Status::Success;
    if !flow_control && config.verbose > 0 {
        tracing::warn!("{addr}: no flow control (connection_buffer_size refused)");
    }

    // Where each vbucket starts.
    let mut streams: BTreeMap<u16, VbStream> = BTreeMap::new();
    let mut by_opaque: HashMap<u32, u16> = HashMap::new();
    let live = match &highs {
        Some(h) => vbuckets.iter().filter(|vb| h.contains_key(vb)).count(),
        None => vbuckets.len(),
    };
    for vb in vbuckets {
        let pos = ckpt
            .as_ref()
            .and_then(|c| c.lock().ok().map(|c| c.position(vb)))
            .unwrap_or_default();
        let end = match &highs {
            Some(h) => h.get(&vb).copied().unwrap_or(0),
            None => u64::MAX,
        };
        if end != u64::MAX {
            out.stats().set_vbucket_high(vb, end);
            out.stats().set_vbucket_confirmed(vb, pos.seqno);
        }
        if pos.seqno == end {
            continue;
        }
        let opaque = 0x0001_0000 | u32::from(vb);
        by_opaque.insert(opaque, vb);
        streams.insert(
            vb,
            VbStream {
                req: StreamRequest {
                    vbucket: vb,
                    opaque,
                    flags: 0,
                    start: pos.seqno,
                    // Saved past the node's high seqno: the node lost history; asking with
                    // end = start lets it answer ROLLBACK (or end the stream at once).
                    end: end.max(pos.seqno),
                    vbucket_uuid: pos.uuid,
                    snap_start: pos.snap_start.min(pos.seqno),
                    snap_end: pos.snap_end.max(pos.seqno),
                },
                high: end,
                state: State::Requested,
                uuid: pos.uuid,
                snap: (pos.snap_start, pos.snap_end),
                rollbacks: 0,
            },
        );
    }
    if streams.is_empty() {
        turn.node.read_everything();
        return Ok(live);
    }
    let (mut read, write) = conn.into_split();
    let writer = Arc::new(AsyncMutex::new(write));
    {
        let mut w = writer.lock().await;
        for s in streams.values() {
            w.send(&stream_req(s.req, &filter_value))
                .await
                .map_err(err)?;
        }
    }

    let checkpoint = Arc::new(Mutex::new(Checkpoint::default()));
    // Each settled batch: the checkpoint moves over the vbuckets it delivered (a failed key
    // holds its vbucket where it stood), and the window is credited for what was delivered.
    let withheld_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let on_settled = {
        let withheld_total = withheld_total.clone();
        let checkpoint = checkpoint.clone();
        let ckpt = ckpt.clone();
        let spec = spec.to_string();
        let stats = out.stats().clone();
        move |d: pump::Delivery, c: Confirmed| -> Result<Option<pump_protocol::Packet>, Error> {
            let advanced = checkpoint
                .lock()
                .map_err(|_| Error::source(&spec, "checkpoint lock poisoned"))?
                .settle(c.ticket, &d);
            for (vb, seqno) in &advanced {
                stats.set_vbucket_confirmed(*vb, *seqno);
            }
            if let Some(file) = &ckpt {
                let mut f = file
                    .lock()
                    .map_err(|_| Error::source(&spec, "checkpoint lock poisoned"))?;
                for (vb, seqno) in advanced {
                    // positions is sorted by vbucket.
                    if let Ok(i) = c.positions.binary_search_by_key(&vb, |(v, _)| *v) {
                        f.set(
                            vb,
                            VbPosition {
                                seqno,
                                ..c.positions[i].1
                            },
                        );
                    }
                }
                f.save_soon()?;
            }
            let withheld = d.failed_bytes() as u64 + DCP_FRAME_OVERHEAD * d.failed.len() as u64;
            let bytes = c.bytes.saturating_sub(withheld);
            withheld_total.fetch_add(c.bytes - bytes, std::sync::atomic::Ordering::Relaxed);
            Ok((flow_control && bytes > 0).then(|| {
                DcpMessage::BufferAck {
                    opaque: 0,
                    bytes: bytes.min(u64::from(u32::MAX)) as u32,
                }
                .to_packet()
            }))
        }
    };
    let mut acker: Acker<Confirmed> = Acker::start(spec.to_string(), writer.clone(), on_settled);
    let mut pending = PendingBatch::new(config);
    let mut open_streams = streams.len();
    // Frames read while a batch waited for room in the channel.
    let mut backlog: VecDeque<Result<Next, ClientError>> = VecDeque::new();
    let what = "reading the DCP streams";
    let cancel = out.cancellation().clone();
    // Whether the first save before a batch has been through `save_before_batch`'s wait.
    let mut waited = false;

    let result: Result<(), Error> = async {
        while open_streams > 0 {
            let wait = if pending.is_empty() {
                config.timeout
            } else {
                IDLE_FLUSH
            };
            // Frames already read are taken without a wait; the select (timeout, a failed
            // ack, Ctrl-C) runs each time the read buffer runs dry.
            let next = match backlog.pop_front() {
                Some(n) => n.map_err(err)?,
                None => match read.try_buffered(what).map_err(err)? {
                    Some(p) => Next::Packet(p),
                    None => tokio::select! {
                    r = read.recv_within(wait, what) => r.map_err(err)?,
                    e = acker.failed() => return Err(e),
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                    },
                },
            };
            let p = match next {
                Next::Packet(p) => p,
                Next::Eof => {
                    let open: Vec<u16> = streams
                        .iter()
                        .filter(|(_, s)| s.state != State::Done)
                        .map(|(vb, _)| *vb)
                        .collect();
                    return Err(err(ClientError::Closed {
                        peer: addr.to_string(),
                        what: format!(
                            "streaming ({} of its vbuckets not finished, the first {:?})",
                            open.len(),
                            &open[..open.len().min(8)]
                        ),
                    }));
                }
                Next::Idle if !pending.is_empty() => {
                    save_before_batch(&ckpt, &turn, &mut waited).await?;
                    let batch = pending.flush(&acker, &checkpoint)?;
                    send_serving(out, batch, &mut read, &writer, &mut backlog, config).await?;
                    continue;
                }
                Next::Idle if acker.outstanding() > 0 => continue,
                Next::Idle => {
                    let withheld = withheld_total.load(std::sync::atomic::Ordering::Relaxed);
                    if withheld > 0 {
                        return Err(Error::source(spec, format!(
                            "{addr}: the producer stopped sending: {withheld} bytes of messages the sink could not write (listed) are not credited to the flow-control window; rerun from the checkpoint once they can be written"
                        )));
                    }
                    return Err(err(read.timeout_error(what)));
                }
            };
            if p.magic == Magic::Response {
                if p.opcode == Opcode::DcpStreamReq {
                    let vb = *by_opaque.get(&p.opaque).ok_or_else(|| {
                        Error::source(spec, format!("{addr}: a STREAM_REQ reply with unknown opaque {:#x}", p.opaque))
                    })?;
                    let s = streams.get_mut(&vb).ok_or_else(|| Error::source(spec, "stream state lost"))?;
                    match StreamReqReply::from_packet(&p)
                        .map_err(|e| Error::source(spec, format!("{addr}: {e}")))?
                    {
                        StreamReqReply::Ok(log) => {
                            s.state = State::Open;
                            if let Some(newest) = log.first() {
                                s.uuid = newest.uuid;
                            }
                            if let Some(file) = &ckpt {
                                if let Ok(mut f) = file.lock() {
                                    f.set_failover(vb, log.iter().map(|e| [e.uuid, e.seqno]).collect());
                                    let mut pos = f.position(vb);
                                    if pos.uuid != s.uuid || pos.seqno != s.req.start {
                                        pos = VbPosition {
                                            uuid: s.uuid,
                                            seqno: s.req.start,
                                            snap_start: s.req.snap_start,
                                            snap_end: s.req.snap_end,
                                        };
                                        f.set(vb, pos);
                                    }
                                }
                            }
                        }
                        StreamReqReply::Rollback(to) => {
                            s.rollbacks += 1;
                            if s.rollbacks > MAX_ROLLBACKS {
                                return Err(Error::source(spec, format!(
                                    "{addr}: vbucket {vb} asked to roll back {} times; giving up", s.rollbacks
                                )));
                            }
                            // Said whatever the verbosity: the vbucket's history diverged from
                            // the position this run started from, and it is streamed again.
                            tracing::warn!(
                                "{addr}: vbucket {vb} rolled back: its history diverged after seqno {to} (asked from {} under uuid {:#x}); restreaming it from {to}",
                                s.req.start, s.req.vbucket_uuid
                            );
                            s.req.start = to;
                            s.req.snap_start = to;
                            s.req.snap_end = to;
                            s.req.end = s.high.max(to);
                            if to == 0 {
                                s.req.vbucket_uuid = 0;
                            }
                            s.uuid = s.req.vbucket_uuid;
                            s.snap = (to, to);
                            if let Some(file) = &ckpt {
                                if let Ok(mut f) = file.lock() {
                                    f.record_rollback(vb, to);
                                    f.set(vb, VbPosition { uuid: s.uuid, seqno: to, snap_start: to, snap_end: to });
                                }
                            }
                            writer
                                .lock()
                                .await
                                .send(&stream_req(s.req, &filter_value))
                                .await
                                .map_err(err)?;
                        }
                        StreamReqReply::Err(status) => {
                            let hint = if status == Status::NotMyVbucket {
                                " (the vbucket is not active on this node: use couchbase://HOST:RESTPORT for a cluster)"
                            } else {
                                ""
                            };
                            return Err(Error::source(spec, format!(
                                "{addr}: STREAM_REQ for vbucket {vb} refused: {status}{hint}"
                            )));
                        }
                    }
                    if !turn.answered && streams.values().all(|s| s.state != State::Requested) {
                        turn.answered();
                    }
                } else if p.status() != Status::Success {
                    return Err(Error::source(spec, format!(
                        "{addr}: {:?} failed: {}", p.opcode, p.status()
                    )));
                }
                continue;
            }
            let wire = p.wire_len();
            if !matches!(
                p.opcode,
                Opcode::DcpSnapshotMarker
                    | Opcode::DcpMutation
                    | Opcode::DcpDeletion
                    | Opcode::DcpExpiration
                    | Opcode::DcpStreamEnd
                    | Opcode::DcpNoop
                    | Opcode::DcpSetVbucketState
                    | Opcode::DcpSystemEvent
            ) {
                // A message this source does not use (a newer server's system events, ...):
                // processed as far as flow control goes.
                if config.verbose > 1 {
                    tracing::info!("{addr}: ignored {:?}", p.opcode);
                }
                pending.bytes += wire as u64;
                continue;
            }
            let m = DcpMessage::from_packet(&p)
                .map_err(|e| Error::source(spec, format!("{addr}: {e}")))?;
            match m {
                DcpMessage::Noop { opaque } => {
                    writer.lock().await.send(&noop_reply(opaque)).await.map_err(err)?;
                    continue;
                }
                DcpMessage::SnapshotMarker { vbucket, start, end, .. } => {
                    if let Some(s) = streams.get_mut(&vbucket) {
                        s.snap = (start, end);
                    }
                }
                DcpMessage::Mutation(i) => {
                    pending.push(item(Op::Mutation, i, collections, config, addr, spec)?, &streams)
                }
                DcpMessage::Deletion(i) => {
                    pending.push(item(Op::Deletion, i, collections, config, addr, spec)?, &streams)
                }
                DcpMessage::Expiration(i) => {
                    pending.push(item(Op::Expiration, i, collections, config, addr, spec)?, &streams)
                }
                DcpMessage::SystemEvent { vbucket, by_seqno, event, version, key, value, .. } => {
                    let e = SystemEvent::decode(event, version, &key, &value).map_err(|e| {
                        Error::source(spec, format!("{addr}: vbucket {vbucket} seqno {by_seqno}: {e}"))
                    })?;
                    if config.verbose > 0 {
                        tracing::info!("{addr}: vbucket {vbucket} seqno {by_seqno}: {}", e.kind.describe());
                    }
                    config.collections.changed(vbucket, by_seqno, e);
                }
                DcpMessage::StreamEnd { vbucket, reason, .. } => {
                    if let Some(s) = streams.get_mut(&vbucket) {
                        if s.state != State::Done {
                            s.state = State::Done;
                            open_streams -= 1;
                        }
                    }
                    if reason != StreamEndReason::Ok {
                        pending.bytes += wire as u64;
                        return Err(Error::source(spec, format!(
                            "{addr}: the stream of vbucket {vbucket} ended early ({reason:?}); rerun to resume"
                        )));
                    }
                }
                _ => {}
            }
            pending.bytes += wire as u64;
            if pending.should_flush() {
                save_before_batch(&ckpt, &turn, &mut waited).await?;
                let batch = pending.flush(&acker, &checkpoint)?;
                send_serving(out, batch, &mut read, &writer, &mut backlog, config).await?;
            }
        }
        Ok(())
    }
    .await;

    // Hand over what was read, and wait (bounded) for the sink to confirm it so the
    // checkpoint holds everything delivered, even when the stream failed.
    let flushed = if pending.is_empty() {
        Ok(())
    } else {
        match save_before_batch(&ckpt, &turn, &mut waited)
            .await
            .and_then(|_| pending.flush(&acker, &checkpoint))
        {
            Ok(batch) => out.send(batch).await,
            Err(e) => Err(e),
        }
    };
    if result.is_ok() && flushed.is_ok() {
        turn.node.read_everything();
    }
    let finished = match &result {
        Ok(()) => acker.finish().await,
        Err(_) => tokio::time::timeout(config.timeout, acker.finish())
            .await
            .unwrap_or(Ok(())),
    };
    // The last save is `stream_node`'s, once every connection of the node has ended.
    if let Some(file) = &ckpt {
        if let Ok(mut f) = file.lock() {
            f.save_soon()?;
        }
    }
    result?;
    flushed?;
    finished.map(|()| live)
}

/// Before a batch leaves: [`save_if_urgent`], the connection's first such save waiting
/// (bounded) until the node's other connections have their streams' answers too, when its
/// own are all in (see [`NodeConnections`]).
async fn save_before_batch(
    ckpt: &Option<Arc<Mutex<CheckpointFile>>>,
    turn: &ConnectionTurn,
    waited: &mut bool,
) -> Result<(), Error> {
    if !std::mem::replace(waited, true)
        && turn.answered
        && !turn.node.all_answered()
        && ckpt
            .as_ref()
            .is_some_and(|f| f.lock().is_ok_and(|f| f.urgent()))
    {
        turn.node.wait(OPENING_WAIT).await;
    }
    save_if_urgent(ckpt)
}

/// Writes the checkpoint file now if it holds a changed uuid or failover log, or a rollback,
/// not saved yet: called before a batch leaves, so no row is committed under a uuid the file
/// does not hold (see `checkpoint`).
fn save_if_urgent(ckpt: &Option<Arc<Mutex<CheckpointFile>>>) -> Result<(), Error> {
    if let Some(file) = ckpt {
        if let Ok(mut f) = file.lock() {
            f.save_if_urgent()?;
        }
    }
    Ok(())
}

/// Frames kept aside while a batch waits, at most (beyond that the reader stops reading and
/// TCP pushes back; with flow control the producer stops long before).
const MAX_BACKLOG: usize = 100_000;

/// Sends `batch`, waiting for room in the channel while still reading the connection: NOOPs
/// are answered at once (a producer drops a consumer that leaves them unanswered), other
/// frames are kept in `backlog` for the stream loop.
async fn send_serving(
    out: &BatchSender,
    batch: Batch,
    read: &mut ReadHalf,
    writer: &Arc<AsyncMutex<WriteHalf>>,
    backlog: &mut VecDeque<Result<Next, ClientError>>,
    config: &DcpConfig,
) -> Result<(), Error> {
    let send = out.send(batch);
    tokio::pin!(send);
    let mut eof = backlog.iter().any(|n| !matches!(n, Ok(Next::Packet(_))));
    loop {
        tokio::select! {
            r = &mut send => return r,
            r = read.recv_within(config.timeout, "reading the DCP streams"), if !eof && backlog.len() < MAX_BACKLOG => {
                match r {
                    Ok(Next::Packet(p)) if p.magic == Magic::Request && p.opcode == Opcode::DcpNoop => {
                        let _ = writer.lock().await.send(&noop_reply(p.opaque)).await;
                    }
                    Ok(Next::Idle) => {}
                    Ok(Next::Packet(p)) => backlog.push_back(Ok(Next::Packet(p))),
                    // The end or an error: the stream loop reports it once the batch is
                    // handed over.
                    end => {
                        eof = true;
                        backlog.push_back(end);
                    }
                }
            }
        }
    }
}

/// DCP_CONTROL key=value.
fn control(key: &str, value: &str) -> Packet {
    DcpMessage::Control {
        opaque: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
    .to_packet()
}

/// The STREAM_REQ of `req`, with the filter's value when there is one.
fn stream_req(req: StreamRequest, filter: &Option<Bytes>) -> Packet {
    let p = DcpMessage::StreamReq(req).to_packet();
    match filter {
        Some(v) => p.with_value(v.clone()),
        None => p,
    }
}

/// The STREAM_REQ value limiting a stream to `paths` (a scope: `collection` empty), resolved
/// by name against `manifest`; an error names a scope or collection the bucket lacks.
pub fn stream_filter(manifest: &Manifest, paths: &[CollectionPath]) -> Result<Bytes, String> {
    let mut ids = Vec::new();
    for p in paths {
        if p.collection.is_empty() {
            let s = manifest
                .scope(&p.scope)
                .ok_or_else(|| format!("--include-data: the bucket has no scope {:?}", p.scope))?;
            ids.extend(s.collections.iter().map(|c| c.uid));
        } else {
            ids.push(manifest.id_of(&p.scope, &p.collection).ok_or_else(|| {
                format!(
                    "--include-data: the bucket has no collection {}.{}",
                    p.scope, p.collection
                )
            })?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    // One whole scope: the scope's filter, so that a collection created in it later comes too.
    if let [p] = paths {
        if p.collection.is_empty() {
            if let Some(s) = manifest.scope(&p.scope) {
                return Ok(StreamFilter::Scope(s.uid).to_json(Some(manifest.uid)));
            }
        }
    }
    Ok(StreamFilter::Collections(ids).to_json(Some(manifest.uid)))
}

/// A DCP item as a pump message: key, value and meta are slices of the frame. With
/// COLLECTIONS the key's LEB128 collection id becomes the message's collection.
fn item(
    op: Op,
    i: DcpItem,
    collections: bool,
    config: &DcpConfig,
    addr: &str,
    spec: &str,
) -> Result<Message, Error> {
    let (collection, key) = if collections {
        let (id, key) = split_key(&i.key).map_err(|e| {
            Error::source(
                spec,
                format!("{addr}: vbucket {} seqno {}: {e}", i.vbucket, i.by_seqno),
            )
        })?;
        // Any id the run has seen: another vbucket may have carried a drop this one has not
        // reached yet.
        if !config.collections.knows(id) {
            return Err(Error::source(
                spec,
                format!(
                    "{addr}: vbucket {} seqno {}: collection id {id:#x} is not in the bucket's manifest (uid {:#x})",
                    i.vbucket,
                    i.by_seqno,
                    config.collections.manifest().map_or(0, |m| m.uid)
                ),
            ));
        }
        (id, key)
    } else {
        (0, i.key)
    };
    Ok(Message {
        op,
        vbucket: i.vbucket,
        collection,
        key,
        value: i.value,
        flags: i.flags,
        expiry: i.expiration,
        cas: i.cas,
        seqno: i.by_seqno,
        rev_seqno: i.rev_seqno,
        datatype: i.datatype,
        meta: i.meta,
        conflict_res: 0,
    })
}

/// The batch being filled, the DCP bytes read for it and the positions it moves.
struct PendingBatch {
    builder: BatchBuilder,
    bytes: u64,
    /// Per run of messages of one vbucket, its position after the run (a vbucket may have
    /// several runs: the last wins when the batch is flushed).
    positions: Vec<(u16, VbPosition)>,
    flush_bytes: u64,
}

impl PendingBatch {
    fn new(config: &DcpConfig) -> PendingBatch {
        PendingBatch {
            builder: BatchBuilder::new(config.limits),
            bytes: 0,
            positions: Vec::new(),
            flush_bytes: u64::from(config.buffer_size / 4).max(1),
        }
    }

    fn is_empty(&self) -> bool {
        self.builder.is_empty() && self.bytes == 0
    }

    fn should_flush(&self) -> bool {
        self.builder.is_full() || self.bytes >= self.flush_bytes
    }

    fn push(&mut self, m: Message, streams: &BTreeMap<u16, VbStream>) {
        if let Some(s) = streams.get(&m.vbucket) {
            let pos = VbPosition {
                uuid: s.uuid,
                seqno: m.seqno,
                snap_start: s.snap.0,
                snap_end: s.snap.1.max(m.seqno),
            };
            match self.positions.last_mut() {
                Some((vb, p)) if *vb == m.vbucket => *p = pos,
                _ => self.positions.push((m.vbucket, pos)),
            }
        }
        self.builder.push(m);
    }

    /// Takes the batch to send; once the sink settled it, the acker moves the checkpoint over
    /// what it delivered and sends the BUFFER_ACK.
    fn flush(
        &mut self,
        acker: &Acker<Confirmed>,
        checkpoint: &Arc<Mutex<Checkpoint>>,
    ) -> Result<Batch, Error> {
        let msgs = self.builder.take();
        // The last position of each vbucket, sorted by vbucket.
        let mut last: BTreeMap<u16, VbPosition> = BTreeMap::new();
        for (vb, p) in self.positions.drain(..) {
            last.insert(vb, p);
        }
        let positions: Vec<(u16, VbPosition)> = last.into_iter().collect();
        let ticket = checkpoint
            .lock()
            .map_err(|_| Error::source("dcp", "checkpoint lock poisoned"))?
            .track_seqnos(positions.iter().map(|(vb, p)| (*vb, p.seqno)));
        let bytes = std::mem::take(&mut self.bytes);
        let (batch, acked) = Batch::with_ack(msgs);
        acker.push(
            acked,
            Confirmed {
                ticket,
                positions,
                bytes,
            },
        );
        Ok(batch)
    }
}
