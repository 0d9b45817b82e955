//! The memcached source's memory: the anonymous memory (RssAnon) of this process while the
//! pump reads every item of Debian's memcached into a blackhole, at 1 M and at 10 M items of
//! 100-byte values. The source keeps nothing per key, so the peak must stay flat (target:
//! under 100 MB at 10 M; issue 15 measured 99 MB at 1 M and 294 MB at 10 M before).
//!
//! ```text
//! memcached (-m sized to the items) <── gen -> memcached (the load, not measured)
//! memcached ──metadump + GETKQ──▶ pump (this process) ──▶ blackhole:
//!           RssAnon sampled every 10 ms from /proc/self/status: before, and the peak
//! ```
//!
//! `cargo bench -p pump-benches --bench memcached_source` (Debian's memcached must be
//! installed). `PUMP_BENCH_SOURCE_ITEMS=1000000,10000000` sets the sizes.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This process's anonymous resident memory, in bytes (RssAnon of /proc/self/status).
fn rss_anon() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// memcached on a free 127.0.0.1 port with `mb` of memory; returns it and its port.
fn start_memcached(mb: u64) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-m", &mb.to_string(), "-t", "2", "-c", "1024"]);
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

fn mb(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("PUMP_BENCH_SOURCE_ITEMS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("memcached -> blackhole through the pump: the source's anonymous memory");
    println!(
        "  {:>12} {:>9} {:>12} {:>14} {:>14} {:>14}",
        "items", "seconds", "items/s", "RssAnon before", "RssAnon peak", "peak - before"
    );
    let mut peaks = Vec::new();
    for &n in &sizes {
        // 100-byte values, ~12-byte keys: ~190 bytes an item in memcached's slabs.
        let (_server, port) = start_memcached(n * 220 / 1_000_000 + 256);
        let url = format!("memcached://127.0.0.1:{port}");
        let gen = format!("gen:max-items={n},min-value-size=100");
        rt.block_on(pump_benches::transfer(&gen, &url, 4, n));
        let before = rss_anon();
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_anon(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let secs = rt.block_on(pump_benches::transfer(&url, "blackhole:", 4, n));
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let peak = peak.load(Ordering::Relaxed).max(rss_anon());
        peaks.push((n, peak));
        println!(
            "  {n:>12} {secs:>9.2} {:>12.0} {:>11.1} MB {:>11.1} MB {:>11.1} MB",
            n as f64 / secs,
            mb(before),
            mb(peak),
            mb(peak.saturating_sub(before)),
        );
    }
    if let (Some((n0, p0)), Some((n1, p1))) = (peaks.first(), peaks.last()) {
        println!(
            "  peak at {n1} items: {:.1} MB (target: under 100 MB); at {n0} items: {:.1} MB; growth {:.1} MB",
            mb(*p1),
            mb(*p0),
            mb(p1.saturating_sub(*p0)),
        );
    }
}
