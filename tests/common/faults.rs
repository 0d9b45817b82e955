//! A fault-injecting TCP peer for the network sinks: it sits between the pump and a real
//! server (Debian's memcached, a reference node), forwards every frame of the memcached
//! binary protocol, and on a chosen share of the writes does something else.
//!
//! ```text
//! pump ──frames──▶ FaultProxy ──frames──▶ server
//!      ◀─answers──            ◀─answers──
//! a write chosen for a fault (SETQ/ADDQ/DELETEQ, SET/ADD/DELETE, TAP_MUTATION/TAP_DELETE):
//!   Status(s), Immediate  not forwarded; answered `s` at once (ahead of the server's answers
//!                         to earlier requests, as a naive proxy does)
//!   Status(s), InOrder    not forwarded; replaced by a NOOP whose answer becomes `s`, so the
//!                         answer comes in request order, as a real server's would
//!   Reset                 not forwarded; both connections reset (RST)
//! ```
//!
//! Faults fall on writes by a deterministic pseudo-random draw (seeded), or on every write of
//! a key with a given prefix (a key that can never be written). Every fault is counted, so a
//! test proves that the faults it relies on happened. [`FaultProxy::hold_answers`] keeps the
//! answers of every connection that has sent a write back, in order, until let go (a
//! destination that has taken the writes and not answered yet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// memcached binary protocol statuses the faults answer.
pub const TMPFAIL: u16 = 0x86;
pub const ENOMEM: u16 = 0x82;
pub const E2BIG: u16 = 0x03;

/// When a fault's answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// At once, ahead of the answers to earlier requests (a naive proxy).
    Immediate,
    /// In request order (a NOOP takes the write's place; its answer is rewritten).
    InOrder,
}

/// What the proxy does to writes.
#[derive(Debug, Clone)]
pub struct Faults {
    /// (status, share of writes) pairs, each drawn independently.
    pub statuses: Vec<(u16, f64)>,
    /// Share of writes on which both connections are reset.
    pub reset: f64,
    /// No reset before this many writes have passed (so a run gets going).
    pub reset_after: u64,
    /// Every write of a key with this prefix is answered `permanent.1`.
    pub permanent: Option<(String, u16)>,
    pub timing: Timing,
    pub seed: u64,
    /// Keep every write forwarded to the server (key, value), in the order forwarded.
    pub record: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            statuses: Vec::new(),
            reset: 0.0,
            reset_after: 0,
            permanent: None,
            timing: Timing::InOrder,
            seed: 1,
            record: false,
        }
    }
}

/// What the proxy did, counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub writes: AtomicU64,
    pub statuses: Mutex<HashMap<u16, u64>>,
    pub resets: AtomicU64,
    pub connections: AtomicU64,
    /// With `Faults::record`: (key, value) of every write forwarded, in order.
    pub forwarded: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Answers that waited for `hold_answers(false)`.
    pub held: AtomicU64,
}

impl Counts {
    /// How many writes were answered `status` by the proxy.
    pub fn status(&self, status: u16) -> u64 {
        self.statuses
            .lock()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }
}

