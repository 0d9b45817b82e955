//! The reference proxy's elections as a read-only ZooKeeper server, the part of ZooKeeper's
//! protocol that `openio election check` uses (through kazoo): connect, list a node's
//! children, read a node, ping, close.
//!
//! ```text
//! frame     i32 length (big-endian, at most 1 MiB), then the record
//! connect   -> protocolVersion i32, lastZxidSeen i64, timeOut i32, sessionId i64,
//!              passwd (i32 length + bytes), [readOnly u8]
//!           <- protocolVersion i32 (0), timeOut i32, sessionId i64, passwd (16 bytes), readOnly u8
//! request   -> xid i32, type i32, body          reply <- xid i32, zxid i64, err i32, body
//!   3 exists        path string, watch u8     <- stat
//!   4 getData       path string, watch u8     <- data (i32 length + bytes), stat
//!   8 getChildren   path string, watch u8     <- i32 count, strings
//!  12 getChildren2  path string, watch u8     <- i32 count, strings, stat
//!  11 ping (xid -2)                           <- header only
//! -11 close                                   <- header only, then the connection closes
//!   anything else                             <- err -6 (unimplemented)
//! stat      czxid i64, mzxid i64, ctime i64, mtime i64, version i32, cversion i32,
//!           aversion i32, ephemeralOwner i64, dataLength i32, numChildren i32, pzxid i64
//! nodes     /hc/ns/NS/el/meta2/<CID[0:2]>/<CID>.1-<n>  data: the member's service address,
//!           the master first
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::SdsProxy;

const MAX_FRAME: usize = 1 << 20;
/// A client sends a ping at least every third of its session timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const NO_NODE: i32 = -101;
const UNIMPLEMENTED: i32 = -6;
const MARSHALLING_ERROR: i32 = -5;

/// Binds `addr` and serves the elections of `proxy` in the background; returns the address.
pub async fn serve(proxy: Arc<SdsProxy>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let mut session: i64 = 0x5d5_0000_0000;
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            session += 1;
            let p = proxy.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(p, s, session).await {
                    tracing::debug!("zk session {session:x}: {e}");
                }
            });
        }
    });
    Ok(bound)
}

/// A cursor over one record.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "record too short: {n} bytes wanted, {} left",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(String::new());
        }
        let b = self.take(n as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| "path is not UTF-8".to_string())
    }
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_i32(out, b.len() as i32);
    out.extend_from_slice(b);
}

fn put_stat(out: &mut Vec<u8>, data_len: usize, children: usize) {
    for _ in 0..4 {
        put_i64(out, 1);
    }
    for _ in 0..3 {
        put_i32(out, 0);
    }
    put_i64(out, 0);
    put_i32(out, data_len as i32);
    put_i32(out, children as i32);
    put_i64(out, 1);
}

async fn read_frame(s: &mut TcpStream) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(READ_TIMEOUT, s.read_exact(&mut len)).await {
        Err(_) => return Err("no request within the session timeout".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(_)) => {}
    }
    let n = i32::from_be_bytes(len);
    if n < 0 || n as usize > MAX_FRAME {
        return Err(format!("frame of {n} bytes refused (at most {MAX_FRAME})"));
    }
    let mut buf = vec![0u8; n as usize];
    tokio::time::timeout(READ_TIMEOUT, s.read_exact(&mut buf))
        .await
        .map_err(|_| "frame cut short".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Some(buf))
}

async fn write_frame(s: &mut TcpStream, record: &[u8]) -> Result<(), String> {
    let mut out = Vec::with_capacity(record.len() + 4);
    put_bytes(&mut out, record);
    s.write_all(&out).await.map_err(|e| e.to_string())
}

async fn serve_one(proxy: Arc<SdsProxy>, mut s: TcpStream, session: i64) -> Result<(), String> {
    let Some(connect) = read_frame(&mut s).await? else {
        return Ok(());
    };
    let mut r = Reader { buf: &connect };
    let _version = r.i32()?;
    let _zxid = r.i64()?;
    let timeout = r.i32()?;
    let mut out = Vec::new();
    put_i32(&mut out, 0);
    put_i32(&mut out, timeout.clamp(2000, 60_000));
    put_i64(&mut out, session);
    put_bytes(&mut out, &[0u8; 16]);
    out.push(0);
    write_frame(&mut s, &out).await?;
    while let Some(req) = read_frame(&mut s).await? {
        let mut r = Reader { buf: &req };
        let xid = r.i32()?;
        let op = r.i32()?;
        let mut body = Vec::new();
        let err = match op {
            11 | 101 => 0,
            -11 => {
                let mut out = Vec::new();
                put_i32(&mut out, xid);
                put_i64(&mut out, 1);
                put_i32(&mut out, 0);
                write_frame(&mut s, &out).await?;
                return Ok(());
            }
            3 | 4 | 8 | 12 => match r.string() {
                Err(_) => MARSHALLING_ERROR,
                Ok(path) => answer(&proxy, op, &path, &mut body),
            },
            _ => UNIMPLEMENTED,
        };
        let mut out = Vec::new();
        put_i32(&mut out, xid);
        put_i64(&mut out, 1);
        put_i32(&mut out, err);
        if err == 0 {
            out.extend_from_slice(&body);
        }
        write_frame(&mut s, &out).await?;
    }
    Ok(())
}

/// The body of a read of `path`, or ZooKeeper's error code.
fn answer(proxy: &SdsProxy, op: i32, path: &str, body: &mut Vec<u8>) -> i32 {
    let nodes = proxy.zk_nodes();
    let path = path.trim_end_matches('/');
    if let Some(children) = nodes.get(path) {
        match op {
            4 => {
                put_bytes(body, b"");
                put_stat(body, 0, children.len());
            }
            3 => put_stat(body, 0, children.len()),
            _ => {
                put_i32(body, children.len() as i32);
                for (name, _) in children {
                    put_bytes(body, name.as_bytes());
                }
                if op == 12 {
                    put_stat(body, 0, children.len());
                }
            }
        }
        return 0;
    }
    let Some((parent, name)) = path.rsplit_once('/') else {
        return NO_NODE;
    };
    let Some((_, data)) = nodes
        .get(parent)
        .and_then(|c| c.iter().find(|(n, _)| n == name))
    else {
        return NO_NODE;
    };
    match op {
        4 => {
            put_bytes(body, data.as_bytes());
            put_stat(body, data.len(), 0);
        }
        3 => put_stat(body, data.len(), 0),
        _ => {
            put_i32(body, 0);
            if op == 12 {
                put_stat(body, data.len(), 0);
            }
        }
    }
    0
}
