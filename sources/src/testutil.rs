//! Test helpers for the network sources: a collecting sink that can delay its confirmations,
//! a scripted fake peer's plumbing, and a run helper.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchReceiver, Delivery, Error, Message, Options, Sink, Source, Summary};
pub use pump_client::testing::{listen, Peer};

/// Collects messages; confirms each batch after `delay`, counting confirmed messages.
#[derive(Clone, Default)]
pub struct Collect {
    pub messages: Arc<Mutex<Vec<Message>>>,
    pub confirmed: Arc<AtomicUsize>,
    pub delay: Duration,
    /// When set, the sink takes no batch before this is notified.
    pub hold: Option<Arc<tokio::sync::Notify>>,
    /// Keys the sink fails (E2BIG), as a destination that cannot hold them would.
    pub fail_keys: Vec<&'static str>,
    /// From this batch on (0-based), the sink drops batches without settling them.
    pub reject_from: Option<usize>,
    /// Called when the first batch arrives, before anything else.
    pub at_first_batch: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Collect {
    pub fn delayed(delay: Duration) -> Collect {
        Collect {
            delay,
            ..Collect::default()
        }
    }
    pub fn confirmed(&self) -> usize {
        self.confirmed.load(Ordering::SeqCst)
    }
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sink for Collect {
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    async fn run(self: Box<Self>, input: BatchReceiver, _ctx: Context) -> Result<(), Error> {
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        let mut taken = 0;
        while let Some(batch) = input.recv().await {
            if taken == 0 {
                if let Some(f) = &self.at_first_batch {
                    f();
                }
            }
            tokio::time::sleep(self.delay).await;
            taken += 1;
            if self.reject_from.is_some_and(|n| taken > n) {
                drop(batch);
                continue;
            }
            let (msgs, ack) = batch.into_parts();
            let mut d = Delivery::default();
            for m in &msgs {
                if self.fail_keys.iter().any(|k| m.key == k.as_bytes()) {
                    d.failed.push(pump::KeyFailure::of(m, "E2BIG (0x03)"));
                } else {
                    d.written += 1;
                }
            }
            self.confirmed.fetch_add(d.written, Ordering::SeqCst);
            self.messages.lock().unwrap().extend(msgs);
            ack.confirm(d);
        }
        Ok(())
    }
}

/// Runs `source` into `sink` with `options`, under a timeout.
pub async fn run(
    source: Box<dyn Source>,
    sink: Collect,
    options: Options,
) -> Result<Summary, Error> {
    tokio::time::timeout(
        Duration::from_secs(30),
        pump::run(source, Box::new(sink), Context::new(options)),
    )
    .await
    .expect("the run finished in time")
}

/// [`run`], also giving how many messages the sink had confirmed when the source said it was
/// done reading (`Context::source_done`).
pub async fn run_watching_source_done(
    source: Box<dyn Source>,
    sink: Collect,
    options: Options,
) -> (Summary, usize) {
    let ctx = Context::new(options);
    let done = ctx.source_done.clone();
    let confirmed_then = tokio::spawn({
        let sink = sink.clone();
        async move {
            done.cancelled().await;
            sink.confirmed()
        }
    });
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        pump::run(source, Box::new(sink), ctx),
    )
    .await
    .expect("the run finished in time")
    .expect("the run succeeded");
    (summary, confirmed_then.await.unwrap())
}
