//! What the network sources share: credentials from the spec or the options, and the
//! ordered acker that answers the server only once the sink has confirmed.
//!
//! ```text
//! reader task  --(Acked, reply)-->  acker task: awaits each Acked in order, then writes the
//!                                   reply (TAP ack, DCP BUFFER_ACK) and runs the callback
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pump::{Acked, Error, Options, Spec};
use pump_client::{Auth, ClientError, WriteHalf};
use pump_protocol::Packet;
use tokio::sync::{mpsc, Mutex};

/// How long a streaming source waits for more frames before it hands a partial batch to the
/// sink, so that a window or an ack is never held hostage by batch size.
pub const IDLE_FLUSH: Duration = Duration::from_millis(10);

/// Credentials: the URL's userinfo, else `-u/-p`.
pub fn auth(spec: &Spec, options: &Options) -> Result<Option<Auth>, Error> {
    let c = spec.authority()?.credentials(options.source_auth.as_ref());
    Ok(c.map(|c| Auth {
        user: c.user,
        password: c.password,
    }))
}

/// The source's error for a client error.
pub fn source_error(spec: &str, e: ClientError) -> Error {
    Error::source(spec, e)
}

/// A writing half several tasks share.
pub type SharedWriter = Arc<Mutex<WriteHalf>>;

/// One entry of the acker's queue: the batch's confirmation, the frame to send once it
/// arrives, and what to run after.
pub struct Pending<T> {
    pub acked: Acked,
    pub reply: Option<Packet>,
    pub then: T,
}

/// The ordered acker (see the module docs).
pub struct Acker<T> {
    tx: mpsc::UnboundedSender<Pending<T>>,
    outstanding: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl<T: Send + 'static> Acker<T> {
    /// Starts the acker; `on_confirmed` runs for each batch in order once it is confirmed
    /// (and its reply sent).
    pub fn start(
        spec: String,
        writer: SharedWriter,
        mut on_confirmed: impl FnMut(T) -> Result<(), Error> + Send + 'static,
    ) -> Acker<T> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending<T>>();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let count = outstanding.clone();
        let task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                p.acked.await.map_err(|e| {
                    Error::source(&spec, format!("a batch was not delivered ({e}); stopping"))
                })?;
                if let Some(reply) = p.reply {
                    writer
                        .lock()
                        .await
                        .send(&reply)
                        .await
                        .map_err(|e| Error::source(&spec, e))?;
                }
                on_confirmed(p.then)?;
                count.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(())
        });
        Acker {
            tx,
            outstanding,
            task,
        }
    }

    /// Queues a batch's confirmation.
    pub fn push(&self, acked: Acked, reply: Option<Packet>, then: T) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Pending { acked, reply, then }).is_err() {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Batches not yet confirmed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Resolves when the acker stopped early (an error); never while it runs fine.
    pub async fn failed(&mut self) -> Error {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => Error::source("acker", "stopped early"),
            Err(e) => Error::source("acker", format!("panicked: {e}")),
        }
    }

    /// Waits until every queued batch is confirmed and answered.
    pub async fn finish(self) -> Result<(), Error> {
        drop(self.tx);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::source("acker", format!("panicked: {e}"))),
        }
    }
}
