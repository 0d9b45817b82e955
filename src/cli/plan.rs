//! `pump plan transfer|meta2|status|retry`: split work into jobs on beanstalkd, follow a run,
//! kick its buried jobs back. The work is in `crate::scale`; how a run flows and where each
//! job's checkpoint lives is in `pump_queue`'s crate doc.
//!
//! ```text
//! pump plan transfer SOURCE SINK --queue beanstalk://HOST:PORT[/TUBE] [--jobs N] [transfer options]
//!     a backup directory SINK: its run is planned here (-m full|diff|accu), each job writes a part
//! pump plan meta2 rebuild --peer LOST=VOLUME --from-peer ADDR=VOLUME ... --queue URL [--jobs N]
//! pump plan meta2 check --volume VOLUME --peer ADDR=VOLUME ... --queue URL [--jobs N]
//!     -> prints the run id on stdout (what was planned on stderr)
//! pump plan status [RUN] --queue URL [--json]     every run, or one run's jobs
//! pump plan retry RUN --queue URL                 kick the run's buried jobs back
//! ```
//!
//! `--queue` may come from `PUMP_QUEUE`. Credentials given to a plan are used to read the
//! source's map and go into no job: each worker brings its own.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pump_meta2::Peer;
use pump_queue::{QueueUrl, RunStatus, Standing};

use super::credentials::CredentialArgs;
use super::Failure;
use crate::scale::{self, plan};

/// `pump plan ...`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(subcommand)]
    command: PlanCommand,
}

#[derive(Debug, Subcommand)]
enum PlanCommand {
    /// Split a transfer into jobs of vbucket ranges and put them in the queue.
    Transfer(Box<PlanTransferArgs>),
    /// Split a meta2 rebuild or volume check into jobs of bases.
    Meta2(PlanMeta2Args),
    /// Where a run's jobs stand (every run in the queue when RUN is not given).
    Status(StatusArgs),
    /// Kick a run's buried jobs back, once the cause of their failure is fixed.
    Retry(RetryArgs),
}

/// The queue: `--queue beanstalk://HOST:PORT[/TUBE]`.
#[derive(Debug, Args)]
struct QueueOpt {
    /// The work queue: beanstalk://HOST[:PORT][/TUBE] (port 11300, tube "pump" by default).
    #[arg(long, env = "PUMP_QUEUE", value_parser = queue_url)]
    queue: QueueUrl,
}

fn queue_url(s: &str) -> Result<QueueUrl, String> {
    QueueUrl::parse(s).map_err(|e| e.to_string())
}

/// How jobs are put.
#[derive(Debug, Args)]
struct JobOpts {
    /// How many jobs (transfer: 16; meta2: one per 100 bases).
    #[arg(long)]
    jobs: Option<u32>,
    /// Each job's time to run, in seconds: a worker touches it every quarter of that (5 s at
    /// most); a job whose worker stops touching it goes back to the queue.
    #[arg(long, default_value_t = 60)]
    ttr: u32,
    /// beanstalkd priority of the jobs (lower runs first).
    #[arg(long, default_value_t = 1024)]
    priority: u32,
}

impl QueueOpt {
    fn with(&self, j: &JobOpts) -> plan::QueueArgs {
        plan::QueueArgs {
            url: self.queue.clone(),
            jobs: j.jobs,
            ttr: j.ttr.max(1),
            priority: j.priority,
        }
    }
}

