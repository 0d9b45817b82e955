//! What `-x verify` costs a restore: a backup read into `blackhole:` with `verify=none`,
//! `quick` (the default) and `full`, in the same run.
//!
//! ```text
//! backup   N items (PUMP_BENCH_VERIFY_ITEMS, 2,000,000), 100-byte values, written first by the
//!          backup sink (one data file, read from the page cache: the first round warms it)
//! rows     backup -> blackhole with -x verify=none | quick | full; 7 rounds, the order rotating
//!          so each row runs in each place; each row's figure is the median of its rounds:
//!          items/s, and the CPU time of this process per item (on a shared machine the CPU
//!          per item moves less than the rate: the other processes take wall time, not CPU)
//! target   quick at least 90% of none's items/s (the issue: quick costs at most 10%)
//! ```
//!
//! `cargo bench -p pump-benches --bench verify` (`cargo test --benches` runs it small).

use std::time::Instant;

use pump::{Context, Options, Registry, Spec};
use pump_benches::{cpu_seconds, Who};

fn registry() -> Registry {
    let mut r = Registry::new();
    pump_sources::register(&mut r);
    pump_sinks::register(&mut r);
    r
}

/// `SOURCE -> SINK` with `-x verify=VERIFY`; (items written, seconds, CPU seconds).
fn transfer(
    rt: &tokio::runtime::Runtime,
    source: &str,
    sink: &str,
    verify: &str,
) -> (u64, f64, f64) {
    let r = registry();
    let mut options = Options::default();
    if !verify.is_empty() {
        options.extra.set("verify", verify);
    }
    let (src, dst) = (Spec::parse(source).unwrap(), Spec::parse(sink).unwrap());
    let (sk, dk) = r.pair(&src, &dst).expect("kinds that fit");
    let source = sk.open(&src, &options).expect("the source opens");
    let sink = dk.open(&dst, &options).expect("the sink opens");
    let (t, cpu) = (Instant::now(), cpu_seconds(Who::SelfProcess));
    let summary = rt
        .block_on(pump::run(source, sink, Context::new(options)))
        .unwrap_or_else(|e| panic!("{src} -> {dst}: {e}"));
    (
        summary.counts.items_written,
        t.elapsed().as_secs_f64(),
        cpu_seconds(Who::SelfProcess) - cpu,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick_run = !std::env::args().any(|a| a == "--bench");
    let items: u64 = std::env::var("PUMP_BENCH_VERIFY_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
        / if quick_run { 100 } else { 1 };
    let rounds = if quick_run { 1 } else { 7 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    let (n, _, _) = transfer(
        &rt,
        &format!("gen:max-items={items},min-value-size=100"),
        backup,
        "",
    );
    assert_eq!(n, items);
    // Warm the page cache, untimed.
    transfer(&rt, backup, "blackhole:", "none");
    let rows = ["none", "quick", "full"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        for k in 0..rows.len() {
            let i = (round + k) % rows.len();
            let (n, secs, cpu) = transfer(&rt, backup, "blackhole:", rows[i]);
            assert_eq!(n, items, "verify={}", rows[i]);
            rates[i].push(n as f64 / secs);
            cpus[i].push(cpu / n as f64 * 1e9);
        }
    }
    println!(
        "backup -> blackhole, {items} items of 100 bytes, median of {rounds} rounds (order rotating)"
    );
    let none = median(rates[0].clone());
    let none_cpu = median(cpus[0].clone());
    for (i, row) in rows.iter().enumerate() {
        let m = median(rates[i].clone());
        let c = median(cpus[i].clone());
        println!(
            "  -x verify={row:<6} {:>8.3} M items/s  {:>5.1}% of verify=none   CPU {:>5.0} ns/item ({:>+5.1}%)  (rounds, M items/s: {})",
            m / 1e6,
            m / none * 100.0,
            c,
            (c / none_cpu - 1.0) * 100.0,
            rates[i]
                .iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let quick = median(rates[1].clone()) / none;
    println!(
        "  quick / none: {:.1}% (target >= 90%: {})",
        quick * 100.0,
        if quick >= 0.9 { "met" } else { "MISSED" }
    );
}
