//! A connection for callers that pipeline: writes are queued to a writer task, so a large
//! buffer being written never blocks reading the answers that free room for it.
//!
//! ```text
//! Duplex::open ── Connection::open (TCP, SASL PLAIN) ── VERSION probe ── split
//!        │
//!        ├── send(Bytes): queued to the writer task that owns the WriteHalf
//!        └── recv(): the next frame from the ReadHalf, under the timeout (cancel-safe)
//! ```
//!
//! Only SASL_AUTH and VERSION are sent here: a plain memcached desynchronises on opcodes it
//! does not know (TAP, DCP, HELLO), so it is never probed with them.

use std::time::Duration;

use bytes::Bytes;
use pump_protocol::{Opcode, Packet, Status};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{Auth, Connection, ReadHalf};
use crate::error::ClientError;

/// One connection: the reading half for the caller, the writing half on its own task.
pub struct Duplex {
    read: ReadHalf,
    writer: mpsc::Sender<Bytes>,
    /// Taken once to learn why the writer stopped.
    writer_task: Option<JoinHandle<Result<(), ClientError>>>,
}

impl Drop for Duplex {
    fn drop(&mut self) {
        if let Some(t) = &self.writer_task {
            t.abort();
        }
    }
}

/// True when a new connection to `addr` is accepted and then closed on a VERSION request.
async fn hangs_up_on_version(addr: &str, timeout: Duration) -> bool {
    match Connection::open(addr, None, None, timeout).await {
        Ok(mut c) => matches!(
            c.request(Packet::request(Opcode::Version), "VERSION").await,
            Err(ClientError::Closed { .. })
        ),
        Err(_) => false,
    }
}

/// Connects to `addr` (`host:port`), authenticates when `auth` is given, and probes the
/// server with VERSION (only SASL_AUTH and VERSION are sent: see the module docs). A server
/// that wants credentials it was not given is [`ClientError::AuthRequired`].
pub async fn open_probed(
    addr: &str,
    auth: Option<&Auth>,
    timeout: Duration,
) -> Result<Connection, ClientError> {
    let mut conn = Connection::open(addr, auth, None, timeout).await?;
    let version = conn
        .request(Packet::request(Opcode::Version), "VERSION")
        .await;
    let version = match version {
        Ok(p) if p.status() == Status::Success => Ok(()),
        Ok(p) if auth.is_none() && matches!(p.status(), Status::AuthError | Status::Eaccess) => {
            Err(ClientError::AuthRequired {
                peer: addr.to_string(),
                reason: format!("VERSION answered {}", p.status()),
            })
        }
        Ok(p) => Err(ClientError::Status {
            peer: addr.to_string(),
            what: "VERSION".into(),
            status: p.status(),
        }),
        // memcached -S hangs up on an unauthenticated VERSION; so does a server going
        // down. Only one that is still there and hangs up again wants authentication.
        Err(ClientError::Closed { peer, what }) if auth.is_none() => {
            if hangs_up_on_version(addr, timeout).await {
                Err(ClientError::AuthRequired {
                    peer,
                    reason: format!("the connection closed after {what}"),
                })
            } else {
                Err(ClientError::Closed { peer, what })
            }
        }
        Err(e) => Err(e),
    };
    version?;
    Ok(conn)
}

impl Duplex {
    /// Connects to `addr` (`host:port`), authenticates when `auth` is given, and probes the
    /// server with VERSION. `queue` is how many buffers may wait for the writer; `timeout`
    /// bounds the connect, every write and every read.
    pub async fn open(
        addr: &str,
        auth: Option<&Auth>,
        timeout: Duration,
        queue: usize,
    ) -> Result<Duplex, ClientError> {
        let conn = open_probed(addr, auth, timeout).await?;
        let (read, mut write) = conn.into_split();
        let (writer, mut rx) = mpsc::channel::<Bytes>(queue.max(1));
        let writer_task = tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                write.send_bytes(&buf, "writing").await?;
            }
            Ok(())
        });
        Ok(Duplex {
            read,
            writer,
            writer_task: Some(writer_task),
        })
    }

    /// `host:port`.
    pub fn peer(&self) -> &str {
        self.read.peer()
    }

    /// Queues an encoded buffer (one or many frames) for the writer. Fails when the writer has
    /// stopped: the connection broke.
    pub async fn send(&mut self, buf: Bytes) -> Result<(), ClientError> {
        if self.writer.send(buf).await.is_ok() {
            return Ok(());
        }
        let why = match self.writer_task.take() {
            Some(task) => task.await.ok().and_then(Result::err),
            None => None,
        };
        Err(why.unwrap_or_else(|| ClientError::Closed {
            peer: self.peer().to_string(),
            what: "writing".into(),
        }))
    }

    /// The next frame from the server; a close, a corrupt stream or no frame within the
    /// timeout is an error. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        self.read.recv("waiting for answers").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A server that reads the VERSION request of each of `conns` connections and hangs up,
    /// then is gone.
    async fn hanging_up(conns: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for i in 1..=conns {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut header = [0u8; 24];
                let _ = s.read_exact(&mut header).await;
                if i == conns {
                    // Gone before the last hang-up: no connection is accepted after it.
                    drop(listener);
                    drop(s);
                    return;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_on_every_version_wants_authentication() {
        let addr = hanging_up(2).await;
        let e = Duplex::open(&addr, None, Duration::from_secs(5), 1)
            .await
            .err()
            .expect("no connection");
        assert!(matches!(e, ClientError::AuthRequired { .. }), "{e}");
    }

    /// A server killed while the probe was in flight is a lost connection, not a demand for
    /// credentials (nothing is listening any more when it is asked again).
    #[tokio::test]
    async fn a_server_that_hangs_up_once_and_is_gone_is_a_closed_connection() {
        let addr = hanging_up(1).await;
        let e = Duplex::open(&addr, None, Duration::from_secs(5), 1)
            .await
            .err()
            .expect("no connection");
        assert!(matches!(e, ClientError::Closed { .. }), "{e}");
        assert!(!e.is_auth(), "{e}");
    }
}
