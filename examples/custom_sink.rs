//! Embedding the pump: a custom sink that counts items per vbucket, fed by the built-in
//! `gen:` source, with the engine's batching, acks and summary.
//!
//! ```sh
//! cargo run --example custom_sink
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use pump::{BatchWriter, Context, Delivery, Error, Message, Options, Spec, WriterSink};

/// Counts messages per vbucket; a real sink would write them somewhere durable and return
/// only once they are.
#[derive(Default)]
struct PerVbucketCounter {
    counts: BTreeMap<u16, u64>,
}

#[async_trait]
impl BatchWriter for PerVbucketCounter {
    /// What a dry run (`-n`) checks: a real sink connects, authenticates, checks its bucket
    /// or directory here, and writes nothing.
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        for m in &messages {
            *self.counts.entry(m.vbucket).or_default() += 1;
        }
        Ok(Delivery::all(messages.len()))
    }

    async fn finish(&mut self, end: pump::SourceEnd) -> Result<(), Error> {
        let busiest = self.counts.iter().max_by_key(|(_, n)| **n);
        println!(
            "source ended: {end:?}; {} vbuckets seen; busiest: {busiest:?}",
            self.counts.len()
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Any registered kind can be the source; here the generator, through the registry.
    let mut registry = pump::Registry::new();
    pump_sources::register(&mut registry);
    let options = Options::default();
    let spec = Spec::parse("gen:max-items=100000,min-value-size=100")?;
    let source = registry.source_kind(&spec)?.open(&spec, &options)?;

    let sink = Box::new(WriterSink(PerVbucketCounter::default()));
    let summary = pump::run(source, sink, Context::new(options)).await?;
    println!("{summary}");
    Ok(())
}
