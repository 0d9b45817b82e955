//! A client connection to a memcached-protocol server, for sinks and sources that pipeline.
//!
//! ```text
//!   Client::connect ── TCP (timeout) ── SASL PLAIN (when credentials) ── VERSION probe
//!        │
//!        ├── send(Bytes): queued to a writer task that owns the write half
//!        └── recv(): the next response frame from the read half, with a timeout
//! ```
//!
//! The writer runs on its own task so that the caller can keep reading answers while a large
//! buffer is still being written: neither side can block the other. Only SASL_AUTH and VERSION
//! are sent here: a plain memcached desynchronises on opcodes it does not know (TAP, DCP,
//! HELLO), so it is never probed with them.

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::codec::PacketCodec;
use crate::opcode::{Opcode, Status};
use crate::packet::Packet;

/// Why a connection could not be made or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server refused the credentials: retrying will not help.
    #[error("{peer}: authentication as {user:?} refused: {reason}")]
    Auth {
        peer: String,
        user: String,
        reason: String,
    },
    /// The server refused a command because the connection is not authenticated.
    #[error("{peer}: the server requires authentication ({reason}): give USER:PASSWORD")]
    AuthRequired { peer: String, reason: String },
    /// The network failed, the server closed the connection, or it did not answer in time:
    /// reconnecting may help.
    #[error("{peer}: {reason}")]
    Lost { peer: String, reason: String },
}

/// One connection: a writer task and a framed reader.
#[derive(Debug)]
pub struct Client {
    peer: String,
    timeout: Duration,
    reader: FramedRead<OwnedReadHalf, PacketCodec>,
    writer: mpsc::Sender<Bytes>,
    writer_task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.writer_task.abort();
    }
}

impl ClientError {
    /// True when reconnecting cannot help (the credentials are missing or wrong).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ClientError::Lost { .. })
    }
}

impl Client {
    /// Connects to `addr` (`host:port`), authenticates with SASL PLAIN when `auth` is given,
    /// and probes the server with VERSION. `queue` is how many buffers may wait for the
    /// writer; `timeout` bounds the connect and every read.
    pub async fn connect(
        addr: &str,
        auth: Option<(&str, &str)>,
        timeout: Duration,
        queue: usize,
    ) -> Result<Client, ClientError> {
        let lost = |reason: String| ClientError::Lost {
            peer: addr.to_string(),
            reason,
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(lost(format!("cannot connect: {e}"))),
            Err(_) => return Err(lost(format!("no connection within {timeout:?}"))),
        };
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(queue.max(1));
        let writer_task = tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                match tokio::time::timeout(timeout, w.write_all(&buf)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        });
        let mut client = Client {
            peer: addr.to_string(),
            timeout,
            reader: FramedRead::with_capacity(r, PacketCodec::default(), 256 * 1024),
            writer: tx,
            writer_task,
        };
        if let Some((user, password)) = auth {
            client
                .send(crate::sasl::plain_auth(user, password).to_bytes())
                .await?;
            let answer = client.recv().await.map_err(|e| match e {
                ClientError::Lost { peer, reason } => ClientError::Lost {
                    peer,
                    reason: format!("during authentication: {reason}"),
                },
                e => e,
            })?;
            if answer.status() != Status::Success {
                return Err(ClientError::Auth {
                    peer: addr.to_string(),
                    user: user.to_string(),
                    reason: format!(
                        "{} {}",
                        answer.status(),
                        String::from_utf8_lossy(&answer.value)
                    )
                    .trim()
                    .to_string(),
                });
            }
        }
        client
            .send(Packet::request(Opcode::Version).to_bytes())
            .await?;
        let hint = if auth.is_none() {
            " (does it require authentication? give memcached://USER:PASSWORD@HOST:PORT)"
        } else {
            ""
        };
        match client.recv().await {
            Ok(p) if p.opcode == Opcode::Version && p.status() == Status::Success => Ok(client),
            Ok(p) => Err(lost(format!(
                "VERSION answered {} {}{hint}",
                p.status(),
                String::from_utf8_lossy(&p.value)
            ))),
            Err(ClientError::Lost { reason, .. }) => Err(lost(format!("{reason}{hint}"))),
            Err(e) => Err(e),
        }
    }

    /// `host:port`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Queues an encoded buffer for the writer. Fails when the writer has stopped (the
    /// connection broke).
    pub async fn send(&self, buf: Bytes) -> Result<(), ClientError> {
        self.writer.send(buf).await.map_err(|_| ClientError::Lost {
            peer: self.peer.clone(),
            reason: "connection lost while writing".into(),
        })
    }

    /// The next frame from the server; fails on EOF, a corrupt stream, or no frame within the
    /// timeout. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        // A frame already buffered needs no timer (and no clock read).
        if let Some(Some(Ok(p))) = self.reader.next().now_or_never() {
            return Ok(p);
        }
        let reason = match tokio::time::timeout(self.timeout, self.reader.next()).await {
            Ok(Some(Ok(p))) => return Ok(p),
            Ok(Some(Err(e))) => e.to_string(),
            Ok(None) => "the server closed the connection".to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        Err(ClientError::Lost {
            peer: self.peer.clone(),
            reason,
        })
    }
}
