//! The operator's tools, measured through the `pump` binary:
//!
//! ```text
//! rate     gen -> blackhole held by --rate 50k: 500,000 items, 10 s at the rate
//!          items/s over the whole run, against 50,000 +- 5%
//! verify   1,000,000 items (100-byte values) in backup A
//!          a transfer: A -> backup B (a copy of the same items)        the ceiling's unit
//!          pump verify A B, equal                                       under 2x the copy
//!          pump verify A B, one value changed in B (named in pass 2)    under 2x the copy
//! ```
//!
//! `cargo bench -p pump-benches --bench backup`. Sizes: `PUMP_BENCH_RATE_SECS` (10),
//! `PUMP_BENCH_VERIFY_ITEMS` (1,000,000); `PUMP_BENCH_ONLY=rate|verify` runs one; the binary:
//! `PUMP_BIN` (default `target/release/pump`, brought up to date first).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `pump ARGS`; panics with its stderr when it fails (unless `may_fail`); returns the
/// seconds it took and its stdout.
fn pump(bin: &Path, args: &[&str], may_fail: bool) -> (f64, String) {
    let t = Instant::now();
    let out = Command::new(bin).args(args).output().expect("run pump");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        may_fail || out.status.success(),
        "pump {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rate(bin: &Path, secs: u64) {
    let target = 50_000u64;
    let items = target * secs;
    println!("rate: gen -> blackhole, --rate 50k, {items} items ({secs} s at the rate)");
    for round in 1..=2 {
        let (wall, out) = pump(
            bin,
            &[
                "transfer",
                &format!("gen:max-items={items},min-value-size=100"),
                "blackhole:",
                "--rate",
                "50k",
                "--json",
                "-q",
            ],
            false,
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("--json");
        let written = v["counts"]["items_written"].as_u64().unwrap_or(0);
        let elapsed = v["counts"]["elapsed"].as_f64().unwrap_or(f64::NAN);
        let rate = written as f64 / elapsed;
        let off = (rate / target as f64 - 1.0) * 100.0;
        println!(
            "  round {round}: {written} items in {elapsed:.3} s (process {wall:.3} s): {rate:.0} items/s, {off:+.2}% of 50,000 (target within 5%: {})",
            if off.abs() <= 5.0 { "met" } else { "NOT met" }
        );
    }
}

fn verify(bin: &Path, items: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    println!("verify: {items} items of 100-byte values");
    let (gen, _) = pump(
        bin,
        &[
            "transfer",
            &format!("gen:max-items={items},min-value-size=100"),
            a,
            "-q",
        ],
        false,
    );
    println!("  gen -> backup A:                 {gen:.3} s");
    let (copy, _) = pump(bin, &["transfer", a, b, "-q"], false);
    println!(
        "  transfer A -> backup B:          {copy:.3} s ({:.0} items/s)",
        items as f64 / copy
    );
    let (equal, out) = pump(bin, &["verify", a, b], false);
    assert!(out.contains("equal"), "{out}");
    println!(
        "  verify A B (equal):              {equal:.3} s, {:.2}x the transfer (target well under 2x: {})",
        equal / copy,
        if equal / copy < 2.0 { "met" } else { "NOT met" }
    );
    let key = format!("pymc{}", items / 2);
    let file = walk(Path::new(b))
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "data-0000.cbb"))
        .expect("B's data file");
    let db = rusqlite::Connection::open(&file).unwrap();
    let n = db
        .execute(
            "UPDATE cbb_msg SET val = CAST('changed' AS BLOB) WHERE key = CAST(?1 AS BLOB)",
            [&key],
        )
        .unwrap();
    assert_eq!(n, 1, "{key} in {}", file.display());
    drop(db);
    let (differ, out) = pump(bin, &["verify", a, b], true);
    assert!(out.contains(&format!("different: {key}")), "{out}");
    println!(
        "  verify A B (one value changed):  {differ:.3} s, {:.2}x the transfer (target well under 2x: {}); named {key}",
        differ / copy,
        if differ / copy < 2.0 { "met" } else { "NOT met" }
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let only = std::env::var("PUMP_BENCH_ONLY").unwrap_or_default();
    let bin = pump_benches::pump_binary();
    if only.is_empty() || only == "rate" {
        rate(
            &bin,
            if quick {
                1
            } else {
                env_count("PUMP_BENCH_RATE_SECS", 10)
            },
        );
    }
    if only.is_empty() || only == "verify" {
        let items = env_count("PUMP_BENCH_VERIFY_ITEMS", 1_000_000);
        verify(&bin, if quick { items / 100 } else { items });
    }
}
