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
/// `new_map`, or with `in_body` carrying `new_map` in the answer as Server 5+ does),
/// ETMPFAIL once for the key "tmp", E2BIG for "big", NOOPs at once.
fn fake_node(
    l: tokio::net::TcpListener,
    log: Log,
    not_mine: HashSet<u16>,
    rest: FakeRest,
    new_map: serde_json::Value,
    in_body: bool,
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
                                if !in_body {
                                    rest.set(new_map.clone());
                                }
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
                        let mut answer = Packet::response_to(&p, s);
                        if s == Status::NotMyVbucket && in_body {
                            answer = answer.with_value(new_map.to_string().into_bytes());
                        }
                        peer.send(answer).await;
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
        false,
    );
    fake_node(l1, log1.clone(), HashSet::new(), rest.clone(), new, false);
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
        false,
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

#[tokio::test]
async fn a_not_my_vbucket_answer_carrying_a_newer_map_reroutes_without_asking_rest() {
    let (l0, a0) = listen().await;
    let (l1, a1) = listen().await;
    let old = bucket_json(&[&a0, &a1], &[vec![0], vec![1], vec![0], vec![1]]);
    // The config a node puts in the answer: a newer rev, vbucket 2 moved to node 1, and node
    // 1 named by $HOST (the host the answering node was reached at).
    let mut new = bucket_json(
        &[
            "$HOST:".to_string() + a0.rsplit_once(':').unwrap().1,
            "$HOST:".to_string() + a1.rsplit_once(':').unwrap().1,
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        &[vec![0], vec![1], vec![1], vec![1]],
    );
    new["rev"] = serde_json::json!(7);
    // REST keeps answering the old map: only the answer's body can move vbucket 2.
    let rest = FakeRest::start(old).await;
    let (log0, log1): (Log, Log) = Default::default();
    fake_node(
        l0,
        log0.clone(),
        HashSet::from([2]),
        rest.clone(),
        new.clone(),
        true,
    );
    fake_node(l1, log1.clone(), HashSet::new(), rest.clone(), new, true);
    let o = Options {
        dest_bucket: Some("dest".into()),
        threads: 1,
        ..Options::default()
    };
    let sink = CouchbaseSinkKind
        .open(
            &Spec::parse(&format!("couchbase://{}", rest.addr)).unwrap(),
            &o,
        )
        .unwrap();
    let feed = Feed {
        batches: vec![vec![msg(2, "moved"), msg(0, "a"), msg(2, "after")]],
        on_confirmed: None,
    };
    let summary = run(feed, sink, o).await.unwrap();
    assert_eq!(summary.counts.items_written, 3);
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let on1: Vec<String> = log1.lock().unwrap().iter().map(|e| e.2.clone()).collect();
    assert_eq!(
        on1,
        vec!["moved".to_string(), "after".to_string()],
        "in order on node 1"
    );
    assert_eq!(
        rest.hits().len(),
        1,
        "the map was fetched once, at the start"
    );
}
