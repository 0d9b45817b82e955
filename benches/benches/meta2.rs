//! meta2 benches, figures printed beside a ceiling measured in the same run.
//!
//! 1. sync: one base of ROWS rows (default 1 M) streamed by the pump (meta2 source -> meta2
//!    sink, what `pump meta2 sync` does per bad copy), against SQLite's own backup API copying
//!    the same file. Budget: within 3x.
//!    The pump's time includes the sink's verification before the rename (quick_check, the
//!    per-table digest of the built base against the source's) and the fsync. The CPU time
//!    the pump used is printed too, with the load average: on this shared machine the wall
//!    time depends on what else runs. It runs twice: with the default sort memory, then with
//!    16 MiB, under the index keys of the base's big tables, so that they are sorted in runs
//!    on disk and merged (`-x sort_memory`).
//! 2. rebuild: a lost volume of BASES bases (default 10,000) of 100 aliases each, rebuilt by
//!    `pump meta2 rebuild` (the binary: $PUMP_BIN, else target/release/pump brought up to
//!    date first; verified page copies, 4 at a time). Budget: >= 500 bases/s. The
//!    CPU time the process used is printed too, with the load average: on this shared
//!    machine the wall time depends on what else runs.
//!
//! `META2_BENCH_ROWS` and `META2_BENCH_BASES` scale them down; `META2_BENCH_ONLY=sync|rebuild`
//! runs one of them; `META2_BENCH_CACHE=DIR` keeps the generated big base for the next run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pump::progress::ProgressMode;
use pump::{Context, Options, WriterSink};
use pump_meta2::generate::{write_base, BaseSpec};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn big_base(dir: &Path, rows: usize) -> PathBuf {
    // 1 alias = 6 rows (content, 3 chunks, alias, property).
    let spec = BaseSpec {
        ns: "OPENIO".into(),
        account: "bench".into(),
        container: "big".into(),
        peers: vec!["127.0.0.1:6120".into()],
        aliases: rows / 6,
    };
    write_base(dir, &spec).expect("generate the big base")
}

