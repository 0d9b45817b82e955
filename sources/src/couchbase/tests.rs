use pump::{Options, SourceKind, Spec};
use pump_client::testing::{bucket_json, FakeRest};

use super::CouchbaseSourceKind;
use crate::dcp::tests::{accept_stream, end, handshake, marker, mutation};
use crate::testutil::{listen, run, run_watching_source_done, Collect, Peer};

/// A fake DCP node that serves its vbuckets (one item each) and returns which it was asked.
fn fake_node(l: tokio::net::TcpListener, vbs: Vec<u16>) -> tokio::task::JoinHandle<Vec<u16>> {
    tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let highs: Vec<(u16, u64)> = vbs.iter().map(|vb| (*vb, 1)).collect();
        let h = handshake(&mut peer, &highs, vbs.len()).await;
        for r in &h.requests {
            accept_stream(&mut peer, r, 1).await;
            peer.send(marker(r, 1, 1).to_packet()).await;
            peer.send(mutation(r, 1).to_packet()).await;
            peer.send(end(r).to_packet()).await;
        }
        while peer.recv().await.is_some() {}
        h.requests.iter().map(|r| r.vbucket).collect()
    })
}

#[tokio::test]
async fn every_vbucket_streams_from_its_active_node_nodes_in_parallel() {
    let (l0, a0) = listen().await;
    let (l1, a1) = listen().await;
    let rest = FakeRest::start(bucket_json(
        &[&a0, &a1],
        &[vec![0, 1], vec![1, 0], vec![0, -1], vec![1, -1]],
    ))
    .await;
    let n0 = fake_node(l0, vec![0, 2]);
    let n1 = fake_node(l1, vec![1, 3]);
    let o = Options {
        threads: 1,
        ..Options::default()
    };
    let src = CouchbaseSourceKind
        .open(
            &Spec::parse(&format!("couchbase://{}", rest.addr)).unwrap(),
            &o,
        )
        .unwrap();
    let sink = Collect::default();
    run(src, sink.clone(), o).await.unwrap();
    assert_eq!(n0.await.unwrap(), vec![0, 2]);
    assert_eq!(n1.await.unwrap(), vec![1, 3]);
    let mut vbs: Vec<u16> = sink.messages().iter().map(|m| m.vbucket).collect();
    vbs.sort();
    assert_eq!(vbs, vec![0, 1, 2, 3]);
    assert_eq!(
        rest.hits()[0],
        "GET /pools/default/buckets/default HTTP/1.1"
    );
}

#[tokio::test]
async fn a_vbucket_without_an_active_node_fails_before_streaming() {
    let rest = FakeRest::start(bucket_json(&["127.0.0.1:1"], &[vec![0], vec![-1]])).await;
    let o = Options::default();
    let src = CouchbaseSourceKind
        .open(&Spec::parse(&format!("http://{}", rest.addr)).unwrap(), &o)
        .unwrap();
    let e = run(src, Collect::default(), o)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no active node") && e.contains("[1]"), "{e}");
}

/// A cluster's source has read everything once every node's streams are read: source_done
/// comes while the sink still holds the batches (each waits 300 ms before it is confirmed).
#[tokio::test]
async fn the_cluster_source_is_done_reading_once_every_node_is_before_the_sink_confirms() {
    let (l0, a0) = listen().await;
    let (l1, a1) = listen().await;
    let rest = FakeRest::start(bucket_json(&[&a0, &a1], &[vec![0, 1], vec![1, 0]])).await;
    let n0 = fake_node(l0, vec![0]);
    let n1 = fake_node(l1, vec![1]);
    let o = Options {
        threads: 1,
        ..Options::default()
    };
    let src = CouchbaseSourceKind
        .open(
            &Spec::parse(&format!("couchbase://{}", rest.addr)).unwrap(),
            &o,
        )
        .unwrap();
    let sink = Collect::delayed(std::time::Duration::from_millis(300));
    let (summary, confirmed_then) = run_watching_source_done(src, sink, o).await;
    assert_eq!((n0.await.unwrap(), n1.await.unwrap()), (vec![0], vec![1]));
    assert_eq!(summary.counts.items_written, 2);
    assert!(
        confirmed_then < 2,
        "source_done came before the sink confirmed both nodes' batches"
    );
}
