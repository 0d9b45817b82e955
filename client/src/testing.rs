//! Fakes for tests of network sources and sinks, on 127.0.0.1 ports the OS picks. Not for
//! production use.
//!
//! ```text
//! FakeRest  answers every GET with the JSON the test currently sets (the vbucket map)
//! Peer      the fake server's side of one binary-protocol connection, scripted by the test
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pump_protocol::{Packet, PacketCodec};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A fake REST endpoint; the answer can change while it runs.
#[derive(Clone)]
pub struct FakeRest {
    pub addr: String,
    body: Arc<Mutex<String>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl FakeRest {
    /// Starts answering `body` (JSON) to every request.
    pub async fn start(body: serde_json::Value) -> FakeRest {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let rest = FakeRest {
            addr,
            body: Arc::new(Mutex::new(body.to_string())),
            hits: Arc::default(),
        };
        let r = rest.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                r.hits
                    .lock()
                    .expect("lock")
                    .push(head.lines().next().unwrap_or("").to_string());
                let body = r.body.lock().expect("lock").clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        rest
    }

    /// Changes the answer.
    pub fn set(&self, body: serde_json::Value) {
        *self.body.lock().expect("lock") = body.to_string();
    }

    /// Request lines received so far.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().expect("lock").clone()
    }
}

/// A bucket JSON with `servers` and one row per vbucket (active first, -1 for none).
pub fn bucket_json(servers: &[&str], map: &[Vec<i32>]) -> serde_json::Value {
    serde_json::json!({
        "name": "default",
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": map.first().map_or(0, |r| r.len().saturating_sub(1)),
            "serverList": servers,
            "vBucketMap": map,
        }
    })
}

/// Every wait of a fake peer: longer means a test that hangs, not a slow machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// A listener on 127.0.0.1 with a port the OS picks, and its address.
pub async fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}

/// The fake server's side of one connection.
pub struct Peer(pub Framed<TcpStream, PacketCodec>);

impl Peer {
    /// The next connection to `l`, within [`WAIT`].
    pub async fn accept(l: &TcpListener) -> Peer {
        let (s, _) = tokio::time::timeout(WAIT, l.accept())
            .await
            .expect("a connection in time")
            .expect("accept");
        Peer(Framed::new(s, PacketCodec::default()))
    }

    /// The next frame, within [`WAIT`]; `None` when the other side closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.0.next())
            .await
            .expect("a frame in time")
            .map(|r| r.expect("a well-formed frame"))
    }

    /// Sends one frame.
    pub async fn send(&mut self, p: Packet) {
        self.0.send(p).await.expect("send a frame");
    }

    /// Expects the client's HELLO and agrees to none of its features (a server that predates
    /// them); returns the HELLO for the test to inspect.
    pub async fn hello(&mut self) -> Packet {
        let p = self.recv().await.expect("a HELLO");
        assert_eq!(
            p.opcode,
            pump_protocol::Opcode::Hello,
            "the first request is HELLO"
        );
        self.send(Packet::response_to(&p, pump_protocol::Status::Success))
            .await;
        p
    }

    /// Sends bytes as they are (a truncated or corrupt frame).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.0.get_mut().write_all(bytes).await.expect("send bytes");
    }
}
