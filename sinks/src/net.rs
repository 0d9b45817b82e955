//! What the network sinks share: destination credentials from the spec or the options, how a
//! Couchbase connection is negotiated (HELLO, the SASL mechanism, TLS), and a
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
use pump_client::{Auth, ClientError, Connection, Handshake, Next, ReadHalf, TlsClient, WriteHalf};
use pump_protocol::sasl::Mechanism;
use pump_protocol::{Magic, Packet, Status};

/// Credentials: the URL's userinfo, else `-U/-P`.
pub fn auth(spec: &Spec, options: &Options) -> Result<Option<Auth>, Error> {
    let c = spec.authority()?.credentials(options.dest_auth.as_ref());
    Ok(c.map(|c| Auth {
        user: c.user,
        password: c.password,
    }))
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

/// The `-x` keys of every kind that opens a Couchbase connection: the SASL mechanism to force
/// and the TLS trust (`--cacert FILE` and `--no-ssl-verify` set the last two).
pub const HANDSHAKE_KEYS: &[&str] = &["sasl", "cacert", "no_ssl_verify"];

/// `-x sasl=NAME`: PLAIN, SCRAM-SHA512, SCRAM-SHA256 or SCRAM-SHA1 (any case), or none.
pub fn forced_mechanism(options: &Options) -> Result<Option<Mechanism>, Error> {
    match options.extra.get("sasl") {
        None => Ok(None),
        Some(v) => Mechanism::from_name(&v.to_ascii_uppercase())
            .map(Some)
            .ok_or_else(|| {
                Error::usage(format!(
                    "-x sasl={v}: expected PLAIN, SCRAM-SHA512, SCRAM-SHA256 or SCRAM-SHA1"
                ))
            }),
    }
}

/// The TLS trust of `--cacert` / `--no-ssl-verify` (the system's roots without either).
pub fn tls_client(options: &Options) -> Result<TlsClient, Error> {
    let cacert = options.extra.get("cacert").map(std::path::Path::new);
    let no_verify = options.extra.flag("no_ssl_verify")?;
    TlsClient::new(cacert, no_verify).map_err(|e| Error::usage(e.to_string()))
}

/// How to open a connection to a Couchbase node for `spec`: HELLO with the pump's features,
/// the strongest SASL mechanism (or `-x sasl`), `bucket` selected, TLS when `tls`.
pub fn handshake(
    auth: Option<Auth>,
    bucket: &str,
    options: &Options,
    tls: bool,
) -> Result<Handshake, Error> {
    let mut h = Handshake::new(auth, Some(bucket), options.extra.timeout()?);
    h.sasl = forced_mechanism(options)?;
    if tls {
        h.tls = Some(tls_client(options)?);
    }
    Ok(h)
}
