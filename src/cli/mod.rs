//! Argument parsing and dispatch. Each subcommand lives in its own module.
//!
//! Exit codes: 0 success, 1 the work failed (or `verify` found a difference), 2 a usage error,
//! 130 stopped by Ctrl-C once what was in flight was drained.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backup;
mod cluster;
mod credentials;
mod demo;
mod meta2;
mod metrics;
mod node;
mod plan;
mod recover;
mod transfer;
mod verify;
mod worker;

/// pump: move vbucket data and meta2 bases from a source to a sink, at wire speed.
#[derive(Debug, Parser)]
#[command(name = "pump", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move every item of SOURCE into SINK (cbtransfer).
    Transfer(Box<transfer::TransferArgs>),
    /// Bring back the vbuckets a failed-over node lost, from another cluster (cbrecovery).
    Recover(Box<recover::RecoverArgs>),
    /// What a backup directory holds: each run, its time, source, counts, seqno ranges.
    Info(backup::InfoArgs),
    /// Every version of one key across the runs of a backup, with its metadata.
    Examine(backup::ExamineArgs),
    /// Compare two item endpoints (backups, clusters, memcached, CSV): exit 1 if they differ.
    Verify(Box<verify::VerifyArgs>),
    /// List the source and sink kinds and their spec syntax.
    Kinds,
    /// Run one reference node (KV + REST) in the foreground.
    Node(Box<node::NodeArgs>),
    /// A local cluster of reference nodes: up, failover.
    Cluster(Box<cluster::ClusterArgs>),
    /// The whole repair on local clusters: load, failover, recover, check.
    Demo(demo::DemoArgs),
    /// meta2 bases: check, sync, move, rebuild, generate.
    Meta2(Box<meta2::Meta2Args>),
    /// Split a transfer or a meta2 repair into jobs on beanstalkd; follow and retry a run.
    Plan(Box<plan::PlanArgs>),
    /// Run the jobs of a beanstalkd tube (on as many machines as wanted).
    Worker(Box<worker::WorkerArgs>),
}

pub use crate::failure::Failure;
pub use crate::kinds::registry;

/// Writes `text` to standard output.
pub fn print_out(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::Failed(format!("standard output: {e}")))
}

/// Logs to stderr: warnings always, `-v` adds what each step does, `-vv` the protocol's
/// details (`PUMP_LOG` overrides, in `tracing`'s filter syntax).
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info,hyper=warn,reqwest=warn,axum=warn",
        _ => "debug,hyper=info,reqwest=info,axum=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PUMP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// A run allocates the same buffers again and again (reads, batches, a data file's page
/// cache), and a worker does so job after job. glibc's allocator gives back to the kernel what
/// is freed (it trims a heap whose free top passes 128 KiB and unmaps large blocks), and the
/// next allocation faults it in again: a 1,000,000-item transfer into a backup directory took
/// 33,000 page faults and spent a sixth of its CPU clearing fresh pages, and a worker 660
/// faults per job (BENCHMARKS.md, "queue"). The pump keeps what it frees instead: a process's
/// memory stays at its peak, which the engine's channel limits bound.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters (under its own lock), before any
    // thread of ours allocates.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Parses the arguments, runs the command, prints errors, returns the exit code.
pub fn main() -> ExitCode {
    // A closed standard output (`pump ... | head`) ends the process quietly, as it does `cat`:
    // the default action of SIGPIPE, which Rust's runtime ignores. Sockets never raise it
    // (their writes pass MSG_NOSIGNAL), so only a pipe whose reader left does.
    // SAFETY: setting a signal's disposition to its default, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(match &cli.command {
        Command::Transfer(a) => a.verbose,
        Command::Recover(a) => a.verbose,
        Command::Verify(a) => a.verbose,
        _ => 0,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pump: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Transfer(args) => transfer::run(*args).await,
            Command::Recover(args) => recover::run(*args).await,
            Command::Info(args) => backup::info(args),
            Command::Examine(args) => backup::examine(args),
            Command::Verify(args) => verify::run(*args).await,
            Command::Node(args) => node::run(*args).await,
            Command::Cluster(args) => cluster::run(*args).await,
            Command::Meta2(args) => meta2::run(*args).await,
            Command::Plan(args) => plan::run(*args).await,
            Command::Worker(args) => worker::run(*args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Kinds => {
                print_kinds();
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("pump: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("pump: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Interrupted(m)) => {
            eprintln!("pump: {m}");
            ExitCode::from(130)
        }
    }
}

fn print_kinds() {
    let r = registry();
    println!("sources:");
    for k in r.sources() {
        println!("  {:<10} {}", k.name(), k.syntax());
    }
    println!("sinks:");
    for k in r.sinks() {
        println!("  {:<10} {}", k.name(), k.syntax());
    }
}
