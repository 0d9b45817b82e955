//! One connection (TCP, or TLS over TCP) speaking the memcached binary protocol, every read
//! under a timeout.
//!
//! ```text
//! Connection::open(addr, auth, bucket, timeout)          a plain memcached: no HELLO
//!   connect -> SASL_AUTH PLAIN (when auth) -> SELECT_BUCKET (when bucket; skipped when the
//!   server answers UNKNOWN_COMMAND or NOT_SUPPORTED, as servers without buckets do)
//! Connection::negotiate(addr, &Handshake)                a Couchbase node, as its tools do
//!   connect (TLS with Handshake::tls) -> HELLO (user agent "pump/VERSION", the features asked)
//!   -> SASL_LIST_MECHS -> the strongest listed: SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1, PLAIN
//!      last (Handshake::sasl forces one) -> SELECT_BUCKET
//! request(packet)      sends with a fresh opaque, returns the response with that opaque
//! stats(group)         STAT: key/value responses until the one with an empty key
//! into_split()         ReadHalf (frames in) + WriteHalf (frames out) for streaming
//! ```
//!
//! A feature the server did not agree to in HELLO is never used: [`Connection::features`] is
//! what both sides agreed to. No password is ever part of an error or a log line.
//!
//! Reads never wait forever: [`ReadHalf::recv`] fails with [`ClientError::Timeout`] naming the
//! peer and what it was waiting for; a clean close between frames is [`Next::Eof`], a close in
//! the middle of a frame is an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use pump_protocol::hello::{self, Feature, FeatureSet};
use pump_protocol::sasl::{Mechanism, ScramClient};
use pump_protocol::{Opcode, Packet, PacketCodec, Status};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead};

use crate::error::ClientError;
use crate::tls::TlsClient;

/// The user agent the pump sends in HELLO.
pub const USER_AGENT: &str = concat!("pump/", env!("CARGO_PKG_VERSION"));

/// The reading side of a stream (TCP or TLS).
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing side of a stream (TCP or TLS).
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// How long a read or write may wait by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// SASL PLAIN credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({:?}, ***)", self.user)
    }
}

/// What a bounded wait for the next frame found.
#[derive(Debug)]
pub enum Next {
    /// A whole frame.
    Packet(Packet),
    /// The peer closed the connection cleanly between frames.
    Eof,
    /// Nothing arrived within the wait.
    Idle,
}

/// An I/O error; a reset or broken connection reads as "closed by the peer".
fn io_error(peer: &str, what: &str, source: std::io::Error) -> ClientError {
    use std::io::ErrorKind::*;
    match source.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => ClientError::Closed {
            peer: peer.to_string(),
            what: format!("{what} ({source})"),
        },
        _ => ClientError::Io {
            peer: peer.to_string(),
            what: what.to_string(),
            source,
        },
    }
}

/// The reading half: frames in.
pub struct ReadHalf {
    peer: Arc<str>,
    frames: FramedRead<Reader, PacketCodec>,
    timeout: Duration,
}

impl ReadHalf {
    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The read timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The next frame within `wait`; `what` says what the caller is doing, for errors.
    /// Cancel-safe: dropping the future loses no bytes.
    pub async fn recv_within(&mut self, wait: Duration, what: &str) -> Result<Next, ClientError> {
        match tokio::time::timeout(wait, self.frames.next()).await {
            Err(_) => Ok(Next::Idle),
            Ok(None) => Ok(Next::Eof),
            Ok(Some(Ok(p))) => Ok(Next::Packet(p)),
            Ok(Some(Err(e))) => Err(self.protocol_error(e, what)),
        }
    }

    /// The next frame if a whole one is already read (no wait, no system call): a stream
    /// loop takes frames this way and awaits [`ReadHalf::recv_within`] only when the buffer
    /// runs dry. A corrupt frame is an error, as it would be from `recv_within`.
    pub fn try_buffered(&mut self, what: &str) -> Result<Option<Packet>, ClientError> {
        // The codec holds only its frame limit: a copy decodes the same frames.
        let mut codec = *self.frames.decoder();
        match codec.decode(self.frames.read_buffer_mut()) {
            Ok(p) => Ok(p),
            Err(e) => Err(self.protocol_error(e, what)),
        }
    }

