//! `blackhole:`: confirms every batch at once and keeps nothing. For benchmarks.

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchReceiver, Error, Options, Payload, Sink, SinkKind, Spec};

/// The `blackhole:` kind.
pub struct BlackholeKind;

impl SinkKind for BlackholeKind {
    fn name(&self) -> &'static str {
        "blackhole"
    }
    fn syntax(&self) -> &'static str {
        "blackhole:"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("blackhole")
    }
    fn takes(&self, _payload: Payload) -> bool {
        true
    }
    fn open(&self, _spec: &Spec, _options: &Options) -> Result<Box<dyn Sink>, Error> {
        Ok(Box::new(BlackholeSink))
    }
}

/// Discards.
pub struct BlackholeSink;

#[async_trait]
impl Sink for BlackholeSink {
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    async fn run(self: Box<Self>, input: BatchReceiver, _ctx: Context) -> Result<(), Error> {
        while let Some(batch) = input.recv().await {
            batch.confirm_all();
        }
        Ok(())
    }
}
