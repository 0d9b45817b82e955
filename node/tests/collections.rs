//! The node's scopes and collections over KV and DCP: keys with their LEB128 collection id once
//! COLLECTIONS is negotiated, GET_COLLECTIONS_MANIFEST / GET_COLLECTION_ID, UNKNOWN_COLLECTION
//! with the manifest uid, a drop dropping the items, and the DCP producer's system events in
//! seqno order, limited by a stream filter.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pump_node::collections::{plan, Change};
use pump_node::{Node, NodeConfig};
use pump_protocol::collections::{prefixed_key, Manifest, StreamFilter, SystemEvent};
use pump_protocol::dcp::{DcpMessage, StreamRequest};
use pump_protocol::hello::{hello_request, Feature};
use pump_protocol::{Opcode, Packet, PacketCodec, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(10);

struct Client {
    sock: TcpStream,
    buf: BytesMut,
    opaque: u32,
}

impl Client {
    async fn connect(addr: SocketAddr, collections: bool) -> Client {
        let mut c = Client {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            opaque: 100,
        };
        let mut f = vec![Feature::Xerror, Feature::Json];
        if collections {
            f.push(Feature::Collections);
        }
        let r = c.request(hello_request("collections-test/1", &f)).await;
        assert_eq!(r.status(), Status::Success);
        c
    }

    async fn send(&mut self, p: &Packet) {
        self.sock.write_all(&p.to_bytes()).await.unwrap();
    }

    async fn next(&mut self) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = PacketCodec::default().decode(&mut self.buf).unwrap() {
                    return p;
                }
                assert!(
                    self.sock.read_buf(&mut self.buf).await.unwrap() > 0,
                    "closed"
                );
            }
        })
        .await
        .expect("timed out waiting for a frame")
    }

    async fn request(&mut self, p: Packet) -> Packet {
        self.opaque += 1;
        let o = self.opaque;
        self.send(&p.with_opaque(o)).await;
        loop {
            let r = self.next().await;
            if r.opaque == o {
                return r;
            }
        }
    }
}

