use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pump::{Op, Options, SourceKind, Spec, VbucketSet};
use pump_protocol::dcp::{
    DcpItem, DcpMessage, FailoverEntry, StreamEndReason, StreamReqReply, StreamRequest,
};
use pump_protocol::{Magic, Opcode, Packet, Status};

use super::checkpoint::{CheckpointFile, VbPosition};
use super::DcpSourceKind;
use crate::testutil::{listen, run, run_watching_source_done, Collect, Peer};

/// What the fake producer learnt during the handshake.
pub(crate) struct Handshake {
    /// The HELLO: user agent and the features asked for.
    pub hello: Option<(String, Vec<pump_protocol::Feature>)>,
    pub controls: Vec<(String, String)>,
    pub requests: Vec<StreamRequest>,
    /// The STAT groups asked, in order.
    pub stats: Vec<String>,
}

/// Plays a producer's handshake: no SELECT_BUCKET, STAT vbucket-seqno from `highs`, OPEN and
/// CONTROL accepted; returns once `streams` STREAM_REQs arrived.
pub(crate) async fn handshake(peer: &mut Peer, highs: &[(u16, u64)], streams: usize) -> Handshake {
    handshake_with(peer, highs, streams, true).await
}

/// [`handshake`]; `per_vbucket` false: a node that knows only the whole bucket's STAT
/// vbucket-seqno (KEY_ENOENT for `vbucket-seqno N`).
pub(crate) async fn handshake_with(
    peer: &mut Peer,
    highs: &[(u16, u64)],
    streams: usize,
    per_vbucket: bool,
) -> Handshake {
    let mut h = Handshake {
        hello: None,
        controls: Vec::new(),
        requests: Vec::new(),
        stats: Vec::new(),
    };
    while h.requests.len() < streams {
        let p = peer.recv().await.expect("a request");
        match p.opcode {
            Opcode::Hello => {
                // A producer that predates HELLO's features: agrees to none.
                h.hello = Some((
                    String::from_utf8(p.key.to_vec()).unwrap(),
                    pump_protocol::hello::decode_features(&p.value).unwrap(),
                ));
                peer.send(Packet::response_to(&p, Status::Success)).await
            }
            Opcode::SelectBucket => {
                peer.send(Packet::response_to(&p, Status::UnknownCommand))
                    .await
            }
            Opcode::Stat => {
                // The whole bucket's, or one vbucket's (`vbucket-seqno N`).
                let key = String::from_utf8(p.key.to_vec()).unwrap();
                let only: Option<u16> = match key.strip_prefix("vbucket-seqno") {
                    Some("") => None,
                    Some(n) => Some(n.trim().parse().expect("a vbucket id")),
                    None => panic!("unexpected STAT {key:?}"),
                };
                h.stats.push(key);
                if only.is_some() && !per_vbucket {
                    peer.send(Packet::response_to(&p, Status::KeyEnoent)).await;
                    continue;
                }
                for (vb, high) in highs.iter().filter(|(vb, _)| only.is_none_or(|o| o == *vb)) {
                    for (k, v) in [("high_seqno", high.to_string()), ("uuid", "1".into())] {
                        peer.send(
                            Packet::response_to(&p, Status::Success)
                                .with_key(format!("vb_{vb}:{k}"))
                                .with_value(v),
                        )
                        .await;
                    }
                }
                peer.send(Packet::response_to(&p, Status::Success)).await;
            }
            Opcode::DcpOpen => {
                let DcpMessage::Open { flags, .. } = DcpMessage::from_packet(&p).unwrap() else {
                    unreachable!()
                };
                assert_eq!(flags, pump_protocol::dcp::open_flags::PRODUCER);
                peer.send(Packet::response_to(&p, Status::Success)).await
            }
            Opcode::DcpControl => {
                h.controls.push((
                    String::from_utf8(p.key.to_vec()).unwrap(),
                    String::from_utf8(p.value.to_vec()).unwrap(),
                ));
                peer.send(Packet::response_to(&p, Status::Success)).await
            }
            Opcode::DcpStreamReq => {
                let DcpMessage::StreamReq(r) = DcpMessage::from_packet(&p).unwrap() else {
                    unreachable!()
                };
                h.requests.push(r);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    h
}

pub(crate) async fn accept_stream(peer: &mut Peer, r: &StreamRequest, uuid: u64) {
    peer.send(StreamReqReply::Ok(vec![FailoverEntry { uuid, seqno: 0 }]).to_packet(r.opaque))
        .await;
}

pub(crate) fn mutation(r: &StreamRequest, seqno: u64) -> DcpMessage {
    DcpMessage::Mutation(DcpItem {
        vbucket: r.vbucket,
        opaque: r.opaque,
        cas: 1000 + seqno,
        by_seqno: seqno,
        rev_seqno: 1,
        flags: 0xdead_beef,
        expiration: 5,
        key: Bytes::from(format!("k{}_{seqno}", r.vbucket)),
        value: Bytes::from_static(b"value"),
        ..DcpItem::default()
    })
}

pub(crate) fn marker(r: &StreamRequest, start: u64, end: u64) -> DcpMessage {
    DcpMessage::SnapshotMarker {
        opaque: r.opaque,
        vbucket: r.vbucket,
        start,
        end,
        kind: 1,
    }
}

pub(crate) fn end(r: &StreamRequest) -> DcpMessage {
    DcpMessage::StreamEnd {
        opaque: r.opaque,
        vbucket: r.vbucket,
        reason: StreamEndReason::Ok,
    }
}

fn options(vbs: &str, ckpt: Option<&std::path::Path>) -> Options {
    let mut o = Options {
        vbuckets: Some(VbucketSet::parse(vbs).unwrap()),
        threads: 1,
        ..Options::default()
    };
    if let Some(p) = ckpt {
        o.extra.set("checkpoint", p.to_str().unwrap());
    }
    o
}

fn open(addr: &str, o: &Options) -> Box<dyn pump::Source> {
    DcpSourceKind
        .open(&Spec::parse(&format!("dcp://{addr}")).unwrap(), o)
        .unwrap()
}

#[tokio::test]
async fn buffer_acks_cover_only_confirmed_bytes_noops_are_answered_at_once_and_removals_keep_meta()
{
    let (l, addr) = listen().await;
    let sink = Collect::delayed(Duration::from_millis(300));
    let watch = sink.clone();
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 5)], 1).await;
        // HELLO first, naming the pump and asking for the datatypes as stored.
        let (agent, features) = h.hello.clone().expect("a HELLO");
        assert_eq!(agent, format!("pump/{}", env!("CARGO_PKG_VERSION")));
        for f in [
            pump_protocol::Feature::Snappy,
            pump_protocol::Feature::Xattr,
            pump_protocol::Feature::Json,
            pump_protocol::Feature::Xerror,
        ] {
            assert!(features.contains(&f), "{f:?} asked for");
        }
        assert!(h
            .controls
            .contains(&("connection_buffer_size".into(), "4000000".into())));
        assert!(h.controls.contains(&("enable_noop".into(), "true".into())));
        assert!(h.controls.iter().any(|(k, _)| k == "set_noop_interval"));
        let r = h.requests[0];
        assert_eq!((r.start, r.end, r.vbucket_uuid), (0, 5, 0));
        accept_stream(&mut peer, &r, 99).await;
        let mut frames = vec![marker(&r, 1, 5), mutation(&r, 1), mutation(&r, 2)];
        let mut with_meta = mutation(&r, 3);
        if let DcpMessage::Mutation(i) = &mut with_meta {
            i.meta = Bytes::from_static(b"mm");
        }
        frames.push(with_meta);
        let removal = |seqno: u64| DcpItem {
            vbucket: 0,
            opaque: r.opaque,
            cas: 7,
            by_seqno: seqno,
            rev_seqno: 9,
            key: Bytes::from(format!("gone{seqno}")),
            meta: Bytes::from_static(b"xy"),
            ..DcpItem::default()
        };
        frames.push(DcpMessage::Deletion(removal(4)));
        frames.push(DcpMessage::Expiration(removal(5)));
        frames.push(end(&r));
        // Where each item's bytes end, to know how many items a BUFFER_ACK covers.
        let mut total = 0u64;
        let mut item_ends = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            peer.send(f.to_packet()).await;
            total += f.wire_len() as u64;
            if matches!(
                f,
                DcpMessage::Mutation(_) | DcpMessage::Deletion(_) | DcpMessage::Expiration(_)
            ) {
                item_ends.push(total);
            }
            if i == 2 {
                peer.send(DcpMessage::Noop { opaque: 4242 }.to_packet())
                    .await;
            }
        }
        let mut acked = 0u64;
        let mut noop_answered = false;
        while let Some(p) = peer.recv().await {
            if p.magic == Magic::Response && p.opcode == Opcode::DcpNoop {
                assert_eq!(p.opaque, 4242);
                assert_eq!(acked, 0, "the NOOP waited for the sink");
                noop_answered = true;
                continue;
            }
            let DcpMessage::BufferAck { bytes, .. } = DcpMessage::from_packet(&p).unwrap() else {
                panic!("unexpected {p:?}")
            };
            acked += u64::from(bytes);
            let covered = item_ends.iter().filter(|e| **e <= acked).count();
            assert!(
                watch.confirmed() >= covered,
                "BUFFER_ACK for {acked} bytes ({covered} items) but the sink confirmed {}",
                watch.confirmed()
            );
        }
        assert!(noop_answered);
        assert_eq!(acked, total, "BUFFER_ACKs add up to every non-NOOP byte");
    });
    let o = options("0", None);
    let summary = run(open(&addr, &o), sink.clone(), o).await.unwrap();
    producer.await.unwrap();
    assert_eq!(summary.counts.items_written, 5);
    let m = sink.messages();
    assert_eq!(m[0].flags, 0xdead_beef);
    assert_eq!((m[0].seqno, m[0].cas, m[0].expiry), (1, 1001, 5));
    assert_eq!(&m[2].meta[..], b"mm");
    assert_eq!(&m[2].value[..], b"value");
    assert_eq!(m[3].op, Op::Deletion);
    assert_eq!(m[4].op, Op::Expiration);
    assert_eq!((m[4].seqno, m[4].rev_seqno, m[4].cas), (5, 9, 7));
    assert_eq!(&m[4].meta[..], b"xy");
}

