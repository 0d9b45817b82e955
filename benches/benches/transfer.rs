//! End-to-end transfer benchmark: the pump library in-process, figures beside a ceiling
//! measured in the same run.
//!
//! ```text
//! gen -> blackhole        5 M items, 100-byte values      items/s, MB/s
//! gen -> backup dir       1 M items, 100-byte values      items/s, MB/s
//!   ceiling               the same rows, raw prepared inserts into cbb_msg, one transaction
//! peak RSS                10 M items gen -> blackhole in the `pump` binary (a child process)
//! ```
//!
//! `cargo bench -p pump-benches --bench transfer`. Sizes: `PUMP_BENCH_ITEMS` (gen -> blackhole),
//! `PUMP_BENCH_BACKUP_ITEMS`, `PUMP_BENCH_RSS_ITEMS`; the binary: `PUMP_BIN` (default
//! `target/release/pump`, brought up to date first).

use std::process::Command;
use std::time::{Duration, Instant};

use pump::{Context, Options, Registry, Spec};
use pump_formats::bfd;

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn registry() -> Registry {
    let mut r = Registry::new();
    pump_sources::register(&mut r);
    pump_sinks::register(&mut r);
    r
}

/// Runs SOURCE -> SINK through the library; (items, payload bytes, elapsed).
fn transfer(rt: &tokio::runtime::Runtime, source: &str, sink: &str) -> (u64, u64, Duration) {
    let r = registry();
    let options = Options::default();
    let src = Spec::parse(source).unwrap();
    let dst = Spec::parse(sink).unwrap();
    let source = r.source_kind(&src).unwrap().open(&src, &options).unwrap();
    let sink = r.sink_kind(&dst).unwrap().open(&dst, &options).unwrap();
    let t = Instant::now();
    let summary = rt
        .block_on(pump::run(source, sink, Context::new(options)))
        .unwrap_or_else(|e| panic!("{source:?} -> {sink:?}: {e}", source = src, sink = dst));
    let elapsed = t.elapsed();
    (
        summary.counts.items_written,
        summary.counts.bytes_written,
        elapsed,
    )
}

fn line(what: &str, items: u64, bytes: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    let rate = items as f64 / secs;
    println!(
        "{what:<34} {items:>10} items {secs:>8.3} s {:>10.3} M items/s {:>9.1} MB/s",
        rate / 1e6,
        bytes as f64 / secs / 1e6
    );
    rate
}

/// The ceiling: the same rows gen makes, inserted with one prepared statement in one
/// transaction into a fresh cbb_msg file with the writer's pragmas, then the file synced once
/// (the durability of one default COMMIT; the sink also syncs each file once). Row building
/// is done before the clock starts.
fn sqlite_ceiling(dir: &std::path::Path, items: u64) -> (u64, u64, Duration) {
    let value = (0..100).map(|i| b'0' + (i % 10) as u8).collect::<Vec<u8>>();
    let keys: Vec<(Vec<u8>, u16)> = (0..items)
        .map(|i| {
            let k = format!("pymc{i}").into_bytes();
            let vb = pump_protocol::vbucket_of(&k, 1024);
            (k, vb)
        })
        .collect();
    let path = dir.join("ceiling.cbb");
    let db = rusqlite::Connection::open(&path).unwrap();
    for (p, v) in bfd::WRITER_PRAGMAS {
        db.pragma_update(None, p, v).unwrap();
    }
    bfd::create_schema(&db).unwrap();
    let t = Instant::now();
    db.execute_batch("BEGIN").unwrap();
    {
        let mut insert = db.prepare(bfd::INSERT).unwrap();
        for (i, (k, vb)) in keys.iter().enumerate() {
            insert
                .execute(rusqlite::params![
                    bfd::cmd::DCP_MUTATION,
                    vb,
                    &k[..],
                    0u32,
                    0u32,
                    "0",
                    &b""[..],
                    &value[..],
                    i as i64 + 1,
                    0u8,
                    0i64,
                    0u8
                ])
                .unwrap();
        }
    }
    db.execute_batch("COMMIT").unwrap();
    db.close().unwrap();
    // One durable transaction: what a default (synchronous) COMMIT pays, and what the sink
    // pays once per file before renaming it.
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let elapsed = t.elapsed();
    let bytes = keys.iter().map(|(k, _)| k.len() as u64 + 100).sum();
    (items, bytes, elapsed)
}

/// Peak RSS of the pump binary moving `items` items gen -> blackhole, in MB. The child is
/// reaped with wait4, which reports that child's own rusage (RUSAGE_CHILDREN would include
/// a cargo build run just before).
#[allow(clippy::zombie_processes)] // reaped with wait4, not Child::wait
fn peak_rss_mb(items: u64) -> (f64, Duration) {
    let bin = pump_benches::pump_binary();
    let t = Instant::now();
    let child = Command::new(&bin)
        .args([
            "transfer",
            &format!("gen:max-items={items},min-value-size=100"),
            "blackhole:",
            "-q",
        ])
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "pump exited with {status}"
    );
    // Linux reports ru_maxrss in KiB.
    (usage.ru_maxrss as f64 / 1024.0, t.elapsed())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = if quick { 100 } else { 1 };
    let n_blackhole = env_count("PUMP_BENCH_ITEMS", 5_000_000) / scale;
    let n_backup = env_count("PUMP_BENCH_BACKUP_ITEMS", 1_000_000) / scale;
    let n_rss = env_count("PUMP_BENCH_RSS_ITEMS", 10_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    if quick {
        println!("(quick run: peak RSS measured only under cargo bench)");
    } else {
        // First, while this process is still small: a child's peak RSS on Linux includes the
        // pages it shared with its parent before exec.
        let (mb, d) = peak_rss_mb(n_rss);
        println!(
            "peak RSS, pump binary, {n_rss} items gen -> blackhole: {mb:.1} MB ({:.2} s; target < 100 MB: {})",
            d.as_secs_f64(),
            if mb < 100.0 { "met" } else { "MISSED" }
        );
    }

    println!("end-to-end transfer, 100-byte values, in-process (pump library)");
    let (i, b, d) = transfer(
        &rt,
        &format!("gen:max-items={n_blackhole},min-value-size=100"),
        "blackhole:",
    );
    let rate = line("gen -> blackhole", i, b, d);
    println!(
        "{:<34} target >= 5 M items/s: {}",
        "",
        if rate >= 5e6 { "met" } else { "MISSED" }
    );

    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let (i, b, d) = transfer(
        &rt,
        &format!("gen:max-items={n_backup},min-value-size=100"),
        backup.to_str().unwrap(),
    );
    let pump_rate = line("gen -> backup directory", i, b, d);
    let (i, b, d) = sqlite_ceiling(dir.path(), n_backup);
    let ceiling = line("ceiling: raw prepared inserts", i, b, d);
    let ratio = pump_rate / ceiling;
    println!(
        "{:<34} {:.0}% of the SQLite ceiling (target >= 80%: {})",
        "gen -> backup / ceiling",
        ratio * 100.0,
        if ratio >= 0.8 { "met" } else { "MISSED" }
    );
}
