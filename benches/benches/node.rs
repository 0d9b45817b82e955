//! The reference node as a source, raw and through the pump, in the same run:
//!
//! ```text
//! raw DCP stream, raw TAP dump   the producer alone, into a minimal client that only counts
//! pump dcp:// -> blackhole:      the real pipeline: source, channel, sink, acks
//! pump tap:// -> blackhole:
//! pump dcp:// -> couchbase://    node -> node: pipelined quiet writes into a second node
//! dcp:// -> backup, JSON, snappy compressible ~1 KB JSON documents, stored snappy-compressed (as
//!                                the official SDK writes them), streamed as stored (SNAPPY
//!                                negotiated) into a backup directory, kept compressed
//! dcp:// -> backup, JSON, plain  the same documents stored and streamed uncompressed
//! loopback TCP ceiling           the same bytes, one socket, no protocol
//! ```
//!
//! The JSON rows move JSON_ITEMS (200,000) documents and report the backup's size on disk:
//! the compressed stream must move at least as many items/s, into a backup at most half the
//! size (issue 20).
//!
//! 1 M items of 100-byte values (ITEMS=N to change), best of ROUNDS (3) alternating rounds:
//! the machine is shared and noisy, so every figure is taken under the same load. Targets
//! (issue 4): 1 M items/s from node to blackhole, 70% of that from node to node. The node
//! and the pump run in this one process on the same two cores, as they would on one machine.
//!
//! `cargo bench -p pump-benches --bench node` (THREADS=N for -t, ONLY=2,3 for some rows only)

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pump_node::store::{Write, WriteMode, CLIENT_STATES};
use pump_node::{Cluster, ClusterConfig, Node, NodeConfig};
use pump_protocol::dcp::{open_flags, DcpMessage, StreamRequest};
use pump_protocol::tap::{connect_flags, TapConnect};
use pump_protocol::{vbucket_of, Opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Target of node -> blackhole, items/s.
const TARGET: f64 = 1_000_000.0;
/// Share of TARGET node -> node must reach.
const NODE_TO_NODE: f64 = 0.7;
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

/// MB/s of `bytes` through one loopback socket, 256 KiB writes.
async fn ceiling(bytes: u64) -> f64 {
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
    got as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// Raw DCP: one stream per vbucket to its high seqno, counted. Returns (items/s, wire bytes).
async fn raw_dcp(node: &Node, items: u64) -> (f64, u64) {
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
    (n as f64 / secs, bytes)
}

/// Raw TAP dump, no acks, counted to the close. Returns items/s.
async fn raw_tap(node: &Node, items: u64) -> f64 {
    let mut c = TcpStream::connect(node.kv_addr).await.unwrap();
    let tc = TapConnect {
        name: Bytes::from_static(b"bench"),
        flags: connect_flags::DUMP | connect_flags::FIX_FLAG_BYTEORDER,
        ..TapConnect::default()
    };
    let t = Instant::now();
    c.write_all(&tc.to_packet().to_bytes()).await.unwrap();
    let (n, _) = count(&mut c, Opcode::TapMutation.value(), 0xff, 0).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, items);
    n as f64 / secs
}

/// `pump transfer SOURCE SINK` through the library, as the binary runs it. Returns items/s.
async fn pump(source: &str, sink: &str, threads: usize, items: u64) -> f64 {
    items as f64 / pump_benches::transfer(source, sink, threads, items).await
}

/// The destination of node -> node: a one-node cluster (REST for the map), empty.
async fn empty_cluster() -> std::sync::Arc<Cluster> {
    Cluster::start_single(ClusterConfig {
        nodes: 1,
        replicas: 0,
        node: NodeConfig::default(),
        kv_port: 0,
        rest_port: 0,
        spares: 0,
        recovery_api: Default::default(),
        tls: None,
    })
    .await
    .unwrap()
}

/// A compressible JSON document of about 1 KB: a user record with a short history.
fn json_doc(i: u64) -> Vec<u8> {
    let mut s = format!(
        "{{\"id\":{i},\"type\":\"user\",\"name\":\"user number {i}\",\"email\":\"user{i}@example.com\",\
         \"country\":\"{}\",\"active\":{},\"history\":[",
        ["FR", "DE", "US", "JP"][(i % 4) as usize],
        i.is_multiple_of(3)
    );
    for j in 0..14 {
        if j > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"event\":\"login\",\"seq\":{j},\"client\":\"web\",\"status\":\"ok\",\"ms\":{}}}",
            (i * 7 + j) % 900
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// A node holding `n` JSON documents, snappy-compressed or plain. Returns it and the
/// documents' total size uncompressed.
async fn json_node(n: u64, compressed: bool) -> (Node, u64) {
    use pump_protocol::datatype::{compress, JSON, SNAPPY};
    let node = Node::start(NodeConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut raw = 0;
    for i in 0..n {
        let key = Bytes::from(format!("doc{i:09}"));
        let doc = json_doc(i);
        raw += doc.len() as u64;
        let (value, datatype) = if compressed {
            (compress(&doc), SNAPPY | JSON)
        } else {
            (Bytes::from(doc), JSON)
        };
        let w = Write {
            key: key.clone(),
            value,
            flags: 0x0200_0000,
            expiry: 0,
            datatype,
            cas: 0,
            mode: WriteMode::Set,
        };
        node.bucket
            .write(vbucket_of(&key, 1024), w, CLIENT_STATES)
            .unwrap();
    }
    (node, raw)
}

/// Bytes of the files under `dir`.
fn size_of(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => size_of(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// dcp:// from `node` into a new backup directory: (items/s, bytes on disk).
async fn dcp_to_backup(node: &Node, threads: usize, items: u64) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let r = pump(
        &format!("dcp://{}", node.kv_addr),
        backup.to_str().unwrap(),
        threads,
        items,
    )
    .await;
    (r, size_of(&backup))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let items = env("ITEMS", 1_000_000);
    let rounds = env("ROUNDS", 3);
    let threads = env("THREADS", 2) as usize;
    // ONLY=2,3: run only those rows (for profiling one path).
    let only: Option<Vec<usize>> = std::env::var("ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
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
        let mut payload = 0u64;
        for i in 0..items {
            let key = Bytes::from(format!("key{i:09}"));
            payload += (key.len() + value.len()) as u64;
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
        let kv = node.kv_addr;
        let json_items = env("JSON_ITEMS", 200_000);
        let wants = |i: usize| only.as_ref().is_none_or(|o| o.contains(&i));
        let (zipped, plain, json_raw) = if wants(5) || wants(6) {
            let (z, raw) = json_node(json_items, true).await;
            let (p, _) = json_node(json_items, false).await;
            (Some(z), Some(p), raw)
        } else {
            (None, None, 0)
        };
        let names = [
            "raw DCP stream (producer alone)",
            "raw TAP dump (producer alone)",
            "pump dcp:// -> blackhole:",
            "pump tap:// -> blackhole:",
            "pump dcp:// -> couchbase://",
            "dcp:// -> backup, JSON, snappy",
            "dcp:// -> backup, JSON, plain",
        ];
        let mut best = [0.0f64; 7];
        let mut backup_size = [0u64; 7];
        // CPU per item (node and pump together: they share this process), least of the rounds.
        let mut cpu = [f64::MAX; 7];
        let mut dcp_wire = 0;
        println!(
            "{items} items of {}-byte values ({:.0} MB of keys and values), pump -t {threads}, best of {rounds} rounds",
            value.len(),
            payload as f64 / 1e6
        );
        for _ in 0..rounds {
            for (i, b) in best.iter_mut().enumerate() {
                if only.as_ref().is_some_and(|o| !o.contains(&i)) {
                    continue;
                }
                let c0 = pump_benches::cpu_seconds(pump_benches::Who::SelfProcess);
                let r = match i {
                    0 => {
                        let (r, wire) = raw_dcp(&node, items).await;
                        dcp_wire = wire;
                        r
                    }
                    1 => raw_tap(&node, items).await,
                    2 => pump(&format!("dcp://{kv}"), "blackhole:", threads, items).await,
                    3 => pump(&format!("tap://{kv}"), "blackhole:", threads, items).await,
                    4 => {
                        // A fresh destination each round: a restore over the same revisions
                        // is skipped (SET_WITH_META's conflict resolution), not written.
                        let dest = empty_cluster().await;
                        let rest = dest.lock().nodes[0].rest;
                        let r = pump(&format!("dcp://{kv}"), &format!("couchbase://{rest}"), threads, items)
                            .await;
                        dest.shutdown().await.unwrap();
                        r
                    }
                    _ => {
                        let n = if i == 5 { &zipped } else { &plain };
                        let (r, size) = dcp_to_backup(n.as_ref().unwrap(), threads, json_items).await;
                        backup_size[i] = size;
                        r
                    }
                };
                *b = b.max(r);
                let moved = if i >= 5 { json_items } else { items };
                cpu[i] = cpu[i].min((pump_benches::cpu_seconds(pump_benches::Who::SelfProcess) - c0) / moved as f64);
            }
        }
        let mb = |r: f64| r * payload as f64 / items as f64 / 1e6;
        for (i, (name, r)) in names.iter().zip(best).enumerate().take(5) {
            if r == 0.0 {
                continue;
            }
            let target = if i == 4 { TARGET * NODE_TO_NODE } else { TARGET };
            println!(
                "  {name:<32} {r:>10.0} items/s {:>7.1} MB/s  {:>5.1}% of the target ({:.0} items/s)  CPU {:.2} us/item",
                mb(r),
                100.0 * r / target,
                target,
                cpu[i] * 1e6
            );
        }
        if best[2] > 0.0 && best[4] > 0.0 {
            println!(
                "  node -> node / pump dcp -> blackhole: {:.1}%",
                100.0 * best[4] / best[2]
            );
        }
        if best[5] > 0.0 && best[6] > 0.0 {
            println!(
                "{json_items} JSON documents of {} bytes on average ({:.0} MB uncompressed):",
                json_raw / json_items.max(1),
                json_raw as f64 / 1e6
            );
            for i in [5, 6] {
                println!(
                    "  {:<32} {:>10.0} items/s  backup {:>7.1} MB  CPU {:.2} us/item",
                    names[i],
                    best[i],
                    backup_size[i] as f64 / 1e6,
                    cpu[i] * 1e6
                );
            }
            println!(
                "  snappy / plain: {:.1}% of the items/s (target >= 100%), {:.1}% of the backup size (target <= 50%)",
                100.0 * best[5] / best[6],
                100.0 * backup_size[5] as f64 / backup_size[6].max(1) as f64
            );
        }
        if dcp_wire > 0 {
            println!(
                "  loopback TCP ceiling: {:.1} MB/s (the raw DCP stream is {:.1} MB/s on the wire)",
                ceiling(dcp_wire).await,
                dcp_wire as f64 / 1e6 * best[0] / items as f64
            );
        }
    });
}
