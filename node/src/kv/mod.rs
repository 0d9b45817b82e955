//! The KV port: the memcached binary protocol as a Couchbase data node speaks it, pipelined.
//!
//! ```text
//! accept (plain, or TLS) -> Connection: read many requests, answer each into one write
//!           buffer (in order), write it out when the read buffer holds no whole frame any more.
//!           TAP_CONNECT hands the socket to tap::produce, DCP_OPEN (producer) to dcp::produce;
//!           TAP_MUTATION / TAP_DELETE / TAP_VBUCKET_SET are the TAP consumer path.
//! session.rs  HELLO, SASL, SELECT_BUCKET, GET_CLUSTER_CONFIG, GET_ERROR_MAP,
//!             GET_COLLECTIONS_MANIFEST, GET_COLLECTION_ID, GET_SCOPE_ID: what a connection
//!             negotiated (Session)
//! items.rs    GET/SET/ADD/REPLACE/DELETE/TOUCH/GAT, INCR/DECR, APPEND/PREPEND, *_WITH_META
//! admin.rs    STAT, SET/GET/DEL_VBUCKET, the TAP consumer
//!
//! accept past --max-connections (plain and TLS together): closed at once, one log line
//! before SASL (a node with credentials): bodies up to 64 KiB, 10 s of silence (crate::limits)
//! SET_VBUCKET, DEL_VBUCKET, TAP_CONNECT with TAKEOVER: the node's user only (PLAIN or SCRAM),
//!             EACCESS otherwise, and always on a node without credentials
//! ```
//!
//! Each connection gets only what it negotiated: the datatype bits it may send and receive
//! (JSON, SNAPPY, XATTR), mutation tokens (MUTATION_SEQNO), extended statuses (XERROR; without
//! it a NO_BUCKET or EACCESS closes the connection, as kv_engine does). With credentials set,
//! a connection must authenticate, then select the bucket (unless its user is named after the
//! bucket); without credentials it starts bound to the bucket. Reads and writes go to the
//! vbucket named in the request header; a vbucket not active here answers NOT_MY_VBUCKET with
//! the current cluster map as its value.
//!
//! Keys: on a connection that negotiated COLLECTIONS every key starts with its collection id
//! in LEB128 (a malformed one is EINVAL, a collection the manifest lacks UNKNOWN_COLLECTION
//! with `{"manifest_uid": "<hex>"}`); on any other the key is of the default collection.

mod admin;
mod items;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use pump_protocol::header::{Header, Magic};
use pump_protocol::tap::TapConnect;
use pump_protocol::{Opcode, Packet, PacketCodec, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::auth::Users;
use crate::config::ConfigSlot;
use crate::limits;
use crate::store::Bucket;
pub use session::Session;

/// How long a connection may stay silent before the node closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted (memcached's 20 MB item limit plus room).
pub const MAX_BODY: u32 = pump_protocol::DEFAULT_MAX_BODY;
/// Longest key (kv_engine's MaxKeyLength).
pub const MAX_KEY: usize = 250;
/// The version string VERSION answers.
pub const VERSION: &str = concat!("pump-node-", env!("CARGO_PKG_VERSION"));

/// The reading half of a stream a producer owns.
pub type StreamReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a stream a producer owns.
pub type StreamWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A byte stream a connection runs on: TCP, or TLS over TCP.
pub trait KvStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Its two halves, for a producer that reads acks while it writes: TCP's own halves (no
    /// lock between them), a TLS session shared behind a lock.
    fn halves(self) -> (StreamReader, StreamWriter);
}

impl KvStream for tokio::net::TcpStream {
    fn halves(self) -> (StreamReader, StreamWriter) {
        let (r, w) = self.into_split();
        (Box::new(r), Box::new(w))
    }
}

impl KvStream for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn halves(self) -> (StreamReader, StreamWriter) {
        let (r, w) = tokio::io::split(self);
        (Box::new(r), Box::new(w))
    }
}

