use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pump::{Op, Options, SourceKind, Spec, VbucketSet};
use pump_protocol::tap::{connect_flags, message_flags, TapConnect, TapKind, TapMessage};
use pump_protocol::{Opcode, Packet, Status};

use super::TapSourceKind;
use crate::testutil::{listen, run, Collect, Peer};

fn mutation(vb: u16, key: &str, value: &str, flags: u32, fix: bool, opaque: u32) -> TapMessage {
    let mut m = TapMessage {
        vbucket: vb,
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        item_expiry: 77,
        cas: 9,
        opaque,
        ..TapMessage::new(TapKind::Mutation)
    };
    m.set_item_flags(flags, fix);
    m
}

/// Answers the source's STAT vbucket-seqno: `Some(vbuckets)` lists them (as not dead), `None`
/// answers as an old server that has no such stat.
async fn vbucket_stat(peer: &mut Peer, listed: Option<&[u16]>) {
    let p = peer.recv().await.unwrap();
    assert_eq!(
        (p.opcode, &p.key[..]),
        (Opcode::Stat, &b"vbucket-seqno"[..])
    );
    let Some(listed) = listed else {
        return peer
            .send(Packet::response_to(&p, Status::UnknownCommand))
            .await;
    };
    for vb in listed {
        let row = Packet::response_to(&p, Status::Success)
            .with_key(format!("vb_{vb}:high_seqno"))
            .with_value("1");
        peer.send(row).await;
    }
    peer.send(Packet::response_to(&p, Status::Success)).await;
}

async fn send_tap(peer: &mut Peer, m: &TapMessage) {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    peer.send_raw(&b).await;
}

fn open(spec: &str, options: &Options) -> Box<dyn pump::Source> {
    TapSourceKind
        .open(&Spec::parse(spec).unwrap(), options)
        .unwrap()
}

#[tokio::test]
async fn the_tap_ack_is_sent_only_after_the_sink_confirmed_the_batch() {
    let (l, addr) = listen().await;
    let sink = Collect::delayed(Duration::from_millis(300));
    let confirmed = sink.clone();
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        peer.hello().await;
        let sel = peer.recv().await.unwrap();
        assert_eq!(sel.opcode, Opcode::SelectBucket);
        assert_eq!(&sel.key[..], b"default");
        peer.send(Packet::response_to(&sel, Status::UnknownCommand))
            .await;
        vbucket_stat(&mut peer, Some(&[1, 5])).await;
        let c = TapConnect::from_packet(&peer.recv().await.unwrap()).unwrap();
        assert_eq!(
            c.flags,
            connect_flags::DUMP
                | connect_flags::SUPPORT_ACK
                | connect_flags::FIX_FLAG_BYTEORDER
                | connect_flags::LIST_VBUCKETS
        );
        assert_eq!(c.vbuckets, Some(vec![3, 5]));
        for i in 0..3u32 {
            let mut m = mutation(3, &format!("k{i}"), "v", 1, true, i);
            if i == 2 {
                m.tap_flags |= message_flags::ACK;
            }
            send_tap(&mut peer, &m).await;
        }
        let ack = peer.recv().await.unwrap();
        // The sink sleeps 300 ms before it confirms: the ack must not come earlier.
        assert_eq!(
            confirmed.confirmed(),
            3,
            "ack arrived before the sink confirmed"
        );
        assert_eq!(ack.opcode, Opcode::TapMutation);
        assert_eq!(ack.opaque, 2);
        assert_eq!(ack.status(), Status::Success);
        assert_eq!(ack.magic, pump_protocol::Magic::Response);
        // The dump ends when the server closes after the last ack.
    });
    let options = Options {
        vbuckets: Some(VbucketSet::parse("3,5").unwrap()),
        ..Options::default()
    };
    let summary = run(
        open(&format!("tap://{addr}"), &options),
        sink.clone(),
        options,
    )
    .await
    .unwrap();
    producer.await.unwrap();
    assert_eq!(summary.counts.items_written, 3);
    let msgs = sink.messages();
    assert_eq!(
        msgs.iter().map(|m| m.seqno).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn item_flags_are_fixed_with_and_without_network_byte_order_and_deletes_pass() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        peer.hello().await;
        // A server that lists only PLAIN gets PLAIN.
        let list = peer.recv().await.unwrap();
        assert_eq!(list.opcode, Opcode::SaslListMechs);
        peer.send(Packet::response_to(&list, Status::Success).with_value(&b"PLAIN"[..]))
            .await;
        let auth = peer.recv().await.unwrap();
        assert_eq!(auth.opcode, Opcode::SaslAuth);
        assert_eq!(&auth.value[..], b"\0alice\0pw");
        peer.send(Packet::response_to(&auth, Status::Success)).await;
        let sel = peer.recv().await.unwrap();
        assert_eq!(&sel.key[..], b"beer");
        peer.send(Packet::response_to(&sel, Status::Success)).await;
        vbucket_stat(&mut peer, None).await;
        let c = TapConnect::from_packet(&peer.recv().await.unwrap()).unwrap();
        assert!(!c.has(connect_flags::LIST_VBUCKETS));
        // An old server: flags byte-swapped, no NETWORK_BYTE_ORDER.
        send_tap(&mut peer, &mutation(1, "old", "a", 0x0102_0304, false, 0)).await;
        // A new one: network order with the flag.
        send_tap(&mut peer, &mutation(2, "new", "b", 0x0102_0304, true, 0)).await;
        let mut d = TapMessage {
            vbucket: 2,
            key: Bytes::from_static(b"gone"),
            engine_specific: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 42]),
            ..TapMessage::new(TapKind::Delete)
        };
        d.tap_flags |= message_flags::ACK;
        send_tap(&mut peer, &d).await;
        let ack = peer.recv().await.unwrap();
        assert_eq!(ack.opcode, Opcode::TapDelete);
    });
    let options = Options {
        source_bucket: "beer".into(),
        ..Options::default()
    };
    let sink = Collect::default();
    run(
        open(&format!("tap://alice:pw@{addr}"), &options),
        sink.clone(),
        options,
    )
    .await
    .unwrap();
    producer.await.unwrap();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].flags, 0x0102_0304);
    assert_eq!(msgs[0].expiry, 77);
    assert_eq!(msgs[1].flags, 0x0102_0304);
    assert_eq!(msgs[2].op, Op::Deletion);
    assert_eq!(&msgs[2].key[..], b"gone");
    assert_eq!(msgs[2].rev_seqno, 42);
    assert_eq!((msgs[1].seqno, msgs[2].seqno), (1, 2));
}

