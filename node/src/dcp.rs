//! The DCP producer: what a DCP_OPEN (producer flag) turns its connection into.
//!
//! ```text
//! reader task: CONTROL, STREAM_REQ (failover log or ROLLBACK), CLOSE_STREAM, GET_FAILOVER_LOG,
//!              BUFFER_ACK, NOOP replies  --events-->  writer
//! writer:      per stream SNAPSHOT_MARKER, MUTATION / DELETION / EXPIRATION (encoded straight
//!              from the vbucket under its lock, up to 256 items a turn, into one buffer written
//!              at 256 KiB; no lock held while writing), STREAM_END (reason 0) at the end seqno;
//!              streams interleaved; NOOP every noop interval when enabled
//! flow control: with connection_buffer_size set, header+body of every message but NOOPs
//!              counts as unacked until BUFFER_ACK; the writer stops while the window is full
//! collections: a connection that negotiated COLLECTIONS gets every collection's items, keys
//!              with their LEB128 collection id, and the system events (DCP_SYSTEM_EVENT) in
//!              seqno order; a STREAM_REQ value {"scope": ..} or {"collections": [..]} limits
//!              the stream (an unknown one: UNKNOWN_SCOPE / UNKNOWN_COLLECTION). Any other
//!              connection gets the default collection alone, keys without the id.
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pump_protocol::collections::StreamFilter;
use pump_protocol::dcp::open_flags;
use pump_protocol::dcp::{snapshot_type, FailoverEntry, StreamReqReply};
use pump_protocol::header::{Header, Magic, HEADER_LEN};
use pump_protocol::{Feature, FeatureSet, Opcode, Packet, PacketCodec, Status, VbucketState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::kv::{put_response, KvContext, KvStream, IDLE_TIMEOUT, MAX_BODY};
use crate::store::{self, Bucket};
use crate::value;

const FLUSH_AT: usize = 256 * 1024;
/// Items one stream encodes in a turn (under its vbucket's lock, straight into the buffer).
const ITEMS_PER_TURN: usize = 256;
/// Steps (marker, items, end) one stream takes in a turn of the round robin.
const STEPS_PER_TURN: usize = 4;
/// Events (acks, controls, replies) the connection's reader may queue ahead of the producer.
/// When they are not taken (the client floods BUFFER_ACKs and does not read what it is sent),
/// the reader waits, so the client's own writes wait in its socket: its memory, not the node's.
pub const EVENT_QUEUE: usize = 1024;

enum Event {
    /// Bytes to send as they are (replies), not flow-controlled.
    Reply(Bytes),
    Stream(Stream),
    Close(u16),
    Ack(u32),
    BufferSize(u64),
    Noop(bool),
    NoopInterval(u64),
}

struct Stream {
    vb: u16,
    opaque: u32,
    /// Last seqno sent (or the start).
    last: u64,
    end: u64,
    /// Upper bound of the snapshot being sent; 0 = none open.
    snap_end: u64,
    /// First snapshot: its marker starts at the requested start.
    first: bool,
    /// What the stream is limited to (a collection-aware stream's request value).
    filter: Option<StreamFilter>,
}

/// The answer to a stream request, from the vbucket's failover log.
pub fn check_request(
    failover: &[FailoverEntry],
    high: u64,
    start: u64,
    uuid: u64,
) -> Result<(), u64> {
    if start == 0 {
        return Ok(());
    }
    // failover is newest first; the branch of `uuid` ends where the next newer one begins.
    let Some(pos) = failover.iter().position(|e| e.uuid == uuid) else {
        return Err(0);
    };
    let upper = if pos == 0 {
        high
    } else {
        failover[pos - 1].seqno
    };
    if start > upper {
        return Err(upper);
    }
    Ok(())
}

/// The reply to a STREAM_REQ, and the stream it opens.
fn stream_req(bucket: &Bucket, p: &Packet, collections: bool) -> (Bytes, Option<Stream>) {
    let reply = |r: StreamReqReply| (r.to_packet(p.opaque).to_bytes(), None);
    if p.extras.len() != 48 {
        return reply(StreamReqReply::Err(Status::Einval));
    }
    let filter = match StreamFilter::from_json(&p.value) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("STREAM_REQ refused: {e}");
            return reply(StreamReqReply::Err(Status::Einval));
        }
    };
    if filter.is_some() && !collections {
        // A filter names collections: only a collection-aware connection may send one.
        return reply(StreamReqReply::Err(Status::Einval));
    }
    let manifest = bucket.manifest();
    match &filter {
        Some(StreamFilter::Scope(sid)) if manifest.scope_by_id(*sid).is_none() => {
            return (unknown(p, Status::UnknownScope, manifest.uid), None);
        }
        Some(StreamFilter::Collections(ids))
            if ids.iter().any(|c| manifest.collection(*c).is_none()) =>
        {
            return (unknown(p, Status::UnknownCollection, manifest.uid), None);
        }
        _ => {}
    }
    let mut e = &p.extras[..];
    let (_flags, _res) = (e.get_u32(), e.get_u32());
    let (start, end, uuid, snap_start, snap_end) = (
        e.get_u64(),
        e.get_u64(),
        e.get_u64(),
        e.get_u64(),
        e.get_u64(),
    );
    let vb = p.vbucket();
    let Some(v) = bucket.vb(vb) else {
        return reply(StreamReqReply::Err(Status::NotMyVbucket));
    };
    if v.state != VbucketState::Active {
        return reply(StreamReqReply::Err(Status::NotMyVbucket));
    }
    if start > end || snap_start > start || start > snap_end.max(start) {
        return reply(StreamReqReply::Err(Status::Erange));
    }
    if let Err(seqno) = check_request(&v.failover, v.high_seqno, start, uuid) {
        return reply(StreamReqReply::Rollback(seqno));
    }
    let log = v.failover.clone();
    drop(v);
    let stream = Stream {
        vb,
        opaque: p.opaque,
        last: start,
        end,
        snap_end: 0,
        first: true,
        filter,
    };
    (
        StreamReqReply::Ok(log).to_packet(p.opaque).to_bytes(),
        Some(stream),
    )
}

