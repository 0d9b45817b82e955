//! One TCP connection speaking the memcached binary protocol, every read under a timeout.
//!
//! ```text
//! Connection::open(addr, auth, bucket, timeout)
//!   connect -> SASL_AUTH PLAIN (when auth) -> SELECT_BUCKET (when bucket; skipped when the
//!   server answers UNKNOWN_COMMAND or NOT_SUPPORTED, as servers without buckets do)
//! request(packet)      sends with a fresh opaque, returns the response with that opaque
//! stats(group)         STAT: key/value responses until the one with an empty key
//! into_split()         ReadHalf (frames in) + WriteHalf (frames out) for streaming
//! ```
//!
//! Reads never wait forever: [`ReadHalf::recv`] fails with [`ClientError::Timeout`] naming the
//! peer and what it was waiting for; a clean close between frames is [`Next::Eof`], a close in
//! the middle of a frame is an error.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use pump_protocol::{Opcode, Packet, PacketCodec, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead};

use crate::error::ClientError;

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
    frames: FramedRead<OwnedReadHalf, PacketCodec>,
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
    stream: OwnedWriteHalf,
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
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
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

/// A connection: both halves plus an opaque counter for request/response.
pub struct Connection {
    read: ReadHalf,
    write: WriteHalf,
    next_opaque: u32,
}

impl Connection {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let peer: Arc<str> = Arc::from(addr);
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
        let (r, w) = stream.into_split();
        Ok(Connection {
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
        })
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
        let p = Packet::request(Opcode::SelectBucket).with_key(bucket.as_bytes().to_vec());
        let what = format!("SELECT_BUCKET {bucket:?}");
        let r = self.request(p, &what).await?;
        match r.status() {
            Status::Success => Ok(true),
            Status::UnknownCommand | Status::NotSupported => Ok(false),
            status => Err(ClientError::Status {
                peer: self.peer().to_string(),
                what,
                status,
            }),
        }
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
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        let what = format!("STAT {group:?}");
        let p = Packet::request(Opcode::Stat)
            .with_key(group.as_bytes().to_vec())
            .with_opaque(opaque);
        self.write.send(&p).await?;
        let mut out = Vec::new();
        loop {
            let r = self.read.recv(&what).await?;
            if r.opaque != opaque || r.magic != pump_protocol::Magic::Response {
                continue;
            }
            if r.status() != Status::Success {
                return Err(ClientError::Status {
                    peer: self.peer().to_string(),
                    what,
                    status: r.status(),
                });
            }
            if r.key.is_empty() {
                return Ok(out);
            }
            out.push((
                String::from_utf8_lossy(&r.key).into_owned(),
                String::from_utf8_lossy(&r.value).into_owned(),
            ));
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
