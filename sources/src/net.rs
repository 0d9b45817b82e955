//! What the network sources share: credentials from the spec or the options, and the
//! ordered acker that answers the server only once the sink has confirmed.
//!
//! ```text
//! reader task  --(Acked, what to act on)-->  acker task: awaits each batch's outcome in
//!     order; a rejected batch stops it; a delivery goes to the source's callback, which moves
//!     its checkpoint over the delivered vbuckets only and says what to answer the server
//!     (a TAP ack, a DCP BUFFER_ACK of what was delivered), which the acker then writes
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pump::{Acked, Delivery, Error, Options, Spec};
use pump_client::{Auth, ClientError, WriteHalf};
use pump_protocol::Packet;
use tokio::sync::{mpsc, Mutex};

/// How long a streaming source waits for more frames before it hands a partial batch to the
/// sink, so that a window or an ack is never held hostage by batch size.
pub const IDLE_FLUSH: Duration = Duration::from_millis(10);

pub use pump_connect::{handshake, tls_client};

/// Credentials: the URL's userinfo, else `-u/-p`.
pub fn auth(spec: &Spec, options: &Options) -> Result<Option<Auth>, Error> {
    pump_connect::auth(spec, options.source_auth.as_ref())
}

/// Fails when the node answers `STAT vbucket-seqno` on `conn` (it lists every vbucket that is
/// not dead) and lists none of `vbuckets` (of any, when `None`): a `tap://` stream would end
/// at once with no item, and the run would look like one of an empty bucket. A node that does
/// not answer the stat cannot tell; the stream then goes ahead.
pub async fn require_a_live_vbucket(
    spec: &str,
    addr: &str,
    conn: &mut pump_client::Connection,
    vbuckets: Option<&[u16]>,
) -> Result<(), Error> {
    let stats = match conn.stats("vbucket-seqno").await {
        Ok(s) => s,
        Err(ClientError::Status { .. }) => return Ok(()),
        Err(e) => return Err(source_error(spec, e)),
    };
    let live = stats.iter().any(|(k, _)| {
        k.strip_prefix("vb_")
            .and_then(|r| r.split_once(':'))
            .and_then(|(vb, _)| vb.parse::<u16>().ok())
            .is_some_and(|vb| vbuckets.is_none_or(|want| want.contains(&vb)))
    });
    if live {
        return Ok(());
    }
    Err(no_live_vbucket(spec, addr, vbuckets.map(<[u16]>::len)))
}

/// The error of a `dcp://` or `tap://` source whose node holds none of the vbuckets asked for
/// (`asked`: how many, `None`: all) in a state it streams.
pub fn no_live_vbucket(spec: &str, addr: &str, asked: Option<usize>) -> Error {
    let asked = match asked {
        Some(n) => format!("none of the {n} vbuckets asked for is"),
        None => "no vbucket is".to_string(),
    };
    Error::source(
        spec,
        format!(
            "{addr}: {asked} active on this node (each is dead or absent, e.g. after a takeover): nothing to stream; point at the node holding them, or use couchbase://HOST:RESTPORT for a cluster"
        ),
    )
}

/// The source's error for a client error; a refusal of the credentials (never retried) says
/// where they come from.
pub fn source_error(spec: &str, e: ClientError) -> Error {
    if e.is_auth() {
        Error::source(
            spec,
            format!("{e}; check -u/-p (or USER:PASSWORD@ in the URL)"),
        )
    } else {
        Error::source(spec, e)
    }
}

/// A writing half several tasks share.
pub type SharedWriter = Arc<Mutex<WriteHalf>>;

/// The ordered acker (see the module docs).
pub struct Acker<T> {
    tx: mpsc::UnboundedSender<(Acked, T)>,
    outstanding: Arc<AtomicUsize>,
    /// `None` once [`Acker::failed`] has returned the error it stopped on.
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    spec: String,
}

