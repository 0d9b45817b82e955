//! What the file sources share: a blocking reader on its own thread, its batches forwarded
//! into the pump.
//!
//! ```text
//! reader thread (SQLite, CSV parsing) ──Vec<Message>──▶ bounded channel ──▶ BatchSender
//! ```
//!
//! The channel holds a few batches, so the reader runs ahead of the pump without growing
//! memory. When the pump stops taking batches (the sink failed, Ctrl-C) the channel closes and
//! the reader's next send fails, which is its signal to stop.

use pump::{BatchSender, Error, Message};
use tokio::sync::mpsc;

/// Batches the reader may have ready ahead of the pump.
const AHEAD: usize = 4;

/// Runs `read` on a blocking thread and sends every batch it produces into `out`. The
/// reader's error (a message naming the file and line or row) becomes the source's error,
/// named by `spec`; a failure to send wins over it.
pub async fn forward_from_thread<F>(spec: &str, out: &BatchSender, read: F) -> Result<(), Error>
where
    F: FnOnce(mpsc::Sender<Vec<Message>>) -> Result<(), String> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(AHEAD);
    let thread = tokio::task::spawn_blocking(move || read(tx));
    let mut sent = Ok(());
    while let Some(messages) = rx.recv().await {
        if let Err(e) = out.send_messages(messages).await {
            sent = Err(e);
            break;
        }
    }
    drop(rx);
    let read = thread
        .await
        .unwrap_or_else(|e| Err(format!("the reader thread panicked: {e}")));
    sent?;
    read.map_err(|e| Error::source(spec, e))
}