#[tokio::test]
async fn a_rollback_restarts_the_vbucket_from_the_seqno_the_node_gives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.json");
    let mut c = CheckpointFile::load(&path).unwrap();
    c.set(
        0,
        VbPosition {
            uuid: 77,
            seqno: 10,
            snap_start: 10,
            snap_end: 10,
        },
    );
    c.save().unwrap();
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 8)], 1).await;
        let r = h.requests[0];
        assert_eq!(
            (r.start, r.end, r.vbucket_uuid, r.snap_start, r.snap_end),
            (10, 10, 77, 10, 10)
        );
        peer.send(StreamReqReply::Rollback(5).to_packet(r.opaque))
            .await;
        let DcpMessage::StreamReq(r2) =
            DcpMessage::from_packet(&peer.recv().await.unwrap()).unwrap()
        else {
            panic!("expected a second STREAM_REQ")
        };
        assert_eq!(
            (
                r2.vbucket,
                r2.start,
                r2.end,
                r2.vbucket_uuid,
                r2.snap_start,
                r2.snap_end
            ),
            (0, 5, 8, 77, 5, 5)
        );
        accept_stream(&mut peer, &r2, 77).await;
        peer.send(marker(&r2, 6, 8).to_packet()).await;
        for s in 6..=8 {
            peer.send(mutation(&r2, s).to_packet()).await;
        }
        peer.send(end(&r2).to_packet()).await;
        while peer.recv().await.is_some() {}
    });
    // The saved seqno 10 is above the node's high seqno 8 here, which only a rollback
    // explains: the source must still ask (with end = start), and the node answers ROLLBACK.
    let o = options("0", Some(&path));
    let sink = Collect::default();
    run(open(&addr, &o), sink.clone(), o)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    producer.await.unwrap();
    assert_eq!(
        sink.messages().iter().map(|m| m.seqno).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    let c = CheckpointFile::load(&path).unwrap();
    assert_eq!(
        c.position(0),
        VbPosition {
            uuid: 77,
            seqno: 8,
            snap_start: 8,
            snap_end: 8
        }
    );
}

