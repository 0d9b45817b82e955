//! Raw-bytes tests of the node as a Couchbase data node: HELLO, SASL (SCRAM and PLAIN),
//! SELECT_BUCKET, GET_CLUSTER_CONFIG, GET_ERROR_MAP, datatypes (JSON, SNAPPY, XATTR), mutation
//! tokens, TOUCH/GAT, the with-meta writes, and each bad input of the issue: the node answers
//! it with a clear status (or closes where the protocol says so) and keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pump_node::{Cluster, ClusterConfig, Node, NodeConfig};
use pump_protocol::datatype::{self, JSON, SNAPPY, XATTR};
use pump_protocol::dcp::{open_flags, DcpMessage, StreamRequest};
use pump_protocol::hello::{decode_features, hello_request, Feature};
use pump_protocol::meta::WithMeta;
use pump_protocol::sasl::{plain_auth, Mechanism, ScramClient};
use pump_protocol::{vbucket_of, Magic, Opcode, Packet, PacketCodec, Status};
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
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            opaque: 100,
        }
    }

    async fn send(&mut self, p: &Packet) {
        self.sock.write_all(&p.to_bytes()).await.unwrap();
    }

    /// The next frame; None on EOF.
    async fn next(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = PacketCodec::default().decode(&mut self.buf).unwrap() {
                    return Some(p);
                }
                match self.sock.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
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
            let r = self.next().await.expect("the node closed the connection");
            if r.opaque == o {
                return r;
            }
        }
    }

    async fn hello(&mut self, features: &[Feature]) -> Vec<Feature> {
        let r = self.request(hello_request("kv-test/1", features)).await;
        assert_eq!(r.status(), Status::Success);
        decode_features(&r.value).unwrap()
    }

    async fn plain(&mut self, user: &str, password: &str) -> Status {
        self.request(plain_auth(user, password)).await.status()
    }

    async fn select(&mut self) -> Status {
        self.request(Packet::request(Opcode::SelectBucket).with_key(&b"default"[..]))
            .await
            .status()
    }

    async fn stat(&mut self, name: &str) -> u64 {
        self.opaque += 1;
        let o = self.opaque;
        self.send(
            &Packet::request(Opcode::Stat)
                .with_key(Bytes::copy_from_slice(name.as_bytes()))
                .with_opaque(o),
        )
        .await;
        let mut v = None;
        loop {
            let r = self.next().await.unwrap();
            if r.opaque != o {
                continue;
            }
            if r.key.is_empty() {
                return v.unwrap_or_else(|| panic!("STAT {name}: {}", r.status()));
            }
            v = Some(String::from_utf8_lossy(&r.value).parse().unwrap());
        }
    }
}

fn set_packet(op: Opcode, key: &str, value: impl Into<Bytes>, dt: u8) -> Packet {
    let mut e = BytesMut::new();
    e.put_u32(7);
    e.put_u32(0);
    Packet::request(op)
        .with_vbucket(vbucket_of(key.as_bytes(), 1024))
        .with_extras(e.freeze())
        .with_key(Bytes::copy_from_slice(key.as_bytes()))
        .with_value(value)
        .with_datatype(dt)
}

fn get_packet(key: &str) -> Packet {
    Packet::request(Opcode::Get)
        .with_vbucket(vbucket_of(key.as_bytes(), 1024))
        .with_key(Bytes::copy_from_slice(key.as_bytes()))
}

