//! What the end-to-end benches share.

use std::path::PathBuf;
use std::process::Command;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// The `pump` binary the benches run: `$PUMP_BIN`, else `target/release/pump`, built (or
/// brought up to date, a no-op when it is) first, so that a bench never measures a stale one.
pub fn pump_binary() -> PathBuf {
    if let Ok(p) = std::env::var("PUMP_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--bin", "pump"])
        .current_dir(workspace_root())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot build the pump binary; set PUMP_BIN to a built one"
    );
    target.join("release").join("pump")
}

/// `pump transfer SOURCE SINK` through the library, as the binary runs it, with `-t threads`;
/// checks that exactly `items` were written and returns the seconds it took.
pub async fn transfer(source: &str, sink: &str, threads: usize, items: u64) -> f64 {
    let mut registry = pump::Registry::new();
    pump_sources::register(&mut registry);
    pump_sinks::register(&mut registry);
    let options = pump::Options {
        threads,
        ..pump::Options::default()
    };
    let open = |spec: &str| pump::Spec::parse(spec).expect("a valid spec");
    let (src, dst) = (open(source), open(sink));
    let (source_kind, sink_kind) = registry.pair(&src, &dst).expect("kinds that fit");
    let source = source_kind.open(&src, &options).expect("the source opens");
    let sink = sink_kind.open(&dst, &options).expect("the sink opens");
    let t = std::time::Instant::now();
    let summary = pump::run(source, sink, pump::Context::new(options))
        .await
        .expect("the transfer succeeds");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        summary.counts.items_written, items,
        "{src} -> {dst}: {:?}",
        summary.counts
    );
    secs
}

/// Whose CPU time [`cpu_seconds`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// This process, every thread.
    SelfProcess,
    /// The child processes waited for so far.
    Children,
}

/// CPU seconds (user + system) used so far by `who`; NaN when the system will not say.
pub fn cpu_seconds(who: Who) -> f64 {
    let who = match who {
        Who::SelfProcess => libc::RUSAGE_SELF,
        Who::Children => libc::RUSAGE_CHILDREN,
    };
    // SAFETY: getrusage only writes the struct it is given, which is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}