#[tokio::test]
async fn a_rerun_resumes_from_the_checkpoint_file_with_its_uuid_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.json");
    // First run: vbuckets 0 (3 items) and 1 (2 items).
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 3), (1, 2)], 2).await;
        // Two vbuckets: their seqnos alone, not the whole bucket's.
        assert_eq!(h.stats, ["vbucket-seqno 0", "vbucket-seqno 1"]);
        for r in &h.requests {
            assert_eq!((r.start, r.vbucket_uuid), (0, 0));
            accept_stream(&mut peer, r, 500 + u64::from(r.vbucket)).await;
            let n = if r.vbucket == 0 { 3 } else { 2 };
            peer.send(marker(r, 1, n).to_packet()).await;
            for s in 1..=n {
                peer.send(mutation(r, s).to_packet()).await;
            }
            peer.send(end(r).to_packet()).await;
        }
        while peer.recv().await.is_some() {}
    });
    let o = options("0-1", Some(&path));
    run(open(&addr, &o), Collect::default(), o).await.unwrap();
    producer.await.unwrap();
    let c = CheckpointFile::load(&path).unwrap();
    assert_eq!(
        c.position(0),
        VbPosition {
            uuid: 500,
            seqno: 3,
            snap_start: 3,
            snap_end: 3
        }
    );
    assert_eq!(c.position(1).seqno, 2);

    // Second run: vbucket 0 grew to 5; vbucket 1 is done and is not asked again.
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 5), (1, 2)], 1).await;
        let r = h.requests[0];
        assert_eq!(
            (
                r.vbucket,
                r.start,
                r.end,
                r.vbucket_uuid,
                r.snap_start,
                r.snap_end
            ),
            (0, 3, 5, 500, 3, 3)
        );
        accept_stream(&mut peer, &r, 500).await;
        peer.send(marker(&r, 4, 5).to_packet()).await;
        for s in 4..=5 {
            peer.send(mutation(&r, s).to_packet()).await;
        }
        peer.send(end(&r).to_packet()).await;
        while let Some(p) = peer.recv().await {
            assert_ne!(p.opcode, Opcode::DcpStreamReq, "vbucket 1 was asked again");
        }
    });
    let o = options("0-1", Some(&path));
    let sink = Collect::default();
    run(open(&addr, &o), sink.clone(), o).await.unwrap();
    producer.await.unwrap();
    assert_eq!(
        sink.messages().iter().map(|m| m.seqno).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(CheckpointFile::load(&path).unwrap().position(0).seqno, 5);
}