    /// The next frame within the connection's timeout; a close or a timeout is an error.
    pub async fn recv(&mut self, what: &str) -> Result<Packet, ClientError> {
        match self.recv_within(self.timeout, what).await? {
            Next::Packet(p) => Ok(p),
            Next::Eof => Err(ClientError::Closed {
                peer: self.peer.to_string(),
                what: what.to_string(),
            }),
            Next::Idle => Err(self.timeout_error(what)),
        }
    }

    /// A timeout error naming this peer.
    pub fn timeout_error(&self, what: &str) -> ClientError {
        ClientError::Timeout {
            peer: self.peer.to_string(),
            what: what.to_string(),
            secs: self.timeout.as_secs_f64(),
        }
    }

    fn protocol_error(&self, e: pump_protocol::ProtocolError, what: &str) -> ClientError {
        match e {
            pump_protocol::ProtocolError::Io(source) => io_error(&self.peer, what, source),
            pump_protocol::ProtocolError::Truncated(n) => ClientError::Closed {
                peer: self.peer.to_string(),
                what: format!("{what} ({n} bytes of a frame received)"),
            },
            source => ClientError::Protocol {
                peer: self.peer.to_string(),
                source,
            },
        }
    }
}

/// The writing half: frames out, each write under the timeout.
pub struct WriteHalf {
    peer: Arc<str>,
    stream: Writer,
    buf: BytesMut,
    timeout: Duration,
}

impl WriteHalf {
    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends one frame.
    pub async fn send(&mut self, p: &Packet) -> Result<(), ClientError> {
        self.buf.clear();
        p.encode(&mut self.buf);
        let buf = std::mem::take(&mut self.buf);
        let r = self.send_bytes(&buf, "sending a request").await;
        self.buf = buf;
        r
    }

    /// Sends bytes already encoded (one or many frames).
    pub async fn send_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), ClientError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            // A TLS stream holds its records until flushed; TCP's flush does nothing.
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(io_error(&self.peer, what, source)),
            Err(_) => Err(ClientError::Timeout {
                peer: self.peer.to_string(),
                what: what.to_string(),
                secs: self.timeout.as_secs_f64(),
            }),
        }
    }

    /// Closes the writing direction.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// How to open a connection to a Couchbase node: what [`Connection::negotiate`] does.
#[derive(Clone)]
pub struct Handshake {
    pub auth: Option<Auth>,
    pub bucket: Option<String>,
    pub timeout: Duration,
    /// TLS, for `couchbases://` and `dcps://`.
    pub tls: Option<TlsClient>,
    /// The mechanism to use (`-x sasl=PLAIN`); the strongest listed otherwise.
    pub sasl: Option<Mechanism>,
    /// The features asked for in HELLO.
    pub features: Vec<Feature>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("auth", &self.auth)
            .field("bucket", &self.bucket)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// The features the pump's streams and writes use: datatypes as stored (JSON, SNAPPY, XATTR),
/// extended statuses, SELECT_BUCKET (COLLECTIONS comes with the collections work).
pub const PUMP_FEATURES: &[Feature] = &[
    Feature::TcpNoDelay,
    Feature::Xattr,
    Feature::Xerror,
    Feature::SelectBucket,
    Feature::Json,
    Feature::Snappy,
];

impl Handshake {
    /// A handshake with the pump's features, without TLS, the mechanism chosen by the server's
    /// list.
    pub fn new(auth: Option<Auth>, bucket: Option<&str>, timeout: Duration) -> Handshake {
        Handshake {
            auth,
            bucket: bucket.map(str::to_string),
            timeout,
            tls: None,
            sasl: None,
            features: PUMP_FEATURES.to_vec(),
        }
    }
}

/// A connection: both halves plus an opaque counter for request/response, and what was
/// negotiated.
pub struct Connection {
    read: ReadHalf,
    write: WriteHalf,
    next_opaque: u32,
    features: FeatureSet,
    mechanism: Option<Mechanism>,
}

/// Salted passwords already computed in this process, by mechanism, salt, iterations and a
/// digest of the password: PBKDF2 is deliberately slow, and every connection to a node gets
/// the same salt.
type SaltCache = Mutex<HashMap<(Mechanism, Vec<u8>, u32, Vec<u8>), Vec<u8>>>;

fn salted(m: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    static CACHE: OnceLock<SaltCache> = OnceLock::new();
    let id = pump_protocol::sasl::salted_password(m, password, b"pump-cache-key", 1);
    let key = (m, salt.to_vec(), iterations, id);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return v;
    }
    let v = pump_protocol::sasl::salted_password(m, password, salt, iterations);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, v.clone());
    }
    v
}