async fn open_node() -> Node {
    Node::start(NodeConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn auth_node() -> Node {
    Node::start(
        NodeConfig {
            auth: Some(("U".into(), "P".into())),
            ..NodeConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

async fn cluster(nodes: usize, auth: bool) -> Arc<Cluster> {
    Cluster::start(ClusterConfig {
        nodes,
        replicas: 0,
        node: NodeConfig {
            auth: auth.then(|| ("U".into(), "P".into())),
            ..NodeConfig::default()
        },
        kv_port: 0,
        rest_port: 0,
        spares: 0,
        recovery_api: Default::default(),
        tls: None,
    })
    .await
    .unwrap()
}

fn json_doc(rows: usize) -> Bytes {
    let rows: Vec<String> = (0..rows)
        .map(|i| format!("{{\"id\":{i},\"name\":\"a compressible row\"}}"))
        .collect();
    Bytes::from(format!("{{\"rows\":[{}]}}", rows.join(",")))
}

#[tokio::test]
async fn hello_agrees_to_what_the_node_implements_in_the_order_asked_and_starts_over_each_time() {
    let n = open_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let asked = [
        Feature::Collections,
        Feature::Xerror,
        Feature::Snappy,
        Feature::Duplex,
        Feature::Json,
        Feature::MutationSeqno,
        Feature::Xattr,
        Feature::TcpNoDelay,
        Feature::SelectBucket,
        Feature::AltRequestSupport,
        Feature::Other(0x7f),
    ];
    assert_eq!(
        c.hello(&asked).await,
        vec![
            Feature::Xerror,
            Feature::Snappy,
            Feature::Json,
            Feature::MutationSeqno,
            Feature::Xattr,
            Feature::TcpNoDelay,
            Feature::SelectBucket,
        ]
    );
    // A new HELLO starts over: snappy is no longer negotiated.
    assert_eq!(c.hello(&[Feature::Json]).await, vec![Feature::Json]);
    let c1 = datatype::compress(&json_doc(50));
    let r = c.request(set_packet(Opcode::Set, "k", c1, SNAPPY)).await;
    assert_eq!(r.status(), Status::Einval);
}

#[tokio::test]
async fn a_hello_with_a_4kb_key_or_an_odd_value_is_einval_and_the_node_keeps_serving() {
    let n = open_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let big = Packet::request(Opcode::Hello)
        .with_key(vec![b'a'; 4096])
        .with_value(vec![0, 7]);
    assert_eq!(c.request(big).await.status(), Status::Einval);
    let odd = Packet::request(Opcode::Hello)
        .with_key(&b"x"[..])
        .with_value(vec![0, 7, 0]);
    assert_eq!(c.request(odd).await.status(), Status::Einval);
    assert_eq!(c.hello(&[Feature::Xerror]).await, vec![Feature::Xerror]);
    assert_eq!(
        c.request(set_packet(Opcode::Set, "k", "v", 0))
            .await
            .status(),
        Status::Success
    );
}

#[tokio::test]
async fn an_oversize_frame_or_a_bad_magic_closes_that_connection_and_the_node_keeps_serving() {
    let n = open_node().await;
    // A GET declaring a body far above the node's maximum, then a frame with a bad magic:
    // each connection is closed before anything is reserved or answered.
    let mut huge = Packet::request(Opcode::Get)
        .with_key(&b"k"[..])
        .to_bytes()
        .to_vec();
    huge[8..12].copy_from_slice(&(pump_node::kv::MAX_BODY + 1).to_be_bytes());
    let mut bad_magic = get_packet("k").to_bytes().to_vec();
    bad_magic[0] = 0x42;
    for frame in [huge, bad_magic] {
        let mut s = TcpStream::connect(n.kv_addr).await.unwrap();
        s.write_all(&frame).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the node closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "answered: {read:?}");
    }
    let mut c = Client::connect(n.kv_addr).await;
    assert_eq!(c.request(get_packet("k")).await.status(), Status::KeyEnoent);
}

#[tokio::test]
async fn sasl_lists_scram_strongest_first_and_each_mechanism_lets_in_the_right_password() {
    let n = auth_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let r = c.request(Packet::request(Opcode::SaslListMechs)).await;
    assert_eq!(&r.value[..], b"SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN");
    for m in [
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
    ] {
        let mut c = Client::connect(n.kv_addr).await;
        let mut sc = ScramClient::new(m, "U", "P", "0123abcd");
        let first = c
            .request(
                Packet::request(Opcode::SaslAuth)
                    .with_key(m.name().as_bytes().to_vec())
                    .with_value(sc.first_message().into_bytes()),
            )
            .await;
        assert_eq!(first.status(), Status::AuthContinue, "{m}");
        let fin = sc.final_message(&first.value).unwrap();
        let last = c
            .request(
                Packet::request(Opcode::SaslStep)
                    .with_key(m.name().as_bytes().to_vec())
                    .with_value(fin.into_bytes()),
            )
            .await;
        assert_eq!(last.status(), Status::Success, "{m}");
        sc.verify_final(&last.value).unwrap();
        assert_eq!(c.select().await, Status::Success);
        let r = c.request(set_packet(Opcode::Set, "k", "v", 0)).await;
        assert_eq!(r.status(), Status::Success, "{m}");
    }
    assert_eq!(c.plain("U", "P").await, Status::Success);
    for m in ["sha512", "sha256", "sha1"] {
        assert_eq!(c.stat(&format!("pump_auth_scram_{m}")).await, 1, "{m}");
    }
    assert_eq!(c.stat("pump_auth_plain").await, 1);
}

#[tokio::test]
async fn a_scram_exchange_with_a_wrong_nonce_or_proof_is_auth_error_and_the_node_keeps_serving() {
    let n = auth_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let m = Mechanism::ScramSha512;
    for tamper in ["nonce", "proof", "password"] {
        let password = if tamper == "password" { "wrong" } else { "P" };
        let mut sc = ScramClient::new(m, "U", password, "abc123");
        let first = c
            .request(
                Packet::request(Opcode::SaslAuth)
                    .with_key(&b"SCRAM-SHA512"[..])
                    .with_value(sc.first_message().into_bytes()),
            )
            .await;
        assert_eq!(first.status(), Status::AuthContinue);
        let mut fin = sc.final_message(&first.value).unwrap();
        match tamper {
            "nonce" => fin = fin.replacen("r=abc123", "r=abc124", 1),
            "proof" => {
                let at = fin.rfind("p=").unwrap() + 2;
                let mut b = fin.into_bytes();
                b[at] = if b[at] == b'A' { b'B' } else { b'A' };
                fin = String::from_utf8(b).unwrap();
            }
            _ => {}
        }
        let r = c
            .request(
                Packet::request(Opcode::SaslStep)
                    .with_key(&b"SCRAM-SHA512"[..])
                    .with_value(fin.into_bytes()),
            )
            .await;
        assert_eq!(r.status(), Status::AuthError, "{tamper}");
        assert!(r.value.is_empty() || !String::from_utf8_lossy(&r.value).contains('P'));
    }
    // A step with no exchange, a malformed first message, an unknown mechanism.
    let r = c
        .request(
            Packet::request(Opcode::SaslStep)
                .with_key(&b"SCRAM-SHA512"[..])
                .with_value(&b"c=biws"[..]),
        )
        .await;
    assert_eq!(r.status(), Status::AuthError);
    let r = c
        .request(
            Packet::request(Opcode::SaslAuth)
                .with_key(&b"SCRAM-SHA1"[..])
                .with_value(&b"garbage"[..]),
        )
        .await;
    assert_eq!(r.status(), Status::AuthError);
    let r = c
        .request(Packet::request(Opcode::SaslAuth).with_key(&b"CRAM-MD5"[..]))
        .await;
    assert_eq!(r.status(), Status::AuthError);
    // Still serving, on this very connection.
    assert_eq!(c.plain("U", "P").await, Status::Success);
    assert_eq!(c.select().await, Status::Success);
    assert_eq!(c.request(get_packet("k")).await.status(), Status::KeyEnoent);
}

#[tokio::test]
async fn after_login_data_commands_need_a_selected_bucket() {
    let n = auth_node().await;
    // With XERROR: NO_BUCKET, and the connection goes on.
    let mut c = Client::connect(n.kv_addr).await;
    c.hello(&[Feature::Xerror]).await;
    assert_eq!(c.request(get_packet("k")).await.status(), Status::AuthError);
    assert_eq!(c.plain("U", "P").await, Status::Success);
    assert_eq!(c.request(get_packet("k")).await.status(), Status::NoBucket);
    let other = Packet::request(Opcode::SelectBucket).with_key(&b"other"[..]);
    assert_eq!(c.request(other).await.status(), Status::KeyEnoent);
    assert_eq!(c.select().await, Status::Success);
    assert_eq!(c.request(get_packet("k")).await.status(), Status::KeyEnoent);
    // Without XERROR, kv_engine closes a connection it cannot tell NO_BUCKET.
    let mut c = Client::connect(n.kv_addr).await;
    assert_eq!(c.plain("U", "P").await, Status::Success);
    c.send(&get_packet("k")).await;
    assert!(c.next().await.is_none(), "closed");
}

#[tokio::test]
async fn get_cluster_config_is_the_global_config_before_select_bucket_and_the_bucket_config_after()
{
    let cl = cluster(2, true).await;
    let n = &cl.nodes[1];
    let mut c = Client::connect(n.kv_addr).await;
    c.hello(&[Feature::Xerror, Feature::Json]).await;
    // Before login: refused, connection kept.
    let r = c.request(Packet::request(Opcode::GetClusterConfig)).await;
    assert_eq!(r.status(), Status::AuthError);
    assert_eq!(c.plain("U", "P").await, Status::Success);
    let r = c.request(Packet::request(Opcode::GetClusterConfig)).await;
    assert_eq!((r.status(), r.datatype), (Status::Success, JSON));
    let global: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert!(global.get("vBucketServerMap").is_none() && global.get("name").is_none());
    assert_eq!(global["nodesExt"].as_array().unwrap().len(), 2);
    assert_eq!(global["nodesExt"][1]["thisNode"], true);
    assert_eq!(global["nodesExt"][1]["hostname"], "$HOST");
    assert_eq!(
        global["nodesExt"][0]["services"]["kv"],
        cl.nodes[0].kv_addr.port()
    );
    assert_eq!(c.select().await, Status::Success);
    let r = c.request(Packet::request(Opcode::GetClusterConfig)).await;
    let b: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(b["name"], "default");
    assert_eq!(
        (b["rev"].as_u64(), b["revEpoch"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(b["nodeLocator"], "vbucket");
    assert!(b["bucketCapabilities"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("xattr")));
    let map = &b["vBucketServerMap"];
    assert_eq!(
        map["serverList"][0],
        format!("$HOST:{}", cl.nodes[0].kv_addr.port())
    );
    assert_eq!(map["vBucketMap"].as_array().unwrap().len(), 1024);
    assert_eq!(map["vBucketMap"][1][0], 1);
    // The client already knows this revision: an empty answer.
    let mut e = BytesMut::new();
    e.put_i64(1);
    e.put_i64(1);
    let r = c
        .request(Packet::request(Opcode::GetClusterConfig).with_extras(e.freeze()))
        .await;
    assert_eq!((r.status(), r.value.len()), (Status::Success, 0));
    // A bad revision and a key are EINVAL; the node goes on.
    let mut e = BytesMut::new();
    e.put_i64(1);
    e.put_i64(0);
    let r = c
        .request(Packet::request(Opcode::GetClusterConfig).with_extras(e.freeze()))
        .await;
    assert_eq!(r.status(), Status::Einval);
    let r = c
        .request(Packet::request(Opcode::GetClusterConfig).with_key(&b"k"[..]))
        .await;
    assert_eq!(r.status(), Status::Einval);
    assert_eq!(
        c.request(get_packet("nope")).await.status(),
        Status::KeyEnoent
    );
}

#[tokio::test]
async fn not_my_vbucket_answers_carry_the_cluster_map() {
    let cl = cluster(2, false).await;
    let vb = vbucket_of(b"k", 1024);
    let owner = (vb % 2) as usize;
    let mut c = Client::connect(cl.nodes[1 - owner].kv_addr).await;
    c.hello(&[Feature::Json]).await;
    let r = c.request(set_packet(Opcode::Set, "k", "v", 0)).await;
    assert_eq!((r.status(), r.datatype), (Status::NotMyVbucket, JSON));
    let b: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(b["vBucketServerMap"]["vBucketMap"][vb as usize][0], owner);
}

#[tokio::test]
async fn the_error_map_covers_every_status_the_node_returns() {
    let n = auth_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    c.hello(&[Feature::Xerror]).await;
    let r = c
        .request(Packet::request(Opcode::GetErrorMap).with_value(vec![0, 2]))
        .await;
    assert_eq!((r.status(), r.datatype), (Status::Success, JSON));
    let m: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(m["version"], 2);
    for s in [
        Status::Success,
        Status::KeyEnoent,
        Status::KeyEexists,
        Status::E2big,
        Status::Einval,
        Status::NotStored,
        Status::DeltaBadval,
        Status::NotMyVbucket,
        Status::NoBucket,
        Status::AuthError,
        Status::AuthContinue,
        Status::Erange,
        Status::Rollback,
        Status::UnknownCommand,
        Status::NotSupported,
        Status::Einternal,
        Status::XattrEinval,
    ] {
        let e = &m["errors"][format!("{:x}", s.value())];
        assert!(e["name"].is_string() && e["attrs"].is_array(), "{s}: {e}");
    }
    let r = c
        .request(Packet::request(Opcode::GetErrorMap).with_value(vec![0, 0]))
        .await;
    assert_eq!(r.status(), Status::Einval);
}

#[tokio::test]
async fn snappy_values_are_kept_compressed_and_inflated_for_a_client_without_snappy() {
    let n = open_node().await;
    let doc = json_doc(2000);
    let compressed = datatype::compress(&doc);
    let mut a = Client::connect(n.kv_addr).await;
    a.hello(&[Feature::Snappy, Feature::Json]).await;
    let r = a
        .request(set_packet(
            Opcode::Set,
            "doc",
            compressed.clone(),
            SNAPPY | JSON,
        ))
        .await;
    assert_eq!(r.status(), Status::Success);
    assert_eq!(a.stat("pump_snappy_values_in").await, 1);
    let g = a.request(get_packet("doc")).await;
    assert_eq!((g.datatype, &g.value), (SNAPPY | JSON, &compressed));
    // No HELLO: the body, plain, datatype raw.
    let mut b = Client::connect(n.kv_addr).await;
    let g = b.request(get_packet("doc")).await;
    assert_eq!((g.datatype, &g.value), (0, &doc));
    // JSON only: the JSON bit, no snappy.
    let mut c = Client::connect(n.kv_addr).await;
    c.hello(&[Feature::Json]).await;
    let g = c.request(get_packet("doc")).await;
    assert_eq!((g.datatype, &g.value), (JSON, &doc));
    assert_eq!(c.stat("pump_snappy_values_out").await, 1);
    // JSON is decided by the node: a plain text value sent as JSON is stored raw.
    c.request(set_packet(Opcode::Set, "text", "not json", JSON))
        .await;
    assert_eq!(c.request(get_packet("text")).await.datatype, 0);
}

#[tokio::test]
async fn snappy_without_negotiating_it_or_that_does_not_decompress_is_einval_and_the_node_keeps_serving(
) {
    let n = open_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let compressed = datatype::compress(&json_doc(100));
    let r = c
        .request(set_packet(Opcode::Set, "a", compressed, SNAPPY))
        .await;
    assert_eq!(
        (r.status(), &r.value[..]),
        (Status::Einval, &b"Invalid arguments"[..])
    );
    c.hello(&[Feature::Snappy]).await;
    for bad in [&b"\xff\xff\xff\xff\x7fgarbage"[..], b"\x20short", b""] {
        let r = c
            .request(set_packet(
                Opcode::Set,
                "a",
                Bytes::from_static(bad),
                SNAPPY,
            ))
            .await;
        assert_eq!(r.status(), Status::Einval, "{bad:?}");
    }
    // XATTR on a plain SET is refused even with the feature.
    c.hello(&[Feature::Xattr]).await;
    let r = c.request(set_packet(Opcode::Set, "a", "x", XATTR)).await;
    assert_eq!(r.status(), Status::Einval);
    // Undefined datatype bits too.
    let r = c.request(set_packet(Opcode::Set, "a", "x", 0x80)).await;
    assert_eq!(r.status(), Status::Einval);
    assert_eq!(c.request(get_packet("a")).await.status(), Status::KeyEnoent);
    assert_eq!(
        c.request(set_packet(Opcode::Set, "a", "fine", 0))
            .await
            .status(),
        Status::Success
    );
}

#[tokio::test]
async fn writes_carry_mutation_tokens_only_where_mutation_seqno_was_negotiated() {
    let n = open_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let r = c.request(set_packet(Opcode::Set, "k", "v", 0)).await;
    assert!(r.extras.is_empty());
    // Without HELLO, a delete answers cas 0, as memcached does.
    c.request(set_packet(Opcode::Set, "gone", "v", 0)).await;
    let d = Packet::request(Opcode::Delete)
        .with_vbucket(vbucket_of(b"gone", 1024))
        .with_key(&b"gone"[..]);
    let r = c.request(d).await;
    assert_eq!((r.status(), r.cas), (Status::Success, 0));
    c.hello(&[Feature::MutationSeqno]).await;
    let r = c.request(set_packet(Opcode::Set, "k", "v2", 0)).await;
    assert_eq!(r.extras.len(), 16);
    let vb = vbucket_of(b"k", 1024);
    let (seqno, uuid) = {
        let v = n.bucket.vb(vb).unwrap();
        (v.high_seqno, v.uuid())
    };
    assert_eq!(&r.extras[..8], &uuid.to_be_bytes());
    assert_eq!(&r.extras[8..], &seqno.to_be_bytes());
    assert_eq!(seqno, 2);
    let d = Packet::request(Opcode::Delete)
        .with_vbucket(vb)
        .with_key(&b"k"[..]);
    let r = c.request(d).await;
    assert_eq!((r.status(), r.extras.len()), (Status::Success, 16));
    assert_ne!(r.cas, 0, "a delete answers the tombstone's cas");
    assert_eq!(&r.extras[8..], &3u64.to_be_bytes());
}

#[tokio::test]
async fn touch_and_get_and_touch_set_a_new_expiry() {
    let n = open_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    let set = c.request(set_packet(Opcode::Set, "k", "v", 0)).await;
    let vb = vbucket_of(b"k", 1024);
    let t = c
        .request(
            Packet::request(Opcode::Touch)
                .with_vbucket(vb)
                .with_key(&b"k"[..])
                .with_extras(100u32.to_be_bytes().to_vec()),
        )
        .await;
    assert_eq!(t.status(), Status::Success);
    assert!(t.cas > set.cas);
    let now = pump_node::store::now();
    let e = n
        .bucket
        .get(vb, b"k", pump_node::store::CLIENT_STATES)
        .unwrap()
        .expiry;
    assert!(e >= now + 99 && e <= now + 101);
    let g = c
        .request(
            Packet::request(Opcode::Gat)
                .with_vbucket(vb)
                .with_key(&b"k"[..])
                .with_extras(0u32.to_be_bytes().to_vec()),
        )
        .await;
    assert_eq!(
        (g.status(), &g.value[..], &g.extras[..]),
        (Status::Success, &b"v"[..], &7u32.to_be_bytes()[..])
    );
    assert_eq!(
        n.bucket
            .get(vb, b"k", pump_node::store::CLIENT_STATES)
            .unwrap()
            .expiry,
        0
    );
    let missing = Packet::request(Opcode::Touch)
        .with_vbucket(vbucket_of(b"m", 1024))
        .with_key(&b"m"[..])
        .with_extras(vec![0; 4]);
    assert_eq!(c.request(missing).await.status(), Status::KeyEnoent);
    let bad = Packet::request(Opcode::Touch)
        .with_vbucket(vb)
        .with_key(&b"k"[..]);
    assert_eq!(c.request(bad).await.status(), Status::Einval);
}

fn with_meta(op: Opcode, key: &str, value: impl Into<Bytes>, dt: u8, m: WithMeta) -> Packet {
    let (e, n) = m.to_array();
    Packet::request(op)
        .with_vbucket(vbucket_of(key.as_bytes(), 1024))
        .with_extras(e[..n].to_vec())
        .with_key(Bytes::copy_from_slice(key.as_bytes()))
        .with_value(value)
        .with_datatype(dt)
}

#[tokio::test]
async fn set_with_meta_keeps_cas_rev_flags_expiry_and_datatype_and_a_newer_revision_wins() {
    let n = open_node().await;
    let mut c = Client::connect(n.kv_addr).await;
    c.hello(&[
        Feature::Xattr,
        Feature::Snappy,
        Feature::Json,
        Feature::Xerror,
    ])
    .await;
    let section = datatype::build_xattrs(&[(b"_sync", b"{\"rev\":\"1-a\"}")]);
    let mut body = BytesMut::from(&section[..]);
    body.put_slice(&json_doc(100));
    let stored = datatype::compress(&body.freeze());
    let m = WithMeta {
        flags: 0x0200_0000,
        expiry: 2_000_000_000,
        rev_seqno: 10,
        cas: 0x1234_5678,
        options: 0,
        nmeta: 0,
    };
    let r = c
        .request(with_meta(
            Opcode::SetWithMeta,
            "doc",
            stored.clone(),
            SNAPPY | XATTR | JSON,
            m,
        ))
        .await;
    assert_eq!((r.status(), r.cas), (Status::Success, 0x1234_5678));
    let vb = vbucket_of(b"doc", 1024);
    let i = n
        .bucket
        .get(vb, b"doc", pump_node::store::CLIENT_STATES)
        .unwrap();
    assert_eq!(
        (i.cas, i.rev_seqno, i.flags, i.expiry, i.datatype, &i.value),
        (
            0x1234_5678,
            10,
            0x0200_0000,
            2_000_000_000,
            SNAPPY | XATTR | JSON,
            &stored
        )
    );
    // An older revision loses (KEY_EEXISTS), a newer one wins.
    let older = WithMeta {
        rev_seqno: 9,
        cas: 0xffff_ffff,
        ..m
    };
    let r = c
        .request(with_meta(Opcode::SetWithMeta, "doc", "old", 0, older))
        .await;
    assert_eq!(r.status(), Status::KeyEexists);
    let newer = WithMeta {
        rev_seqno: 11,
        cas: 5,
        ..m
    };
    let r = c
        .request(with_meta(
            Opcode::SetWithMeta,
            "doc",
            "{\"new\":1}",
            0,
            newer,
        ))
        .await;
    assert_eq!(r.status(), Status::Success);
    let g = c.request(get_packet("doc")).await;
    assert_eq!(
        (&g.value[..], g.datatype, g.cas),
        (&b"{\"new\":1}"[..], JSON, 5)
    );
    // A deletion with an older revision loses too; a newer one deletes.
    let del = WithMeta {
        rev_seqno: 11,
        cas: 4,
        ..m
    };
    assert_eq!(
        c.request(with_meta(Opcode::DelWithMeta, "doc", Bytes::new(), 0, del))
            .await
            .status(),
        Status::KeyEexists
    );
    let del = WithMeta {
        rev_seqno: 12,
        cas: 4,
        ..m
    };
    assert_eq!(
        c.request(with_meta(Opcode::DelWithMeta, "doc", Bytes::new(), 0, del))
            .await
            .status(),
        Status::Success
    );
    assert_eq!(
        c.request(get_packet("doc")).await.status(),
        Status::KeyEnoent
    );
    // Bad extras, XATTR without the feature, a corrupt xattr section.
    let bad = Packet::request(Opcode::SetWithMeta)
        .with_key(&b"x"[..])
        .with_extras(vec![0; 25]);
    assert_eq!(c.request(bad).await.status(), Status::Einval);
    let mut plain = Client::connect(n.kv_addr).await;
    let r = plain
        .request(with_meta(
            Opcode::SetWithMeta,
            "x",
            section.clone(),
            XATTR,
            m,
        ))
        .await;
    assert_eq!(r.status(), Status::Einval);
    let r = c
        .request(with_meta(
            Opcode::SetWithMeta,
            "x",
            &b"\x00\x00\x00\x09ab"[..],
            XATTR,
            m,
        ))
        .await;
    assert_eq!(r.status(), Status::XattrEinval);
}

#[tokio::test]
async fn a_lww_bucket_needs_force_accept_and_keeps_the_higher_cas_a_seqno_bucket_refuses_the_flag()
{
    use pump_protocol::meta::{options, ConflictResolution};
    let cl = Cluster::start(ClusterConfig {
        nodes: 1,
        replicas: 0,
        node: NodeConfig {
            conflict_resolution: ConflictResolution::Lww,
            ..NodeConfig::default()
        },
        kv_port: 0,
        rest_port: 0,
        spares: 0,
        recovery_api: Default::default(),
        tls: None,
    })
    .await
    .unwrap();
    let mut c = Client::connect(cl.nodes[0].kv_addr).await;
    let m = WithMeta {
        flags: 1,
        expiry: 0,
        rev_seqno: 5,
        cas: 1_000,
        options: options::FORCE_ACCEPT_WITH_META_OPS,
        nmeta: 0,
    };
    let set = |m: WithMeta, v: &'static str| with_meta(Opcode::SetWithMeta, "k", v, 0, m);
    assert_eq!(c.request(set(m, "first")).await.status(), Status::Success);
    // Without FORCE_ACCEPT_WITH_META_OPS a lww bucket refuses the write.
    let unforced = WithMeta {
        options: 0,
        cas: 9_000,
        ..m
    };
    assert_eq!(c.request(set(unforced, "x")).await.status(), Status::Einval);
    // A higher revision with a lower cas loses here; a higher cas wins at a lower revision.
    let more_writes = WithMeta {
        rev_seqno: 50,
        cas: 999,
        ..m
    };
    assert_eq!(
        c.request(set(more_writes, "rev")).await.status(),
        Status::KeyEexists
    );
    let later = WithMeta {
        rev_seqno: 1,
        cas: 2_000,
        ..m
    };
    assert_eq!(
        c.request(set(later, "later")).await.status(),
        Status::Success
    );
    let g = c.request(get_packet("k")).await;
    assert_eq!((&g.value[..], g.cas), (&b"later"[..], 2_000));
    // Deletions too: cas first.
    let del = |m: WithMeta| with_meta(Opcode::DelWithMeta, "k", Bytes::new(), 0, m);
    let old_del = WithMeta {
        rev_seqno: 90,
        cas: 1_500,
        ..m
    };
    assert_eq!(c.request(del(old_del)).await.status(), Status::KeyEexists);
    let new_del = WithMeta {
        rev_seqno: 1,
        cas: 3_000,
        ..m
    };
    assert_eq!(c.request(del(new_del)).await.status(), Status::Success);
    assert_eq!(c.request(get_packet("k")).await.status(), Status::KeyEnoent);
    // The bucket says so over REST's config and over KV.
    let cfg = c.request(Packet::request(Opcode::GetClusterConfig)).await;
    let cfg: serde_json::Value = serde_json::from_slice(&cfg.value).unwrap();
    assert_eq!(cfg["conflictResolutionType"], "lww");
    // A seqno bucket refuses the flag.
    let s = cluster(1, false).await;
    let mut c = Client::connect(s.nodes[0].kv_addr).await;
    assert_eq!(c.request(set(m, "x")).await.status(), Status::Einval);
    let cfg = c.request(Packet::request(Opcode::GetClusterConfig)).await;
    let cfg: serde_json::Value = serde_json::from_slice(&cfg.value).unwrap();
    assert_eq!(cfg["conflictResolutionType"], "seqno");
}

#[tokio::test]
async fn a_dcp_consumer_gets_values_as_stored_with_snappy_and_xattrs_only_when_it_asks() {
    let n = open_node().await;
    let mut w = Client::connect(n.kv_addr).await;
    w.hello(&[Feature::Xattr, Feature::Snappy, Feature::Json])
        .await;
    let section = datatype::build_xattrs(&[(b"_sync", b"1")]);
    let doc = json_doc(200);
    let mut full = BytesMut::from(&section[..]);
    full.put_slice(&doc);
    let full = full.freeze();
    let stored = datatype::compress(&full);
    let m = WithMeta {
        flags: 1,
        expiry: 0,
        rev_seqno: 3,
        cas: 77,
        options: 0,
        nmeta: 0,
    };
    let r = w
        .request(with_meta(
            Opcode::SetWithMeta,
            "doc",
            stored.clone(),
            SNAPPY | XATTR | JSON,
            m,
        ))
        .await;
    assert_eq!(r.status(), Status::Success);
    let vb = vbucket_of(b"doc", 1024);
    for (features, flags, want_dt, want) in [
        (
            vec![Feature::Snappy],
            open_flags::INCLUDE_XATTRS,
            SNAPPY | XATTR | JSON,
            stored.clone(),
        ),
        (
            vec![],
            open_flags::INCLUDE_XATTRS,
            XATTR | JSON,
            full.clone(),
        ),
        (vec![Feature::Snappy], 0, JSON, doc.clone()),
        (vec![], 0, JSON, doc.clone()),
    ] {
        let mut c = Client::connect(n.kv_addr).await;
        if !features.is_empty() {
            c.hello(&features).await;
        }
        let open = DcpMessage::Open {
            opaque: 1,
            name: Bytes::from_static(b"t"),
            seqno: 0,
            flags: open_flags::PRODUCER | flags,
        };
        assert_eq!(c.request(open.to_packet()).await.status(), Status::Success);
        let req = DcpMessage::StreamReq(StreamRequest {
            vbucket: vb,
            opaque: 9,
            end: 1,
            ..StreamRequest::default()
        });
        c.send(&req.to_packet()).await;
        let item = loop {
            let p = c.next().await.unwrap();
            if p.magic == Magic::Request && p.opcode == Opcode::DcpMutation {
                break p;
            }
        };
        let Ok(DcpMessage::Mutation(i)) = DcpMessage::from_packet(&item) else {
            panic!("not a mutation")
        };
        assert_eq!(
            (i.datatype, &i.value),
            (want_dt, &want),
            "{features:?} {flags:#x}"
        );
        assert_eq!((i.cas, i.rev_seqno), (77, 3));
    }
}