#[tokio::test]
async fn a_node_that_dies_mid_stream_fails_naming_it_and_keeps_what_was_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.json");
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(3, 10)], 1).await;
        let r = h.requests[0];
        accept_stream(&mut peer, &r, 31).await;
        peer.send(marker(&r, 1, 10).to_packet()).await;
        for s in 1..=2 {
            peer.send(mutation(&r, s).to_packet()).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The node dies: the connection drops with the stream open.
    });
    let o = options("3", Some(&path));
    let sink = Collect::default();
    let e = run(open(&addr, &o), sink.clone(), o)
        .await
        .unwrap_err()
        .to_string();
    producer.await.unwrap();
    assert!(e.contains(&addr) && e.contains("closed"), "{e}");
    assert_eq!(sink.messages().len(), 2);
    let p = CheckpointFile::load(&path).unwrap().position(3);
    assert_eq!((p.uuid, p.seqno, p.snap_start, p.snap_end), (31, 2, 1, 10));
}

#[tokio::test]
async fn noops_are_answered_even_while_the_sink_holds_the_channel_full() {
    let (l, addr) = listen().await;
    let hold = Arc::new(tokio::sync::Notify::new());
    let sink = Collect {
        hold: Some(hold.clone()),
        ..Collect::default()
    };
    let watch = sink.clone();
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 12)], 1).await;
        let r = h.requests[0];
        accept_stream(&mut peer, &r, 1).await;
        peer.send(marker(&r, 1, 12).to_packet()).await;
        for s in 1..=12 {
            peer.send(mutation(&r, s).to_packet()).await;
        }
        // One item per batch and a sink that takes nothing yet: the channel (8 batches with
        // -t 1) is full and the source waits to hand over the 9th.
        peer.send(DcpMessage::Noop { opaque: 77 }.to_packet()).await;
        loop {
            let p = peer.recv().await.expect("the NOOP reply");
            if p.opcode == Opcode::DcpNoop {
                assert_eq!(p.opaque, 77);
                break;
            }
        }
        assert_eq!(watch.confirmed(), 0);
        hold.notify_one();
        peer.send(end(&r).to_packet()).await;
        while peer.recv().await.is_some() {}
    });
    let mut o = options("0", None);
    o.extra.batch_max_size = 1;
    run(open(&addr, &o), sink.clone(), o).await.unwrap();
    producer.await.unwrap();
    assert_eq!(sink.messages().len(), 12);
}