/// The frames answering one request of [`Connection::pipeline`], the last one ending it.
#[derive(Debug, Clone)]
pub struct Answer(pub Vec<Packet>);

impl Answer {
    /// The frame that ended the answer (its status is the request's).
    pub fn last(&self) -> &Packet {
        self.0
            .last()
            .expect("an answer holds at least its last frame")
    }

    /// A STAT's rows, when it succeeded: every frame but the last, as key and value.
    pub fn stats(&self) -> Vec<(String, String)> {
        let rows = &self.0[..self.0.len().saturating_sub(1)];
        rows.iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(&r.key).into_owned(),
                    String::from_utf8_lossy(&r.value).into_owned(),
                )
            })
            .collect()
    }
}

/// Whether `frame`, answering a request (a STAT when `stat`), leaves more to come.
fn continues(stat: bool, frame: &Packet) -> bool {
    stat && frame.status() == Status::Success && !frame.key.is_empty()
}

/// SELECT_BUCKET `bucket`.
fn select_bucket_request(bucket: &str) -> Packet {
    Packet::request(Opcode::SelectBucket).with_key(bucket.as_bytes().to_vec())
}

fn nonce() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Connection {
    /// A connection over a TLS stream (its halves share it behind a lock).
    fn from_stream<S>(addr: &str, stream: S, timeout: Duration) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Connection::from_halves(addr, Box::new(r), Box::new(w), timeout)
    }

    /// A connection over TCP (owned halves, no lock between them).
    fn from_tcp(addr: &str, stream: TcpStream, timeout: Duration) -> Connection {
        let (r, w) = stream.into_split();
        Connection::from_halves(addr, Box::new(r), Box::new(w), timeout)
    }

    fn from_halves(addr: &str, r: Reader, w: Writer, timeout: Duration) -> Connection {
        let peer: Arc<str> = Arc::from(addr);
        Connection {
            read: ReadHalf {
                peer: peer.clone(),
                frames: FramedRead::with_capacity(r, PacketCodec::default(), 256 * 1024),
                timeout,
            },
            write: WriteHalf {
                peer,
                stream: w,
                buf: BytesMut::with_capacity(1024),
                timeout,
            },
            next_opaque: 0x1000_0000,
            features: FeatureSet::EMPTY,
            mechanism: None,
        }
    }

    async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Io {
                    peer: addr.to_string(),
                    what: "connecting".into(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    peer: addr.to_string(),
                    what: "connecting".into(),
                    secs: timeout.as_secs_f64(),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let stream = Connection::tcp(addr, timeout).await?;
        Ok(Connection::from_tcp(addr, stream, timeout))
    }

    /// Connects to `addr` over TLS, the server's certificate checked as `tls` says.
    pub async fn connect_tls(
        addr: &str,
        tls: &TlsClient,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let stream = Connection::tcp(addr, timeout).await?;
        let name = TlsClient::server_name(addr)?;
        let handshake = tls.connector().connect(name, stream);
        let stream = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ClientError::Tls {
                    what: format!("{addr}: handshake failed ({e}); trusting {}", tls.trust()),
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    peer: addr.to_string(),
                    what: "the TLS handshake".into(),
                    secs: timeout.as_secs_f64(),
                })
            }
        };
        Ok(Connection::from_stream(addr, stream, timeout))
    }

    /// Connects and negotiates as Couchbase's own tools do (see the module docs).
    pub async fn negotiate(addr: &str, h: &Handshake) -> Result<Connection, ClientError> {
        let mut c = match &h.tls {
            Some(tls) => Connection::connect_tls(addr, tls, h.timeout).await?,
            None => Connection::connect(addr, h.timeout).await?,
        };
        // HELLO and what does not depend on its answer go in one round trip: the mechanisms
        // to choose from, or (without credentials) the bucket.
        let mut first = vec![hello::hello_request(USER_AGENT, &h.features)];
        if h.auth.is_some() {
            first.push(Packet::request(Opcode::SaslListMechs));
        } else if let Some(b) = &h.bucket {
            first.push(select_bucket_request(b));
        }
        let answers = c.pipeline(first, "HELLO").await?;
        c.agree(&h.features, answers[0].last())?;
        if let Some(a) = &h.auth {
            c.authenticate_listed(a, h.sasl, answers[1].last()).await?;
            if let Some(b) = &h.bucket {
                c.select_bucket(b).await?;
            }
        } else if let Some(b) = &h.bucket {
            c.selected(b, answers[1].last())?;
        }
        Ok(c)
    }

    /// The features both sides agreed to in HELLO (none before, or without, HELLO).
    pub fn features(&self) -> FeatureSet {
        self.features
    }

    /// The SASL mechanism the connection authenticated with.
    pub fn mechanism(&self) -> Option<Mechanism> {
        self.mechanism
    }

    /// HELLO as `agent`, asking for `features`; keeps what the server agreed to. A server
    /// without HELLO (UNKNOWN_COMMAND) agrees to nothing.
    pub async fn hello(
        &mut self,
        agent: &str,
        features: &[Feature],
    ) -> Result<FeatureSet, ClientError> {
        let r = self
            .request(hello::hello_request(agent, features), "HELLO")
            .await?;
        self.agree(features, &r)
    }

    /// Keeps what the server agreed to in its answer `r` to a HELLO asking for `features`.
    fn agree(&mut self, features: &[Feature], r: &Packet) -> Result<FeatureSet, ClientError> {
        self.features = match r.status() {
            Status::Success => {
                hello::agreed(features, &r.value).map_err(|source| ClientError::Protocol {
                    peer: self.peer().to_string(),
                    source,
                })?
            }
            Status::UnknownCommand | Status::NotSupported => FeatureSet::EMPTY,
            status => {
                return Err(ClientError::Status {
                    peer: self.peer().to_string(),
                    what: "HELLO".into(),
                    status,
                })
            }
        };
        tracing::debug!(peer = self.peer(), "HELLO agreed {}", self.features);
        Ok(self.features)
    }

    /// Authenticates with the strongest mechanism the server lists (SCRAM-SHA512, -SHA256,
    /// -SHA1, then PLAIN), or `forced`. A server that cannot list its mechanisms gets PLAIN.
    pub async fn authenticate_with(
        &mut self,
        auth: &Auth,
        forced: Option<Mechanism>,
    ) -> Result<(), ClientError> {
        let listed = self
            .request(Packet::request(Opcode::SaslListMechs), "SASL_LIST_MECHS")
            .await?;
        self.authenticate_listed(auth, forced, &listed).await
    }

    /// [`Connection::authenticate_with`], given the server's answer to SASL_LIST_MECHS.
    async fn authenticate_listed(
        &mut self,
        auth: &Auth,
        forced: Option<Mechanism>,
        listed: &Packet,
    ) -> Result<(), ClientError> {
        let list = if listed.status() == Status::Success {
            String::from_utf8_lossy(&listed.value).into_owned()
        } else {
            "PLAIN".to_string()
        };
        let Some(m) = Mechanism::choose(&list, forced) else {
            let want = forced
                .map(|m| m.to_string())
                .unwrap_or_else(|| "SCRAM-SHA512, SCRAM-SHA256, SCRAM-SHA1 or PLAIN".to_string());
            return Err(ClientError::Auth {
                peer: self.peer().to_string(),
                user: auth.user.clone(),
                reason: format!("the server offers {list:?}, not {want}"),
            });
        };
        if m == Mechanism::Plain {
            self.authenticate(auth).await?;
        } else {
            self.scram(m, auth).await?;
        }
        self.mechanism = Some(m);
        Ok(())
    }

    /// One SCRAM exchange: SASL_AUTH (client-first), SASL_STEP (client-final); the server's
    /// signature is checked.
    async fn scram(&mut self, m: Mechanism, auth: &Auth) -> Result<(), ClientError> {
        let refused = |peer: &str, reason: String| ClientError::Auth {
            peer: peer.to_string(),
            user: auth.user.clone(),
            reason,
        };
        let mut sc = ScramClient::new(m, &auth.user, &auth.password, &nonce());
        let what = format!("SASL {m} authentication as {:?}", auth.user);
        let first = self
            .request(
                Packet::request(Opcode::SaslAuth)
                    .with_key(m.name().as_bytes().to_vec())
                    .with_value(sc.first_message().into_bytes()),
                &what,
            )
            .await?;
        if first.status() != Status::AuthContinue {
            return Err(refused(self.peer(), first.status().to_string()));
        }
        let fin = sc
            .final_message_with(&first.value, salted)
            .map_err(|e| refused(self.peer(), e.to_string()))?;
        let last = self
            .request(
                Packet::request(Opcode::SaslStep)
                    .with_key(m.name().as_bytes().to_vec())
                    .with_value(fin.into_bytes()),
                &what,
            )
            .await?;
        if last.status() != Status::Success {
            return Err(refused(self.peer(), format!("{m}: {}", last.status())));
        }
        sc.verify_final(&last.value)
            .map_err(|e| refused(self.peer(), e.to_string()))
    }

    /// Connects, authenticates when `auth` is given and selects `bucket` when given.
    pub async fn open(
        addr: &str,
        auth: Option<&Auth>,
        bucket: Option<&str>,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let mut c = Connection::connect(addr, timeout).await?;
        if let Some(a) = auth {
            c.authenticate(a).await?;
        }
        if let Some(b) = bucket {
            c.select_bucket(b).await?;
        }
        Ok(c)
    }

    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.read.peer
    }

    /// SASL PLAIN.
    pub async fn authenticate(&mut self, auth: &Auth) -> Result<(), ClientError> {
        let p = pump_protocol::sasl::plain_auth(&auth.user, &auth.password);
        let what = format!("SASL PLAIN authentication as {:?}", auth.user);
        let r = self.request(p, &what).await?;
        if r.status() == Status::Success {
            return Ok(());
        }
        let detail = String::from_utf8_lossy(&r.value);
        Err(ClientError::Auth {
            peer: self.peer().to_string(),
            user: auth.user.clone(),
            reason: format!("{} {detail}", r.status()).trim().to_string(),
        })
    }

    /// SELECT_BUCKET; `Ok(false)` when the server has no buckets to select (UNKNOWN_COMMAND or
    /// NOT_SUPPORTED), an error for any other refusal (no such bucket, no access).
    pub async fn select_bucket(&mut self, bucket: &str) -> Result<bool, ClientError> {
        let what = format!("SELECT_BUCKET {bucket:?}");
        let r = self.request(select_bucket_request(bucket), &what).await?;
        self.selected(bucket, &r)
    }

    /// What the server's answer `r` to SELECT_BUCKET `bucket` means (see `select_bucket`).
    fn selected(&self, bucket: &str, r: &Packet) -> Result<bool, ClientError> {
        match r.status() {
            Status::Success => Ok(true),
            Status::UnknownCommand | Status::NotSupported => Ok(false),
            status => Err(ClientError::Status {
                peer: self.peer().to_string(),
                what: format!("SELECT_BUCKET {bucket:?}"),
                status,
            }),
        }
    }

    /// Sends `requests` at once (one write) and reads the answer of each: a server answers a
    /// connection's requests in order, so independent requests cost one round trip together
    /// rather than one each. Each answer holds the frames carrying its request's opaque, its
    /// last frame ending it (a STAT's rows end with one without a key). Frames with an opaque
    /// not asked here are skipped.
    pub async fn pipeline(
        &mut self,
        requests: Vec<Packet>,
        what: &str,
    ) -> Result<Vec<Answer>, ClientError> {
        let first = self.next_opaque;
        let mut buf = BytesMut::new();
        let mut stats = Vec::with_capacity(requests.len());
        for p in requests {
            stats.push(p.opcode == Opcode::Stat);
            p.with_opaque(self.next_opaque).encode(&mut buf);
            self.next_opaque = self.next_opaque.wrapping_add(1);
        }
        self.write.send_bytes(&buf, what).await?;
        let mut answers: Vec<Answer> = stats.iter().map(|_| Answer(Vec::new())).collect();
        let mut open = answers.len();
        while open > 0 {
            let r = self.read.recv(what).await?;
            let i = r.opaque.wrapping_sub(first) as usize;
            if r.magic != pump_protocol::Magic::Response || i >= answers.len() {
                tracing::debug!(peer = self.peer(), opcode = ?r.opcode, "skipped a frame while {what}");
                continue;
            }
            let ends = !continues(stats[i], &r);
            if answers[i].0.last().is_some_and(|l| !continues(stats[i], l)) {
                // Already ended: a second answer to one request.
                tracing::debug!(peer = self.peer(), opcode = ?r.opcode, "skipped a frame while {what}");
                continue;
            }
            answers[i].0.push(r);
            if ends {
                open -= 1;
            }
        }
        Ok(answers)
    }

    /// Sends `p` with a fresh opaque and returns the response carrying it. Frames with another
    /// opaque that arrive first are skipped.
    pub async fn request(&mut self, p: Packet, what: &str) -> Result<Packet, ClientError> {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        self.write.send(&p.with_opaque(opaque)).await?;
        loop {
            let r = self.read.recv(what).await?;
            if r.opaque == opaque && r.magic == pump_protocol::Magic::Response {
                return Ok(r);
            }
            tracing::debug!(peer = self.peer(), opcode = ?r.opcode, "skipped a frame while {what}");
        }
    }

    /// Like [`Connection::request`], but any status other than success is an error.
    pub async fn request_ok(&mut self, p: Packet, what: &str) -> Result<Packet, ClientError> {
        let r = self.request(p, what).await?;
        if r.status() != Status::Success {
            return Err(ClientError::Status {
                peer: self.peer().to_string(),
                what: what.to_string(),
                status: r.status(),
            });
        }
        Ok(r)
    }

    /// STAT `group` ("" for the general stats): every key/value pair.
    pub async fn stats(&mut self, group: &str) -> Result<Vec<(String, String)>, ClientError> {
        let what = format!("STAT {group:?}");
        let p = Packet::request(Opcode::Stat).with_key(group.as_bytes().to_vec());
        let answer = self.pipeline(vec![p], &what).await?.remove(0);
        match answer.last().status() {
            Status::Success => Ok(answer.stats()),
            status => Err(ClientError::Status {
                peer: self.peer().to_string(),
                what,
                status,
            }),
        }
    }

    /// Sends a frame without waiting for anything.
    pub async fn send(&mut self, p: &Packet) -> Result<(), ClientError> {
        self.write.send(p).await
    }

    /// The next frame (under the timeout).
    pub async fn recv(&mut self, what: &str) -> Result<Packet, ClientError> {
        self.read.recv(what).await
    }

    /// Splits into the reading and the writing half.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }
}
