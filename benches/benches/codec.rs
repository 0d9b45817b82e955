//! Codec throughput: encode and decode batches of SETQ frames (100-byte values), in MB/s.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pump_protocol::packet::encode_request;
use pump_protocol::{Opcode, PacketCodec};
use tokio_util::codec::Decoder;

const N: usize = 1000;

fn frames() -> BytesMut {
    let mut buf = BytesMut::new();
    let value = [b'v'; 100];
    for i in 0..N {
        let key = format!("pymc{i}");
        encode_request(
            &mut buf,
            Opcode::SetQ,
            (i % 1024) as u16,
            i as u32,
            0,
            0,
            &[0; 8],
            key.as_bytes(),
            &value,
        );
    }
    buf
}

fn codec(c: &mut Criterion) {
    let wire = frames();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode 1000 SETQ", |b| {
        let value = [b'v'; 100];
        let keys: Vec<String> = (0..N).map(|i| format!("pymc{i}")).collect();
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            for (i, key) in keys.iter().enumerate() {
                encode_request(
                    &mut buf,
                    Opcode::SetQ,
                    (i % 1024) as u16,
                    i as u32,
                    0,
                    0,
                    &[0; 8],
                    key.as_bytes(),
                    &value,
                );
            }
            std::hint::black_box(buf.len())
        })
    });
    g.bench_function("decode 1000 SETQ", |b| {
        b.iter(|| {
            let mut buf = wire.clone();
            let mut codec = PacketCodec::default();
            let mut n = 0;
            while let Ok(Some(p)) = codec.decode(&mut buf) {
                n += p.value.len();
            }
            std::hint::black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
