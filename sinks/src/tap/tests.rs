use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pump::{Message, Options, SinkKind, Spec};
use pump_protocol::tap::{message_flags, TapKind, TapMessage};
use pump_protocol::{Opcode, Packet, Status};

use super::TapSinkKind;
use crate::testutil::{listen, run, Feed, Peer};

fn messages() -> Vec<Message> {
    vec![
        Message {
            vbucket: 12,
            flags: 0x0102_0304,
            expiry: 60,
            ..Message::mutation("a", "one")
        },
        Message {
            vbucket: 12,
            ..Message::deletion("b")
        },
        Message {
            vbucket: 13,
            ..Message::mutation("c", "three")
        },
    ]
}

/// A TAP consumer that checks each message, acks ACK-flagged ones after `delay` (counting
/// them first) and answers `first_status` to the first ack.
fn consumer(
    l: tokio::net::TcpListener,
    acked: Arc<AtomicUsize>,
    delay: Duration,
    first_status: Status,
) -> tokio::task::JoinHandle<Vec<TapMessage>> {
    tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        peer.hello().await;
        let sel = peer.recv().await.unwrap();
        assert_eq!(sel.opcode, Opcode::SelectBucket);
        peer.send(Packet::response_to(&sel, Status::UnknownCommand))
            .await;
        let mut seen = Vec::new();
        let mut status = first_status;
        while let Some(p) = peer.recv().await {
            // A TAP_CONNECT would turn the destination into a producer.
            assert_ne!(
                p.opcode,
                Opcode::TapConnect,
                "a TAP sink sends no TAP_CONNECT"
            );
            let m = TapMessage::from_packet(&p).unwrap();
            assert!(m.tap_flags & message_flags::NETWORK_BYTE_ORDER != 0);
            if m.wants_ack() {
                tokio::time::sleep(delay).await;
                acked.fetch_add(1, Ordering::SeqCst);
                peer.send(m.ack_reply().with_status(status)).await;
                status = Status::Success;
            }
            seen.push(m);
        }
        seen
    })
}

#[tokio::test]
async fn the_batch_is_confirmed_only_once_every_ack_arrived_and_flags_go_in_network_order() {
    let (l, addr) = listen().await;
    let acked = Arc::new(AtomicUsize::new(0));
    let fake = consumer(
        l,
        acked.clone(),
        Duration::from_millis(100),
        Status::Success,
    );
    let seen_acks = acked.clone();
    let source = Feed {
        batches: vec![messages()],
        on_confirmed: Some(Arc::new(move || {
            assert_eq!(
                seen_acks.load(Ordering::SeqCst),
                3,
                "confirmed before the acks"
            )
        })),
    };
    let o = Options::default();
    let sink = TapSinkKind
        .open(&Spec::parse(&format!("tap://{addr}")).unwrap(), &o)
        .unwrap();
    let summary = run(source, sink, o).await.unwrap();
    assert_eq!(summary.counts.items_written, 3);
    let seen = fake.await.unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].kind(), TapKind::Mutation);
    assert_eq!(seen[0].fixed_item_flags(), 0x0102_0304);
    assert_eq!(seen[0].item_flags, 0x0102_0304, "network order on the wire");
    assert_eq!((seen[0].item_expiry, seen[0].vbucket), (60, 12));
    assert_eq!(seen[0].value, Bytes::from_static(b"one"));
    assert_eq!(seen[1].kind(), TapKind::Delete);
    assert!(seen.iter().all(|m| m.wants_ack()));
}

#[tokio::test]
async fn with_ack_every_n_only_every_nth_and_the_last_ask_and_a_tmpfail_is_resent() {
    let (l, addr) = listen().await;
    let acked = Arc::new(AtomicUsize::new(0));
    let fake = consumer(l, acked, Duration::ZERO, Status::Etmpfail);
    let mut o = Options::default();
    o.extra.set("tap_ack_every", "2");
    let sink = TapSinkKind
        .open(&Spec::parse(&format!("tap://{addr}")).unwrap(), &o)
        .unwrap();
    let source = Feed {
        batches: vec![messages()],
        on_confirmed: None,
    };
    let summary = run(source, sink, o).await.unwrap();
    let seen = fake.await.unwrap();
    // Round 1: a, b (ACK, refused TMPFAIL), c (ACK, last). Round 2: b alone (ACK, last).
    let flags: Vec<(String, bool)> = seen
        .iter()
        .map(|m| (String::from_utf8(m.key.to_vec()).unwrap(), m.wants_ack()))
        .collect();
    assert_eq!(
        flags,
        vec![
            ("a".into(), false),
            ("b".into(), true),
            ("c".into(), true),
            ("b".into(), true)
        ]
    );
    assert_eq!(summary.counts.items_written, 3);
    assert_eq!(summary.counts.retries, 1);
}