#[derive(Debug, Args)]
struct PlanTransferArgs {
    /// Where to read: couchbase://HOST:RESTPORT, dcp://HOST:PORT, a backup directory, gen:...
    source: String,
    /// Where to write: couchbase://..., memcached://..., tap://..., blackhole:
    sink: String,
    /// Source bucket.
    #[arg(short = 'b', long = "bucket-source", default_value = "default")]
    bucket_source: String,
    /// Destination bucket (defaults to the source bucket).
    #[arg(short = 'B', long = "bucket-destination")]
    bucket_destination: Option<String>,
    /// Used here to read the source's map only; workers bring their own.
    #[command(flatten)]
    credentials: CredentialArgs,
    /// Used here to read the source's map only; workers bring their own.
    #[command(flatten)]
    tls: crate::cli::credentials::TlsArgs,
    /// Only these vbuckets: 500,612,700-712 (split among the jobs).
    #[arg(short = 'l', long = "vbucket-list")]
    vbucket_list: Option<String>,
    /// Only keys matching this regular expression.
    #[arg(short = 'k', long = "key")]
    key: Option<String>,
    /// Each job's workers: connections of a network sink, streams of a network source.
    #[arg(short = 't', long = "threads", default_value_t = 4)]
    threads: usize,
    /// Extra settings, as pump transfer takes them (not checkpoint: the queue keeps those).
    #[arg(short = 'x', long = "extra", default_value = "")]
    extra: String,
    /// Use ADD instead of SET in a memcached-protocol sink.
    #[arg(short = 'a', long = "add")]
    add: bool,
    /// Hold each job's source to this rate, as `pump transfer --rate` does: items/s (50000,
    /// 50k) or bytes/s (10MB/s). A worker running N jobs at once moves up to N times as much.
    #[arg(long = "rate")]
    rate: Option<String>,
    /// A backup directory sink's run, as pump transfer -m: full, diff or accu. The run is
    /// planned here, once; every job writes a part of it.
    #[arg(short = 'm', long = "mode", value_enum)]
    mode: Option<super::transfer::Mode>,
    #[command(flatten)]
    queue: QueueOpt,
    #[command(flatten)]
    jobs: JobOpts,
}

#[derive(Debug, Args)]
struct PlanMeta2Args {
    #[command(subcommand)]
    command: PlanMeta2Command,
}

#[derive(Debug, Subcommand)]
enum PlanMeta2Command {
    /// Rebuild every base a lost service should hold, in jobs of bases.
    Rebuild(Box<PlanRebuildArgs>),
    /// Check every base of a volume across its peers, in jobs of bases.
    Check(Box<PlanCheckArgs>),
}

fn peer(s: &str) -> Result<Peer, String> {
    Peer::parse(s).map_err(|e| e.to_string())
}

fn size(s: &str) -> Result<u64, String> {
    pump::parse_size(s)
        .ok_or_else(|| format!("{s:?}: expected a positive size: 65536, 64K, 256M, 1G"))
}

#[derive(Debug, Args)]
struct PlanRebuildArgs {
    /// The service that lost its volume: ADDRESS=VOLUME (the new, empty volume), as every
    /// worker sees it.
    #[arg(long = "peer", value_parser = peer)]
    peer: Peer,
    /// Another service's volume to find the bases on: ADDRESS=VOLUME (repeat).
    #[arg(long = "from-peer", value_parser = peer, required = true)]
    from_peers: Vec<Peer>,
    /// Bases rebuilt at the same time by each job.
    #[arg(short = 't', long, default_value_t = 4)]
    threads: usize,
    /// Stream each base through the pump instead of a verified page copy.
    #[arg(long)]
    stream: bool,
    /// With --stream: index key bytes held before sorting into runs on disk (64M, 1G).
    #[arg(long, value_parser = size)]
    sort_memory: Option<u64>,
    /// The lost service's volume may be new or hold no base yet (as pump meta2 rebuild
    /// --create): without it, a volume the planner finds missing or empty is refused.
    #[arg(long)]
    create: bool,
    #[command(flatten)]
    queue: QueueOpt,
    #[command(flatten)]
    jobs: JobOpts,
}

