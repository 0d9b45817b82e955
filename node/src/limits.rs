//! What one client may cost the node: its connections, and a connection's memory before it
//! authenticates.
//!
//! ```text
//! accept ──> --max-connections open (default 4,000)? the oldest connection that has not
//!            authenticated yet is closed to make room for the new one; when every open one has
//!            (or the node needs no login), the new one is closed at once. The first eviction or
//!            refusal after the node was below the cap logs one line, naming the cap
//! before SASL (a node with credentials): a request body above 64 KiB closes the connection
//!            (none of the requests allowed then needs more), and 10 s without a request too
//! after SASL, or on a node without credentials: 20 MB bodies, 600 s of silence
//! ```
//!
//! The queues a connection's reader fills (DCP events, TAP acks) are bounded where they are
//! made (`dcp::EVENT_QUEUE`, `tap::ACK_QUEUE`): a full queue stops the reader, so a client that
//! floods the node fills its own socket buffers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The connections a node serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4000;
/// How long a connection that has not authenticated may stay silent.
pub const UNAUTHENTICATED_IDLE: Duration = Duration::from_secs(10);
/// The largest body a request may announce before its connection authenticated.
pub const UNAUTHENTICATED_MAX_BODY: u32 = 64 * 1024;
/// How long a new connection waits for the place of the one closed for it.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The cap on open connections of one node (its plain and TLS ports together).
#[derive(Debug)]
pub struct ConnectionCap {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    max: usize,
    /// Whether the node is at its cap since the last connection it admitted freely (so the log
    /// line is written once each time the cap is reached, not once per connection).
    full: AtomicBool,
    next_id: AtomicU64,
    /// The open connections that have not authenticated, oldest first: what is closed to make
    /// room at the cap.
    unauthenticated: Mutex<BTreeMap<u64, (Instant, CancellationToken)>>,
}

/// One admitted connection's place, held until it is dropped.
#[derive(Debug)]
pub struct Place {
    _permit: OwnedSemaphorePermit,
    id: u64,
    inner: Arc<Inner>,
    evicted: CancellationToken,
}

impl Place {
    /// Resolves when the node closes this connection to make room for a new one (only while
    /// it has not authenticated).
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// The connection authenticated: it is never closed to make room.
    pub fn authenticated(&self) {
        self.inner.forget(self.id);
    }

    /// A handle the connection keeps to say it authenticated.
    pub fn handle(&self) -> PlaceHandle {
        PlaceHandle {
            id: self.id,
            inner: self.inner.clone(),
        }
    }
}

/// What a connection holds of its [`Place`] to say it authenticated.
#[derive(Debug, Clone)]
pub struct PlaceHandle {
    id: u64,
    inner: Arc<Inner>,
}

impl PlaceHandle {
    /// See [`Place::authenticated`].
    pub fn authenticated(&self) {
        self.inner.forget(self.id);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.inner.forget(self.id);
    }
}

impl Inner {
    fn forget(&self, id: u64) {
        if let Ok(mut m) = self.unauthenticated.lock() {
            m.remove(&id);
        }
    }

    /// Closes the oldest connection that has not authenticated; what it was, if any.
    fn evict_oldest(&self) -> Option<Duration> {
        let mut m = self.unauthenticated.lock().ok()?;
        let (_, (since, token)) = m.pop_first()?;
        token.cancel();
        Some(since.elapsed())
    }
}

impl ConnectionCap {
    /// At most `max` connections (at least 1).
    pub fn new(max: usize) -> ConnectionCap {
        let max = max.max(1);
        ConnectionCap {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(max)),
                max,
                full: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                unauthenticated: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// A place for one more connection; `None` when the cap is reached and every open
    /// connection authenticated (the caller closes the new one). At the cap, the oldest
    /// connection that has not authenticated is closed to make room. `authenticated`: the new
    /// connection needs no login (a node without credentials), so it is never closed for
    /// another.
    pub async fn admit(
        &self,
        port: &str,
        peer: std::net::SocketAddr,
        authenticated: bool,
    ) -> Option<Place> {
        let inner = &self.inner;
        let permit = match inner.permits.clone().try_acquire_owned() {
            Ok(p) => {
                inner.full.store(false, Ordering::Relaxed);
                p
            }
            Err(_) => {
                let evicted = inner.evict_oldest();
                if !inner.full.swap(true, Ordering::Relaxed) {
                    match evicted {
                        Some(_) => tracing::warn!(
                            "{port}: {} connections open, the most this node serves (--max-connections): closing the oldest that have not authenticated to make room, from {peer} on",
                            inner.max
                        ),
                        None => tracing::warn!(
                            "{port}: {} connections open, the most this node serves (--max-connections), all authenticated: closing new ones, from {peer} on, until some end",
                            inner.max
                        ),
                    }
                }
                let silent = evicted?;
                tracing::debug!(
                    "{port}: closed a connection silent for {:.1}s before authenticating, for {peer}",
                    silent.as_secs_f64()
                );
                match tokio::time::timeout(EVICTION_WAIT, inner.permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => return None,
                }
            }
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        if !authenticated {
            if let Ok(mut m) = inner.unauthenticated.lock() {
                m.insert(id, (Instant::now(), evicted.clone()));
            }
        }
        Some(Place {
            _permit: permit,
            id,
            inner: inner.clone(),
            evicted,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.max - self.inner.permits.available_permits()
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

    #[tokio::test]
    async fn the_cap_admits_up_to_max_and_again_once_one_ends() {
        let cap = ConnectionCap::new(2);
        let peer = "127.0.0.1:1".parse().unwrap();
        let a = cap.admit("KV", peer, true).await.unwrap();
        let _b = cap.admit("KV", peer, true).await.unwrap();
        assert!(cap.admit("KV", peer, true).await.is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        assert!(cap.admit("KV", peer, true).await.is_some());
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_unauthenticated_connection_makes_room() {
        let cap = ConnectionCap::new(3);
        let peer = "127.0.0.1:1".parse().unwrap();
        let oldest = cap.admit("KV", peer, false).await.unwrap();
        let authed = cap.admit("KV", peer, false).await.unwrap();
        authed.handle().authenticated();
        let younger = cap.admit("KV", peer, false).await.unwrap();
        // Its task would close the connection and drop the place: here, once told.
        let closer = tokio::spawn(async move {
            oldest.evicted().await;
            drop(oldest);
        });
        let newcomer = cap.admit("KV", peer, false).await.expect("room made");
        closer.await.unwrap();
        assert_eq!(cap.open(), 3);
        // Next in line is the younger one, never the authenticated one.
        let closer = tokio::spawn(async move {
            younger.evicted().await;
        });
        let _newest = cap.admit("KV", peer, true).await.expect("room made");
        closer.await.unwrap();
        // Now only authenticated or needs-no-login places and the newcomer: it goes next...
        drop(newcomer);
        // ...but a cap of authenticated connections refuses.
        let _again = cap.admit("KV", peer, true).await.unwrap();
        assert!(cap.admit("KV", peer, true).await.is_none());
        assert!(!authed.evicted.is_cancelled());
    }

    #[test]
    fn before_authentication_bodies_are_small_and_silence_short() {
        assert_eq!(max_body(false, 20 << 20), 64 * 1024);
        assert_eq!(max_body(true, 20 << 20), 20 << 20);
        assert_eq!(idle_timeout(false, Duration::from_secs(600)).as_secs(), 10);
        assert_eq!(idle_timeout(true, Duration::from_secs(600)).as_secs(), 600);
    }
}
