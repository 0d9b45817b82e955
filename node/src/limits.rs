//! What one client may cost the node: its connections, and a connection's memory before it
//! authenticates.
//!
//! ```text
//! accept ──> more than --max-connections open (default 4,000)?  closed at once; the first refusal
//!            after the node was below the cap logs one line, naming the cap
//! before SASL (a node with credentials): a request body above 64 KiB closes the connection
//!            (none of the requests allowed then needs more), and 10 s without a request too
//! after SASL, or on a node without credentials: 20 MB bodies, 600 s of silence
//! ```
//!
//! The queues a connection's reader fills (DCP events, TAP acks) are bounded where they are
//! made (`dcp::EVENT_QUEUE`, `tap::ACK_QUEUE`): a full queue stops the reader, so a client that
//! floods the node fills its own socket buffers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connections a node serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4000;
/// How long a connection that has not authenticated may stay silent.
pub const UNAUTHENTICATED_IDLE: Duration = Duration::from_secs(10);
/// The largest body a request may announce before its connection authenticated.
pub const UNAUTHENTICATED_MAX_BODY: u32 = 64 * 1024;

/// The cap on open connections of one node (its plain and TLS ports together).
#[derive(Debug)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
    /// Whether the last connection offered was refused (so the log line is written once each
    /// time the cap is reached, not once per refusal).
    refusing: AtomicBool,
}

impl ConnectionCap {
    /// At most `max` connections (at least 1).
    pub fn new(max: usize) -> ConnectionCap {
        let max = max.max(1);
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            max,
            refusing: AtomicBool::new(false),
        }
    }

    /// A place for one more connection, held until the permit is dropped; `None` when the cap
    /// is reached (the caller closes the connection).
    pub fn admit(&self, port: &str, peer: std::net::SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => {
                self.refusing.store(false, Ordering::Relaxed);
                Some(p)
            }
            Err(_) => {
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{port}: {} connections open, the most this node serves (--max-connections): closing new ones, from {peer} on, until some end",
                        self.max
                    );
                }
                None
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// How long a connection may stay silent: short until it authenticated.
pub fn idle_timeout(authenticated: bool, otherwise: Duration) -> Duration {
    if authenticated {
        otherwise
    } else {
        UNAUTHENTICATED_IDLE
    }
}

/// The largest body a request may announce: small until its connection authenticated.
pub fn max_body(authenticated: bool, otherwise: u32) -> u32 {
    if authenticated {
        otherwise
    } else {
        UNAUTHENTICATED_MAX_BODY.min(otherwise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_max_and_again_once_one_ends() {
        let cap = ConnectionCap::new(2);
        let peer = "127.0.0.1:1".parse().unwrap();
        let a = cap.admit("KV", peer).unwrap();
        let _b = cap.admit("KV", peer).unwrap();
        assert!(cap.admit("KV", peer).is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        assert!(cap.admit("KV", peer).is_some());
    }

    #[test]
    fn before_authentication_bodies_are_small_and_silence_short() {
        assert_eq!(max_body(false, 20 << 20), 64 * 1024);
        assert_eq!(max_body(true, 20 << 20), 20 << 20);
        assert_eq!(idle_timeout(false, Duration::from_secs(600)).as_secs(), 10);
        assert_eq!(idle_timeout(true, Duration::from_secs(600)).as_secs(), 600);
    }
}