#[derive(Debug, Args)]
struct PlanCheckArgs {
    /// The volume whose bases are checked.
    #[arg(long)]
    volume: PathBuf,
    /// A service holding copies: ADDRESS=VOLUME (repeat).
    #[arg(long = "peer", value_parser = peer, required = true)]
    peers: Vec<Peer>,
    /// integrity_check instead of quick_check.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    queue: QueueOpt,
    #[command(flatten)]
    jobs: JobOpts,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The run id `pump plan` printed (every run when not given).
    run: Option<String>,
    #[command(flatten)]
    queue: QueueOpt,
    /// JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RetryArgs {
    /// The run id.
    run: String,
    #[command(flatten)]
    queue: QueueOpt,
}

/// Runs a `pump plan` command.
pub async fn run(args: PlanArgs) -> Result<(), Failure> {
    match args.command {
        PlanCommand::Transfer(a) => transfer(*a).await,
        PlanCommand::Meta2(a) => match a.command {
            PlanMeta2Command::Rebuild(a) => {
                let q = a.queue.with(&a.jobs);
                let r = plan::RebuildArgs {
                    lost: a.peer,
                    from: a.from_peers,
                    threads: a.threads,
                    stream: a.stream,
                    sort_memory: a.sort_memory,
                };
                if r.sort_memory.is_some() && !r.stream {
                    return Err(Failure::Usage(
                        "--sort-memory is for --stream: a page copy sorts nothing".into(),
                    ));
                }
                if !a.create {
                    let v = &r.lost.volume;
                    let holds_bases = pump_meta2::BaseName::list(v).is_ok_and(|b| !b.is_empty());
                    if !v.is_dir() || !holds_bases {
                        return Err(Failure::Usage(format!(
                            "{}={}: {}; if it is a new or emptied volume, pass --create",
                            r.lost.address,
                            v.display(),
                            if v.is_dir() {
                                "holds no meta2 base"
                            } else {
                                "no such volume directory"
                            }
                        )));
                    }
                }
                announce(&q, plan::meta2_rebuild(&q, r).await?)
            }
            PlanMeta2Command::Check(a) => {
                let q = a.queue.with(&a.jobs);
                announce(&q, plan::meta2_check(&q, a.peers, a.volume, a.full).await?)
            }
        },
        PlanCommand::Status(a) => status(a).await,
        PlanCommand::Retry(a) => retry(a).await,
    }
}

async fn transfer(a: PlanTransferArgs) -> Result<(), Failure> {
    let q = a.queue.with(&a.jobs);
    let request = crate::transfer::TransferRequest {
        source: a.source,
        sink: a.sink,
        bucket_source: a.bucket_source,
        bucket_destination: a.bucket_destination,
        source_auth: a.credentials.source()?,
        dest_auth: a.credentials.dest()?,
        vbucket_list: a.vbucket_list,
        key: a.key,
        threads: a.threads,
        dry_run: false,
        verbose: 0,
        extra: a.extra,
        add: a.add,
        mode: a.mode.map(pump_sinks::backup::RunKind::from),
        allow_partial: false,
        overwrite: false,
        cacert: a.tls.cacert,
        no_ssl_verify: a.tls.no_ssl_verify,
    };
    if let Some(r) = &a.rate {
        pump::Rate::parse(r)?;
    }
    announce(&q, plan::transfer(&q, request, a.rate).await?)
}

fn announce(q: &plan::QueueArgs, p: plan::Planned) -> Result<(), Failure> {
    println!("{}", p.run);
    eprintln!(
        "planned run {}: {} jobs in {}: {}\n  follow it with: pump plan status {} --queue {}",
        p.run, p.jobs, q.url, p.what, p.run, q.url
    );
    Ok(())
}

