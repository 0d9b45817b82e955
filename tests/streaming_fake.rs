//! The streaming kinds through the command line, against a scripted fake DCP producer: the
//! kinds are registered, their `-x` keys accepted, and a checkpoint file written.

use std::process::Command;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pump_protocol::dcp::{DcpItem, DcpMessage, FailoverEntry, StreamEndReason, StreamReqReply};
use pump_protocol::{Opcode, Packet, PacketCodec, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

const PUMP: &str = env!("CARGO_BIN_EXE_pump");

/// Reads one frame (or `None` at EOF) within 10 s.
async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Some(p) = PacketCodec::default().decode(buf).unwrap() {
            return Some(p);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("a frame within 10 s")
            .unwrap();
        if n == 0 {
            return None;
        }
    }
}

async fn write(s: &mut TcpStream, p: Packet) {
    s.write_all(&p.to_bytes()).await.unwrap();
}

/// Serves vbucket 5 with `items` mutations to one DCP client.
async fn fake_producer(l: TcpListener, items: u64) {
    let (mut s, _) = l.accept().await.unwrap();
    let mut buf = BytesMut::new();
    while let Some(p) = read_frame(&mut s, &mut buf).await {
        match p.opcode {
            Opcode::Stat => {
                let v = Packet::response_to(&p, Status::Success)
                    .with_key(&b"vb_5:high_seqno"[..])
                    .with_value(items.to_string());
                write(&mut s, v).await;
                write(&mut s, Packet::response_to(&p, Status::Success)).await;
            }
            Opcode::SelectBucket => {
                write(&mut s, Packet::response_to(&p, Status::UnknownCommand)).await
            }
            Opcode::Hello => write(&mut s, Packet::response_to(&p, Status::Success)).await,
            Opcode::DcpOpen | Opcode::DcpControl => {
                write(&mut s, Packet::response_to(&p, Status::Success)).await
            }
            Opcode::DcpStreamReq => {
                let log = vec![FailoverEntry {
                    uuid: 4321,
                    seqno: 0,
                }];
                write(&mut s, StreamReqReply::Ok(log).to_packet(p.opaque)).await;
                let snap = DcpMessage::SnapshotMarker {
                    opaque: p.opaque,
                    vbucket: 5,
                    start: 1,
                    end: items,
                    kind: 2,
                };
                write(&mut s, snap.to_packet()).await;
                for seqno in 1..=items {
                    let m = DcpMessage::Mutation(DcpItem {
                        vbucket: 5,
                        opaque: p.opaque,
                        by_seqno: seqno,
                        flags: 7,
                        key: Bytes::from(format!("key{seqno}")),
                        value: Bytes::from(format!("value{seqno}")),
                        ..DcpItem::default()
                    });
                    write(&mut s, m.to_packet()).await;
                }
                let end = DcpMessage::StreamEnd {
                    opaque: p.opaque,
                    vbucket: 5,
                    reason: StreamEndReason::Ok,
                };
                write(&mut s, end.to_packet()).await;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn pump_transfer_dcp_to_stdout_prints_every_item_and_writes_the_checkpoint() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let producer = tokio::spawn(fake_producer(l, 3));
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.json");
    let x = format!("checkpoint={},timeout=10", ckpt.display());
    let spec = format!("dcp://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PUMP)
            .args([
                "transfer", &spec, "stdout:", "-l", "5", "-t", "1", "-q", "-x", &x,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for i in 1..=3 {
        assert!(
            stdout.contains(&format!("set key{i} 7 0 {} 5\r\nvalue{i}\r\n", 5 + 1)),
            "{stdout}"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), producer)
        .await
        .unwrap()
        .unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&ckpt).unwrap()).unwrap();
    assert_eq!(saved["vbuckets"]["5"]["seqno"], 3);
    assert_eq!(saved["vbuckets"]["5"]["uuid"], 4321);
}

#[test]
fn the_streaming_kinds_are_registered_and_refuse_a_bad_stream_choice() {
    let out = Command::new(PUMP)
        .args([
            "transfer",
            "couchbase://127.0.0.1:1",
            "blackhole:",
            "-x",
            "stream=udp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream=udp"));
    let kinds = Command::new(PUMP).arg("kinds").output().unwrap();
    let listed = String::from_utf8_lossy(&kinds.stdout);
    for k in ["tap://", "dcp://", "couchbase://"] {
        assert!(
            listed.contains(k),
            "{k} missing from `pump kinds`: {listed}"
        );
    }
}