/// UNKNOWN_SCOPE or UNKNOWN_COLLECTION to a stream request, with the manifest uid.
fn unknown(p: &Packet, status: Status, uid: u64) -> Bytes {
    Packet::response_to(p, status)
        .with_value(pump_protocol::collections::unknown_collection_value(uid))
        .to_bytes()
}

/// How values go out on one DCP connection.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// SNAPPY negotiated: values as stored.
    snappy: bool,
    /// DCP_OPEN INCLUDE_XATTRS: values keep their xattrs.
    xattrs: bool,
    /// DCP_OPEN NO_VALUE: keys and metadata only.
    no_value: bool,
    /// COLLECTIONS negotiated: every collection, keys with their id, system events.
    collections: bool,
}

/// Runs a DCP producer on `sock` (OPEN already answered with `flags`); `rbuf` holds bytes
/// already read; `features` are what the connection negotiated with HELLO.
pub async fn produce<S: KvStream>(
    sock: S,
    mut rbuf: BytesMut,
    ctx: Arc<KvContext>,
    flags: u32,
    features: FeatureSet,
) -> std::io::Result<()> {
    let bucket = ctx.bucket.clone();
    let shape = Shape {
        snappy: features.contains(Feature::Snappy),
        xattrs: flags & open_flags::INCLUDE_XATTRS != 0,
        no_value: flags & open_flags::NO_VALUE != 0,
        collections: features.contains(Feature::Collections),
    };
    let (mut r, mut w) = sock.halves();
    let (tx, mut rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let rb = bucket.clone();
    let reader = crate::tap::AbortOnDrop(tokio::spawn(async move {
        let mut codec = PacketCodec::with_max_body(MAX_BODY);
        loop {
            loop {
                let p = match codec.decode(&mut rbuf) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(_) => return,
                };
                let ev = if p.magic == Magic::Response {
                    continue; // NOOP answers
                } else {
                    match p.opcode {
                        Opcode::DcpBufferAck if p.extras.len() == 4 => {
                            Event::Ack((&p.extras[..]).get_u32())
                        }
                        Opcode::DcpControl => {
                            let v = std::str::from_utf8(&p.value).unwrap_or("");
                            let mut out = BytesMut::new();
                            let (status, ev) = match &p.key[..] {
                                b"connection_buffer_size" => match v.parse::<u64>() {
                                    Ok(n) => (Status::Success, Some(Event::BufferSize(n))),
                                    Err(_) => (Status::Einval, None),
                                },
                                b"enable_noop" => (Status::Success, Some(Event::Noop(v == "true"))),
                                b"set_noop_interval" => match v.parse::<u64>() {
                                    Ok(n) => (Status::Success, Some(Event::NoopInterval(n))),
                                    Err(_) => (Status::Einval, None),
                                },
                                _ => (Status::Success, None),
                            };
                            put_response(
                                &mut out,
                                p.opcode.value(),
                                p.opaque,
                                status,
                                0,
                                &[],
                                &[],
                                &[],
                            );
                            if let Some(ev) = ev {
                                if tx.send(ev).await.is_err() {
                                    return;
                                }
                            }
                            Event::Reply(out.freeze())
                        }
                        Opcode::DcpStreamReq => {
                            // The reply first: the stream's first frames must not overtake it
                            // (the queue may make the second send wait).
                            let (reply, stream) = stream_req(&rb, &p, shape.collections);
                            if tx.send(Event::Reply(reply)).await.is_err() {
                                return;
                            }
                            match stream {
                                Some(s) => Event::Stream(s),
                                None => continue,
                            }
                        }
                        Opcode::DcpCloseStream => {
                            if tx.send(Event::Close(p.vbucket())).await.is_err() {
                                return;
                            }
                            Event::Reply(Packet::response_to(&p, Status::Success).to_bytes())
                        }
                        Opcode::DcpGetFailoverLog => match rb.vb(p.vbucket()) {
                            Some(v) => Event::Reply(
                                StreamReqReply::Ok(v.failover.clone())
                                    .to_packet(p.opaque)
                                    .with_opcode_of(&p)
                                    .to_bytes(),
                            ),
                            None => Event::Reply(
                                Packet::response_to(&p, Status::NotMyVbucket).to_bytes(),
                            ),
                        },
                        Opcode::Noop => {
                            Event::Reply(Packet::response_to(&p, Status::Success).to_bytes())
                        }
                        _ => {
                            Event::Reply(Packet::response_to(&p, Status::UnknownCommand).to_bytes())
                        }
                    }
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            match tokio::time::timeout(IDLE_TIMEOUT, r.read_buf(&mut rbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }));

    let mut streams: Vec<Stream> = Vec::new();
    let mut window: u64 = 0;
    let mut unacked: u64 = 0;
    let mut noop = false;
    let mut noop_every = Duration::from_secs(120);
    let mut last_noop = tokio::time::Instant::now();
    let mut buf = BytesMut::with_capacity(FLUSH_AT + 64 * 1024);
    let mut next = 0usize;
    let mut snappy_out = 0u64;
    let result: std::io::Result<()> = async {
        loop {
            // Take every event already there.
            let mut closed = false;
            loop {
                match rx.try_recv() {
                    Ok(ev) => apply(
                        ev,
                        &mut buf,
                        &mut streams,
                        &mut unacked,
                        &mut window,
                        &mut noop,
                        &mut noop_every,
                    ),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                w.write_all(&buf).await?;
                w.flush().await?;
                return Ok(());
            }
            if noop && last_noop.elapsed() >= noop_every {
                last_noop = tokio::time::Instant::now();
                Packet::request(Opcode::DcpNoop)
                    .with_opaque(0xfeed)
                    .encode(&mut buf);
            }
            // Fill the buffer from the streams, round robin, inside the window; stop after a
            // whole round in which no stream had anything to send.
            let mut progressed = false;
            let mut full = false;
            let mut idle_run = 0;
            while buf.len() < FLUSH_AT && !streams.is_empty() && !full && idle_run < streams.len() {
                if next >= streams.len() {
                    next = 0;
                }
                let s = &mut streams[next];
                let mut done = false;
                let mut sent = false;
                let now = store::now();
                for _ in 0..STEPS_PER_TURN {
                    match step(
                        &bucket,
                        s,
                        &mut buf,
                        window,
                        &mut unacked,
                        now,
                        shape,
                        &mut snappy_out,
                    ) {
                        Step::Sent => sent = true,
                        Step::Full => {
                            full = true;
                            break;
                        }
                        Step::Idle => break,
                        Step::Ended => {
                            sent = true;
                            done = true;
                            break;
                        }
                    }
                }
                if sent {
                    progressed = true;
                    idle_run = 0;
                } else {
                    idle_run += 1;
                }
                if done {
                    streams.remove(next);
                } else {
                    next += 1;
                }
            }
            if snappy_out > 0 {
                ctx.counters.snappy_out.fetch_add(
                    std::mem::take(&mut snappy_out),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            if !buf.is_empty() {
                w.write_all(&buf).await?;
                w.flush().await?;
                buf.clear();
            }
            if !progressed {
                // Nothing to send: wait for an event, the noop timer, or new items.
                let wait = if streams.is_empty() || full {
                    noop_every
                } else {
                    Duration::from_millis(20)
                };
                let wait = if noop {
                    wait.min(noop_every.saturating_sub(last_noop.elapsed()))
                } else {
                    wait
                };
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(ev)) => apply(
                        ev,
                        &mut buf,
                        &mut streams,
                        &mut unacked,
                        &mut window,
                        &mut noop,
                        &mut noop_every,
                    ),
                    Ok(None) => return Ok(()),
                    Err(_) => {}
                }
            }
        }
    }
    .await;
    drop(reader);
    let _ = w.shutdown().await;
    result
}

trait WithOpcode {
    fn with_opcode_of(self, p: &Packet) -> Packet;
}

impl WithOpcode for Packet {
    fn with_opcode_of(mut self, p: &Packet) -> Packet {
        self.opcode = p.opcode;
        self
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    ev: Event,
    buf: &mut BytesMut,
    streams: &mut Vec<Stream>,
    unacked: &mut u64,
    window: &mut u64,
    noop: &mut bool,
    noop_every: &mut Duration,
) {
    match ev {
        Event::Reply(b) => buf.put_slice(&b),
        Event::Stream(s) => {
            streams.retain(|x| x.vb != s.vb);
            streams.push(s);
        }
        Event::Close(vb) => streams.retain(|x| x.vb != vb),
        Event::Ack(n) => *unacked = unacked.saturating_sub(u64::from(n)),
        Event::BufferSize(n) => *window = n,
        Event::Noop(on) => *noop = on,
        Event::NoopInterval(s) => *noop_every = Duration::from_secs(s.max(1)),
    }
}

enum Step {
    Sent,
    Full,
    Idle,
    Ended,
}

fn fits(window: u64, unacked: u64, len: usize) -> bool {
    window == 0 || unacked == 0 || unacked + len as u64 <= window
}

#[allow(clippy::too_many_arguments)]
fn put_header(
    buf: &mut BytesMut,
    op: Opcode,
    vb: u16,
    opaque: u32,
    cas: u64,
    dt: u8,
    e: usize,
    k: usize,
    v: usize,
) {
    Header {
        magic: Magic::Request,
        opcode: op.value(),
        key_len: k as u16,
        extras_len: e as u8,
        datatype: dt,
        vbucket_or_status: vb,
        body_len: (e + k + v) as u32,
        opaque,
        cas,
    }
    .write(buf);
}

/// Sends the next message of `s`: a snapshot marker, up to ITEMS_PER_TURN items of the open
/// snapshot, or the stream end. Values go out in the connection's `shape`; `snappy_out` counts
/// those sent compressed.
#[allow(clippy::too_many_arguments)]
fn step(
    bucket: &Bucket,
    s: &mut Stream,
    buf: &mut BytesMut,
    window: u64,
    unacked: &mut u64,
    now: u32,
    shape: Shape,
    snappy_out: &mut u64,
) -> Step {
    if s.last >= s.end {
        let len = HEADER_LEN + 4;
        if !fits(window, *unacked, len) {
            return Step::Full;
        }
        put_header(buf, Opcode::DcpStreamEnd, s.vb, s.opaque, 0, 0, 4, 0, 0);
        buf.put_u32(0);
        *unacked += len as u64;
        return Step::Ended;
    }
    if s.snap_end <= s.last {
        // Open the next snapshot: everything up to the high seqno now (or the end).
        let (high, state) = match bucket.vb(s.vb) {
            Some(v) => (v.high_seqno, v.state),
            None => return Step::Ended,
        };
        if state != VbucketState::Active {
            return Step::Ended;
        }
        let upto = high.min(s.end);
        if upto <= s.last {
            return Step::Idle;
        }
        let len = HEADER_LEN + 20;
        if !fits(window, *unacked, len) {
            return Step::Full;
        }
        let start = if s.first { s.last } else { s.last + 1 };
        put_header(
            buf,
            Opcode::DcpSnapshotMarker,
            s.vb,
            s.opaque,
            0,
            0,
            20,
            0,
            0,
        );
        buf.put_u64(start);
        buf.put_u64(upto);
        buf.put_u32(if s.first {
            snapshot_type::DISK
        } else {
            snapshot_type::MEMORY
        });
        *unacked += len as u64;
        s.first = false;
        s.snap_end = upto;
        return Step::Sent;
    }
    let Some(v) = bucket.vb(s.vb) else {
        s.last = s.snap_end;
        return Step::Sent;
    };
    let (mut sent, mut full, mut last) = (0usize, false, s.last);
    let (vb, opaque) = (s.vb, s.opaque);
    let manifest = s.filter.as_ref().map(|_| bucket.manifest());
    let in_filter = |scope: u32, cid: u32| match (&s.filter, &manifest) {
        (Some(f), Some(m)) => match f {
            StreamFilter::Scope(_) => {
                let sid = m.collection(cid).map_or(scope, |(s, _)| s.uid);
                f.includes(sid, cid)
            }
            StreamFilter::Collections(_) => f.includes(scope, cid),
        },
        _ => true,
    };
    let complete = v.visit(s.last, s.snap_end, |key, item| {
        if sent == ITEMS_PER_TURN || buf.len() >= FLUSH_AT {
            return false;
        }
        let cid = store::collection_of(key);
        if cid == store::SYSTEM_COLLECTION {
            let (event, version, ekey, evalue) = store::event_parts(item);
            let id_at = |i: usize| {
                evalue
                    .get(i..i + 4)
                    .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            let collection_event = key.get(1) == Some(&b'c');
            let wanted = shape.collections
                && match &s.filter {
                    None => true,
                    Some(StreamFilter::Scope(sid)) => id_at(8) == *sid,
                    Some(f @ StreamFilter::Collections(_)) => {
                        collection_event && f.includes(id_at(8), id_at(12))
                    }
                };
            if !wanted {
                last = item.by_seqno;
                return true;
            }
            let len = HEADER_LEN + 13 + ekey.len() + evalue.len();
            if !fits(window, *unacked, len) {
                full = true;
                return false;
            }
            put_header(
                buf,
                Opcode::DcpSystemEvent,
                vb,
                opaque,
                0,
                0,
                13,
                ekey.len(),
                evalue.len(),
            );
            buf.put_u64(item.by_seqno);
            buf.put_u32(event);
            buf.put_u8(version);
            buf.put_slice(ekey);
            buf.put_slice(evalue);
            *unacked += len as u64;
            last = item.by_seqno;
            sent += 1;
            return true;
        }
        // Keys go out as kept (with their collection id) to a collection-aware consumer; the
        // default collection's alone, without the id, to any other.
        let key: &[u8] = if shape.collections {
            if s.filter.is_some() && !in_filter(u32::MAX, cid) {
                last = item.by_seqno;
                return true;
            }
            key
        } else if cid == 0 {
            &key[1..]
        } else {
            last = item.by_seqno;
            return true;
        };
        let (op, elen) = if item.deleted {
            (Opcode::DcpDeletion, 18)
        } else if item.expired(now) {
            (Opcode::DcpExpiration, 18)
        } else {
            (Opcode::DcpMutation, 31)
        };
        // Most values go out as stored; a compressed one to a consumer without SNAPPY, or one
        // with xattrs to a consumer that did not ask for them, is rewritten first.
        let shown;
        let (datatype, value): (u8, &[u8]) = if op != Opcode::DcpMutation || shape.no_value {
            (0, &[])
        } else if item.datatype & (pump_protocol::datatype::SNAPPY | pump_protocol::datatype::XATTR)
            == 0
        {
            (item.datatype, &item.value)
        } else {
            shown = value::present(item.datatype, &item.value, shape.snappy, shape.xattrs);
            (shown.0, &shown.1)
        };
        let vlen = value.len();
        let len = HEADER_LEN + elen + key.len() + vlen;
        if !fits(window, *unacked, len) {
            full = true;
            return false;
        }
        put_header(
            buf,
            op,
            vb,
            opaque,
            item.cas,
            datatype,
            elen,
            key.len(),
            vlen,
        );
        if datatype & pump_protocol::datatype::SNAPPY != 0 {
            *snappy_out += 1;
        }
        buf.put_u64(item.by_seqno);
        buf.put_u64(item.rev_seqno);
        if op == Opcode::DcpMutation {
            buf.put_u32(item.flags);
            buf.put_u32(item.expiry);
            buf.put_u32(0);
            buf.put_u16(0);
            buf.put_u8(0);
            buf.put_slice(key);
            buf.put_slice(value);
        } else {
            buf.put_u16(0);
            buf.put_slice(key);
        }
        *unacked += len as u64;
        last = item.by_seqno;
        sent += 1;
        true
    });
    drop(v);
    // Items updated since moved past the snapshot: once the range is walked, it is complete.
    s.last = if complete { s.snap_end } else { last };
    if sent == 0 && full {
        Step::Full
    } else {
        Step::Sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_on_an_unknown_uuid_or_past_its_branch_rolls_back() {
        let log = [
            FailoverEntry { uuid: 2, seqno: 10 },
            FailoverEntry { uuid: 1, seqno: 0 },
        ];
        assert_eq!(check_request(&log, 20, 0, 99), Ok(()));
        assert_eq!(check_request(&log, 20, 5, 99), Err(0));
        assert_eq!(check_request(&log, 20, 15, 1), Err(10));
        assert_eq!(check_request(&log, 20, 8, 1), Ok(()));
        assert_eq!(check_request(&log, 20, 20, 2), Ok(()));
        assert_eq!(check_request(&log, 20, 21, 2), Err(20));
    }
}