#[tokio::test]
async fn a_node_without_the_one_vbucket_stat_is_asked_for_the_whole_buckets() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake_with(&mut peer, &[(0, 2), (7, 9)], 1, false).await;
        assert_eq!(h.stats, ["vbucket-seqno 0", "vbucket-seqno"]);
        let r = h.requests[0];
        assert_eq!((r.vbucket, r.end), (0, 2));
        accept_stream(&mut peer, &r, 1).await;
        peer.send(marker(&r, 1, 2).to_packet()).await;
        for s in 1..=2 {
            peer.send(mutation(&r, s).to_packet()).await;
        }
        peer.send(end(&r).to_packet()).await;
        while peer.recv().await.is_some() {}
    });
    let o = options("0", None);
    let sink = Collect::default();
    run(open(&addr, &o), sink.clone(), o).await.unwrap();
    producer.await.unwrap();
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn a_silent_node_times_out_with_an_error_naming_it() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 5)], 1).await;
        accept_stream(&mut peer, &h.requests[0], 1).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let mut o = options("0", None);
    o.extra.set("timeout", "1");
    let e = run(open(&addr, &o), Collect::default(), o)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&addr) && e.contains("no answer within 1.0s"),
        "{e}"
    );
    producer.abort();
}

/// A sink that stops settling batches makes the acker fail: the source ends with an error
/// saying the batch was not delivered, not with a panic (the acker's task used to be awaited
/// twice: once by `failed`, again by `finish`).
#[tokio::test]
async fn an_acker_failure_ends_the_stream_with_a_clear_error_not_a_panic() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 40)], 1).await;
        let r = h.requests[0];
        accept_stream(&mut peer, &r, 1).await;
        peer.send(marker(&r, 1, 40).to_packet()).await;
        for s in 1..=40 {
            peer.send(mutation(&r, s).to_packet()).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        while peer.recv().await.is_some() {}
    });
    let mut o = options("0", None);
    o.extra.batch_max_size = 5;
    let sink = Collect {
        reject_from: Some(1),
        ..Collect::default()
    };
    let e = run(open(&addr, &o), sink, o).await.unwrap_err().to_string();
    producer.abort();
    assert!(e.contains("did not deliver"), "{e}");
    assert!(e.contains(&format!("dcp://{addr}")), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// A key the sink cannot write keeps its vbucket's checkpoint behind it (where it stood before
/// the batch holding it) and its bytes out of the BUFFER_ACKs; other vbuckets move on; the
/// key is reported; a rerun asks that vbucket again from where it stood.
#[tokio::test]
async fn a_failed_key_keeps_its_vbucket_checkpoint_behind_it_and_out_of_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.json");
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 6), (1, 3)], 2).await;
        let mut total = 0u64;
        let mut failed_len = 0u64;
        for r in &h.requests {
            accept_stream(&mut peer, r, 700 + u64::from(r.vbucket)).await;
            let n = if r.vbucket == 0 { 6 } else { 3 };
            let m = marker(r, 1, n);
            total += m.wire_len() as u64;
            peer.send(m.to_packet()).await;
            for s in 1..=n {
                let f = mutation(r, s);
                total += f.wire_len() as u64;
                if r.vbucket == 0 && s == 4 {
                    failed_len = f.wire_len() as u64;
                }
                peer.send(f.to_packet()).await;
                // Let each pair go as its own batch.
                if s % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }
            let e = end(r);
            total += e.wire_len() as u64;
            peer.send(e.to_packet()).await;
        }
        let mut acked = 0u64;
        while let Some(p) = peer.recv().await {
            if let Ok(DcpMessage::BufferAck { bytes, .. }) = DcpMessage::from_packet(&p) {
                acked += u64::from(bytes);
            }
        }
        (total, acked, failed_len)
    });
    let mut o = options("0-1", Some(&path));
    o.extra.batch_max_size = 2;
    let sink = Collect {
        fail_keys: vec!["k0_4"],
        ..Collect::default()
    };
    let summary = run(open(&addr, &o), sink, o).await.unwrap();
    let (total, acked, failed_len) = producer.await.unwrap();
    assert_eq!(summary.counts.failed, 1);
    assert_eq!(&summary.failures[0].key[..], b"k0_4");
    assert_eq!(summary.failures[0].seqno, 4);
    assert!(
        acked + failed_len <= total && acked > 0,
        "{acked} bytes credited of {total}; the failed item is {failed_len}"
    );
    let c = CheckpointFile::load(&path).unwrap();
    assert_eq!(
        c.position(0).seqno,
        2,
        "held before the batch of seqnos 3 and 4"
    );
    assert_eq!(c.position(1).seqno, 3);
    // The rerun asks vbucket 0 again from seqno 2, and vbucket 1 not at all.
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 6), (1, 3)], 1).await;
        let r = h.requests[0];
        assert_eq!((r.vbucket, r.start, r.vbucket_uuid), (0, 2, 700));
        accept_stream(&mut peer, &r, 700).await;
        for s in 3..=6 {
            peer.send(mutation(&r, s).to_packet()).await;
        }
        peer.send(end(&r).to_packet()).await;
        while peer.recv().await.is_some() {}
    });
    let o = options("0-1", Some(&path));
    let sink = Collect::default();
    run(open(&addr, &o), sink.clone(), o).await.unwrap();
    producer.await.unwrap();
    assert!(sink.messages().iter().any(|m| &m.key[..] == b"k0_4"));
    assert_eq!(CheckpointFile::load(&path).unwrap().position(0).seqno, 6);
}

