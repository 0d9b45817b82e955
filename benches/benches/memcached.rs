//! gen -> memcached and backup -> memcached through the pump, beside the ceiling measured in the
//! same run against the same server: a minimal raw writer streaming prebuilt SETQ packets
//! (100-byte values) with a NOOP every 1000 over one and two connections. The backup directory
//! is written once, before the rounds. Each figure is the best of five rounds, the raw writer
//! and the pump taking turns.
//!
//! `cargo bench -p pump-benches --bench memcached` (Debian's memcached must be installed).
//! `PUMP_BENCH_ITEMS` sets the item count (1,000,000).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pump_protocol::packet::encode_request;
use pump_protocol::Opcode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VALUE: usize = 100;
const PER_NOOP: usize = 1000;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_memcached() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-m", "1024", "-t", "2", "-c", "1024"]);
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn flush_all(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"flush_all\r\n").unwrap();
    let mut ok = [0u8; 4];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK\r\n");
}

/// Prebuilt buffers of PER_NOOP SETQ packets each, then one NOOP: items `from..to`.
fn prebuilt(from: usize, to: usize) -> Vec<bytes::Bytes> {
    let value = vec![b'v'; VALUE];
    let extras = [0u8; 8];
    (from..to)
        .step_by(PER_NOOP)
        .map(|start| {
            let mut b = BytesMut::with_capacity(PER_NOOP * (24 + 8 + 16 + VALUE) + 24);
            for i in start..(start + PER_NOOP).min(to) {
                let key = format!("pymc{i}");
                encode_request(
                    &mut b,
                    Opcode::SetQ,
                    0,
                    i as u32,
                    0,
                    0,
                    &extras,
                    key.as_bytes(),
                    &value,
                );
            }
            encode_request(&mut b, Opcode::Noop, 0, 0, 0, 0, &[], &[], &[]);
            b.freeze()
        })
        .collect()
}

/// Streams the buffers over one connection and waits for every NOOP answer.
async fn raw_stream(port: u16, bufs: Vec<bytes::Bytes>) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    let (mut r, mut w) = s.into_split();
    let expect = bufs.len();
    let writer = tokio::spawn(async move {
        for b in bufs {
            w.write_all(&b).await.unwrap();
        }
        w
    });
    let mut noops = 0;
    let mut head = [0u8; 24];
    while noops < expect {
        r.read_exact(&mut head).await.unwrap();
        let body = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut skip = vec![0u8; body];
        r.read_exact(&mut skip).await.unwrap();
        assert_eq!(u16::from_be_bytes([head[6], head[7]]), 0, "a SETQ failed");
        if head[1] == 0x0a {
            noops += 1;
        }
    }
    drop(writer.await.unwrap());
}

/// items/s of the raw writer over `conns` connections.
async fn ceiling(port: u16, items: usize, conns: usize) -> f64 {
    let per = items.div_ceil(conns);
    let bufs: Vec<_> = (0..conns)
        .map(|c| prebuilt(c * per, ((c + 1) * per).min(items)))
        .collect();
    let t = Instant::now();
    let tasks: Vec<_> = bufs
        .into_iter()
        .map(|b| tokio::spawn(raw_stream(port, b)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    items as f64 / t.elapsed().as_secs_f64()
}

/// items/s of `source` -> memcached through the pump library.
async fn through_pump(source: &str, port: u16, items: usize, threads: usize) -> f64 {
    let sink = format!("memcached://127.0.0.1:{port}");
    let secs = transfer(source, &sink, items, threads).await;
    items as f64 / secs
}

/// Runs one transfer of `items` through the pump library; returns its seconds.
async fn transfer(source: &str, sink: &str, items: usize, threads: usize) -> f64 {
    pump_benches::transfer(source, sink, threads, items as u64).await
}

fn mb(items_per_s: f64) -> f64 {
    items_per_s * (VALUE + 10) as f64 / 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let items: usize = std::env::var("PUMP_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start_memcached();
    let port = server.port;
    println!("memcached 1.6 (-m 1024 -t 2 -c 1024), {items} items of {VALUE}-byte values");
    // The machine is shared: the raw writer and the pump take turns, round after round, so
    // both see the same load, and each figure is the best of its rounds (the least disturbed).
    let gen = format!("gen:max-items={items},min-value-size={VALUE}");
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    rt.block_on(transfer(&gen, backup, items, 2));
    let rounds = 5;
    let mut best = [0.0f64; 7];
    let names = [
        "ceiling, raw SETQ writer, 1 conn",
        "ceiling, raw SETQ writer, 2 conns",
        "pump gen -> memcached, -t 1",
        "pump gen -> memcached, -t 2",
        "pump gen -> memcached, -t 4",
        "pump backup -> memcached, -t 2",
        "pump backup -> memcached, -t 4",
    ];
    for _ in 0..rounds {
        for (i, b) in best.iter_mut().enumerate() {
            flush_all(port);
            let r = match i {
                0 => rt.block_on(ceiling(port, items, 1)),
                1 => rt.block_on(ceiling(port, items, 2)),
                2..=4 => rt.block_on(through_pump(&gen, port, items, [1, 2, 4][i - 2])),
                _ => rt.block_on(through_pump(backup, port, items, [2, 4][i - 5])),
            };
            *b = b.max(r);
        }
    }
    let ceiling = best[0].max(best[1]);
    for (name, r) in names.iter().zip(best) {
        print!("  {name:<34} {r:>10.0} items/s {:>7.1} MB/s", mb(r));
        if name.starts_with("pump") {
            print!("  {:>5.1}% of the ceiling", 100.0 * r / ceiling);
        }
        println!();
    }
}
