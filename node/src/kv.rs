//! The KV port: the memcached binary protocol, pipelined.
//!
//! ```text
//! accept -> Connection: read many requests, answer each into one write buffer (in order),
//!           write it out when the read buffer holds no whole frame any more.
//!           TAP_CONNECT hands the socket to tap::produce, DCP_OPEN (producer) to dcp::produce;
//!           TAP_MUTATION / TAP_DELETE / TAP_VBUCKET_SET are the TAP consumer path.
//! ```
//!
//! Reads and writes go to the vbucket named in the request header; a vbucket not active here
//! answers NOT_MY_VBUCKET (replica and pending vbuckets take writes only over TAP).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pump_protocol::dcp::open_flags;
use pump_protocol::header::{Header, Magic};
use pump_protocol::tap::{TapConnect, TapKind, TapMessage};
use pump_protocol::{Opcode, Packet, PacketCodec, Status, VbucketState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::limits;
use crate::store::{self, Bucket, Item, Write, WriteMode, CLIENT_STATES, REPLICATION_STATES};

/// How long a connection may stay silent before the node closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest request body accepted (memcached's 20 MB item limit plus room).
pub const MAX_BODY: u32 = pump_protocol::DEFAULT_MAX_BODY;
/// The version string VERSION answers.
pub const VERSION: &str = concat!("pump-node-", env!("CARGO_PKG_VERSION"));

/// What every connection of one node shares.
#[derive(Debug)]
pub struct KvContext {
    pub bucket: Arc<Bucket>,
    /// SASL PLAIN credentials; None = no authentication required.
    pub auth: Option<(String, String)>,
    pub started: Instant,
    /// The connections this node serves at once (`--max-connections`).
    pub cap: crate::limits::ConnectionCap,
}

/// Accepts connections until `stop` is cancelled; each connection also ends on `stop`.
pub async fn serve(listener: TcpListener, ctx: Arc<KvContext>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((sock, peer)) => {
                let Some(place) = ctx.cap.admit("KV port", peer) else {
                    drop(sock);
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let ctx = ctx.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _place = place;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = Connection::new(sock, ctx).run() => {
                            if let Err(e) = r {
                                tracing::debug!("connection {peer}: {e}");
                            }
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Appends a response to `out`.
#[allow(clippy::too_many_arguments)]
pub fn put_response(
    out: &mut BytesMut,
    opcode: u8,
    opaque: u32,
    status: Status,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    Header {
        magic: Magic::Response,
        opcode,
        key_len: key.len() as u16,
        extras_len: extras.len() as u8,
        datatype: 0,
        vbucket_or_status: status.value(),
        body_len: (extras.len() + key.len() + value.len()) as u32,
        opaque,
        cas,
    }
    .write(out);
    out.put_slice(extras);
    out.put_slice(key);
    out.put_slice(value);
}

fn status_text(s: Status) -> &'static [u8] {
    match s {
        Status::KeyEnoent => b"Not found",
        Status::KeyEexists => b"Data exists for key.",
        Status::NotStored => b"Not stored.",
        Status::Einval => b"Invalid arguments",
        Status::NotMyVbucket => b"Not my vbucket",
        Status::AuthError => b"Auth failure",
        Status::UnknownCommand => b"Unknown command",
        Status::DeltaBadval => b"Non-numeric server-side value for incr or decr",
        _ => b"",
    }
}

/// What the connection does after a request.
enum Next {
    Continue,
    Close,
    Tap(TapConnect),
    Dcp(Bytes),
}

struct Connection {
    sock: TcpStream,
    ctx: Arc<KvContext>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    authed: bool,
}

impl Connection {
    fn new(sock: TcpStream, ctx: Arc<KvContext>) -> Connection {
        let authed = ctx.auth.is_none();
        Connection {
            sock,
            ctx,
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf: BytesMut::with_capacity(64 * 1024),
            authed,
        }
    }

    async fn run(mut self) -> std::io::Result<()> {
        // Small bodies only until the connection authenticated (see crate::limits).
        let mut codec = PacketCodec::with_max_body(limits::max_body(self.authed, MAX_BODY));
        let mut authed = self.authed;
        loop {
            loop {
                let p = match codec.decode(&mut self.rbuf) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        self.sock.write_all(&self.wbuf).await?;
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    }
                };
                let next = self.dispatch(p);
                if self.authed != authed {
                    authed = self.authed;
                    codec = PacketCodec::with_max_body(limits::max_body(authed, MAX_BODY));
                }
                match next {
                    Next::Continue => {}
                    Next::Close => {
                        self.sock.write_all(&self.wbuf).await?;
                        return Ok(());
                    }
                    Next::Tap(c) => {
                        self.sock.write_all(&self.wbuf).await?;
                        return crate::tap::produce(self.sock, self.rbuf, self.ctx, c).await;
                    }
                    Next::Dcp(name) => {
                        self.sock.write_all(&self.wbuf).await?;
                        return crate::dcp::produce(self.sock, self.rbuf, self.ctx, name).await;
                    }
                }
                if self.wbuf.len() > 1 << 20 {
                    self.sock.write_all(&self.wbuf).await?;
                    self.wbuf.clear();
                }
            }
            if !self.wbuf.is_empty() {
                self.sock.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(256 * 1024);
            }
            let idle = limits::idle_timeout(self.authed, IDLE_TIMEOUT);
            let n = tokio::time::timeout(idle, self.sock.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
            if n == 0 {
                return if self.rbuf.is_empty() {
                    Ok(())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "EOF inside a frame",
                    ))
                };
            }
        }
    }

    /// Authenticated with the node's credentials (a node without any has no admin).
    fn is_admin(&self) -> bool {
        self.ctx.auth.is_some() && self.authed
    }

    fn reply(&mut self, p: &Packet, status: Status, cas: u64, extras: &[u8], key: &[u8], v: &[u8]) {
        put_response(
            &mut self.wbuf,
            p.opcode.value(),
            p.opaque,
            status,
            cas,
            extras,
            key,
            v,
        );
    }

    fn fail(&mut self, p: &Packet, status: Status) {
        self.reply(p, status, 0, &[], &[], status_text(status));
    }

    /// Answers a write: silent on success when quiet.
    fn answer(&mut self, p: &Packet, r: Result<u64, Status>) {
        match r {
            Ok(_) if p.opcode.is_quiet() => {}
            Ok(cas) => self.reply(p, Status::Success, cas, &[], &[], &[]),
            Err(s) => self.fail(p, s),
        }
    }

    fn dispatch(&mut self, p: Packet) -> Next {
        if p.magic != Magic::Request {
            // Stray responses (e.g. acks nobody waits for) are ignored.
            return Next::Continue;
        }
        let op = p.opcode;
        if !self.authed
            && !matches!(
                op,
                Opcode::SaslListMechs
                    | Opcode::SaslAuth
                    | Opcode::SaslStep
                    | Opcode::Version
                    | Opcode::Noop
                    | Opcode::Hello
                    | Opcode::Quit
                    | Opcode::QuitQ
            )
        {
            self.fail(&p, Status::AuthError);
            return Next::Continue;
        }
        if changes_vbucket_states(&p) && !self.is_admin() {
            self.reply(&p, Status::Eaccess, 0, &[], &[], NEEDS_ADMIN);
            return Next::Continue;
        }
        let bucket = self.ctx.bucket.clone();
        let vb = p.vbucket();
        match op {
            Opcode::Get | Opcode::GetQ | Opcode::GetK | Opcode::GetKQ => {
                let with_key = matches!(op, Opcode::GetK | Opcode::GetKQ);
                match bucket.get(vb, &p.key, CLIENT_STATES) {
                    Ok(i) => {
                        let key = if with_key { &p.key[..] } else { &[] };
                        let start = self.wbuf.len();
                        put_response(
                            &mut self.wbuf,
                            op.value(),
                            p.opaque,
                            Status::Success,
                            i.cas,
                            &i.flags.to_be_bytes(),
                            key,
                            &i.value,
                        );
                        self.wbuf[start + 5] = i.datatype;
                    }
                    Err(Status::KeyEnoent) if op.is_quiet() => {}
                    Err(s) => {
                        let key = if with_key { &p.key[..] } else { &[] };
                        let text = status_text(s);
                        self.reply(&p, s, 0, &[], key, text);
                    }
                }
            }
            Opcode::Set
            | Opcode::SetQ
            | Opcode::Add
            | Opcode::AddQ
            | Opcode::Replace
            | Opcode::ReplaceQ => {
                if p.extras.len() != 8 || p.key.is_empty() {
                    self.fail(&p, Status::Einval);
                    return Next::Continue;
                }
                let mut e = &p.extras[..];
                let mode = match op {
                    Opcode::Set | Opcode::SetQ => WriteMode::Set,
                    Opcode::Add | Opcode::AddQ => WriteMode::Add,
                    _ => WriteMode::Replace,
                };
                let w = Write {
                    key: p.key.clone(),
                    value: p.value.clone(),
                    flags: e.get_u32(),
                    expiry: e.get_u32(),
                    datatype: p.datatype,
                    cas: p.cas,
                    mode,
                };
                let r = bucket.write(vb, w, CLIENT_STATES);
                self.answer(&p, r);
            }
            Opcode::Delete | Opcode::DeleteQ => {
                if !p.extras.is_empty() || !p.value.is_empty() {
                    self.fail(&p, Status::Einval);
                    return Next::Continue;
                }
                // memcached answers a delete with cas 0.
                let r = bucket
                    .delete(vb, p.key.clone(), p.cas, CLIENT_STATES)
                    .map(|_| 0);
                self.answer(&p, r);
            }
            Opcode::Increment | Opcode::IncrementQ | Opcode::Decrement | Opcode::DecrementQ => {
                self.arith(&p);
            }
            Opcode::Append | Opcode::AppendQ | Opcode::Prepend | Opcode::PrependQ => {
                let r = self.concat(&p);
                self.answer(&p, r);
            }
            Opcode::Quit => {
                self.reply(&p, Status::Success, 0, &[], &[], &[]);
                return Next::Close;
            }
            Opcode::QuitQ => return Next::Close,
            Opcode::Flush | Opcode::FlushQ => {
                bucket.flush(CLIENT_STATES);
                if op == Opcode::Flush {
                    self.reply(&p, Status::Success, 0, &[], &[], &[]);
                }
            }
            Opcode::Noop => self.reply(&p, Status::Success, 0, &[], &[], &[]),
            Opcode::Version => self.reply(&p, Status::Success, 0, &[], &[], VERSION.as_bytes()),
            Opcode::Stat => self.stats(&p),
            Opcode::Hello => self.reply(&p, Status::Success, 0, &[], &[], &[]),
            Opcode::SaslListMechs => self.reply(&p, Status::Success, 0, &[], &[], b"PLAIN"),
            Opcode::SaslAuth => {
                let ok = &p.key[..] == b"PLAIN"
                    && match (&self.ctx.auth, pump_protocol::sasl::parse_plain(&p.value)) {
                        (None, _) => true,
                        (Some((u, pw)), Some((gu, gp))) => *u == gu && *pw == gp,
                        _ => false,
                    };
                if ok {
                    self.authed = true;
                    self.reply(&p, Status::Success, 0, &[], &[], b"Authenticated");
                } else {
                    self.fail(&p, Status::AuthError);
                }
            }
            Opcode::SaslStep => self.fail(&p, Status::AuthError),
            Opcode::SelectBucket => {
                if p.key[..] == *bucket.name.as_bytes() {
                    self.reply(&p, Status::Success, 0, &[], &[], &[]);
                } else {
                    self.fail(&p, Status::KeyEnoent);
                }
            }
            Opcode::SetVbucket => {
                let raw = if p.extras.len() >= 4 {
                    Some((&p.extras[..]).get_u32())
                } else if p.value.len() == 4 {
                    Some((&p.value[..]).get_u32())
                } else {
                    None
                };
                match raw.and_then(VbucketState::from_u32) {
                    Some(s) if bucket.set_state(vb, s) => {
                        self.reply(&p, Status::Success, 0, &[], &[], &[])
                    }
                    Some(_) => self.fail(&p, Status::NotMyVbucket),
                    None => self.fail(&p, Status::Einval),
                }
            }
            Opcode::GetVbucket => match bucket.state(vb) {
                Some(s) => {
                    let v = (s as u32).to_be_bytes();
                    self.reply(&p, Status::Success, 0, &[], &[], &v)
                }
                None => self.fail(&p, Status::NotMyVbucket),
            },
            Opcode::DelVbucket => {
                if let Some(mut v) = bucket.vb(vb) {
                    v.items.clear();
                    v.by_seqno.clear();
                    v.state = VbucketState::Dead;
                    drop(v);
                    self.reply(&p, Status::Success, 0, &[], &[], &[]);
                } else {
                    self.fail(&p, Status::NotMyVbucket);
                }
            }
            Opcode::SetWithMeta | Opcode::AddWithMeta | Opcode::DelWithMeta => {
                let r = self.with_meta(&p);
                self.answer(&p, r);
            }
            Opcode::TapConnect => match TapConnect::from_packet(&p) {
                Ok(c) => return Next::Tap(c),
                Err(_) => self.fail(&p, Status::Einval),
            },
            Opcode::TapMutation
            | Opcode::TapDelete
            | Opcode::TapVbucketSet
            | Opcode::TapOpaque
            | Opcode::TapFlush
            | Opcode::TapCheckpointStart
            | Opcode::TapCheckpointEnd => self.tap_consume(&p),
            Opcode::DcpOpen => {
                if p.extras.len() != 8 {
                    self.fail(&p, Status::Einval);
                } else if (&p.extras[4..]).get_u32() & open_flags::PRODUCER == 0 {
                    self.fail(&p, Status::NotSupported);
                } else {
                    self.reply(&p, Status::Success, 0, &[], &[], &[]);
                    return Next::Dcp(p.key.clone());
                }
            }
            _ => self.fail(&p, Status::UnknownCommand),
        }
        Next::Continue
    }

    fn arith(&mut self, p: &Packet) {
        let op = p.opcode;
        if p.extras.len() != 20 {
            return self.fail(p, Status::Einval);
        }
        let mut e = &p.extras[..];
        let (delta, initial, exp) = (e.get_u64(), e.get_u64(), e.get_u32());
        let incr = matches!(op, Opcode::Increment | Opcode::IncrementQ);
        let bucket = self.ctx.bucket.clone();
        let vb = p.vbucket();
        let (value, flags, mode) = match bucket.get(vb, &p.key, CLIENT_STATES) {
            Ok(i) => {
                if p.cas != 0 && p.cas != i.cas {
                    return self.fail(p, Status::KeyEexists);
                }
                let cur = std::str::from_utf8(&i.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let Some(cur) = cur else {
                    return self.fail(p, Status::DeltaBadval);
                };
                let n = if incr {
                    cur.wrapping_add(delta)
                } else {
                    cur.saturating_sub(delta)
                };
                (n, i.flags, WriteMode::Replace)
            }
            Err(Status::KeyEnoent) if exp != u32::MAX => (initial, 0, WriteMode::Add),
            Err(s) => return self.fail(p, s),
        };
        let w = Write {
            key: p.key.clone(),
            value: Bytes::from(value.to_string()),
            flags,
            expiry: if mode == WriteMode::Add { exp } else { 0 },
            datatype: 0,
            cas: p.cas,
            mode,
        };
        match bucket.write(vb, w, CLIENT_STATES) {
            Ok(_) if op.is_quiet() => {}
            Ok(cas) => self.reply(p, Status::Success, cas, &[], &[], &value.to_be_bytes()),
            Err(s) => self.fail(p, s),
        }
    }

    fn concat(&mut self, p: &Packet) -> Result<u64, Status> {
        if !p.extras.is_empty() {
            return Err(Status::Einval);
        }
        let bucket = self.ctx.bucket.clone();
        let vb = p.vbucket();
        let i = bucket.get(vb, &p.key, CLIENT_STATES).map_err(|s| match s {
            Status::KeyEnoent => Status::NotStored,
            s => s,
        })?;
        if p.cas != 0 && p.cas != i.cas {
            return Err(Status::KeyEexists);
        }
        let mut v = BytesMut::with_capacity(i.value.len() + p.value.len());
        if matches!(p.opcode, Opcode::Append | Opcode::AppendQ) {
            v.put_slice(&i.value);
            v.put_slice(&p.value);
        } else {
            v.put_slice(&p.value);
            v.put_slice(&i.value);
        }
        let w = Write {
            key: p.key.clone(),
            value: v.freeze(),
            flags: i.flags,
            expiry: i.expiry,
            datatype: i.datatype,
            cas: i.cas,
            mode: WriteMode::Replace,
        };
        bucket.write(vb, w, CLIENT_STATES)
    }

    /// SET_WITH_META / ADD_WITH_META / DEL_WITH_META: extras `flags u32, expiry u32,
    /// rev_seqno u64, cas u64` (+ options); the item keeps the given cas and rev.
    fn with_meta(&mut self, p: &Packet) -> Result<u64, Status> {
        if p.extras.len() < 24 {
            return Err(Status::Einval);
        }
        let mut e = &p.extras[..];
        let (flags, expiry, rev, cas) = (e.get_u32(), e.get_u32(), e.get_u64(), e.get_u64());
        let deleted = p.opcode == Opcode::DelWithMeta;
        let item = Item {
            value: if deleted {
                Bytes::new()
            } else {
                p.value.clone()
            },
            flags,
            expiry,
            cas,
            by_seqno: 0,
            rev_seqno: rev,
            datatype: p.datatype,
            deleted,
        };
        let bucket = &self.ctx.bucket;
        if p.opcode == Opcode::AddWithMeta && bucket.get(p.vbucket(), &p.key, CLIENT_STATES).is_ok()
        {
            return Err(Status::KeyEexists);
        }
        bucket.apply(
            p.vbucket(),
            p.key.clone(),
            item,
            &[
                VbucketState::Active,
                VbucketState::Replica,
                VbucketState::Pending,
            ],
        )
    }

    fn stats(&mut self, p: &Packet) {
        if let Some(group) = p.key.strip_prefix(b"vbucket-seqno") {
            return self.vbucket_seqno_stats(p, group);
        }
        let b = &self.ctx.bucket;
        let stats: Vec<(String, String)> = vec![
            ("pid".into(), std::process::id().to_string()),
            (
                "uptime".into(),
                self.ctx.started.elapsed().as_secs().to_string(),
            ),
            ("time".into(), store::now().to_string()),
            ("version".into(), VERSION.into()),
            ("curr_items".into(), b.item_count().to_string()),
            ("ep_num_vbuckets".into(), b.num_vbuckets().to_string()),
        ];
        if p.key.is_empty() {
            for (k, v) in &stats {
                self.reply(p, Status::Success, 0, &[], k.as_bytes(), v.as_bytes());
            }
        } else if let Some((k, v)) = stats.iter().find(|(k, _)| k.as_bytes() == &p.key[..]) {
            self.reply(p, Status::Success, 0, &[], k.as_bytes(), v.as_bytes());
        } else {
            return self.fail(p, Status::KeyEnoent);
        }
        self.reply(p, Status::Success, 0, &[], &[], &[]);
    }

    /// `STAT vbucket-seqno [N]`: `vb_N:high_seqno` and `vb_N:uuid` of every vbucket that is not
    /// dead (or of vbucket N), what a DCP client reads to know where each stream ends.
    fn vbucket_seqno_stats(&mut self, p: &Packet, group: &[u8]) {
        let b = self.ctx.bucket.clone();
        let only = std::str::from_utf8(group)
            .ok()
            .map(str::trim)
            .filter(|g| !g.is_empty());
        let vbs: Vec<u16> = match only.map(str::parse::<u16>) {
            None => (0..b.num_vbuckets()).collect(),
            Some(Ok(vb)) if vb < b.num_vbuckets() => vec![vb],
            Some(_) => return self.fail(p, Status::Einval),
        };
        for vb in vbs {
            let Some((high, uuid)) = b
                .vb(vb)
                .filter(|v| only.is_some() || v.state != VbucketState::Dead)
                .map(|v| (v.high_seqno, v.uuid()))
            else {
                continue;
            };
            for (field, value) in [
                ("high_seqno", high),
                ("abs_high_seqno", high),
                ("uuid", uuid),
            ] {
                let k = format!("vb_{vb}:{field}");
                self.reply(
                    p,
                    Status::Success,
                    0,
                    &[],
                    k.as_bytes(),
                    value.to_string().as_bytes(),
                );
            }
        }
        self.reply(p, Status::Success, 0, &[], &[], &[]);
    }

    /// The TAP consumer: writes TAP messages into replica or pending vbuckets; answers every
    /// message that carries the ACK flag, and every failure.
    fn tap_consume(&mut self, p: &Packet) {
        let m = match TapMessage::from_packet(p) {
            Ok(m) => m,
            Err(_) => return self.fail(p, Status::Einval),
        };
        let bucket = self.ctx.bucket.clone();
        let r: Result<(), Status> = match m.kind() {
            TapKind::Mutation => bucket
                .apply(
                    m.vbucket,
                    m.key.clone(),
                    Item {
                        value: m.value.clone(),
                        flags: m.fixed_item_flags(),
                        expiry: m.item_expiry,
                        cas: m.cas,
                        by_seqno: 0,
                        rev_seqno: 0,
                        datatype: m.datatype,
                        deleted: false,
                    },
                    REPLICATION_STATES,
                )
                .map(|_| ()),
            TapKind::Delete => bucket
                .apply(
                    m.vbucket,
                    m.key.clone(),
                    Item {
                        value: Bytes::new(),
                        flags: 0,
                        expiry: 0,
                        cas: m.cas,
                        by_seqno: 0,
                        rev_seqno: 0,
                        datatype: 0,
                        deleted: true,
                    },
                    REPLICATION_STATES,
                )
                .map(|_| ()),
            TapKind::VbucketSet => match m.vbucket_state() {
                Ok(s) if bucket.set_state(m.vbucket, s) => Ok(()),
                Ok(_) => Err(Status::NotMyVbucket),
                Err(_) => Err(Status::Einval),
            },
            _ => Ok(()),
        };
        match r {
            Ok(()) if m.wants_ack() => m.ack_reply().encode(&mut self.wbuf),
            Ok(()) => {}
            Err(s) => {
                let mut ack = m.ack_reply();
                ack.vbucket_or_status = s.value();
                ack.encode(&mut self.wbuf);
            }
        }
    }
}

/// What a request that [`changes_vbucket_states`] gets without the admin credentials.
const NEEDS_ADMIN: &[u8] = b"vbucket state changes and TAP takeover need the node's admin \
credentials: start it with --user/--password and authenticate";

/// Requests that change which node serves a vbucket: SET_VBUCKET, DEL_VBUCKET, and a
/// TAP_CONNECT asking for TAKEOVER_VBUCKETS (its end marks every vbucket it streamed dead).
/// One such request from anyone could stop the node serving its data.
fn changes_vbucket_states(p: &Packet) -> bool {
    match p.opcode {
        Opcode::SetVbucket | Opcode::DelVbucket => true,
        Opcode::TapConnect => TapConnect::from_packet(p)
            .is_ok_and(|c| c.has(pump_protocol::tap::connect_flags::TAKEOVER_VBUCKETS)),
        _ => false,
    }
}
