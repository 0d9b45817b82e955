//! `pump node` and `pump cluster` from the command line: memccapable conformance, a tshark
//! decode of DCP traffic, cluster failover through REST.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pump_protocol::dcp::{open_flags, DcpMessage, StreamRequest};
use pump_protocol::{Opcode, Packet, PacketCodec};
use tokio_util::codec::Decoder;

/// A spawned `pump node` / `pump cluster up`, killed by pid on drop.
struct Server {
    child: Child,
    /// Per node: (kv port, rest port, otp name).
    nodes: Vec<(u16, u16, String)>,
}

impl Server {
    fn start(args: &[&str], nodes: usize) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut found = Vec::new();
        while found.len() < nodes {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "server exited");
            // node 0 kv=127.0.0.1:12000 rest=127.0.0.1:9000 otp=n_0@127.0.0.1
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap()
                    .to_string()
            };
            let port = |a: String| a.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
            found.push((port(field("kv=")), port(field("rest=")), field("otp=")));
        }
        Server {
            child,
            nodes: found,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn memccapable_binary_suite_passes_against_pump_node() {
    let s = Server::start(&["node", "--kv-port", "0", "--rest-port", "0"], 1);
    let out = Command::new("memccapable")
        .args(["-b", "-t", "10", "-h", "127.0.0.1", "-p"])
        .arg(s.nodes[0].0.to_string())
        .output()
        .expect("memccapable (libmemcached-tools) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("All tests passed"), "{text}");
}

fn read_packet(sock: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    let mut codec = PacketCodec::default();
    loop {
        if let Some(p) = codec.decode(buf).unwrap() {
            return p;
        }
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "EOF");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_tshark_capture_of_dcp_traffic_decodes_without_malformed_packets() {
    let s = Server::start(&["node", "--kv-port", "0", "--rest-port", "0"], 1);
    let port = s.nodes[0].0;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dcp.pcapng");
    let mut tshark = Command::new("tshark")
        .args(["-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark is installed");
    // Ready shortly after it says "Capturing on" (the capture starts a moment later).
    let mut err = BufReader::new(tshark.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "tshark exited");
        if line.contains("Capturing on") {
            break;
        }
        assert!(Instant::now() < deadline, "tshark not ready");
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(1000));

    let key = "tshark-key";
    let vb = pump_protocol::vbucket_of(key.as_bytes(), 1024);
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    Packet::request(Opcode::Set)
        .with_vbucket(vb)
        .with_extras(vec![0, 0, 0, 9, 0, 0, 0, 0])
        .with_key(Bytes::from_static(key.as_bytes()))
        .with_value(Bytes::from_static(b"tshark-value"))
        .encode(&mut out);
    sock.write_all(&out).unwrap();
    read_packet(&mut sock, &mut buf);
    let mut out = BytesMut::new();
    DcpMessage::Open {
        opaque: 1,
        name: Bytes::from_static(b"tshark"),
        seqno: 0,
        flags: open_flags::PRODUCER,
    }
    .to_packet()
    .encode(&mut out);
    DcpMessage::StreamReq(StreamRequest {
        vbucket: vb,
        opaque: 2,
        flags: 0,
        start: 0,
        end: 1,
        vbucket_uuid: 0,
        snap_start: 0,
        snap_end: 0,
    })
    .to_packet()
    .encode(&mut out);
    sock.write_all(&out).unwrap();
    loop {
        let p = read_packet(&mut sock, &mut buf);
        if p.opcode == Opcode::DcpStreamEnd {
            break;
        }
    }
    drop(sock);
    std::thread::sleep(Duration::from_millis(1000));
    unsafe {
        libc::kill(tshark.id() as i32, libc::SIGINT);
    }
    tshark.wait().unwrap();

    let decoded = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args([
            "-d",
            &format!("tcp.port=={port},couchbase"),
            "-T",
            "json",
            "--no-duplicate-keys",
        ])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&decoded.stdout);
    assert!(decoded.status.success(), "{json}");
    assert!(!json.contains("_ws.malformed"), "malformed packets: {json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fields: Vec<(String, String)> = collect(&v);
    let has = |name: &str, value: &str| fields.iter().any(|(k, v)| k == name && v == value);
    let names: Vec<_> = fields
        .iter()
        .filter(|(k, _)| k.starts_with("couchbase"))
        .collect();
    assert!(has("couchbase.key", key), "no key field: {names:?}");
    assert!(
        has("couchbase.extras.by_seqno", "1"),
        "no by_seqno 1: {names:?}"
    );
    assert!(
        has("couchbase.extras.end_seqno", "1"),
        "no stream end seqno 1"
    );
    assert!(
        has("couchbase.extras.start_seqno", "0"),
        "no stream start seqno 0"
    );
}

/// Every (field name, string value) pair of a tshark JSON tree.
fn collect(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if let Some(s) = x.as_str() {
                        out.push((k.clone(), s.to_string()));
                    }
                    // --no-duplicate-keys turns repeated fields into arrays.
                    for s in x
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|y| y.as_str())
                    {
                        out.push((k.clone(), s.to_string()));
                    }
                    walk(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

async fn vbucket_map(rest: u16) -> serde_json::Value {
    reqwest::get(format!(
        "http://127.0.0.1:{rest}/pools/default/buckets/default"
    ))
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap()
}

fn failover(rest: u16, node: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "cluster",
            "failover",
            &format!("http://127.0.0.1:{rest}"),
            node,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn cluster_failover_promotes_replicas_and_every_node_serves_the_map() {
    let s = Server::start(
        &[
            "cluster",
            "up",
            "--nodes",
            "3",
            "--replicas",
            "1",
            "--kv-port",
            "0",
            "--rest-port",
            "0",
            "--vbuckets",
            "64",
        ],
        3,
    );
    // vbucket 4 is active on node 1, replica on node 2: write it on node 1 before the failover.
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| pump_protocol::vbucket_of(k.as_bytes(), 64) == 4)
        .unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", s.nodes[1].0)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = BytesMut::new();
    let set = Packet::request(Opcode::Set)
        .with_vbucket(4)
        .with_extras(vec![0, 0, 0, 5, 0, 0, 0, 0])
        .with_key(Bytes::from(key.clone()))
        .with_value(Bytes::from_static(b"replicated"));
    c.write_all(&set.to_bytes()).unwrap();
    assert_eq!(
        read_packet(&mut c, &mut buf).status(),
        pump_protocol::Status::Success
    );
    drop(c);
    let before = vbucket_map(s.nodes[2].1).await;
    let map = &before["vBucketServerMap"]["vBucketMap"];
    assert_eq!(map[4], serde_json::json!([1, 2]));
    assert_eq!(
        before["vBucketServerMap"]["serverList"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    failover(s.nodes[0].1, &s.nodes[1].2);
    let after = vbucket_map(s.nodes[0].1).await;
    let map = after["vBucketServerMap"]["vBucketMap"]
        .as_array()
        .unwrap()
        .clone();
    for (vb, row) in map.iter().enumerate() {
        let row: Vec<i64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert!(!row.contains(&1), "vb {vb}: {row:?}");
        match vb % 3 {
            1 => assert_eq!(row, vec![2, -1], "vb {vb} promoted to its replica"),
            0 => assert_eq!(row, vec![0, -1], "vb {vb} lost its replica"),
            _ => assert_eq!(row, vec![2, 0]),
        }
    }
    assert_eq!(after["nodes"][1]["clusterMembership"], "inactiveFailed");
    // The failed node's KV port is closed.
    assert!(TcpStream::connect(("127.0.0.1", s.nodes[1].0)).is_err());
    // The promoted copy on node 2 serves what was written on node 1.
    let mut c = TcpStream::connect(("127.0.0.1", s.nodes[2].0)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let get = Packet::request(Opcode::Get)
        .with_vbucket(4)
        .with_key(Bytes::from(key));
    c.write_all(&get.to_bytes()).unwrap();
    let r = read_packet(&mut c, &mut BytesMut::new());
    assert_eq!(
        (r.status(), &r.value[..]),
        (pump_protocol::Status::Success, &b"replicated"[..])
    );
}

#[tokio::test]
async fn cluster_failover_without_replicas_leaves_the_vbuckets_missing() {
    let s = Server::start(
        &[
            "cluster",
            "up",
            "--nodes",
            "3",
            "--replicas",
            "0",
            "--kv-port",
            "0",
            "--rest-port",
            "0",
            "--vbuckets",
            "64",
        ],
        3,
    );
    failover(s.nodes[0].1, "2");
    let after = vbucket_map(s.nodes[1].1).await;
    for (vb, row) in after["vBucketServerMap"]["vBucketMap"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let want = if vb % 3 == 2 { -1 } else { (vb % 3) as i64 };
        assert_eq!(row[0].as_i64().unwrap(), want, "vb {vb}");
    }
}