fn sync_bench(root: &Path) {
    let rows = env_num("META2_BENCH_ROWS", 1_000_000);
    let t = Instant::now();
    // META2_BENCH_CACHE=DIR keeps the generated big base there for the next run.
    let src = match std::env::var("META2_BENCH_CACHE") {
        Ok(dir) => {
            let dir = PathBuf::from(dir).join(format!("big-{rows}"));
            let name = pump_meta2::BaseName::of("bench", "big");
            let path = name.path_in(&dir);
            if path.exists() {
                path
            } else {
                big_base(&dir, rows)
            }
        }
        Err(_) => big_base(&root.join("big"), rows),
    };
    let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    println!(
        "meta2 sync: generated {rows} rows ({:.1} MB) in {:.1}s",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let backup_to = root.join("backup.meta2");
    let t = Instant::now();
    {
        let from = rusqlite::Connection::open(&src).expect("open");
        let mut to = rusqlite::Connection::open(&backup_to).expect("open");
        let b = rusqlite::backup::Backup::new(&from, &mut to).expect("backup");
        b.run_to_completion(1 << 20, std::time::Duration::ZERO, None)
            .expect("backup");
    }
    let backup = t.elapsed().as_secs_f64();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The default, then a sort memory small enough that every index is sorted in runs on
    // disk and merged.
    for (name, sort_memory, budget) in [
        (
            "pumped",
            pump_sinks::meta2::DEFAULT_SORT_MEMORY,
            "budget 3x",
        ),
        (
            "spilled",
            SPILLED_SORT_MEMORY,
            "no budget: the cost of runs",
        ),
    ] {
        let dst = root.join(format!("{name}.meta2"));
        let cpu_before = pump_benches::cpu_seconds(pump_benches::Who::SelfProcess);
        let t = Instant::now();
        let summary = rt
            .block_on(async {
                let options = Options {
                    threads: 1,
                    ..Options::default()
                };
                let batch = options.extra.batch_max_size;
                let source = Box::new(pump_sources::meta2::Meta2Source::new(src.clone(), batch));
                let sink = pump_sinks::meta2::meta2_sink(dst.clone())
                    .0
                    .with_sort_memory(sort_memory);
                pump::run(
                    source,
                    Box::new(WriterSink(sink)),
                    Context::new(options).with_progress(ProgressMode::Off),
                )
                .await
            })
            .expect("pump");
        let pumped = t.elapsed().as_secs_f64();
        let cpu = pump_benches::cpu_seconds(pump_benches::Who::SelfProcess) - cpu_before;
        assert_eq!(
            pump_meta2::digest(&src, &[]).expect("digest"),
            pump_meta2::digest(&dst, &[]).expect("digest")
        );
        println!(
            "meta2 sync: pump {:.2}s ({:.0} rows/s, {} messages, sort memory {} MiB), SQLite backup API {backup:.2}s; ratio {:.2}x ({budget})",
            pumped,
            summary.counts.items_written as f64 / pumped,
            summary.counts.items_written,
            sort_memory >> 20,
            pumped / backup
        );
        println!(
            "meta2 sync: the pump used {cpu:.2}s of CPU (2 cores: {:.2}s at best); load average at the end: {}",
            cpu / 2.0,
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        std::fs::remove_file(&dst).expect("remove the copy");
    }
}

/// The sort memory of the second sync: a few MiB, under the keys of the base's big tables.
const SPILLED_SORT_MEMORY: usize = 16 << 20;

fn rebuild_bench(root: &Path) {
    let bases = env_num("META2_BENCH_BASES", 10_000);
    let lost = root.join("lost");
    let other = root.join("other");
    std::fs::create_dir_all(&lost).expect("mkdir");
    let t = Instant::now();
    let threads = 2;
    std::thread::scope(|s| {
        for w in 0..threads {
            let other = other.clone();
            s.spawn(move || {
                for i in (w..bases).step_by(threads) {
                    let spec = BaseSpec {
                        ns: "OPENIO".into(),
                        account: "bench".into(),
                        container: format!("c{i:06}"),
                        peers: vec!["127.0.0.1:6120".into(), "127.0.0.2:6120".into()],
                        aliases: 100,
                    };
                    write_base(&other, &spec).expect("generate");
                }
            });
        }
    });
    println!(
        "meta2 rebuild: generated {bases} bases of 100 aliases in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let bin = pump_benches::pump_binary();
    // Children's CPU so far (the cargo build that brought the binary up to date).
    let cpu_before = pump_benches::cpu_seconds(pump_benches::Who::Children);
    let t = Instant::now();
    let out = std::process::Command::new(&bin)
        .args(["meta2", "rebuild", "-q", "-t", "4"])
        .arg("--peer")
        .arg(format!("127.0.0.1:6120={}", lost.display()))
        .arg("--from-peer")
        .arg(format!("127.0.0.2:6120={}", other.display()))
        .output()
        .expect("run pump");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!(
        "meta2 rebuild ({}): {}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    let rate = bases as f64 / secs;
    println!(
        "meta2 rebuild: {bases} bases in {secs:.1}s = {rate:.0} bases/s (budget >= 500); ratio {:.2}x the budget",
        rate / 500.0
    );
    let cpu = pump_benches::cpu_seconds(pump_benches::Who::Children) - cpu_before;
    println!(
        "meta2 rebuild: the process used {cpu:.1}s of CPU ({:.2} ms a base); load average at the end: {}",
        cpu * 1000.0 / bases as f64,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
}

fn main() {
    let dir = std::env::var("META2_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let root = tempfile::tempdir_in(dir).expect("tempdir");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("META2_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "sync" {
        sync_bench(root.path());
    }
    if only.is_empty() || only == "rebuild" {
        rebuild_bench(root.path());
    }
}
