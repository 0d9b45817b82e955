//! The pump's handshake against the reference node: HELLO, the strongest SASL mechanism (or
//! the one forced), SELECT_BUCKET, TLS with a trusted, an untrusted and an unverified
//! certificate.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pump_client::{Auth, ClientError, Connection, Handshake, TlsClient};
use pump_node::tls::TlsIdentity;
use pump_node::{Node, NodeConfig};
use pump_protocol::sasl::Mechanism;
use pump_protocol::{vbucket_of, Feature, Opcode, Packet};

const T: Duration = Duration::from_secs(10);

fn auth(password: &str) -> Option<Auth> {
    Some(Auth {
        user: "U".into(),
        password: password.into(),
    })
}

async fn node(users: bool, tls: Option<TlsIdentity>) -> Node {
    let cfg = NodeConfig {
        auth: users.then(|| ("U".into(), "P".into())),
        tls: tls.clone(),
        ..NodeConfig::default()
    };
    let tls_addr = tls.map(|_| "127.0.0.1:0".parse().unwrap());
    Node::start_with_tls(cfg, "127.0.0.1:0".parse().unwrap(), tls_addr)
        .await
        .unwrap()
}

async fn set_and_get(c: &mut Connection) {
    let vb = vbucket_of(b"k", 1024);
    let set = Packet::request(Opcode::Set)
        .with_vbucket(vb)
        .with_extras(vec![0; 8])
        .with_key(&b"k"[..])
        .with_value(&b"{\"a\":1}"[..]);
    c.request_ok(set, "SET").await.unwrap();
    let get = Packet::request(Opcode::Get)
        .with_vbucket(vb)
        .with_key(&b"k"[..]);
    let g = c.request_ok(get, "GET").await.unwrap();
    assert_eq!(&g.value[..], b"{\"a\":1}");
    assert_eq!(g.datatype, pump_protocol::datatype::JSON, "JSON was agreed");
}