impl<T: Send + 'static> Acker<T> {
    /// Starts the acker. For each batch, in the order they were pushed, it awaits the batch's
    /// outcome; a rejected batch stops it (nothing may be acknowledged past it); a delivered
    /// one (every message written, skipped or failed by key) goes to `on_settled`, which
    /// returns the frame to answer the server with (a TAP ack, a DCP BUFFER_ACK), if any. An
    /// error of `on_settled` or of the write stops the acker too.
    pub fn start(
        spec: String,
        writer: SharedWriter,
        mut on_settled: impl FnMut(Delivery, T) -> Result<Option<Packet>, Error> + Send + 'static,
    ) -> Acker<T> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Acked, T)>();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let count = outstanding.clone();
        let name = spec.clone();
        let task = tokio::spawn(async move {
            while let Some((acked, then)) = rx.recv().await {
                let delivery = acked
                    .await
                    .map_err(|e| Error::source(&name, format!("{e}; stopping")))?;
                if let Some(reply) = on_settled(delivery, then)? {
                    writer
                        .lock()
                        .await
                        .send(&reply)
                        .await
                        .map_err(|e| Error::source(&name, e))?;
                }
                count.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(())
        });
        Acker {
            tx,
            outstanding,
            task: Some(task),
            spec,
        }
    }

    /// Queues a batch's outcome, with what `on_settled` needs to act on it.
    pub fn push(&self, acked: Acked, then: T) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.tx.send((acked, then)).is_err() {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Batches not yet settled.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Resolves once, with the error the acker stopped on, when it stops early; never while
    /// it runs, nor after it has returned that error (it can sit in a `select!`).
    pub async fn failed(&mut self) -> Error {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let r = task.await;
        self.task = None;
        match r {
            Ok(Err(e)) => e,
            Ok(Ok(())) => Error::source(&self.spec, "the acker stopped early"),
            Err(e) => Error::source(&self.spec, format!("the acker failed: {e}")),
        }
    }

    /// Waits until every queued batch is settled and answered. After [`Acker::failed`] has
    /// returned the acker's error, there is nothing left to wait for: `Ok`.
    pub async fn finish(self) -> Result<(), Error> {
        drop(self.tx);
        match self.task {
            None => Ok(()),
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::source(&self.spec, format!("the acker failed: {e}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump::{Batch, Message};

    /// A connection to a listener that reads nothing, as the acker's writer.
    async fn writer() -> SharedWriter {
        let (l, addr) = crate::testutil::listen().await;
        tokio::spawn(async move {
            let _keep = l.accept().await;
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        });
        let c = pump_client::Connection::connect(&addr, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        Arc::new(Mutex::new(c.into_split().1))
    }

    /// An acker that stopped early gives its error once through `failed`, and `finish` then
    /// returns: the first acker failure used to panic (the task was awaited twice).
    #[tokio::test]
    async fn a_stopped_acker_gives_its_error_once_and_finishes_without_a_panic() {
        let mut acker: Acker<()> = Acker::start("dcp://x".into(), writer().await, |_, _| Ok(None));
        let (batch, acked) = Batch::with_ack(vec![Message::mutation("k", "v")]);
        acker.push(acked, ());
        drop(batch);
        let e = acker.failed().await;
        assert!(e.to_string().contains("did not deliver"), "{e}");
        // Waiting on it again in a select never resolves.
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), acker.failed());
        assert!(again.await.is_err());
        assert!(acker.finish().await.is_ok());
    }

    #[tokio::test]
    async fn on_settled_sees_each_delivery_in_order() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let acker: Acker<u32> = Acker::start("tap://x".into(), writer().await, move |d, n| {
            s.lock().unwrap().push((n, d.written, d.failed.len()));
            Ok(None)
        });
        let (b1, a1) = Batch::with_ack(vec![Message::mutation("a", "v")]);
        let (b2, a2) = Batch::with_ack(vec![Message::mutation("b", "v")]);
        acker.push(a1, 1);
        acker.push(a2, 2);
        let (m2, ack2) = b2.into_parts();
        ack2.confirm(Delivery {
            failed: vec![pump::KeyFailure::of(&m2[0], "E2BIG")],
            ..Delivery::default()
        });
        b1.confirm_all();
        acker.finish().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![(1, 1, 0), (2, 0, 1)]);
    }
}
