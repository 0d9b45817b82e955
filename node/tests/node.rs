//! Raw-bytes tests of a node bound on 127.0.0.1:0: KV, SASL, TAP, DCP, persistence.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pump_node::{Node, NodeConfig};
use pump_protocol::dcp::{DcpMessage, StreamReqReply, StreamRequest};
use pump_protocol::tap::{connect_flags, message_flags, TapConnect, TapKind, TapMessage};
use pump_protocol::{vbucket_of, Magic, Opcode, Packet, PacketCodec, Status, VbucketState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(10);

struct Client {
    sock: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            codec: PacketCodec::default(),
        }
    }
    async fn send(&mut self, p: &Packet) {
        self.sock.write_all(&p.to_bytes()).await.unwrap();
    }
    async fn send_all(&mut self, ps: &[Packet]) {
        let mut b = BytesMut::new();
        ps.iter().for_each(|p| p.encode(&mut b));
        self.sock.write_all(&b).await.unwrap();
    }
    /// The next packet, None on EOF.
    async fn recv_within(&mut self, d: Duration) -> Option<Packet> {
        tokio::time::timeout(d, async {
            loop {
                if let Some(p) = self.codec.decode(&mut self.buf).unwrap() {
                    return Some(p);
                }
                if self.sock.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }
    async fn recv(&mut self) -> Packet {
        self.recv_within(WAIT).await.expect("EOF")
    }
    /// True when nothing arrives within `d`.
    async fn silent_for(&mut self, d: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        tokio::time::timeout(d, self.sock.read_buf(&mut self.buf))
            .await
            .is_err()
    }
}

fn set(op: Opcode, key: &str, value: &str, flags: u32) -> Packet {
    let mut e = BytesMut::new();
    e.put_u32(flags);
    e.put_u32(0);
    Packet::request(op)
        .with_vbucket(vbucket_of(key.as_bytes(), 1024))
        .with_extras(e.freeze())
        .with_key(Bytes::copy_from_slice(key.as_bytes()))
        .with_value(Bytes::copy_from_slice(value.as_bytes()))
}

fn get(key: &str) -> Packet {
    Packet::request(Opcode::Get)
        .with_vbucket(vbucket_of(key.as_bytes(), 1024))
        .with_key(Bytes::copy_from_slice(key.as_bytes()))
}

async fn node(cfg: NodeConfig) -> Node {
    Node::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn load(addr: SocketAddr, n: usize, flags: u32) {
    let mut c = Client::connect(addr).await;
    let mut ps: Vec<Packet> = (0..n)
        .map(|i| {
            set(
                Opcode::SetQ,
                &format!("key{i:06}"),
                &format!("value-{i}"),
                flags,
            )
        })
        .collect();
    ps.push(Packet::request(Opcode::Noop).with_opaque(77));
    c.send_all(&ps).await;
    let r = c.recv().await;
    assert_eq!((r.opcode, r.opaque), (Opcode::Noop, 77));
}

#[tokio::test]
async fn set_then_get_returns_value_flags_and_cas() {
    let n = node(NodeConfig::default()).await;
    let mut c = Client::connect(n.kv_addr).await;
    c.send(&set(Opcode::Set, "hello", "world", 0xdead_beef).with_opaque(1))
        .await;
    let r = c.recv().await;
    assert_eq!((r.status(), r.opaque), (Status::Success, 1));
    assert_ne!(r.cas, 0);
    c.send(&get("hello")).await;
    let g = c.recv().await;
    assert_eq!(g.status(), Status::Success);
    assert_eq!(&g.value[..], b"world");
    assert_eq!(&g.extras[..], &0xdead_beefu32.to_be_bytes());
    assert_eq!(g.cas, r.cas);
}

#[tokio::test]
async fn quiet_writes_answer_only_failures_before_the_noop_barrier() {
    let n = node(NodeConfig::default()).await;
    let mut c = Client::connect(n.kv_addr).await;
    let mut ps: Vec<Packet> = (0..1000)
        .map(|i| set(Opcode::SetQ, &format!("k{i}"), "v", 0).with_opaque(i))
        .collect();
    // An ADDQ of an existing key fails: the only answer before the NOOP.
    ps.push(set(Opcode::AddQ, "k5", "x", 0).with_opaque(5000));
    ps.push(Packet::request(Opcode::Noop).with_opaque(9999));
    c.send_all(&ps).await;
    let r = c.recv().await;
    assert_eq!(
        (r.opcode, r.opaque, r.status()),
        (Opcode::AddQ, 5000, Status::KeyEexists)
    );
    let r = c.recv().await;
    assert_eq!((r.opcode, r.opaque), (Opcode::Noop, 9999));
    assert_eq!(n.bucket.item_count(), 1000);
}

#[tokio::test]
async fn a_key_whose_vbucket_is_not_active_answers_not_my_vbucket() {
    let n = node(NodeConfig::default()).await;
    let vb = vbucket_of(b"hello", 1024);
    n.bucket.set_state(vb, VbucketState::Replica);
    let mut c = Client::connect(n.kv_addr).await;
    c.send(&set(Opcode::Set, "hello", "v", 0)).await;
    assert_eq!(c.recv().await.status(), Status::NotMyVbucket);
    c.send(&get("hello")).await;
    assert_eq!(c.recv().await.status(), Status::NotMyVbucket);
}

#[tokio::test]
async fn sasl_plain_lets_in_the_right_password_only() {
    let n = node(NodeConfig {
        auth: Some(("admin".into(), "secret".into())),
        ..NodeConfig::default()
    })
    .await;
    let mut c = Client::connect(n.kv_addr).await;
    c.send(&set(Opcode::Set, "k", "v", 0)).await;
    assert_eq!(c.recv().await.status(), Status::AuthError);
    c.send(&pump_protocol::sasl::plain_auth("admin", "wrong"))
        .await;
    assert_eq!(c.recv().await.status(), Status::AuthError);
    c.send(&pump_protocol::sasl::plain_auth("admin", "secret"))
        .await;
    assert_eq!(c.recv().await.status(), Status::Success);
    c.send(&Packet::request(Opcode::SelectBucket).with_key(&b"default"[..]))
        .await;
    assert_eq!(c.recv().await.status(), Status::Success);
    c.send(&set(Opcode::Set, "k", "v", 0)).await;
    assert_eq!(c.recv().await.status(), Status::Success);
}

async fn tap_connect(addr: SocketAddr, flags: u32, vbuckets: Option<Vec<u16>>) -> Client {
    let mut c = Client::connect(addr).await;
    let tc = TapConnect {
        name: Bytes::from_static(b"test"),
        flags,
        vbuckets,
        ..TapConnect::default()
    };
    c.send(&tc.to_packet()).await;
    c
}

#[tokio::test]
async fn tap_dump_with_support_ack_waits_for_each_ack_and_closes_after_the_last() {
    let n = node(NodeConfig::default()).await;
    load(n.kv_addr, 1200, 7).await;
    let mut c = tap_connect(
        n.kv_addr,
        connect_flags::DUMP | connect_flags::SUPPORT_ACK | connect_flags::FIX_FLAG_BYTEORDER,
        None,
    )
    .await;
    let (mut mutations, mut acks) = (0, 0);
    while let Some(p) = c.recv_within(WAIT).await {
        let m = TapMessage::from_packet(&p).unwrap();
        if m.kind() == TapKind::Mutation {
            mutations += 1;
            assert_eq!(m.fixed_item_flags(), 7);
        }
        if m.wants_ack() {
            acks += 1;
            // The producer stops after an ACK-flagged message until the ack is sent.
            assert!(c.silent_for(Duration::from_millis(200)).await);
            c.send(&m.ack_reply()).await;
        }
    }
    assert_eq!(mutations, 1200);
    assert!(acks >= 2, "{acks} acks");
}

#[tokio::test]
async fn tap_item_flags_are_swapped_without_fix_flag_byteorder() {
    let n = node(NodeConfig::default()).await;
    load(n.kv_addr, 10, 0x0102_0304).await;
    for fix in [false, true] {
        let flags = connect_flags::DUMP
            | if fix {
                connect_flags::FIX_FLAG_BYTEORDER
            } else {
                0
            };
        let mut c = tap_connect(n.kv_addr, flags, None).await;
        let mut seen = 0;
        while let Some(p) = c.recv_within(WAIT).await {
            let m = TapMessage::from_packet(&p).unwrap();
            if m.kind() == TapKind::Mutation {
                seen += 1;
                let raw = if fix { 0x0102_0304 } else { 0x0403_0201 };
                assert_eq!(m.item_flags, raw, "fix={fix}");
                assert_eq!(m.tap_flags & message_flags::NETWORK_BYTE_ORDER != 0, fix);
                assert_eq!(m.fixed_item_flags(), 0x0102_0304);
            }
        }
        assert_eq!(seen, 10);
    }
}

#[tokio::test]
async fn tap_consumer_writes_into_a_replica_vbucket_and_acks() {
    let n = node(NodeConfig::default()).await;
    let vb = vbucket_of(b"tapkey", 1024);
    let mut c = Client::connect(n.kv_addr).await;
    let set_state = TapMessage {
        tap_flags: message_flags::ACK,
        opaque: 1,
        ..TapMessage::vbucket_set(vb, VbucketState::Replica)
    };
    let mut b = BytesMut::new();
    set_state.encode(&mut b);
    let mut m = TapMessage {
        vbucket: vb,
        opaque: 2,
        key: Bytes::from_static(b"tapkey"),
        value: Bytes::from_static(b"tapvalue"),
        item_expiry: 0,
        ..TapMessage::new(TapKind::Mutation)
    };
    m.set_item_flags(42, false);
    m.tap_flags |= message_flags::ACK;
    m.encode(&mut b);
    c.sock.write_all(&b).await.unwrap();
    let a1 = c.recv().await;
    assert_eq!(
        (a1.magic, a1.opcode, a1.opaque, a1.status()),
        (Magic::Response, Opcode::TapVbucketSet, 1, Status::Success)
    );
    let a2 = c.recv().await;
    assert_eq!(
        (a2.opcode, a2.opaque, a2.status()),
        (Opcode::TapMutation, 2, Status::Success)
    );
    assert_eq!(n.bucket.state(vb), Some(VbucketState::Replica));
    let v = n.bucket.vb(vb).unwrap();
    let item = &v.items[&pump_node::store::doc_key(0, b"tapkey")];
    assert_eq!((&item.value[..], item.flags), (&b"tapvalue"[..], 42));
}

async fn dcp_open(addr: SocketAddr, controls: &[(&str, &str)]) -> Client {
    let mut c = Client::connect(addr).await;
    c.send(
        &DcpMessage::Open {
            opaque: 1,
            name: Bytes::from_static(b"test"),
            seqno: 0,
            flags: pump_protocol::dcp::open_flags::PRODUCER,
        }
        .to_packet(),
    )
    .await;
    assert_eq!(c.recv().await.status(), Status::Success);
    for (k, v) in controls {
        c.send(
            &DcpMessage::Control {
                opaque: 2,
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
            }
            .to_packet(),
        )
        .await;
        assert_eq!(c.recv().await.status(), Status::Success, "control {k}");
    }
    c
}

fn stream_req(vb: u16, start: u64, end: u64, uuid: u64) -> Packet {
    DcpMessage::StreamReq(StreamRequest {
        vbucket: vb,
        opaque: 100 + u32::from(vb),
        flags: 0,
        start,
        end,
        vbucket_uuid: uuid,
        snap_start: start,
        snap_end: start,
    })
    .to_packet()
}

#[tokio::test]
async fn a_dcp_stream_sends_a_snapshot_every_item_and_ends_at_the_high_seqno() {
    let n = node(NodeConfig {
        vbuckets: 4,
        ..NodeConfig::default()
    })
    .await;
    for i in 0..100 {
        let key = pump_node::store::doc_key(0, format!("k{i}").as_bytes());
        let w = pump_node::store::Write {
            key,
            value: Bytes::from_static(b"v"),
            flags: 3,
            expiry: 0,
            datatype: 0,
            cas: 0,
            mode: pump_node::store::WriteMode::Set,
        };
        n.bucket
            .write(1, w, pump_node::store::CLIENT_STATES)
            .unwrap();
    }
    n.bucket
        .delete(
            1,
            pump_node::store::doc_key(0, b"k0"),
            0,
            pump_node::store::CLIENT_STATES,
        )
        .unwrap();
    let mut c = dcp_open(n.kv_addr, &[]).await;
    c.send(&stream_req(1, 0, 101, 0)).await;
    let r = c.recv().await;
    let StreamReqReply::Ok(log) = StreamReqReply::from_packet(&r).unwrap() else {
        panic!("{r:?}")
    };
    assert_eq!(log.len(), 1);
    let (mut muts, mut dels, mut markers, mut last) = (0, 0, 0, 0);
    loop {
        let p = c.recv().await;
        match DcpMessage::from_packet(&p).unwrap() {
            DcpMessage::SnapshotMarker { end, .. } => {
                markers += 1;
                assert_eq!(end, 101);
            }
            DcpMessage::Mutation(i) => {
                muts += 1;
                assert!(i.by_seqno > last);
                last = i.by_seqno;
                assert_eq!(i.flags, 3);
            }
            DcpMessage::Deletion(i) => {
                dels += 1;
                last = i.by_seqno;
            }
            DcpMessage::StreamEnd {
                reason, vbucket, ..
            } => {
                assert_eq!(reason, pump_protocol::dcp::StreamEndReason::Ok);
                assert_eq!(vbucket, 1);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((muts, dels, markers, last), (99, 1, 1, 101));
}

#[tokio::test]
async fn a_stream_request_with_an_unknown_uuid_is_told_to_roll_back() {
    let n = node(NodeConfig {
        vbuckets: 4,
        ..NodeConfig::default()
    })
    .await;
    load(n.kv_addr, 0, 0).await;
    let mut c = dcp_open(n.kv_addr, &[]).await;
    c.send(&stream_req(0, 5, 10, 12345)).await;
    let r = c.recv().await;
    assert_eq!(
        StreamReqReply::from_packet(&r).unwrap(),
        StreamReqReply::Rollback(0)
    );
}

#[tokio::test]
async fn dcp_flow_control_never_has_more_than_the_window_unacked_and_noops_flow() {
    let n = node(NodeConfig {
        vbuckets: 8,
        ..NodeConfig::default()
    })
    .await;
    for i in 0..2000u32 {
        let key = Bytes::from(format!("key{i}"));
        let vb = vbucket_of(&key, 8);
        let w = pump_node::store::Write {
            key: pump_node::store::doc_key(0, &key),
            value: Bytes::from(vec![b'x'; 100]),
            flags: 0,
            expiry: 0,
            datatype: 0,
            cas: 0,
            mode: pump_node::store::WriteMode::Set,
        };
        n.bucket
            .write(vb, w, pump_node::store::CLIENT_STATES)
            .unwrap();
    }
    const WINDOW: u64 = 20_000;
    let mut c = dcp_open(
        n.kv_addr,
        &[
            ("connection_buffer_size", "20000"),
            ("enable_noop", "true"),
            ("set_noop_interval", "1"),
        ],
    )
    .await;
    for vb in 0..8 {
        let high = n.bucket.vb(vb).unwrap().high_seqno;
        c.send(&stream_req(vb, 0, high, 0)).await;
    }
    let (mut unacked, mut items, mut ended, mut replies, mut noops) = (0u64, 0, 0, 0, 0);
    while ended < 8 {
        let p = c.recv().await;
        if p.magic == Magic::Response {
            replies += 1;
            continue;
        }
        if p.opcode == Opcode::DcpNoop {
            noops += 1;
            c.send(&pump_protocol::dcp::noop_reply(p.opaque)).await;
            continue;
        }
        unacked += p.wire_len() as u64;
        assert!(unacked <= WINDOW, "{unacked} bytes unacked");
        match p.opcode {
            Opcode::DcpMutation => items += 1,
            Opcode::DcpStreamEnd => ended += 1,
            _ => {}
        }
        if unacked > WINDOW / 2 {
            // Wait a little: the producer must not send past the window meanwhile.
            if noops == 0 && items > 1000 {
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
            c.send(
                &DcpMessage::BufferAck {
                    opaque: 3,
                    bytes: unacked as u32,
                }
                .to_packet(),
            )
            .await;
            unacked = 0;
        }
    }
    assert_eq!((items, replies), (2000, 8));
    assert!(noops >= 1, "no NOOP arrived");
}

#[tokio::test]
async fn a_node_restarted_on_its_data_dir_keeps_items_seqnos_and_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig {
        vbuckets: 16,
        data: Some(dir.path().to_path_buf()),
        ..NodeConfig::default()
    };
    let n = node(cfg.clone()).await;
    let mut c = Client::connect(n.kv_addr).await;
    let mut ps: Vec<Packet> = (0..200)
        .map(|i| {
            let k = format!("key{i}");
            let mut p = set(Opcode::SetQ, &k, "v", i);
            p.vbucket_or_status = vbucket_of(k.as_bytes(), 16);
            p
        })
        .collect();
    ps.push(Packet::request(Opcode::Noop));
    c.send_all(&ps).await;
    c.recv().await;
    let before: Vec<_> = (0..16)
        .map(|vb| {
            let v = n.bucket.vb(vb).unwrap();
            (v.high_seqno, v.failover.clone(), v.items.clone())
        })
        .collect();
    n.shutdown().await.unwrap();
    let n = node(cfg).await;
    let after: Vec<_> = (0..16)
        .map(|vb| {
            let v = n.bucket.vb(vb).unwrap();
            (v.high_seqno, v.failover.clone(), v.items.clone())
        })
        .collect();
    assert_eq!(before, after);
    let mut c = Client::connect(n.kv_addr).await;
    let mut g = get("key7");
    g.vbucket_or_status = vbucket_of(b"key7", 16);
    c.send(&g).await;
    let r = c.recv().await;
    assert_eq!(
        (r.status(), (&r.extras[..]).get_u32()),
        (Status::Success, 7)
    );
}

/// Every message of a TAP connection until the producer closes it, each ACK answered.
async fn tap_messages(c: &mut Client) -> Vec<TapMessage> {
    let mut out = Vec::new();
    while let Some(p) = c.recv_within(WAIT).await {
        let m = TapMessage::from_packet(&p).unwrap();
        if m.wants_ack() {
            c.send(&m.ack_reply()).await;
        }
        out.push(m);
    }
    out
}

#[tokio::test]
async fn tap_list_vbuckets_streams_only_those_each_framed_by_opaque_and_checkpoint_markers() {
    let n = node(NodeConfig::default()).await;
    load(n.kv_addr, 300, 7).await;
    let vb_of = |i: usize| vbucket_of(format!("key{i:06}").as_bytes(), 1024);
    let a = vb_of(0);
    let b = (1..300).map(vb_of).find(|v| *v != a).unwrap();
    let expected = |vb: u16| (0..300).filter(|i| vb_of(*i) == vb).count();
    let mut c = tap_connect(
        n.kv_addr,
        connect_flags::DUMP | connect_flags::FIX_FLAG_BYTEORDER | connect_flags::LIST_VBUCKETS,
        Some(vec![b, a]),
    )
    .await;
    let ms = tap_messages(&mut c).await;
    // In the order asked: b's stream, then a's; each OPAQUE, CHECKPOINT_START, items,
    // CHECKPOINT_END.
    let mut at = 0;
    for vb in [b, a] {
        let run: Vec<&TapMessage> = ms[at..].iter().take_while(|m| m.vbucket == vb).collect();
        at += run.len();
        let kinds: Vec<TapKind> = run.iter().map(|m| m.kind()).collect();
        assert_eq!(kinds.len(), expected(vb) + 3, "vbucket {vb}: {kinds:?}");
        assert_eq!(kinds[0], TapKind::Opaque, "vbucket {vb}");
        assert_eq!(&run[0].value[..], &[0, 0, 0, 1]);
        assert_eq!(kinds[1], TapKind::CheckpointStart, "vbucket {vb}");
        assert!(kinds[2..kinds.len() - 1]
            .iter()
            .all(|k| *k == TapKind::Mutation));
        assert_eq!(
            kinds[kinds.len() - 1],
            TapKind::CheckpointEnd,
            "vbucket {vb}"
        );
        assert_eq!(run[1].value, run[kinds.len() - 1].value, "checkpoint ids");
        for m in &run[2..kinds.len() - 1] {
            let i: usize = std::str::from_utf8(&m.key[3..]).unwrap().parse().unwrap();
            assert_eq!(m.value, format!("value-{i}").as_bytes());
            assert_eq!(m.fixed_item_flags(), 7);
        }
    }
    assert_eq!(at, ms.len(), "messages of vbuckets not asked for");
    // The opaque of each message is its number on the connection.
    assert!(ms.windows(2).all(|w| w[1].opaque == w[0].opaque + 1));
}

#[tokio::test]
async fn tap_request_keys_only_sends_every_key_without_its_value() {
    let n = node(NodeConfig::default()).await;
    load(n.kv_addr, 50, 9).await;
    let mut c = tap_connect(
        n.kv_addr,
        connect_flags::DUMP | connect_flags::FIX_FLAG_BYTEORDER | connect_flags::REQUEST_KEYS_ONLY,
        None,
    )
    .await;
    let ms = tap_messages(&mut c).await;
    let mutations: Vec<&TapMessage> = ms
        .iter()
        .filter(|m| m.kind() == TapKind::Mutation)
        .collect();
    assert_eq!(mutations.len(), 50);
    let mut keys: Vec<&[u8]> = mutations.iter().map(|m| &m.key[..]).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 50);
    for m in mutations {
        assert!(m.value.is_empty(), "a value was sent");
        assert_ne!(m.tap_flags & message_flags::NO_VALUE, 0);
        assert_eq!(m.fixed_item_flags(), 9);
    }
}

#[tokio::test]
async fn dcp_streams_a_deleted_item_as_deletion_and_an_expired_one_as_expiration() {
    let n = node(NodeConfig {
        vbuckets: 1,
        ..NodeConfig::default()
    })
    .await;
    let write = |key: &'static str, expiry: u32| pump_node::store::Write {
        key: pump_node::store::doc_key(0, key.as_bytes()),
        value: Bytes::from_static(b"v"),
        flags: 5,
        expiry,
        datatype: 0,
        cas: 0,
        mode: pump_node::store::WriteMode::Set,
    };
    let states = pump_node::store::CLIENT_STATES;
    n.bucket.write(0, write("live", 0), states).unwrap();
    n.bucket.write(0, write("gone", 0), states).unwrap();
    // An absolute expiry in 2001: expired already.
    n.bucket
        .write(0, write("old", 1_000_000_000), states)
        .unwrap();
    n.bucket
        .delete(0, pump_node::store::doc_key(0, b"gone"), 0, states)
        .unwrap();
    let high = n.bucket.vb(0).unwrap().high_seqno;
    let mut c = dcp_open(n.kv_addr, &[]).await;
    c.send(&stream_req(0, 0, high, 0)).await;
    let mut got = Vec::new();
    loop {
        let p = c.recv().await;
        if p.magic == Magic::Response {
            assert_eq!(p.status(), Status::Success);
            continue;
        }
        match DcpMessage::from_packet(&p).unwrap() {
            DcpMessage::Mutation(i) => got.push(("mutation", i.key, i.value, i.by_seqno)),
            DcpMessage::Deletion(i) => got.push(("deletion", i.key, i.value, i.by_seqno)),
            DcpMessage::Expiration(i) => got.push(("expiration", i.key, i.value, i.by_seqno)),
            DcpMessage::StreamEnd { .. } => break,
            _ => {}
        }
    }
    let got: Vec<(&str, &[u8], &[u8])> = got
        .iter()
        .map(|(op, k, v, _)| (*op, &k[..], &v[..]))
        .collect();
    assert_eq!(
        got,
        vec![
            ("mutation", &b"live"[..], &b"v"[..]),
            ("expiration", &b"old"[..], &b""[..]),
            ("deletion", &b"gone"[..], &b""[..]),
        ]
    );
}

#[tokio::test]
async fn tap_consumer_takes_a_delete_into_a_pending_vbucket_and_acks() {
    let n = node(NodeConfig::default()).await;
    let vb = vbucket_of(b"gone", 1024);
    let mut c = Client::connect(n.kv_addr).await;
    let mut b = BytesMut::new();
    TapMessage {
        tap_flags: message_flags::ACK,
        opaque: 1,
        ..TapMessage::vbucket_set(vb, VbucketState::Pending)
    }
    .encode(&mut b);
    let mut m = TapMessage {
        vbucket: vb,
        opaque: 2,
        key: Bytes::from_static(b"gone"),
        value: Bytes::from_static(b"v"),
        ..TapMessage::new(TapKind::Mutation)
    };
    m.set_item_flags(1, true);
    m.encode(&mut b);
    TapMessage {
        vbucket: vb,
        opaque: 3,
        tap_flags: message_flags::ACK,
        key: Bytes::from_static(b"gone"),
        ..TapMessage::new(TapKind::Delete)
    }
    .encode(&mut b);
    c.sock.write_all(&b).await.unwrap();
    let a1 = c.recv().await;
    assert_eq!((a1.opcode, a1.opaque), (Opcode::TapVbucketSet, 1));
    let a3 = c.recv().await;
    assert_eq!(
        (a3.magic, a3.opcode, a3.opaque, a3.status()),
        (Magic::Response, Opcode::TapDelete, 3, Status::Success)
    );
    assert_eq!(n.bucket.state(vb), Some(VbucketState::Pending));
    let v = n.bucket.vb(vb).unwrap();
    assert!(
        v.items[&pump_node::store::doc_key(0, b"gone")].deleted,
        "the key was not deleted"
    );
    assert!(v.live(&pump_node::store::doc_key(0, b"gone"), 0).is_none());
}

/// SASL PLAIN as admin:secret, then SELECT_BUCKET default (the user is not named after it).
async fn login(c: &mut Client) {
    c.send(&pump_protocol::sasl::plain_auth("admin", "secret"))
        .await;
    assert_eq!(c.recv().await.status(), Status::Success);
    c.send(&Packet::request(Opcode::SelectBucket).with_key(&b"default"[..]))
        .await;
    assert_eq!(c.recv().await.status(), Status::Success);
}

#[tokio::test]
async fn tap_takeover_sends_vbucket_set_active_per_vbucket_and_the_local_copy_goes_dead() {
    let n = node(NodeConfig {
        auth: Some(("admin".into(), "secret".into())),
        ..NodeConfig::default()
    })
    .await;
    let mut c = Client::connect(n.kv_addr).await;
    login(&mut c).await;
    let mut ps: Vec<Packet> = (0..20)
        .map(|i| set(Opcode::SetQ, &format!("key{i:06}"), "v", 0))
        .collect();
    ps.push(Packet::request(Opcode::Noop));
    c.send_all(&ps).await;
    assert_eq!(c.recv().await.opcode, Opcode::Noop);
    let vbs = vec![3u16, 700];
    let tc = TapConnect {
        name: Bytes::from_static(b"test"),
        flags: connect_flags::DUMP
            | connect_flags::SUPPORT_ACK
            | connect_flags::LIST_VBUCKETS
            | connect_flags::TAKEOVER_VBUCKETS,
        vbuckets: Some(vbs.clone()),
        ..TapConnect::default()
    };
    c.send(&tc.to_packet()).await;
    let ms = tap_messages(&mut c).await;
    let sets: Vec<(u16, VbucketState)> = ms
        .iter()
        .filter(|m| m.kind() == TapKind::VbucketSet)
        .map(|m| (m.vbucket, m.vbucket_state().unwrap()))
        .collect();
    assert_eq!(
        sets,
        vec![(3, VbucketState::Active), (700, VbucketState::Active)]
    );
    // The VBUCKET_SETs follow every vbucket's stream.
    let first_set = ms
        .iter()
        .position(|m| m.kind() == TapKind::VbucketSet)
        .unwrap();
    assert!(ms[first_set..]
        .iter()
        .all(|m| m.kind() == TapKind::VbucketSet));
    assert!(
        ms.last().unwrap().wants_ack(),
        "the last message asks for an ack"
    );
    for vb in vbs {
        assert_eq!(n.bucket.state(vb), Some(VbucketState::Dead), "vbucket {vb}");
    }
}

#[tokio::test]
async fn tap_takeover_and_vbucket_state_changes_need_the_admin_credentials() {
    // The case: one TAP_CONNECT with DUMP|TAKEOVER from anyone marked every vbucket
    // dead. A node without credentials has no admin: it refuses them all.
    let open = node(NodeConfig::default()).await;
    let guarded = node(NodeConfig {
        auth: Some(("admin".into(), "secret".into())),
        ..NodeConfig::default()
    })
    .await;
    let takeover = TapConnect {
        name: Bytes::from_static(b"thief"),
        flags: connect_flags::DUMP | connect_flags::TAKEOVER_VBUCKETS,
        ..TapConnect::default()
    }
    .to_packet();
    let set_dead = Packet::request(Opcode::SetVbucket)
        .with_vbucket(5)
        .with_extras((VbucketState::Dead as u32).to_be_bytes().to_vec());
    let del = Packet::request(Opcode::DelVbucket).with_vbucket(6);
    for (n, expect) in [(&open, Status::Eaccess), (&guarded, Status::AuthError)] {
        let mut c = Client::connect(n.kv_addr).await;
        for p in [&takeover, &set_dead, &del] {
            c.send(p).await;
            let r = c.recv().await;
            assert_eq!((r.opcode, r.status()), (p.opcode, expect), "{:?}", p.opcode);
        }
        let active = (0..n.bucket.num_vbuckets())
            .filter(|vb| n.bucket.state(*vb) == Some(VbucketState::Active))
            .count();
        assert_eq!(active, 1024, "a refused request changed a vbucket's state");
    }
    // The admin may.
    let mut c = Client::connect(guarded.kv_addr).await;
    login(&mut c).await;
    c.send(&set_dead).await;
    assert_eq!(c.recv().await.status(), Status::Success);
    assert_eq!(guarded.bucket.state(5), Some(VbucketState::Dead));
}

#[tokio::test]
async fn stat_vbucket_seqno_of_one_dead_vbucket_is_not_my_vbucket_as_the_whole_list_leaves_it_out()
{
    let n = node(NodeConfig {
        auth: Some(("admin".into(), "secret".into())),
        ..NodeConfig::default()
    })
    .await;
    let mut c = Client::connect(n.kv_addr).await;
    login(&mut c).await;
    c.send(
        &Packet::request(Opcode::SetVbucket)
            .with_vbucket(5)
            .with_extras((VbucketState::Dead as u32).to_be_bytes().to_vec()),
    )
    .await;
    assert_eq!(c.recv().await.status(), Status::Success);
    c.send(&Packet::request(Opcode::Stat).with_key(&b"vbucket-seqno 5"[..]))
        .await;
    let r = c.recv().await;
    assert_eq!(r.status(), Status::NotMyVbucket, "{:?}", r.key);
    // A live one is listed, then the end of the group.
    c.send(&Packet::request(Opcode::Stat).with_key(&b"vbucket-seqno 6"[..]))
        .await;
    let r = c.recv().await;
    assert_eq!(
        (r.status(), &r.key[..]),
        (Status::Success, &b"vb_6:high_seqno"[..])
    );
}

#[tokio::test]
async fn at_the_cap_the_oldest_connection_not_authenticated_makes_room_for_a_new_client() {
    // Issue 18: idle connections that never authenticate must not keep a real client out
    // until they time out. At the cap, the oldest of them is closed for the newcomer; one
    // that authenticated is never closed for another.
    let n = node(NodeConfig {
        auth: Some(("admin".into(), "secret".into())),
        max_connections: 6,
        ..NodeConfig::default()
    })
    .await;
    let mut holder = Client::connect(n.kv_addr).await;
    login(&mut holder).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut c = Client::connect(n.kv_addr).await;
        // Admitted: it is answered (NOOP needs no login).
        c.send(&Packet::request(Opcode::Noop)).await;
        assert_eq!(c.recv().await.status(), Status::Success);
        idle.push(c);
    }
    // The cap is reached: a real client still gets in, at once, and is served.
    let mut clients = Vec::new();
    for (round, oldest) in idle.iter_mut().take(2).enumerate() {
        let mut c = Client::connect(n.kv_addr).await;
        login(&mut c).await;
        c.send(&set(Opcode::Set, &format!("k{round}"), "v", 0))
            .await;
        assert_eq!(c.recv().await.status(), Status::Success);
        // The one closed for it is the oldest idle one still open.
        assert!(
            oldest.recv_within(WAIT).await.is_none(),
            "round {round}: the oldest idle connection is still open"
        );
        holder_answers(&mut holder).await;
        clients.push(c); // kept open: it holds a place
    }
    for c in &mut idle[2..] {
        c.send(&Packet::request(Opcode::Noop)).await;
        assert_eq!(
            c.recv().await.status(),
            Status::Success,
            "a younger one was closed"
        );
    }
}

async fn holder_answers(c: &mut Client) {
    c.send(&get("k0")).await;
    assert_eq!(c.recv().await.status(), Status::Success);
}

#[tokio::test]
async fn at_a_cap_of_authenticated_connections_a_new_one_is_closed_at_once() {
    let n = node(NodeConfig {
        auth: Some(("admin".into(), "secret".into())),
        max_connections: 2,
        ..NodeConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(n.kv_addr).await;
        login(&mut c).await;
        held.push(c);
    }
    let mut refused = Client::connect(n.kv_addr).await;
    assert!(refused.recv_within(WAIT).await.is_none(), "not closed");
    for c in &mut held {
        c.send(&Packet::request(Opcode::Noop)).await;
        assert_eq!(c.recv().await.status(), Status::Success);
    }
}