#[tokio::test]
async fn the_strongest_mechanism_and_the_agreed_features_are_used() {
    let n = node(true, None).await;
    let h = Handshake::new(auth("P"), Some("default"), T);
    let mut c = Connection::negotiate(&n.kv_addr.to_string(), &h)
        .await
        .unwrap();
    assert_eq!(c.mechanism(), Some(Mechanism::ScramSha512));
    for f in [
        Feature::Snappy,
        Feature::Xattr,
        Feature::Json,
        Feature::Xerror,
    ] {
        assert!(c.features().contains(f), "{f:?}");
    }
    assert!(
        !c.features().contains(Feature::MutationSeqno),
        "not asked for"
    );
    set_and_get(&mut c).await;
    assert_eq!(n.counters().auth[0].load(Ordering::Relaxed), 1);
    assert_eq!(n.counters().hellos.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn sasl_plain_can_be_forced_and_a_server_listing_only_plain_gets_plain() {
    let n = node(true, None).await;
    let mut h = Handshake::new(auth("P"), Some("default"), T);
    h.sasl = Some(Mechanism::Plain);
    let c = Connection::negotiate(&n.kv_addr.to_string(), &h)
        .await
        .unwrap();
    assert_eq!(c.mechanism(), Some(Mechanism::Plain));
    assert_eq!(n.counters().auth[3].load(Ordering::Relaxed), 1);
    // A node without users lists only PLAIN.
    let open = node(false, None).await;
    let h = Handshake::new(auth("anything"), Some("default"), T);
    let c = Connection::negotiate(&open.kv_addr.to_string(), &h)
        .await
        .unwrap();
    assert_eq!(c.mechanism(), Some(Mechanism::Plain));
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_that_never_shows_the_password() {
    let n = node(true, None).await;
    for forced in [None, Some(Mechanism::ScramSha1), Some(Mechanism::Plain)] {
        let mut h = Handshake::new(auth("Secr3tPassw0rd"), Some("default"), T);
        h.sasl = forced;
        let e = Connection::negotiate(&n.kv_addr.to_string(), &h)
            .await
            .err()
            .expect("refused");
        assert!(e.is_auth(), "{forced:?}: {e}");
        let text = format!("{e} {e:?}");
        assert!(text.contains("\"U\""), "{text}");
        assert!(!text.contains("Secr3tPassw0rd"), "{text}");
    }
}

#[tokio::test]
async fn tls_trusts_the_nodes_certificate_refuses_another_and_no_ssl_verify_takes_any() {
    let id = TlsIdentity::self_signed().unwrap();
    let n = node(true, Some(id.clone())).await;
    let addr = n.kv_tls_addr.unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cert = id.write_cert(&dir.path().join("node.pem")).unwrap();
    let mut h = Handshake::new(auth("P"), Some("default"), T);
    h.tls = Some(TlsClient::new(Some(&cert), false).unwrap());
    let mut c = Connection::negotiate(&addr, &h).await.unwrap();
    // Over TLS too, the strongest mechanism the server lists.
    assert_eq!(c.mechanism(), Some(Mechanism::ScramSha512));
    set_and_get(&mut c).await;
    // Another certificate: refused, the error says what was trusted.
    let other = TlsIdentity::self_signed().unwrap();
    let other_cert = other.write_cert(&dir.path().join("other.pem")).unwrap();
    h.tls = Some(TlsClient::new(Some(&other_cert), false).unwrap());
    let e = Connection::negotiate(&addr, &h)
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("other.pem"), "{e}");
    // --no-ssl-verify: any certificate.
    h.tls = Some(TlsClient::new(None, true).unwrap());
    let mut c = Connection::negotiate(&addr, &h).await.unwrap();
    set_and_get(&mut c).await;
    // A missing CA file is named.
    let e = TlsClient::new(Some(&dir.path().join("missing.pem")), false).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

/// A peer that answers nothing until it holds both HELLO and SELECT_BUCKET: a handshake that
/// waited for HELLO's answer before sending the bucket would time out against it.
#[tokio::test]
async fn hello_and_the_bucket_go_in_one_round_trip_and_a_pipeline_matches_answers_by_opaque() {
    use pump_client::testing::{listen, Peer};
    use pump_protocol::Status;
    let (l, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let hello = p.recv().await.unwrap();
        let select = p.recv().await.unwrap();
        assert_eq!(
            (hello.opcode, select.opcode),
            (Opcode::Hello, Opcode::SelectBucket)
        );
        assert_eq!(&select.key[..], b"default");
        p.send(Packet::response_to(&hello, Status::Success)).await;
        p.send(Packet::response_to(&select, Status::Success)).await;
        // Then a pipeline of a STAT and a GET: a stray frame first, the STAT's two rows and
        // its end, the GET's answer.
        let stat = p.recv().await.unwrap();
        let get = p.recv().await.unwrap();
        p.send(Packet::response_to(&get, Status::Success).with_opaque(0xdead))
            .await;
        for (k, v) in [("a", "1"), ("b", "2"), ("", "")] {
            p.send(
                Packet::response_to(&stat, Status::Success)
                    .with_key(k.as_bytes().to_vec())
                    .with_value(v.as_bytes().to_vec()),
            )
            .await;
        }
        p.send(Packet::response_to(&get, Status::KeyEnoent)).await;
        p.recv().await
    });
    let h = Handshake::new(None, Some("default"), T);
    let mut c = Connection::negotiate(&addr, &h).await.unwrap();
    let answers = c
        .pipeline(
            vec![
                Packet::request(Opcode::Stat).with_key(&b"x"[..]),
                Packet::request(Opcode::Get).with_key(&b"k"[..]),
            ],
            "STAT and GET",
        )
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(
        answers[0].stats(),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(answers[1].0.len(), 1, "the stray frame is not the GET's");
    assert_eq!(answers[1].last().status(), Status::KeyEnoent);
    drop(c);
    assert!(server.await.unwrap().is_none(), "nothing more was sent");
}