#[tokio::test]
async fn a_producer_that_dies_mid_frame_fails_the_run_naming_it() {
    let (l, addr) = listen().await;
    tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let sel = peer.recv().await.unwrap();
        peer.send(Packet::response_to(&sel, Status::UnknownCommand))
            .await;
        vbucket_stat(&mut peer, Some(&[0, 3])).await;
        let _connect = peer.recv().await.unwrap();
        let mut b = BytesMut::new();
        mutation(0, "k", "value", 0, true, 0).encode(&mut b);
        peer.send_raw(&b[..b.len() - 3]).await;
    });
    let options = Options::default();
    let e = run(
        open(&format!("tap://{addr}"), &options),
        Collect::default(),
        options,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains(&addr) && e.contains("closed"), "{e}");
}

/// A key the sink cannot write: the TAP ack after it is withheld (a TAP stream cannot pass
/// over a message it did not deliver), and the source stops with an error naming the key.
#[tokio::test]
async fn a_failed_key_withholds_the_tap_ack_and_stops_the_stream_naming_it() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        peer.hello().await;
        let sel = peer.recv().await.unwrap();
        peer.send(Packet::response_to(&sel, Status::UnknownCommand))
            .await;
        vbucket_stat(&mut peer, Some(&[0, 3])).await;
        let _connect = peer.recv().await.unwrap();
        for i in 0..3u32 {
            let mut m = mutation(3, &format!("k{i}"), "v", 1, true, i);
            if i == 2 {
                m.tap_flags |= message_flags::ACK;
            }
            send_tap(&mut peer, &m).await;
        }
        // No ack may come: the connection closes without one.
        let mut acks = 0;
        while let Some(p) = peer.recv().await {
            if p.magic == pump_protocol::Magic::Response && p.opcode == Opcode::TapMutation {
                acks += 1;
            }
        }
        acks
    });
    let options = Options::default();
    let sink = Collect {
        fail_keys: vec!["k1"],
        ..Collect::default()
    };
    let e = run(open(&format!("tap://{addr}"), &options), sink, options)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(producer.await.unwrap(), 0, "the ack was withheld");
    assert!(e.contains("k1") && e.contains("ack is withheld"), "{e}");
}

#[tokio::test]
async fn a_node_whose_vbuckets_are_all_dead_fails_before_the_dump() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        peer.hello().await;
        let sel = peer.recv().await.unwrap();
        peer.send(Packet::response_to(&sel, Status::UnknownCommand))
            .await;
        // Every vbucket dead (a TAP takeover marked them so): the stat lists none.
        vbucket_stat(&mut peer, Some(&[])).await;
        assert!(peer.recv().await.is_none(), "a TAP_CONNECT was sent");
    });
    let options = Options::default();
    let e = run(
        open(&format!("tap://{addr}"), &options),
        Collect::default(),
        options,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&addr) && e.contains("no vbucket is active on this node"),
        "{e}"
    );
    producer.await.unwrap();
}
