//! The client side of the memcached binary protocol that both sources and sinks need.
//!
//! ```text
//! error.rs       ClientError: every variant names the peer (host:port or URL)
//! connection.rs  Connection: one connection (TCP or TLS) framed with PacketCodec; connect,
//!                HELLO, SASL (SCRAM-SHA512/256/1, PLAIN), SELECT_BUCKET, request/response and
//!                STAT, every read under a timeout; split into a reading and a writing half
//! tls.rs         TlsClient: rustls with --cacert, the system's roots or --no-ssl-verify
//! duplex.rs      open_probed (connect, SASL, a VERSION probe: what a plain memcached takes);
//!                Duplex: such a connection whose writes are queued to their own task, for
//!                a caller that pipelines and reads the answers itself (the memcached source)
//! vbmap.rs       VbucketMap: `GET /pools/default/buckets/<b>` and its vBucketServerMap
//! testing.rs     FakeRest: a tiny HTTP responder for tests of REST clients
//! ```
//!
//! This crate knows nothing of the pump engine: it speaks in packets, statuses and bytes.

pub mod connection;
pub mod duplex;
pub mod error;
pub mod testing;
pub mod tls;
pub mod vbmap;

pub use connection::{
    Answer, Auth, Connection, Handshake, Next, ReadHalf, WriteHalf, DEFAULT_TIMEOUT, PUMP_FEATURES,
    USER_AGENT,
};
pub use duplex::{open_probed, Duplex};
pub use error::ClientError;
pub use tls::TlsClient;
pub use vbmap::VbucketMap;