/// A one-vbucket node, so that every key is in vbucket 0.
async fn node() -> Node {
    Node::start(
        NodeConfig {
            vbuckets: 1,
            ..NodeConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn change(n: &Node, c: Change) -> Manifest {
    let (m, events) = plan(&n.bucket.manifest(), &c).unwrap();
    n.bucket.set_manifest(m.clone(), &events);
    m
}

fn set(key: Bytes, value: &str) -> Packet {
    let mut e = BytesMut::new();
    e.put_u32(0);
    e.put_u32(0);
    Packet::request(Opcode::Set)
        .with_extras(e.freeze())
        .with_key(key)
        .with_value(Bytes::copy_from_slice(value.as_bytes()))
}

fn get(key: Bytes) -> Packet {
    Packet::request(Opcode::Get).with_key(key)
}

fn coll(scope: &str, name: &str) -> Change {
    Change::CreateCollection {
        scope: scope.into(),
        name: name.into(),
        max_ttl: None,
    }
}

#[tokio::test]
async fn keys_carry_their_collection_id_once_negotiated_and_an_unknown_one_is_named() {
    let n = node().await;
    change(&n, Change::CreateScope("s1".into()));
    let m = change(&n, coll("s1", "c1"));
    let c1 = m.id_of("s1", "c1").unwrap();
    let mut c = Client::connect(n.kv_addr, true).await;
    // GET_COLLECTION_ID: the manifest uid and the id.
    let r = c
        .request(Packet::request(Opcode::GetCollectionId).with_value(&b"s1.c1"[..]))
        .await;
    assert_eq!(r.status(), Status::Success);
    assert_eq!(&r.extras[..8], &m.uid.to_be_bytes());
    assert_eq!(&r.extras[8..], &c1.to_be_bytes());
    let r = c
        .request(Packet::request(Opcode::GetCollectionId).with_value(&b"s1.nope"[..]))
        .await;
    assert_eq!(r.status(), Status::UnknownCollection);
    let r = c
        .request(Packet::request(Opcode::GetCollectionId).with_value(&b"s9.c1"[..]))
        .await;
    assert_eq!(r.status(), Status::UnknownScope);
    // GET_COLLECTIONS_MANIFEST: the manifest as JSON.
    let r = c
        .request(Packet::request(Opcode::GetCollectionsManifest))
        .await;
    assert_eq!(Manifest::from_json(&r.value).unwrap(), m);
    // The same document key in two collections: two documents.
    for (cid, v) in [(0, "in default"), (c1, "in c1")] {
        let r = c.request(set(prefixed_key(cid, b"k"), v)).await;
        assert_eq!(r.status(), Status::Success);
    }
    for (cid, v) in [(0, "in default"), (c1, "in c1")] {
        let r = c.request(get(prefixed_key(cid, b"k"))).await;
        assert_eq!((r.status(), &r.value[..]), (Status::Success, v.as_bytes()));
    }
    // A connection without COLLECTIONS sees the default collection.
    let mut plain = Client::connect(n.kv_addr, false).await;
    let r = plain.request(get(Bytes::from_static(b"k"))).await;
    assert_eq!(&r.value[..], b"in default");
    // An id the manifest lacks: UNKNOWN_COLLECTION with the manifest uid.
    let r = c.request(get(prefixed_key(0x55, b"k"))).await;
    assert_eq!(r.status(), Status::UnknownCollection);
    let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(v["manifest_uid"], format!("{:x}", m.uid));
    // A prefix that runs past the key, or with nothing after it: EINVAL, and the node serves on.
    for bad in [&[0x80u8][..], &[0x80, 0x80][..], &[0x09][..]] {
        let r = c.request(get(Bytes::copy_from_slice(bad))).await;
        assert_eq!(r.status(), Status::Einval, "{bad:?}");
    }
    // Dropping the collection drops its items; the default collection's stay.
    assert_eq!(n.bucket.collection_item_count(c1), 1);
    change(
        &n,
        Change::DropCollection {
            scope: "s1".into(),
            name: "c1".into(),
        },
    );
    assert_eq!(n.bucket.collection_item_count(c1), 0);
    let r = c.request(get(prefixed_key(c1, b"k"))).await;
    assert_eq!(r.status(), Status::UnknownCollection);
    let r = c.request(get(prefixed_key(0, b"k"))).await;
    assert_eq!(&r.value[..], b"in default");
}

/// What a stream sent: ("event" or "item", seqno, a description).
async fn stream(addr: SocketAddr, collections: bool, filter: Option<StreamFilter>) -> Vec<String> {
    let mut c = Client::connect(addr, collections).await;
    let r = c
        .request(
            DcpMessage::Open {
                opaque: 0,
                name: Bytes::from_static(b"t"),
                seqno: 0,
                flags: pump_protocol::dcp::open_flags::PRODUCER,
            }
            .to_packet(),
        )
        .await;
    assert_eq!(r.status(), Status::Success);
    let req = DcpMessage::StreamReq(StreamRequest {
        vbucket: 0,
        opaque: 7,
        flags: 0,
        start: 0,
        end: HIGH,
        vbucket_uuid: 0,
        snap_start: 0,
        snap_end: 0,
    })
    .to_packet();
    let req = match &filter {
        Some(f) => req.with_value(f.to_json(None)),
        None => req,
    };
    c.send(&req).await;
    let mut out = Vec::new();
    loop {
        let p = c.next().await;
        if p.opcode == Opcode::DcpStreamReq {
            if p.status() != Status::Success {
                out.push(format!("refused {}", p.status()));
                return out;
            }
            continue;
        }
        match DcpMessage::from_packet(&p).unwrap() {
            DcpMessage::SystemEvent {
                by_seqno,
                event,
                version,
                key,
                value,
                ..
            } => {
                let e = SystemEvent::decode(event, version, &key, &value).unwrap();
                out.push(format!(
                    "{by_seqno} {:?} {} {:?}",
                    e.kind,
                    e.scope,
                    e.collection.zip(e.name)
                ));
            }
            DcpMessage::Mutation(i) | DcpMessage::Deletion(i) => {
                out.push(format!("{} {:?}", i.by_seqno, i.key));
            }
            DcpMessage::StreamEnd { .. } => return out,
            _ => {}
        }
    }
}

const HIGH: u64 = 9;

#[tokio::test]
async fn a_dcp_stream_with_collections_gets_the_system_events_in_seqno_order_and_filters_apply() {
    let n = node().await;
    // seqnos 1..=9 in the one vbucket.
    change(&n, Change::CreateScope("s1".into())); // 1
    change(&n, coll("s1", "c1")); // 2
    let m = change(&n, coll("s1", "c2")); // 3
    let (c1, c2) = (m.id_of("s1", "c1").unwrap(), m.id_of("s1", "c2").unwrap());
    let mut c = Client::connect(n.kv_addr, true).await;
    for (cid, k) in [(0, "d"), (c1, "x"), (c2, "y"), (0, "e")] {
        // 4, 5, 6, 7
        let r = c.request(set(prefixed_key(cid, k.as_bytes()), k)).await;
        assert_eq!(r.status(), Status::Success);
    }
    change(
        &n,
        Change::DropCollection {
            scope: "s1".into(),
            name: "c2".into(),
        },
    ); // 8
    let r = c.request(set(prefixed_key(c1, b"z"), "z")).await; // 9
    assert_eq!(r.status(), Status::Success);
    assert_eq!(n.bucket.vb(0).unwrap().high_seqno, HIGH);

    let all = stream(n.kv_addr, true, None).await;
    assert_eq!(
        all,
        vec![
            "1 ScopeCreated 8 None".to_string(),
            format!("2 CollectionCreated 8 Some(({c1}, \"c1\"))"),
            "4 b\"\\0d\"".into(),
            format!("5 {:?}", prefixed_key(c1, b"x")),
            // c2's items went with it: its creation is replaced by its drop.
            "7 b\"\\0e\"".into(),
            "8 CollectionDropped 8 None".into(),
            format!("9 {:?}", prefixed_key(c1, b"z")),
        ]
    );
    // Without COLLECTIONS: the default collection alone, keys without the id.
    let plain = stream(n.kv_addr, false, None).await;
    assert_eq!(plain, vec!["4 b\"d\"".to_string(), "7 b\"e\"".into()]);
    // Limited to c1: its events and items only.
    let only_c1 = stream(n.kv_addr, true, Some(StreamFilter::Collections(vec![c1]))).await;
    assert_eq!(
        only_c1,
        vec![
            format!("2 CollectionCreated 8 Some(({c1}, \"c1\"))"),
            format!("5 {:?}", prefixed_key(c1, b"x")),
            format!("9 {:?}", prefixed_key(c1, b"z")),
        ]
    );
    // Limited to scope s1: its events and its collections' items, nothing of _default.
    let s1 = stream(n.kv_addr, true, Some(StreamFilter::Scope(8))).await;
    assert_eq!(s1.len(), 5, "{s1:?}");
    assert!(s1.iter().all(|l| !l.contains("\\0")), "{s1:?}");
    // A filter naming a collection the manifest lacks is refused.
    let bad = stream(n.kv_addr, true, Some(StreamFilter::Collections(vec![0x77]))).await;
    assert_eq!(bad, vec![format!("refused {}", Status::UnknownCollection)]);
}
