//! The reference node as a source: a raw DCP stream and a raw TAP dump of 1 M items (100-byte
//! values) into a minimal client that only counts, beside the loopback TCP ceiling of the same
//! bytes, measured in the same run.
//!
//! `cargo bench -p pump-benches --bench node` (ITEMS=N to change the count).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pump_node::store::{Write, WriteMode, CLIENT_STATES};
use pump_node::{Node, NodeConfig};
use pump_protocol::dcp::{open_flags, DcpMessage, StreamRequest};
use pump_protocol::tap::{connect_flags, TapConnect};
use pump_protocol::{vbucket_of, Opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads frames, counting those with `count_op`, until `stop_op` was seen `stops` times (or
/// EOF when `stops` is 0). Returns (items, bytes).
async fn count(sock: &mut TcpStream, count_op: u8, stop_op: u8, stops: usize) -> (u64, u64) {
    let mut buf = vec![0u8; 4 << 20];
    let (mut filled, mut pos) = (0usize, 0usize);
    let (mut items, mut bytes, mut seen) = (0u64, 0u64, 0usize);
    loop {
        // Walk every whole frame in buf[pos..filled].
        while filled - pos >= 24 {
            let h = &buf[pos..pos + 24];
            let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            if filled - pos < 24 + body {
                break;
            }
            if h[0] == 0x80 && h[1] == count_op {
                items += 1;
            }
            if h[0] == 0x80 && h[1] == stop_op {
                seen += 1;
            }
            pos += 24 + body;
            bytes += (24 + body) as u64;
        }
        if stops > 0 && seen >= stops {
            return (items, bytes);
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        pos = 0;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = sock.read(&mut buf[filled..]).await.expect("read");
        if n == 0 {
            return (items, bytes);
        }
        filled += n;
    }
}

fn report(what: &str, items: u64, bytes: u64, secs: f64) {
    println!(
        "{what:<28} {items:>9} items {:>8.0} MB  {:>10.0} items/s {:>8.1} MB/s",
        bytes as f64 / 1e6,
        items as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}

async fn ceiling(bytes: u64) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let writer = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let chunk = vec![0u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).await.unwrap();
            left -= n as u64;
        }
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 4 << 20];
    let mut got = 0u64;
    while got < bytes {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    writer.await.unwrap();
    report("loopback TCP ceiling", 0, got, t.elapsed().as_secs_f64());
}

fn main() {
    let items: u64 = std::env::var("ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let node = Node::start(NodeConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let value = Bytes::from(vec![b'v'; 100]);
        let t = Instant::now();
        for i in 0..items {
            let key = Bytes::from(format!("key{i:09}"));
            let vb = vbucket_of(&key, 1024);
            let w = Write {
                key,
                value: value.clone(),
                flags: 0,
                expiry: 0,
                datatype: 0,
                cas: 0,
                mode: WriteMode::Set,
            };
            node.bucket.write(vb, w, CLIENT_STATES).unwrap();
        }
        report("load (in process)", items, 0, t.elapsed().as_secs_f64());

        // DCP: one stream per vbucket, end at the high seqno.
        let mut c = TcpStream::connect(node.kv_addr).await.unwrap();
        let mut out = BytesMut::new();
        DcpMessage::Open {
            opaque: 0,
            name: Bytes::from_static(b"bench"),
            seqno: 0,
            flags: open_flags::PRODUCER,
        }
        .to_packet()
        .encode(&mut out);
        for vb in 0..1024u16 {
            let high = node.bucket.vb(vb).unwrap().high_seqno;
            DcpMessage::StreamReq(StreamRequest {
                vbucket: vb,
                opaque: u32::from(vb),
                flags: 0,
                start: 0,
                end: high,
                vbucket_uuid: 0,
                snap_start: 0,
                snap_end: 0,
            })
            .to_packet()
            .encode(&mut out);
        }
        let t = Instant::now();
        c.write_all(&out).await.unwrap();
        let (n, bytes) = count(
            &mut c,
            Opcode::DcpMutation.value(),
            Opcode::DcpStreamEnd.value(),
            1024,
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(n, items);
        report("DCP stream (1024 vbuckets)", n, bytes, secs);
        let dcp_bytes = bytes;

        // TAP dump, no acks.
        let mut c = TcpStream::connect(node.kv_addr).await.unwrap();
        let tc = TapConnect {
            name: Bytes::from_static(b"bench"),
            flags: connect_flags::DUMP | connect_flags::FIX_FLAG_BYTEORDER,
            ..TapConnect::default()
        };
        let t = Instant::now();
        c.write_all(&tc.to_packet().to_bytes()).await.unwrap();
        let (n, bytes) = count(&mut c, Opcode::TapMutation.value(), 0xff, 0).await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(n, items);
        report("TAP dump", n, bytes, secs);

        // Pipelined SETQ into a second node: batches of 1000 with a NOOP barrier each.
        let sink = Node::start(NodeConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut c = TcpStream::connect(sink.kv_addr).await.unwrap();
        let mut wire = BytesMut::new();
        let mut batches = Vec::new();
        for i in 0..items {
            let key = format!("key{i:09}");
            let vb = vbucket_of(key.as_bytes(), 1024);
            pump_protocol::packet::encode_request(
                &mut wire,
                Opcode::SetQ,
                vb,
                0,
                0,
                0,
                &[0; 8],
                key.as_bytes(),
                &value,
            );
            if (i + 1) % 1000 == 0 || i + 1 == items {
                pump_protocol::packet::encode_request(
                    &mut wire,
                    Opcode::Noop,
                    0,
                    0,
                    0,
                    0,
                    &[],
                    &[],
                    &[],
                );
                batches.push(wire.split().freeze());
            }
        }
        let wire_bytes: usize = batches.iter().map(|b| b.len()).sum();
        let (mut r, mut w) = c.into_split();
        let n = batches.len();
        let t = Instant::now();
        let writer = tokio::spawn(async move {
            for b in batches {
                w.write_all(&b).await.unwrap();
            }
            w
        });
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while got < n * 24 {
            let k = r.read(&mut buf).await.unwrap();
            assert!(k > 0);
            got += k;
        }
        let _w = writer.await.unwrap();
        report(
            "SETQ pipeline (1 conn)",
            items,
            wire_bytes as u64,
            t.elapsed().as_secs_f64(),
        );
        c = _w.reunite(r).unwrap();
        drop(c);

        ceiling(dcp_bytes).await;
    });
}
