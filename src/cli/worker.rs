//! `pump worker beanstalk://HOST:PORT[/TUBE] [--concurrency N]`: run the jobs `pump plan` put,
//! on this machine. The work is in `crate::scale::worker`.
//!
//! Ctrl-C (or SIGTERM, as systemd and Kubernetes stop a service) stops reserving; each job
//! under way stops reading, drains what is in flight, records its checkpoint and is released
//! at once for another worker. A second Ctrl-C exits without waiting (the server then gives the
//! jobs back as the connections close).

use clap::Args;
use pump_queue::QueueUrl;
use tokio_util::sync::CancellationToken;

use super::credentials::CredentialArgs;
use super::Failure;
use crate::scale::execute::WorkerCredentials;
use crate::scale::worker::{self, WorkerConfig};

/// `pump worker ...`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The work queue: beanstalk://HOST[:PORT][/TUBE] (or PUMP_QUEUE).
    #[arg(env = "PUMP_QUEUE", value_parser = queue_url)]
    queue: QueueUrl,
    /// Jobs read at the same time (each slot also holds the job before its current one while
    /// that job finishes: syncs its files and is deleted).
    #[arg(short = 'c', long, default_value_t = 1)]
    concurrency: usize,
    /// The credentials every job uses (jobs carry none).
    #[command(flatten)]
    credentials: CredentialArgs,
    /// How every job trusts a TLS peer (jobs carry no trust).
    #[command(flatten)]
    tls: crate::cli::credentials::TlsArgs,
    /// A job failing this many times in a row for a temporary reason (a peer down) is buried.
    #[arg(long, default_value_t = 5)]
    max_failures: u32,
    /// Exit once the tube holds no ready, running or delayed job.
    #[arg(long)]
    drain: bool,
    /// Only errors, no line per job.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// More output from each transfer (repeat for more).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
}

fn queue_url(s: &str) -> Result<QueueUrl, String> {
    QueueUrl::parse(s).map_err(|e| e.to_string())
}

/// Runs the worker until Ctrl-C / SIGTERM, or with --drain until the tube is empty.
pub async fn run(args: WorkerArgs) -> Result<(), Failure> {
    if args.max_failures == 0 {
        return Err(Failure::Usage("--max-failures must be at least 1".into()));
    }
    let stop = CancellationToken::new();
    let signals = stop.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("\npump worker: stopping: each job under way records its checkpoint and is released (again to exit at once)");
        signals.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "pump worker: exiting now; the queue gives the jobs back as the connections close"
        );
        std::process::exit(130);
    });
    if args.drain {
        // A run to the end of the tube: a queue that cannot be reached at the start (a wrong
        // address, a server not up) is an error, not a wait. Without --drain a worker is a
        // service, which waits for its queue and says so once.
        crate::scale::connect(&args.queue).await.map_err(|e| match e {
            Failure::Failed(m) => Failure::Failed(format!(
                "{m}: nothing to drain; check the address (a worker without --drain waits for the queue)"
            )),
            other => other,
        })?;
    }
    let config = WorkerConfig {
        url: args.queue,
        concurrency: args.concurrency,
        credentials: WorkerCredentials {
            source: args.credentials.source()?,
            dest: args.credentials.dest()?,
            cacert: args.tls.cacert,
            no_ssl_verify: args.tls.no_ssl_verify,
        },
        max_failures: args.max_failures,
        drain: args.drain,
        quiet: args.quiet,
        verbose: args.verbose,
    };
    let t = worker::run(config, stop.clone()).await?;
    eprintln!(
        "pump worker: {} jobs done, {} released, {} buried, {} refused, {} lost; {} items",
        t.done, t.released, t.buried, t.refused, t.lost, t.items
    );
    if stop.is_cancelled() {
        return Err(Failure::Interrupted(format!(
            "interrupted: {} job(s) given back to the queue",
            t.released
        )));
    }
    Ok(())
}