/// The running proxy; stops (its thread and runtime) when dropped.
pub struct FaultProxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    hold: Arc<tokio::sync::watch::Sender<bool>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.to_string();
        let c = counts.clone();
        let hold = Arc::new(tokio::sync::watch::Sender::new(false));
        let h = hold.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let draw = Arc::new(Mutex::new(Draw::new(faults.seed)));
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => {
                            let Ok((client, _)) = a else { return };
                            c.connections.fetch_add(1, Ordering::SeqCst);
                            let (up, faults, c, draw, held) = (
                                upstream.clone(),
                                faults.clone(),
                                c.clone(),
                                draw.clone(),
                                h.subscribe(),
                            );
                            tokio::spawn(async move {
                                if let Ok(server) = TcpStream::connect(&up).await {
                                    let _ = serve(client, server, faults, c, draw, held).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        FaultProxy {
            port,
            counts,
            hold,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// From now on (`true`), the answers of every connection that has sent a write wait,
    /// in order; `false` lets them go.
    pub fn hold_answers(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A small deterministic generator (xorshift): the same faults on the same writes each run.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Draw {
        Draw(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

const NOOP: u8 = 0x0a;

fn is_write(opcode: u8) -> bool {
    matches!(
        opcode,
        0x01 | 0x02
            | 0x03
            | 0x04
            | 0x11
            | 0x12
            | 0x13
            | 0x14
            | 0x41
            | 0x42
            | 0xa2
            | 0xa3
            | 0xa4
            | 0xa5
            | 0xa8
            | 0xa9
    )
}

/// A frame's header fields the proxy needs.
struct Frame {
    bytes: Vec<u8>,
}

impl Frame {
    fn opcode(&self) -> u8 {
        self.bytes[1]
    }
    fn opaque(&self) -> u32 {
        u32::from_be_bytes(self.bytes[12..16].try_into().unwrap())
    }
    /// Where the key starts, and its length.
    fn key_at(&self) -> (usize, usize) {
        let keylen = u16::from_be_bytes([self.bytes[2], self.bytes[3]]) as usize;
        let extlen = self.bytes[4] as usize;
        // TAP messages carry engine-specific bytes after the extras (their length in the
        // first two bytes of the extras), before the key.
        let engine = if matches!(self.opcode(), 0x41 | 0x42) && extlen >= 2 {
            u16::from_be_bytes([self.bytes[24], self.bytes[25]]) as usize
        } else {
            0
        };
        (24 + extlen + engine, keylen)
    }
    fn key(&self) -> &[u8] {
        let (at, len) = self.key_at();
        self.bytes.get(at..at + len).unwrap_or(&[])
    }
    fn value(&self) -> &[u8] {
        let (at, len) = self.key_at();
        self.bytes.get(at + len..).unwrap_or(&[])
    }
}

/// An answer with `status` to `req` (same opcode and opaque), no body.
fn answer(req: &Frame, status: u16) -> Vec<u8> {
    let mut b = vec![0u8; 24];
    b[0] = 0x81;
    b[1] = req.opcode();
    b[6..8].copy_from_slice(&status.to_be_bytes());
    b[12..16].copy_from_slice(&req.opaque().to_be_bytes());
    b
}

/// A NOOP request with `opaque`.
fn noop(opaque: u32) -> Vec<u8> {
    let mut b = vec![0u8; 24];
    b[0] = 0x80;
    b[1] = NOOP;
    b[12..16].copy_from_slice(&opaque.to_be_bytes());
    b
}

/// Reads one frame; `None` at a clean end.
async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 24];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let body = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
    let mut bytes = Vec::with_capacity(24 + body);
    bytes.extend_from_slice(&head);
    bytes.resize(24 + body, 0);
    r.read_exact(&mut bytes[24..]).await?;
    Ok(Some(Frame { bytes }))
}

/// Marker opaques of the NOOPs that stand in for faulted writes (InOrder).
const MARK: u32 = 0xFA00_0000;

async fn serve(
    client: TcpStream,
    server: TcpStream,
    faults: Faults,
    counts: Arc<Counts>,
    draw: Arc<Mutex<Draw>>,
    mut hold: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // A reset fault closes both with a reset (RST), not a clean end. (Linger 0 never
    // blocks a drop, which is what the deprecation is about.)
    #[allow(deprecated)]
    if faults.reset > 0.0 {
        let _ = client.set_linger(Some(std::time::Duration::ZERO));
        let _ = server.set_linger(Some(std::time::Duration::ZERO));
    }
    let (mut cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    // Marker opaque -> the answer that replaces the NOOP's.
    let marks: Arc<Mutex<HashMap<u32, Vec<u8>>>> = Arc::default();
    let (m2, cw2) = (marks.clone(), cw.clone());
    // Set once the client has sent a write: its answers are the ones a hold keeps back.
    let wrote = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (wrote2, counts2) = (wrote.clone(), counts.clone());
    let back = tokio::spawn(async move {
        while let Ok(Some(f)) = read_frame(&mut sr).await {
            if wrote2.load(Ordering::SeqCst) && *hold.borrow() {
                counts2.held.fetch_add(1, Ordering::SeqCst);
                if hold.wait_for(|on| !*on).await.is_err() {
                    return;
                }
            }
            let bytes = if f.opcode() == NOOP && f.opaque() & 0xFF00_0000 == MARK {
                m2.lock().unwrap().remove(&f.opaque()).unwrap_or(f.bytes)
            } else {
                f.bytes
            };
            if cw2.lock().await.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = cw2.lock().await.shutdown().await;
    });
    let mut next_mark = 0u32;
    let mut out = Vec::with_capacity(1 << 16);
    let result = loop {
        let f = match read_frame(&mut cr).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let mut fault: Option<u16> = None;
        if f.bytes[0] == 0x80 && is_write(f.opcode()) {
            wrote.store(true, Ordering::SeqCst);
            let n = counts.writes.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some((prefix, status)) = &faults.permanent {
                if f.key().starts_with(prefix.as_bytes()) {
                    fault = Some(*status);
                }
            }
            let mut d = draw.lock().unwrap();
            if fault.is_none()
                && faults.reset > 0.0
                && n > faults.reset_after
                && d.next() < faults.reset
            {
                drop(d);
                counts.resets.fetch_add(1, Ordering::SeqCst);
                // Both sockets linger 0: dropping every half of them sends a reset.
                back.abort();
                return Ok(());
            }
            for (status, share) in &faults.statuses {
                if fault.is_none() && d.next() < *share {
                    fault = Some(*status);
                }
            }
        }
        match fault {
            None => {
                if faults.record && f.bytes[0] == 0x80 && is_write(f.opcode()) {
                    counts
                        .forwarded
                        .lock()
                        .unwrap()
                        .push((f.key().to_vec(), f.value().to_vec()));
                }
                out.clear();
                out.extend_from_slice(&f.bytes);
                sw.write_all(&out).await?;
            }
            Some(status) => {
                *counts.statuses.lock().unwrap().entry(status).or_insert(0) += 1;
                match faults.timing {
                    Timing::Immediate => {
                        cw.lock().await.write_all(&answer(&f, status)).await?;
                    }
                    Timing::InOrder => {
                        next_mark = (next_mark + 1) & 0x00FF_FFFF;
                        let mark = MARK | next_mark;
                        marks.lock().unwrap().insert(mark, answer(&f, status));
                        sw.write_all(&noop(mark)).await?;
                    }
                }
            }
        }
    };
    let _ = sw.shutdown().await;
    let _ = back.await;
    result
}
