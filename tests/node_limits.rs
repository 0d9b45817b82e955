//! A node one client cannot exhaust (issue 18, item 3): floods of DCP BUFFER_ACKs and TAP
//! responses, connections past the cap, and bodies announced before authentication, each
//! against a `pump node` whose memory (VmRSS) is sampled all along; it must stay under 200 MB
//! and serve a normal transfer during the attack and after it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stderr;

const USER: &str = "admin";
const PASSWORD: &str = "s3cret";
const RSS_LIMIT_KB: u64 = 200 * 1024;

/// A `pump node` with credentials, its stderr in a file (for the log line).
struct TestNode {
    child: Child,
    kv: String,
    rest: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNode {
    fn start(extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
            .args(["node", "--kv-port", "0", "--rest-port", "0", "--user", USER])
            .args(["--password", PASSWORD])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        TestNode {
            kv: field("kv="),
            rest: field("rest="),
            child,
            log,
            _dir: dir,
        }
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Samples the node's RSS every 50 ms until `stop`; returns the peak (kB).
    fn sample(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
        let pid = self.child.id();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kb = s
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak = peak.max(kb);
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    }

    /// gen -> the node (couchbase://), then the node -> blackhole; the items read back.
    fn transfer(&self, items: u64) {
        let spec = format!("couchbase://{USER}:{PASSWORD}@{}", self.rest);
        let gen = format!("gen:max-items={items}");
        let out = common::pump(&["transfer", &gen, &spec, "-q"]);
        assert!(out.status.success(), "write: {}", stderr(&out));
        let out = common::pump(&["transfer", &spec, "blackhole:", "-q"]);
        assert!(out.status.success(), "read: {}", stderr(&out));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request frame: header (24 bytes) then extras, key, value.
fn frame(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], announced: Option<u32>) -> Vec<u8> {
    let body = (extras.len() + key.len() + value.len()) as u32;
    let mut f = vec![0x80, opcode];
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.push(extras.len() as u8);
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&announced.unwrap_or(body).to_be_bytes());
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

/// Reads one response; panics unless it is a success.
fn expect_success(s: &mut TcpStream, what: &str) {
    let mut h = [0u8; 24];
    s.read_exact(&mut h).unwrap();
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut b = vec![0; body];
    s.read_exact(&mut b).unwrap();
    assert_eq!((h[6], h[7]), (0, 0), "{what} refused");
}

/// A connection authenticated with SASL PLAIN, the bucket selected.
fn authenticated(kv: &str) -> TcpStream {
    let mut s = TcpStream::connect(kv).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let plain = format!("\0{USER}\0{PASSWORD}");
    s.write_all(&frame(0x21, &[], b"PLAIN", plain.as_bytes(), None))
        .unwrap();
    expect_success(&mut s, "SASL");
    s.write_all(&frame(0x89, &[], b"default", &[], None))
        .unwrap();
    expect_success(&mut s, "SELECT_BUCKET");
    s
}

/// Whether the node closed `s` (EOF or a reset within `wait`; a timeout is not a close).
fn closed(s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut r = s;
    match r.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Writes `unit` over and over on `s` until `stop`, never reading; counts the bytes written.
fn flood(mut s: TcpStream, unit: Vec<u8>, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let burst: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * 4096)
        .collect();
    while !stop.load(Ordering::Relaxed) {
        match s.write(&burst) {
            Ok(n) => {
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

#[test]
fn floods_of_dcp_buffer_acks_and_tap_responses_leave_the_node_small_and_serving() {
    let node = TestNode::start(&[]);
    node.transfer(20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = node.sample(stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    for _ in 0..2 {
        // DCP: OPEN as a producer, then BUFFER_ACKs without end, reading nothing.
        let mut s = authenticated(&node.kv);
        let open = frame(0x50, &[0, 0, 0, 0, 0, 0, 0, 1], b"flood", &[], None);
        s.write_all(&open).unwrap();
        let ack = frame(0x5d, &1u32.to_be_bytes(), &[], &[], None);
        let (st, se) = (stop.clone(), sent.clone());
        flooders.push(std::thread::spawn(move || flood(s, ack, st, se)));
        // TAP: a dump, then responses without end.
        let mut s = authenticated(&node.kv);
        let connect = frame(0x40, &0x02u32.to_be_bytes(), b"flood", &[], None);
        s.write_all(&connect).unwrap();
        let mut response = frame(0x41, &[], &[], &[], None);
        response[0] = 0x81;
        let (st, se) = (stop.clone(), sent.clone());
        flooders.push(std::thread::spawn(move || flood(s, response, st, se)));
    }
    let started = Instant::now();
    // A normal transfer during the flood.
    node.transfer(5_000);
    while started.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    // And after it.
    node.transfer(5_000);
    let peak = sampler_peak(sampler, &stop);
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "flood: {} MB sent by the clients, node peak RSS {} MB, {} MB now",
        sent >> 20,
        peak >> 10,
        node.rss_kb() >> 10
    );
    assert!(
        peak < RSS_LIMIT_KB,
        "node RSS peaked at {peak} kB under the flood"
    );
}

fn sampler_peak(sampler: std::thread::JoinHandle<u64>, stop: &AtomicBool) -> u64 {
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap()
}

#[test]
fn past_the_connection_cap_new_ones_are_closed_with_a_log_line_and_idle_unauthenticated_ones_go_after_10s(
) {
    let node = TestNode::start(&["--max-connections", "300"]);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = node.sample(stop.clone());
    // 400 idle connections, none authenticated: the last 100 are closed at once.
    let idle: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(&node.kv).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let refused = idle
        .iter()
        .filter(|s| closed(s, Duration::from_millis(20)))
        .count();
    assert!(
        (100..=110).contains(&refused),
        "{refused} of 400 closed at once with a cap of 300"
    );
    let log = node.log();
    assert!(
        log.contains("300 connections open") && log.contains("--max-connections"),
        "no log line: {log}"
    );
    // After 10 s of silence the unauthenticated ones are closed, and a transfer is served.
    std::thread::sleep(Duration::from_secs(11));
    let still_open = idle
        .iter()
        .filter(|s| !closed(s, Duration::from_millis(20)))
        .count();
    assert_eq!(still_open, 0, "idle unauthenticated connections left open");
    node.transfer(2_000);
    let peak = sampler_peak(sampler, &stop);
    assert!(peak < RSS_LIMIT_KB, "node RSS peaked at {peak} kB");
}

#[test]
fn bodies_announced_before_authentication_are_refused_before_memory_is_reserved() {
    let node = TestNode::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = node.sample(stop.clone());
    // The case: 2,000 connections each announcing a 20 MB body before SASL (here 500,
    // each also sending the first 1 KB of it).
    let mut conns = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(&node.kv).unwrap();
        let mut f = frame(0x01, &[0; 8], b"k", &[], Some(20 << 20));
        f.extend_from_slice(&[b'x'; 1024]);
        let _ = s.write_all(&f);
        conns.push(s);
    }
    // Served meanwhile, and each of those connections closed by the node.
    node.transfer(2_000);
    let open = conns
        .iter()
        .filter(|s| !closed(s, Duration::from_secs(2)))
        .count();
    assert_eq!(
        open, 0,
        "connections that announced 20 MB before SASL left open"
    );
    let peak = sampler_peak(sampler, &stop);
    assert!(peak < RSS_LIMIT_KB, "node RSS peaked at {peak} kB");
    // An authenticated connection may still announce 20 MB (memcached's item limit).
    let mut s = authenticated(&node.kv);
    let value = vec![b'v'; 2 << 20];
    s.write_all(&frame(0x01, &[0; 8], b"big", &value, None))
        .unwrap();
    let mut h = [0u8; 24];
    s.read_exact(&mut h).unwrap();
    assert_eq!(
        (h[1], h[6], h[7]),
        (0x01, 0, 0),
        "a 2 MB SET refused after SASL"
    );
}
