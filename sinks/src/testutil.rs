//! Test helpers for the network sinks: a source that feeds given messages (optionally
//! awaiting each batch's confirmation and checking something at that moment), the fake
//! peer's plumbing, and a run helper.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{Batch, BatchSender, Error, Message, Options, Sink, Source, Summary};
pub use pump_client::testing::{listen, Peer};

type Check = Arc<dyn Fn() + Send + Sync>;

/// Sends `batches`; with `on_confirmed`, awaits each batch's ack and runs the check then.
pub struct Feed {
    pub batches: Vec<Vec<Message>>,
    pub on_confirmed: Option<Check>,
}

#[async_trait]
impl Source for Feed {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        for b in self.batches {
            match &self.on_confirmed {
                None => out.send(Batch::new(b)).await?,
                Some(check) => {
                    let (batch, acked) = Batch::with_ack(b);
                    out.send(batch).await?;
                    acked.await.expect("confirmed");
                    check();
                }
            }
        }
        Ok(())
    }
}

/// Runs `source` into `sink` with `options`, under a timeout.
pub async fn run(source: Feed, sink: Box<dyn Sink>, options: Options) -> Result<Summary, Error> {
    tokio::time::timeout(
        Duration::from_secs(30),
        pump::run(Box::new(source), sink, Context::new(options)),
    )
    .await
    .expect("the run finished in time")
}
