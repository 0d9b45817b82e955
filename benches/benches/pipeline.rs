//! Engine overhead: messages through source -> channel -> sink with nothing else to do.
//! Reports items/s (criterion's elements/s) for 100,000 prebuilt 100-byte messages.

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pump::{BatchSender, Context, Error, Message, Options, Source};

const N: usize = 100_000;

struct Prebuilt(Vec<Vec<Message>>);

#[async_trait]
impl Source for Prebuilt {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        for batch in self.0 {
            out.send_messages(batch).await?;
        }
        Ok(())
    }
}

fn batches() -> Vec<Vec<Message>> {
    let value = Bytes::from(vec![b'v'; 100]);
    let msgs: Vec<Message> = (0..N)
        .map(|i| Message {
            vbucket: (i % 1024) as u16,
            ..Message::mutation(format!("pymc{i}"), value.clone())
        })
        .collect();
    msgs.chunks(1000).map(<[Message]>::to_vec).collect()
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("100k messages to blackhole", |b| {
        b.iter_batched(
            batches,
            |input| {
                rt.block_on(async {
                    let summary = pump::run(
                        Box::new(Prebuilt(input)),
                        Box::new(pump_sinks::blackhole::BlackholeSink),
                        Context::new(Options::default()),
                    )
                    .await
                    .expect("pipeline run");
                    assert_eq!(summary.counts.items_written, N as u64);
                })
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
