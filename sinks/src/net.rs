//! What the network sinks share: destination credentials from the spec or the options, how a
//! Couchbase connection is negotiated (HELLO, the SASL mechanism, TLS: [`pump_connect`], one
//! copy for sources and sinks), and a
//! memcached-binary-protocol connection as a [`Link`] of the one writer ([`pump::deliver`]).
//!
//! ```text
//! pump_client::Connection (connected, negotiated or authenticated, bucket selected)
//!   into_split() -> WriteHalf: LinkWriter (writes under the timeout)
//!                   ReadHalf:  LinkReader (frames; idle within a wait; a close is an error)
//! ```

use std::time::Duration;

use async_trait::async_trait;
use pump::deliver::{Heard, Link, LinkError, LinkReader, LinkWriter};
use pump::{Error, Options, Spec};
use pump_client::{Auth, ClientError, Connection, Next, ReadHalf, WriteHalf};
use pump_protocol::{Magic, Packet, Status};

pub use pump_connect::{handshake, tls_client};

/// Credentials: the URL's userinfo, else `-U/-P`.
pub fn auth(spec: &Spec, options: &Options) -> Result<Option<Auth>, Error> {
    pump_connect::auth(spec, options.dest_auth.as_ref())
}

/// What a sink that only sends requests hears: an answer by its opaque, or a request from the
/// server, which breaks the connection (the memcached and couchbase sinks).
pub fn hear_answer(p: Packet) -> Heard<Status> {
    if p.magic != Magic::Response {
        return Heard::Broken(format!(
            "a request ({:?}) where answers were expected",
            p.opcode
        ));
    }
    Heard::Answer {
        id: p.opaque,
        status: p.status(),
    }
}

/// A connected connection as a link of the one writer.
pub fn link(conn: Connection) -> Link<Packet> {
    let (read, write) = conn.into_split();
    Link {
        writer: Box::new(BinaryWriter(write)),
        reader: Box::new(BinaryReader(read)),
    }
}

/// A connect error as the writer sees it: refused credentials are never retried.
pub fn link_error(e: ClientError) -> LinkError {
    if e.is_auth() {
        LinkError::Denied(e.to_string())
    } else {
        LinkError::Failed(e.to_string())
    }
}

struct BinaryWriter(WriteHalf);

#[async_trait]
impl LinkWriter for BinaryWriter {
    async fn write(&mut self, buf: &[u8]) -> Result<(), String> {
        self.0
            .send_bytes(buf, "writing")
            .await
            .map_err(|e| e.to_string())
    }
}

struct BinaryReader(ReadHalf);

#[async_trait]
impl LinkReader for BinaryReader {
    type Answer = Packet;

    async fn read(&mut self, wait: Duration) -> Result<Option<Packet>, String> {
        let what = "waiting for answers";
        if let Some(p) = self.0.try_buffered(what).map_err(|e| e.to_string())? {
            return Ok(Some(p));
        }
        match self.0.recv_within(wait, what).await {
            Ok(Next::Packet(p)) => Ok(Some(p)),
            Ok(Next::Idle) => Ok(None),
            Ok(Next::Eof) => Err(ClientError::Closed {
                peer: self.0.peer().to_string(),
                what: what.into(),
            }
            .to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}
