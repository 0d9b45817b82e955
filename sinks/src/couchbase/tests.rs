use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pump::{Message, Options, SinkKind, Spec};
use pump_client::testing::{bucket_json, FakeRest};
use pump_protocol::{Opcode, Packet, PacketCodec, Status};
use tokio_util::codec::Framed;

use super::CouchbaseSinkKind;
use crate::testutil::{listen, run, Feed, Peer};

// One connection per node (`-t 1`) keeps each node's log in send order.

/// (opcode, vbucket, key, extras) of every write a fake node received.
type Log = Arc<Mutex<Vec<(Opcode, u16, String, Vec<u8>)>>>;

/// A fake KV node: answers NOT_MY_VBUCKET for `not_mine` (after switching the REST map to
/// `new_map`), ETMPFAIL once for the key "tmp", E2BIG for "big", NOOPs at once.
fn fake_node(
    l: tokio::net::TcpListener,
    log: Log,
    not_mine: HashSet<u16>,
    rest: FakeRest,
    new_map: serde_json::Value,
) {
    let tmp_failed = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (log, not_mine, rest, new_map, tmp_failed) = (
                log.clone(),
                not_mine.clone(),
                rest.clone(),
                new_map.clone(),
                tmp_failed.clone(),
            );
            tokio::spawn(async move {
                let mut peer = Peer(Framed::new(s, PacketCodec::default()));
                while let Some(p) = peer.recv().await {
                    let key = String::from_utf8(p.key.to_vec()).unwrap();
                    let status = match p.opcode {
                        Opcode::SelectBucket => {
                            assert_eq!(key, "dest");
                            Some(Status::Success)
                        }
                        // A node that predates HELLO's features: agrees to none.
                        Opcode::Hello => Some(Status::Success),
                        Opcode::Noop => Some(Status::Success),
                        _ => {
                            log.lock().unwrap().push((
                                p.opcode,
                                p.vbucket(),
                                key.clone(),
                                p.extras.to_vec(),
                            ));
                            if not_mine.contains(&p.vbucket()) {
                                rest.set(new_map.clone());
                                Some(Status::NotMyVbucket)
                            } else if key == "tmp" && !tmp_failed.swap(true, Ordering::SeqCst) {
                                Some(Status::Etmpfail)
                            } else if key == "big" {
                                Some(Status::E2big)
                            } else {
                                None
                            }
                        }
                    };
                    if let Some(s) = status {
                        peer.send(Packet::response_to(&p, s)).await;
                    }
                }
            });
        }
    });
}

fn msg(vb: u16, key: &str) -> Message {
    Message {
        vbucket: vb,
        flags: 0xabcd,
        expiry: 9,
        ..Message::mutation(key.to_string(), "v")
    }
}

#[tokio::test]
async fn messages_go_to_the_node_owning_their_vbucket_and_not_my_vbucket_reroutes_with_a_fresh_map()
{
    let (l0, a0) = listen().await;
    let (l1, a1) = listen().await;
    let old = bucket_json(&[&a0, &a1], &[vec![0], vec![1], vec![0], vec![1]]);
    let new = bucket_json(&[&a0, &a1], &[vec![0], vec![1], vec![1], vec![1]]);
    let rest = FakeRest::start(old).await;
    let (log0, log1): (Log, Log) = Default::default();
    fake_node(
        l0,
        log0.clone(),
        HashSet::from([2]),
        rest.clone(),
        new.clone(),
    );
    fake_node(l1, log1.clone(), HashSet::new(), rest.clone(), new);
    let mut o = Options {
        dest_bucket: Some("dest".into()),
        threads: 1,
        ..Options::default()
    };
    o.extra.max_retry = 3;
    let sink = CouchbaseSinkKind
        .open(
            &Spec::parse(&format!("couchbase://{}", rest.addr)).unwrap(),
            &o,
        )
        .unwrap();
    let feed = Feed {
        batches: vec![
            vec![msg(0, "a"), msg(1, "b"), msg(2, "moved"), msg(3, "tmp")],
            vec![
                Message {
                    vbucket: 0,
                    ..Message::deletion("gone")
                },
                msg(1, "big"),
            ],
        ],
        on_confirmed: None,
    };
    let summary = run(feed, sink, o).await.unwrap();
    assert_eq!(summary.counts.items_written, 5);
    assert_eq!(summary.failures.len(), 1);
    assert_eq!(&summary.failures[0].key[..], b"big");
    assert!(
        summary.failures[0].reason.contains("E2BIG"),
        "{:?}",
        summary.failures
    );
    assert!(summary.counts.retries >= 2);

    let log0 = log0.lock().unwrap().clone();
    let log1 = log1.lock().unwrap().clone();
    let keys = |log: &[(Opcode, u16, String, Vec<u8>)]| {
        log.iter().map(|e| (e.1, e.2.clone())).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&log0),
        vec![(0, "a".into()), (2, "moved".into()), (0, "gone".into())]
    );
    let k1 = keys(&log1);
    assert!(
        k1.contains(&(2, "moved".into())),
        "rerouted to node 1: {k1:?}"
    );
    assert_eq!(
        k1.iter().filter(|k| k.1 == "tmp").count(),
        2,
        "tmp resent once"
    );
    assert_eq!(log0[0].0, Opcode::SetQ);
    assert_eq!(log0[0].3, [0, 0, 0xab, 0xcd, 0, 0, 0, 9]);
    assert_eq!(log0[2].0, Opcode::DeleteQ);
    assert!(rest.hits().len() >= 2, "the map was fetched again");
}

#[tokio::test]
async fn with_rehash_vbuckets_are_recomputed_for_the_destination_vbucket_count() {
    let (l0, a0) = listen().await;
    let rest = FakeRest::start(bucket_json(&[&a0], &vec![vec![0]; 64])).await;
    let log: Log = Default::default();
    fake_node(
        l0,
        log.clone(),
        HashSet::new(),
        rest.clone(),
        serde_json::Value::Null,
    );
    let mut o = Options {
        dest_bucket: Some("dest".into()),
        threads: 2,
        ..Options::default()
    };
    o.extra.rehash = true;
    let sink = CouchbaseSinkKind
        .open(
            &Spec::parse(&format!("couchbase://{}", rest.addr)).unwrap(),
            &o,
        )
        .unwrap();
    // Source vbucket ids from a 1024-vbucket cluster; the destination has 64.
    let keys = ["hello", "foo", "a", "b", "c"];
    let feed = Feed {
        batches: vec![keys
            .iter()
            .map(|k| msg(pump_protocol::vbucket_of(k.as_bytes(), 1024), k))
            .collect()],
        on_confirmed: None,
    };
    let summary = run(feed, sink, o).await.unwrap();
    assert_eq!(summary.counts.items_written, 5);
    let log = log.lock().unwrap().clone();
    for k in keys {
        let (_, vb, _, _) = log.iter().find(|e| e.2 == k).unwrap();
        assert_eq!(*vb, pump_protocol::vbucket_of(k.as_bytes(), 64), "{k}");
    }
    assert_eq!(log.iter().find(|e| e.2 == "hello").unwrap().1, 16);
}