#[tokio::test]
async fn a_node_holding_none_of_the_vbuckets_alive_fails_rather_than_streaming_nothing() {
    // Every vbucket dead (a TAP takeover marked them so): STAT vbucket-seqno lists none of
    // them. The run used to end with 0 items and exit 0.
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        // The handshake, until the source closes: no STREAM_REQ may come.
        while let Some(p) = peer.recv().await {
            let answer = match p.opcode {
                Opcode::Stat => {
                    let listed = Packet::response_to(&p, Status::Success)
                        .with_key("vb_9:high_seqno")
                        .with_value("4");
                    peer.send(listed).await;
                    Status::Success
                }
                Opcode::SelectBucket => Status::UnknownCommand,
                Opcode::Hello | Opcode::DcpOpen | Opcode::DcpControl => Status::Success,
                other => panic!("unexpected {other:?}"),
            };
            peer.send(Packet::response_to(&p, answer)).await;
        }
    });
    let o = options("0-3", None);
    let e = run(open(&addr, &o), Collect::default(), o)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&addr) && e.contains("none of the 4 vbuckets asked for is active on this node"),
        "{e}"
    );
    producer.await.unwrap();
}

/// A producer that agrees to COLLECTIONS, answers GET_COLLECTIONS_MANIFEST with `manifest`,
/// and streams vbucket 0 to seqno 2 with these two keys (LEB128-prefixed as sent): what the
/// run ends with, and what reached the sink.
async fn collections_stream(
    manifest: &'static str,
    keys: [&'static [u8]; 2],
) -> (String, Vec<pump::Message>) {
    let (l, addr) = listen().await;
    // Every connection (the streaming one, and the one that reads the manifest again once
    // the streams ended) is served alike.
    let producer = tokio::spawn(async move {
        loop {
            let peer = Peer::accept(&l).await;
            tokio::spawn(serve_collections(peer, manifest, keys));
        }
    });
    let o = options("0", None);
    let sink = Collect::default();
    let result = run(open(&addr, &o), sink.clone(), o).await;
    producer.abort();
    let said = match result {
        Ok(s) => format!("ok: {} items", s.counts.items_written),
        Err(e) => e.to_string(),
    };
    (said, sink.messages())
}

/// One connection of [`collections_stream`]'s producer.
async fn serve_collections(mut peer: Peer, manifest: &'static str, keys: [&'static [u8]; 2]) {
    let mut requests = Vec::new();
    while requests.is_empty() {
        let Some(p) = peer.recv().await else { return };
        match p.opcode {
            Opcode::Hello => {
                let asked = pump_protocol::hello::decode_features(&p.value).unwrap();
                assert!(asked.contains(&pump_protocol::Feature::Collections));
                let agreed =
                    pump_protocol::hello::encode_features([pump_protocol::Feature::Collections]);
                peer.send(Packet::response_to(&p, Status::Success).with_value(agreed))
                    .await;
            }
            Opcode::GetCollectionsManifest => {
                peer.send(Packet::response_to(&p, Status::Success).with_value(manifest))
                    .await;
            }
            Opcode::SelectBucket => {
                peer.send(Packet::response_to(&p, Status::UnknownCommand))
                    .await;
            }
            Opcode::Stat => {
                for (k, v) in [("vb_0:high_seqno", "2"), ("vb_0:uuid", "1")] {
                    peer.send(
                        Packet::response_to(&p, Status::Success)
                            .with_key(k)
                            .with_value(v),
                    )
                    .await;
                }
                peer.send(Packet::response_to(&p, Status::Success)).await;
            }
            Opcode::DcpOpen | Opcode::DcpControl => {
                peer.send(Packet::response_to(&p, Status::Success)).await;
            }
            Opcode::DcpStreamReq => {
                let DcpMessage::StreamReq(r) = DcpMessage::from_packet(&p).unwrap() else {
                    unreachable!()
                };
                requests.push(r);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let r = requests[0];
    accept_stream(&mut peer, &r, 7).await;
    peer.send(marker(&r, 1, 2).to_packet()).await;
    for (s, key) in keys.into_iter().enumerate() {
        let mut m = mutation(&r, s as u64 + 1);
        if let DcpMessage::Mutation(i) = &mut m {
            i.key = Bytes::from_static(key);
        }
        peer.send(m.to_packet()).await;
    }
    peer.send(end(&r).to_packet()).await;
    // Until the source hangs up.
    while peer.recv().await.is_some() {}
}

/// The bucket's manifest: _default, and s1 (id 8) holding c1 (id 9).
const S1_C1: &str = r#"{"uid":"2","scopes":[{"name":"_default","uid":"0","collections":[{"name":"_default","uid":"0"}]},{"name":"s1","uid":"8","collections":[{"name":"c1","uid":"9"}]}]}"#;

#[tokio::test]
async fn a_collection_stream_takes_each_keys_id_into_its_message() {
    let (said, got) = collections_stream(S1_C1, [b"\x09in-c1", b"\x00plain"]).await;
    assert_eq!(said, "ok: 2 items");
    let got: Vec<(u32, &[u8])> = got.iter().map(|m| (m.collection, &m.key[..])).collect();
    assert_eq!(got, [(9, &b"in-c1"[..]), (0, &b"plain"[..])]);
}

#[tokio::test]
async fn a_leb128_prefix_running_past_the_key_stops_the_run_naming_it_and_writes_nothing() {
    // 0x89 0x80: two continuation bytes, and the key ends.
    let (said, n) = collections_stream(S1_C1, [b"\x89\x80", b"\x00plain"]).await;
    assert!(
        said.contains("vbucket 0 seqno 1")
            && said.contains("its LEB128 collection id runs past the end of the key"),
        "{said}"
    );
    assert!(n.is_empty(), "nothing reached the sink: {n:?}");
}

#[tokio::test]
async fn an_unknown_collection_id_in_a_stream_stops_the_run_naming_it_and_writes_nothing() {
    let (said, n) = collections_stream(S1_C1, [b"\x77stray", b"\x00plain"]).await;
    assert!(
        said.contains("vbucket 0 seqno 1")
            && said.contains("collection id 0x77 is not in the bucket's manifest (uid 0x2)"),
        "{said}"
    );
    assert!(n.is_empty(), "nothing reached the sink: {n:?}");
}

#[tokio::test]
async fn a_manifest_that_does_not_parse_stops_the_run_before_any_stream_and_writes_nothing() {
    for manifest in [
        r#"{"uid":"2","scopes":[{"name":"s1""#,
        r#"{"uid":"zz","scopes":[]}"#,
    ] {
        let (said, n) = collections_stream(manifest, [b"\x00a", b"\x00b"]).await;
        assert!(
            said.contains("the bucket's manifest:"),
            "{manifest}: {said}"
        );
        assert!(n.is_empty(), "nothing reached the sink: {n:?}");
    }
}

#[tokio::test]
async fn vbuckets_a_node_calls_not_its_own_in_stat_vbucket_seqno_n_are_not_live() {
    // A short -l asks `STAT vbucket-seqno N` per vbucket; a node holding them dead answers
    // NOT_MY_VBUCKET. They must not count as live (the run ended with 0 items, exit 0), nor
    // send the source to the whole bucket's list.
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let mut asked = Vec::new();
        while let Some(p) = peer.recv().await {
            let answer = match p.opcode {
                Opcode::Stat => {
                    asked.push(String::from_utf8(p.key.to_vec()).unwrap());
                    assert_ne!(&p.key[..], b"vbucket-seqno", "fell back to the whole list");
                    Status::NotMyVbucket
                }
                Opcode::SelectBucket => Status::UnknownCommand,
                Opcode::Hello | Opcode::DcpOpen | Opcode::DcpControl => Status::Success,
                other => panic!("unexpected {other:?}"),
            };
            peer.send(Packet::response_to(&p, answer)).await;
        }
        asked
    });
    let o = options("0-1", None);
    let e = run(open(&addr, &o), Collect::default(), o)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("none of the 2 vbuckets asked for is active on this node"),
        "{e}"
    );
    assert_eq!(
        producer.await.unwrap(),
        ["vbucket-seqno 0", "vbucket-seqno 1"]
    );
}