/// What the node counts, for STAT and for tests that must prove what travelled.
#[derive(Debug, Default)]
pub struct Counters {
    /// Values received snappy-compressed.
    pub snappy_in: AtomicU64,
    /// Values sent snappy-compressed (GET answers, DCP and TAP items).
    pub snappy_out: AtomicU64,
    /// Successful authentications per mechanism: SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1, PLAIN.
    pub auth: [AtomicU64; 4],
    /// HELLOs answered.
    pub hellos: AtomicU64,
}

impl Counters {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection of one node shares.
#[derive(Debug)]
pub struct KvContext {
    pub bucket: Arc<Bucket>,
    /// The user clients authenticate as; None = no authentication required.
    pub users: Option<Users>,
    pub started: Instant,
    /// The cluster map this node serves.
    pub config: ConfigSlot,
    pub counters: Counters,
    /// The connections this node serves at once, plain and TLS together (`--max-connections`).
    pub cap: limits::ConnectionCap,
}

/// Accepts connections until `stop` is cancelled; each connection also ends on `stop`. With
/// `tls`, each connection is a TLS session first. At the node's cap, the oldest connection that
/// has not authenticated makes room for a new one, else the new one is closed at once (see
/// [`crate::limits`]).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<KvContext>,
    stop: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((sock, peer)) => {
                let port = if tls.is_some() {
                    "TLS KV port"
                } else {
                    "KV port"
                };
                let Some(place) = ctx.cap.admit(port, peer, ctx.users.is_none()).await else {
                    drop(sock);
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let ctx = ctx.clone();
                let stop = stop.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let handle = place.handle();
                    let run = async {
                        match tls {
                            None => Connection::new(sock, ctx, handle).run().await,
                            Some(acceptor) => {
                                let s =
                                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock))
                                        .await
                                        .map_err(|_| {
                                            std::io::Error::new(
                                                std::io::ErrorKind::TimedOut,
                                                "TLS handshake timed out",
                                            )
                                        })??;
                                Connection::new(s, ctx, handle).run().await
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = place.evicted() => {
                            tracing::debug!("connection {peer}: closed to make room at the cap before it authenticated");
                        }
                        r = run => {
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
    put_response_dt(out, opcode, opaque, status, cas, 0, extras, key, value);
}

/// Appends a response with a datatype to `out`.
#[allow(clippy::too_many_arguments)]
pub fn put_response_dt(
    out: &mut BytesMut,
    opcode: u8,
    opaque: u32,
    status: Status,
    cas: u64,
    datatype: u8,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    Header {
        magic: Magic::Response,
        opcode,
        key_len: key.len() as u16,
        extras_len: extras.len() as u8,
        datatype,
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
        Status::NoBucket => b"No bucket selected",
        Status::E2big => b"Too large.",
        _ => b"",
    }
}

/// What the connection does after a request.
pub(crate) enum Next {
    Continue,
    Close,
    Tap(TapConnect),
    Dcp { flags: u32 },
}

/// One client connection.
pub(crate) struct Connection<S> {
    sock: S,
    ctx: Arc<KvContext>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    session: Session,
    /// Its place under the node's cap: told when the connection authenticates.
    place: limits::PlaceHandle,
}

impl<S: KvStream> Connection<S> {
    fn new(sock: S, ctx: Arc<KvContext>, place: limits::PlaceHandle) -> Connection<S> {
        let session = Session::new(&ctx);
        Connection {
            sock,
            ctx,
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf: BytesMut::with_capacity(64 * 1024),
            session,
            place,
        }
    }

    async fn run(mut self) -> std::io::Result<()> {
        // Small bodies only until the connection authenticated (see crate::limits).
        let mut authed = self.session.authed;
        let mut codec = PacketCodec::with_max_body(limits::max_body(authed, MAX_BODY));
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
                if self.session.authed != authed {
                    authed = self.session.authed;
                    codec = PacketCodec::with_max_body(limits::max_body(authed, MAX_BODY));
                    if authed {
                        self.place.authenticated();
                    }
                }
                match next {
                    Next::Continue => {}
                    Next::Close => {
                        self.sock.write_all(&self.wbuf).await?;
                        self.sock.flush().await?;
                        let _ = self.sock.shutdown().await;
                        return Ok(());
                    }
                    Next::Tap(c) => {
                        self.sock.write_all(&self.wbuf).await?;
                        self.sock.flush().await?;
                        let features = self.session.features;
                        return crate::tap::produce(self.sock, self.rbuf, self.ctx, c, features)
                            .await;
                    }
                    Next::Dcp { flags } => {
                        self.sock.write_all(&self.wbuf).await?;
                        self.sock.flush().await?;
                        let features = self.session.features;
                        return crate::dcp::produce(
                            self.sock, self.rbuf, self.ctx, flags, features,
                        )
                        .await;
                    }
                }
                if self.wbuf.len() > 1 << 20 {
                    self.sock.write_all(&self.wbuf).await?;
                    self.sock.flush().await?;
                    self.wbuf.clear();
                }
            }
            if !self.wbuf.is_empty() {
                self.sock.write_all(&self.wbuf).await?;
                self.sock.flush().await?;
                self.wbuf.clear();
            }
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(256 * 1024);
            }
            let idle = limits::idle_timeout(self.session.authed, IDLE_TIMEOUT);
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

    /// Authenticated with the node's credentials, by PLAIN or SCRAM (a node without any has no
    /// admin).
    fn is_admin(&self) -> bool {
        self.ctx.users.is_some() && self.session.authed
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

    /// Answers `status` with its text; NOT_MY_VBUCKET carries the cluster map. An extended
    /// status a connection without XERROR cannot take closes it instead.
    fn fail(&mut self, p: &Packet, status: Status) -> Next {
        if !self.session.xerror() {
            match status {
                Status::NoBucket | Status::Eaccess | Status::AuthStale => return Next::Close,
                Status::XattrEinval | Status::UnknownCollection | Status::UnknownScope => {
                    return self.fail(p, Status::Einval)
                }
                Status::Locked => return self.fail(p, Status::KeyEexists),
                _ => {}
            }
        }
        if matches!(status, Status::UnknownCollection | Status::UnknownScope) {
            let uid = self.ctx.bucket.manifest().uid;
            let v = pump_protocol::collections::unknown_collection_value(uid);
            let dt = self.session.json_bit();
            put_response_dt(
                &mut self.wbuf,
                p.opcode.value(),
                p.opaque,
                status,
                0,
                dt,
                &[],
                &[],
                &v,
            );
            return Next::Continue;
        }
        if status == Status::NotMyVbucket {
            if let Some(c) = self.ctx.config.bucket() {
                let dt = self.session.json_bit();
                put_response_dt(
                    &mut self.wbuf,
                    p.opcode.value(),
                    p.opaque,
                    status,
                    0,
                    dt,
                    &[],
                    &[],
                    &c.json,
                );
                return Next::Continue;
            }
        }
        self.reply(p, status, 0, &[], &[], status_text(status));
        Next::Continue
    }

    /// The key a request names as the bucket keeps it: with COLLECTIONS the key as sent (its
    /// LEB128 collection id checked), otherwise the default collection's id in front. EINVAL
    /// for a malformed id or a document key that is empty or longer than 250 bytes,
    /// UNKNOWN_COLLECTION for a collection the manifest does not hold.
    pub(crate) fn doc_key(&self, key: &Bytes) -> Result<Bytes, Status> {
        let (cid, doc) = if self.session.collections() {
            let (cid, doc) = pump_protocol::collections::split_key(key).map_err(|e| {
                tracing::debug!("{e}");
                Status::Einval
            })?;
            (cid, doc)
        } else {
            (0, key.clone())
        };
        if doc.is_empty() || doc.len() > MAX_KEY {
            return Err(Status::Einval);
        }
        self.ctx.bucket.collection_ttl(cid)?;
        Ok(if self.session.collections() {
            key.clone()
        } else {
            crate::store::doc_key(0, &doc)
        })
    }

    fn dispatch(&mut self, p: Packet) -> Next {
        if p.magic != Magic::Request {
            // Stray responses (e.g. acks nobody waits for) are ignored.
            return Next::Continue;
        }
        let op = p.opcode;
        if !self.session.authed && !session::before_auth(op) {
            return self.fail(&p, Status::AuthError);
        }
        if !self.session.bucket && session::needs_bucket(op) {
            return self.fail(&p, Status::NoBucket);
        }
        if changes_vbucket_states(&p) && !self.is_admin() {
            // Answered even without XERROR: the text says what is missing.
            self.reply(&p, Status::Eaccess, 0, &[], &[], NEEDS_ADMIN);
            return Next::Continue;
        }
        match op {
            Opcode::Get
            | Opcode::GetQ
            | Opcode::GetK
            | Opcode::GetKQ
            | Opcode::Gat
            | Opcode::GatQ => self.get(&p),
            Opcode::Touch => self.touch(&p),
            Opcode::Set
            | Opcode::SetQ
            | Opcode::Add
            | Opcode::AddQ
            | Opcode::Replace
            | Opcode::ReplaceQ => self.store(&p),
            Opcode::Delete | Opcode::DeleteQ => self.delete(&p),
            Opcode::Increment | Opcode::IncrementQ | Opcode::Decrement | Opcode::DecrementQ => {
                self.arith(&p)
            }
            Opcode::Append | Opcode::AppendQ | Opcode::Prepend | Opcode::PrependQ => {
                self.concat(&p)
            }
            Opcode::SetWithMeta
            | Opcode::SetqWithMeta
            | Opcode::AddWithMeta
            | Opcode::AddqWithMeta
            | Opcode::DelWithMeta
            | Opcode::DelqWithMeta => self.with_meta(&p),
            Opcode::Quit => {
                self.reply(&p, Status::Success, 0, &[], &[], &[]);
                Next::Close
            }
            Opcode::QuitQ => Next::Close,
            Opcode::Flush | Opcode::FlushQ => {
                self.ctx.bucket.flush(crate::store::CLIENT_STATES);
                if op == Opcode::Flush {
                    self.reply(&p, Status::Success, 0, &[], &[], &[]);
                }
                Next::Continue
            }
            Opcode::Noop => {
                self.reply(&p, Status::Success, 0, &[], &[], &[]);
                Next::Continue
            }
            Opcode::Version => {
                self.reply(&p, Status::Success, 0, &[], &[], VERSION.as_bytes());
                Next::Continue
            }
            Opcode::Stat => self.stats(&p),
            Opcode::Hello => self.hello(&p),
            Opcode::SaslListMechs => self.sasl_list_mechs(&p),
            Opcode::SaslAuth | Opcode::SaslStep => self.sasl(&p),
            Opcode::SelectBucket => self.select_bucket(&p),
            Opcode::GetClusterConfig => self.get_cluster_config(&p),
            Opcode::GetErrorMap => self.get_error_map(&p),
            Opcode::GetCollectionsManifest => self.get_collections_manifest(&p),
            Opcode::GetCollectionId | Opcode::GetScopeId => self.get_collection_id(&p),
            Opcode::SetVbucket => self.set_vbucket(&p),
            Opcode::GetVbucket => self.get_vbucket(&p),
            Opcode::DelVbucket => self.del_vbucket(&p),
            Opcode::TapConnect => match TapConnect::from_packet(&p) {
                Ok(c) => Next::Tap(c),
                Err(_) => self.fail(&p, Status::Einval),
            },
            Opcode::TapMutation
            | Opcode::TapDelete
            | Opcode::TapVbucketSet
            | Opcode::TapOpaque
            | Opcode::TapFlush
            | Opcode::TapCheckpointStart
            | Opcode::TapCheckpointEnd => self.tap_consume(&p),
            Opcode::DcpOpen => self.dcp_open(&p),
            _ => self.fail(&p, Status::UnknownCommand),
        }
    }

    fn dcp_open(&mut self, p: &Packet) -> Next {
        use pump_protocol::dcp::open_flags;
        if p.extras.len() != 8 || p.key.is_empty() {
            return self.fail(p, Status::Einval);
        }
        let flags = u32::from_be_bytes([p.extras[4], p.extras[5], p.extras[6], p.extras[7]]);
        if flags & open_flags::PRODUCER == 0 {
            return self.fail(p, Status::NotSupported);
        }
        self.reply(p, Status::Success, 0, &[], &[], &[]);
        Next::Dcp { flags }
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