async fn status(a: StatusArgs) -> Result<(), Failure> {
    let url = &a.queue.queue;
    let mut c = scale::connect(url).await?;
    let Some(run) = &a.run else {
        let runs = pump_queue::run::runs(&mut c, &url.tube)
            .await
            .map_err(scale::failure)?;
        let tube = c
            .stats_tube(&url.tube)
            .await
            .map_err(scale::failure)?
            .unwrap_or_default();
        if a.json {
            let v: Vec<serde_json::Value> = runs
                .iter()
                .map(|m| serde_json::to_value(m).unwrap_or_default())
                .collect();
            println!(
                "{}",
                serde_json::json!({"runs": v, "tube": {"ready": tube.ready, "reserved": tube.reserved,
                    "delayed": tube.delayed, "buried": tube.buried}})
            );
            return Ok(());
        }
        println!(
            "{}: {} ready, {} running, {} delayed, {} buried",
            url, tube.ready, tube.reserved, tube.delayed, tube.buried
        );
        if runs.is_empty() {
            println!("no run planned in this tube");
        }
        for m in &runs {
            println!("{}  {:<14} {:>5} jobs  {}", m.run, m.kind, m.jobs, m.what);
        }
        return Ok(());
    };
    let st = pump_queue::run::status(&mut c, &url.tube, run)
        .await
        .map_err(scale::failure)?;
    if a.json {
        println!("{}", status_json(&st));
    } else {
        print_status(&st);
    }
    Ok(())
}

fn status_json(st: &RunStatus) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = [
        Standing::Done,
        Standing::Running,
        Standing::Ready,
        Standing::Delayed,
        Standing::Buried,
        Standing::Lost,
        Standing::Missing,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), st.count(*s).into()))
    .collect();
    let mut v = serde_json::to_value(st).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("counts".into(), counts.into());
        o.insert("items".into(), st.items().into());
    }
    v
}

fn print_status(st: &RunStatus) {
    let m = &st.manifest;
    println!("run {} ({}, pump {}): {}", m.run, m.kind, m.pump, m.what);
    println!(
        "{} jobs: {} done, {} running, {} ready, {} delayed, {} buried{}{}; {} items moved",
        m.jobs,
        st.count(Standing::Done),
        st.count(Standing::Running),
        st.count(Standing::Ready),
        st.count(Standing::Delayed),
        st.count(Standing::Buried),
        match st.count(Standing::Lost) {
            0 => String::new(),
            n => format!(", {n} lost (gone from the queue unfinished)"),
        },
        match st.count(Standing::Missing) {
            0 => String::new(),
            n => format!(", {n} never put"),
        },
        st.items()
    );
    println!(
        "{:>5}  {:<8} {:>7} {:>12}  {:<24} NOTE",
        "JOB", "STATE", "ATTEMPT", "ITEMS", "WORKER"
    );
    for j in &st.jobs {
        let r = j.record.as_ref();
        let mut note = r
            .and_then(|r| r.error.clone().or_else(|| r.note.clone()))
            .unwrap_or_default();
        if let Some(s) = &j.stats {
            if j.standing == Standing::Running && s.time_left == 0 && s.ttr > 1 {
                note = format!(
                    "no time left: its worker is gone; beanstalkd releases it when that connection closes. {note}"
                );
            }
        }
        if let Some(r) = r {
            if !r.findings.is_empty() {
                note = format!(
                    "{note} [{} findings, first: {}]",
                    r.findings.len(),
                    r.findings[0]
                );
            }
        }
        println!(
            "{:>5}  {:<8} {:>7} {:>12}  {:<24} {}",
            j.index + 1,
            j.standing.as_str(),
            r.map_or(0, |r| r.attempt),
            r.map_or(0, |r| r.items),
            r.and_then(|r| r.worker.clone()).unwrap_or_default(),
            note.trim()
        );
    }
}

async fn retry(a: RetryArgs) -> Result<(), Failure> {
    let url = &a.queue.queue;
    let mut c = scale::connect(url).await?;
    let kicked = pump_queue::run::retry(&mut c, &url.tube, &a.run)
        .await
        .map_err(scale::failure)?;
    if kicked.is_empty() {
        println!("run {}: no buried job", a.run);
    } else {
        let list: Vec<String> = kicked.iter().map(|k| (k + 1).to_string()).collect();
        println!(
            "run {}: kicked {} buried job(s) back: {}",
            a.run,
            kicked.len(),
            list.join(", ")
        );
    }
    Ok(())
}