/// Two connections, the second's stream answered 30 ms after the first's has all its data:
/// the first connection's save before its first batch waits for the second's answer, so the
/// file holds both vbuckets' uuids when that batch reaches the sink (one save for the node's
/// connections, not one each).
#[tokio::test]
async fn a_nodes_connections_save_their_streams_uuids_together_before_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.json");
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let mut peer = Peer::accept(&l).await;
            // Each frame at once (no Nagle wait for the client's delayed ACK).
            peer.0.get_ref().set_nodelay(true).unwrap();
            tasks.push(tokio::spawn(async move {
                let h = handshake(&mut peer, &[(0, 3), (1, 2)], 1).await;
                let r = h.requests[0];
                if r.vbucket == 1 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                accept_stream(&mut peer, &r, 500 + u64::from(r.vbucket)).await;
                let n = if r.vbucket == 0 { 3 } else { 2 };
                peer.send(marker(&r, 1, n).to_packet()).await;
                for s in 1..=n {
                    peer.send(mutation(&r, s).to_packet()).await;
                }
                peer.send(end(&r).to_packet()).await;
                while peer.recv().await.is_some() {}
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut o = options("0-1", Some(&path));
    o.threads = 2;
    let seen = Arc::new(std::sync::Mutex::new(None));
    let sink = Collect {
        at_first_batch: Some(Arc::new({
            let (seen, path) = (seen.clone(), path.clone());
            move || {
                let c = CheckpointFile::load(&path).unwrap();
                *seen.lock().unwrap() = Some((c.position(0).uuid, c.position(1).uuid));
            }
        })),
        ..Collect::default()
    };
    run(open(&addr, &o), sink.clone(), o).await.unwrap();
    producer.await.unwrap();
    assert_eq!(sink.messages().len(), 5);
    assert_eq!(
        *seen.lock().unwrap(),
        Some((500, 501)),
        "the file as the first batch arrived: both streams' uuids"
    );
}

/// A one-node source says it has read everything (`Context::source_done`) once its streams
/// ended and their last batch is in the channel, while the sink still holds it: a worker
/// starts its next job then, not once the sink confirmed.
#[tokio::test]
async fn the_source_is_done_reading_before_the_sink_confirms_its_last_batch() {
    let (l, addr) = listen().await;
    let producer = tokio::spawn(async move {
        let mut peer = Peer::accept(&l).await;
        let h = handshake(&mut peer, &[(0, 3)], 1).await;
        let r = h.requests[0];
        accept_stream(&mut peer, &r, 500).await;
        peer.send(marker(&r, 1, 3).to_packet()).await;
        for s in 1..=3 {
            peer.send(mutation(&r, s).to_packet()).await;
        }
        peer.send(end(&r).to_packet()).await;
        while peer.recv().await.is_some() {}
    });
    let o = options("0", None);
    let sink = Collect::delayed(Duration::from_millis(300));
    let (summary, confirmed_then) =
        run_watching_source_done(open(&addr, &o), sink.clone(), o).await;
    producer.await.unwrap();
    assert_eq!(summary.counts.items_written, 3);
    assert_eq!(
        confirmed_then, 0,
        "source_done came before the sink confirmed anything"
    );
}
