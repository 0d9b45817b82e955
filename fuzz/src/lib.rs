//! The fuzz suite: property-based targets, run on stable with proptest, for every parser of
//! input that comes from the network or from files. Each target generates inputs shaped like
//! the real thing (valid frames, real backup files, CSV rows, JSON documents, specs), damages
//! them with [`mutate`]'s edits, and checks that the parser never panics or hangs, that what it
//! accepts round-trips, and (for backup files) that it agrees with SQLite.
//!
//! ```text
//! mutate.rs       edits applied to a seed: set, flip, boundary values, insert, remove, copy,
//!                 cut, and edits aimed at a page's header and cell pointers
//! frame.rs        the memcached binary codec: requests and responses, fed split anywhere,
//!                 re-encoded byte for byte, body lengths checked before memory is reserved
//! tap.rs          TAP_CONNECT and TAP messages decoded from mutated frames, re-encoded
//! dcp.rs          DCP messages, stream-request replies and failover logs
//! cbb.rs          backup data files: real files, mutated, through the restore reader, with
//!                 SQLite as the oracle (no silent short read, no false refusal); the corpus
//!                 of the damaged files of issue 18 in corpus/cbb
//! csv.rs          the CSV source on mutated text, and the CSV sink's output read back
//! meta2_codec.rs  the meta2 cell, schema, base and table-end encodings
//! rest_json.rs    REST: the vbucket map JSON pump reads, the reference node's routes and the
//!                 SDS proxy's JSON bodies, through their routers
//! spec.rs         source and sink specs (`kind:...`, URLs, paths) and vbucket lists
//! ```
//!
//! `cargo test -p pump-fuzz` runs [`TEST_CASES`] cases of each target (a new random seed per
//! run, printed with any failure; `PUMP_FUZZ_SEED=N` replays one). `cargo run --release -p
//! pump-fuzz -- TARGET --minutes N` runs one target (or `all`) for N minutes and prints its
//! executions per second; a failure prints the smallest input proptest shrank it to.

pub mod cbb;
pub mod csv;
pub mod dcp;
pub mod frame;
pub mod meta2_codec;
pub mod mutate;
pub mod rest_json;
pub mod spec;
pub mod tap;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Cases of each target in the test suite.
pub const TEST_CASES: u32 = 1000;

/// One fuzz target.
pub struct Target {
    /// The name `pump-fuzz` takes.
    pub name: &'static str,
    /// What it feeds and what it checks.
    pub about: &'static str,
    /// Runs the runner's cases; the error names the failing (shrunk) input.
    pub run: fn(&mut TestRunner) -> Result<(), String>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frame",
        about: "memcached binary requests and responses through the codec",
        run: frame::run,
    },
    Target {
        name: "tap",
        about: "TAP_CONNECT and TAP messages",
        run: tap::run,
    },
    Target {
        name: "dcp",
        about: "DCP messages, stream-request replies, failover logs",
        run: dcp::run,
    },
    Target {
        name: "cbb",
        about:
            "backup data files (mutated real files) through the restore reader, SQLite as oracle",
        run: cbb::run,
    },
    Target {
        name: "csv",
        about: "the CSV source on mutated text; CSV sink output read back",
        run: csv::run,
    },
    Target {
        name: "meta2_codec",
        about: "the meta2 cell, schema, base and table-end encodings",
        run: meta2_codec::run,
    },
    Target {
        name: "rest_json",
        about: "the vbucket map JSON, the node's REST routes, the SDS proxy's JSON bodies",
        run: rest_json::run,
    },
    Target {
        name: "spec",
        about: "source and sink specs, vbucket lists",
        run: spec::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A runner of `cases` cases whose random choices all come from `seed`.
pub fn runner(cases: u32, seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(!seed).to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `check` on the runner's cases of `strategy`: a property that fails (an `Err`) or a
/// panic is shrunk to the smallest input that still fails, and returned as text.
pub fn check_all<S>(
    runner: &mut TestRunner,
    strategy: S,
    check: impl Fn(&S::Value) -> Result<(), String>,
) -> Result<(), String>
where
    S: Strategy,
    S::Value: Debug,
{
    let counted = |v: S::Value| {
        CASES.fetch_add(1, Ordering::Relaxed);
        check(&v).map_err(TestCaseError::fail)
    };
    match runner.run(&strategy, counted) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, input)) => {
            Err(format!("{why}\nsmallest failing input: {input:#?}"))
        }
        Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
    }
}

/// A runtime shared by the targets that drive async code (one per process).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Cases run in this process, shrinking included.
static CASES: AtomicU64 = AtomicU64::new(0);

/// Cases run so far in this process.
pub fn cases_run() -> u64 {
    CASES.load(Ordering::Relaxed)
}

/// A thread that ends the process (exit 3, saying so) when no case finishes for `stuck`: a
/// case that hangs is a finding too. Stops when the returned guard is dropped.
pub fn start_watchdog(stuck: Duration) -> Watchdog {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut last = (cases_run(), std::time::Instant::now());
        while !s.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let n = cases_run();
            if n != last.0 {
                last = (n, std::time::Instant::now());
            } else if last.1.elapsed() > stuck {
                eprintln!("pump-fuzz: no case finished for {stuck:?}: a case hangs");
                std::process::exit(3);
            }
        }
    });
    Watchdog(stop)
}

/// Stops the watchdog when dropped.
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
