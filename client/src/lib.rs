//! The client side of the memcached binary protocol that both sources and sinks need.
//!
//! ```text
//! error.rs       ClientError: every variant names the peer (host:port or URL)
//! connection.rs  Connection: one TCP connection framed with PacketCodec; connect, SASL PLAIN,
//!                SELECT_BUCKET, request/response and STAT, every read under a timeout;
//!                split into a reading and a writing half for streaming
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
pub mod vbmap;

pub use connection::{Auth, Connection, Next, ReadHalf, WriteHalf, DEFAULT_TIMEOUT};
pub use duplex::{open_probed, Duplex};
pub use error::ClientError;
pub use vbmap::VbucketMap;
