//! One job, run: what `pump worker` does between reserving a job and deleting it.
//!
//! ```text
//! transfer      TransferRequest {job's specs and options, -l RANGE, the worker's credentials}
//!               a backup directory sink: the job writes part INDEX of the run it names
//!               (pump_sinks::backup::plan_part: its own data files and positions file in the
//!               run, resumed from what an earlier attempt committed); a part found complete
//!               only completes the run if it can (complete_parts)
//!               any other sink, a source that keeps positions (dcp://, couchbase://) gets
//!               -x checkpoint=FILE, FILE first written from the record's positions: each
//!               vbucket resumes there
//!               crate::transfer::open -> pump::run (Ctrl-C / a lost job: the context's cancel)
//! meta2 rebuild repair::meta2::rebuild_bases of the bases the record does not list as done
//! meta2 check   repair::meta2::check_base of each base not done yet
//! ```
//!
//! [`Live`] is what the running job has done so far, read by the worker at every tick: the
//! transfer's counters and the positions in its checkpoint file (the DCP source writes only
//! positions its sink confirmed), or the bases settled. [`JobError::permanent`] says whether
//! trying again can help: a usage error, a refused password, keys the sink would not take and
//! a meta2 base that could not be rebuilt are permanent; a peer that is down or a broken
//! connection is not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pump::{Context, Credentials};
use pump_meta2::{BaseName, Health, Peer};
use pump_queue::record::{format_indexes, parse_indexes};
use pump_queue::{CheckWork, Job, Position, RebuildWork, Record, TransferWork, Work};
use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::repair::meta2 as repair;
use crate::transfer::TransferRequest;

/// How a job that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// All of it is done.
    Done,
    /// Stopped before the end (Ctrl-C, the job lost): what was done is in [`Live`].
    Stopped,
}

/// Why a job failed, and whether another attempt can do better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub message: String,
    pub permanent: bool,
}

impl JobError {
    fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            permanent: true,
        }
    }

    /// A failure of the engine or of a repair, judged by what it says.
    pub fn from_failure(f: Failure) -> JobError {
        match f {
            Failure::Usage(m) => JobError::permanent(m),
            Failure::Interrupted(m) => JobError {
                message: m,
                permanent: false,
            },
            Failure::Failed(m) => {
                let permanent = is_permanent(&m);
                JobError {
                    message: m,
                    permanent,
                }
            }
        }
    }
}

/// Words of errors no retry cures: a refused password (SASL or REST), a missing bucket.
fn is_permanent(message: &str) -> bool {
    const PERMANENT: [&str; 5] = [
        "authentication",
        "401 Unauthorized",
        "403 Forbidden",
        "no bucket",
        "not a source this pump knows",
    ];
    let lower = message.to_ascii_lowercase();
    PERMANENT
        .iter()
        .any(|w| lower.contains(&w.to_ascii_lowercase()))
}

/// What a running job has done so far (this attempt only).
#[derive(Debug, Default)]
pub struct Live {
    stats: Mutex<Option<Arc<pump::Stats>>>,
    checkpoint: Mutex<Option<Checkpoint>>,
    bases: Mutex<BasesDone>,
    /// Items and bytes the job's output already holds from earlier attempts, when the sink
    /// counts them exactly (a backup part's committed rows): they replace the record's count,
    /// which misses what was committed after the last record of a killed attempt.
    before: Mutex<Option<(u64, u64)>>,
    /// Cancelled once a transfer's source has returned: what remains is its sink's finishing
    /// (never, for a meta2 job: its end says it).
    reading: CancellationToken,
}

/// The positions file a transfer job's source keeps.
#[derive(Debug, Clone)]
struct Checkpoint {
    path: PathBuf,
    /// A file of this worker's (removed with the job); a backup part's lives in the run.
    owned: bool,
}

#[derive(Debug, Default, Clone)]
struct BasesDone {
    done: BTreeSet<u32>,
    counts: BTreeMap<String, u64>,
    findings: Vec<String>,
}

/// A reading of [`Live`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Items (bases) this attempt moved.
    pub items: u64,
    pub bytes: u64,
    /// Every vbucket's position (the record's, moved on by this attempt); empty when the
    /// source keeps none.
    pub positions: Vec<Position>,
    pub bases_done: BTreeSet<u32>,
    pub counts: BTreeMap<String, u64>,
    pub findings: Vec<String>,
    /// See [`Live`]: items and bytes earlier attempts left in the output, counted there.
    pub before: Option<(u64, u64)>,
}

/// A record keeps this many findings.
pub const MAX_FINDINGS: usize = 50;

impl Live {
    /// A job's, whose transfer cancels `reading` once its source has returned.
    pub fn reading_until(reading: CancellationToken) -> Live {
        let mut live = Live::default();
        live.reading = reading;
        live
    }

    /// What the job has done, now.
    pub fn sample(&self) -> Sample {
        let mut s = Sample::default();
        if let Some(stats) = self.stats.lock().ok().and_then(|g| g.clone()) {
            let c = stats.snapshot();
            s.items = c.items_written;
            s.bytes = c.bytes_written;
        }
        if let Some(c) = self.checkpoint.lock().ok().and_then(|g| g.clone()) {
            s.positions = read_positions(&c.path);
        }
        s.before = self.before.lock().ok().and_then(|g| *g);
        if let Ok(b) = self.bases.lock() {
            if !b.done.is_empty() || !b.counts.is_empty() {
                s.items = b.done.len() as u64;
            }
            s.bases_done = b.done.clone();
            s.counts = b.counts.clone();
            s.findings = b.findings.clone();
        }
        s
    }

    /// The record that follows `base` once this sample is added to what earlier attempts
    /// did.
    pub fn merge(base: &Record, s: &Sample, into: &mut Record) {
        let (items, bytes) = s.before.unwrap_or((base.items, base.bytes));
        into.items = items + s.items;
        into.bytes = bytes + s.bytes;
        into.positions = if s.positions.is_empty() {
            base.positions.clone()
        } else {
            s.positions.clone()
        };
        let mut done = parse_indexes(&base.bases_done, u32::MAX).unwrap_or_default();
        done.extend(s.bases_done.iter().copied());
        into.bases_done = format_indexes(&done);
        into.counts = base.counts.clone();
        for (k, v) in &s.counts {
            *into.counts.entry(k.clone()).or_default() += v;
        }
        into.findings = base.findings.clone();
        into.findings.extend(s.findings.iter().cloned());
        into.findings.truncate(MAX_FINDINGS);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(c) = self.checkpoint.lock().ok().and_then(|g| g.clone()) {
            if c.owned {
                let _ = std::fs::remove_file(&c.path);
            }
        }
    }
}

/// The DCP source's checkpoint file (`sources::dcp::checkpoint`): `{"vbuckets": {"5": {"uuid",
/// "seqno", "snap_start", "snap_end"}}}`, as positions; nothing when it is absent or unreadable
/// (it is rewritten by rename, so a reader never sees half of it).
fn read_positions(path: &std::path::Path) -> Vec<Position> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    let Some(map) = v.get("vbuckets").and_then(|m| m.as_object()) else {
        return Vec::new();
    };
    let num = |p: &serde_json::Value, k: &str| p.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let mut out: Vec<Position> = map
        .iter()
        .filter_map(|(vb, p)| {
            Some(Position(
                vb.parse().ok()?,
                num(p, "uuid"),
                num(p, "seqno"),
                num(p, "snap_start"),
                num(p, "snap_end"),
            ))
        })
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

fn write_positions(path: &std::path::Path, positions: &[Position]) -> Result<(), JobError> {
    let vbuckets: serde_json::Map<String, serde_json::Value> = positions
        .iter()
        .map(|p| {
            (
                p.0.to_string(),
                serde_json::json!({"uuid": p.1, "seqno": p.2, "snap_start": p.3, "snap_end": p.4}),
            )
        })
        .collect();
    let body = serde_json::json!({ "vbuckets": vbuckets });
    std::fs::write(path, body.to_string()).map_err(|e| JobError {
        message: format!("{}: {e}", path.display()),
        permanent: false,
    })
}

/// The worker's own credentials and TLS trust, given to every job.
#[derive(Debug, Clone, Default)]
pub struct WorkerCredentials {
    pub source: Option<Credentials>,
    pub dest: Option<Credentials>,
    /// `--cacert`: the CA a TLS peer is checked against.
    pub cacert: Option<PathBuf>,
    /// `--no-ssl-verify`.
    pub no_ssl_verify: bool,
}

/// Runs `job` from where `record` says it stands, until done, failed or `stop`.
pub async fn run(
    job: &Job,
    record: &Record,
    credentials: &WorkerCredentials,
    verbose: u8,
    stop: CancellationToken,
    live: Arc<Live>,
) -> Result<Ended, JobError> {
    match &job.work {
        Work::Transfer(w) => transfer(job, w, record, credentials, verbose, stop, live).await,
        Work::Meta2Rebuild(w) => rebuild(w, record, stop, live).await,
        Work::Meta2Check(w) => check(w, record, stop, live).await,
    }
}

async fn transfer(
    job: &Job,
    w: &TransferWork,
    record: &Record,
    credentials: &WorkerCredentials,
    verbose: u8,
    stop: CancellationToken,
    live: Arc<Live>,
) -> Result<Ended, JobError> {
    let registry = crate::kinds::registry();
    let req = TransferRequest {
        source: w.source.clone(),
        sink: w.sink.clone(),
        bucket_source: w.bucket_source.clone(),
        bucket_destination: w.bucket_destination.clone(),
        source_auth: credentials.source.clone(),
        dest_auth: credentials.dest.clone(),
        vbucket_list: Some(w.vbuckets.clone()),
        key: w.key.clone(),
        threads: w.threads,
        dry_run: false,
        verbose,
        extra: w.extra.clone(),
        add: w.add,
        mode: None,
        allow_partial: false,
        overwrite: false,
        cacert: credentials.cacert.clone(),
        no_ssl_verify: credentials.no_ssl_verify,
        include_data: w.include_data.clone(),
        exclude_data: w.exclude_data.clone(),
        map_data: w.map_data.clone(),
    };
    let mut checked = crate::transfer::check(&req, &registry).map_err(JobError::from_failure)?;
    let plan = match &w.backup_run {
        Some(run) => match backup_part(job, run, &checked)? {
            Some(plan) => {
                if let Ok(mut g) = live.before.lock() {
                    let p = &plan.prior;
                    *g = Some((p.mutations + p.deletions, p.bytes));
                }
                if let (Some(path), Ok(mut g)) = (&plan.positions, live.checkpoint.lock()) {
                    checked
                        .options
                        .extra
                        .set("checkpoint", &path.display().to_string());
                    *g = Some(Checkpoint {
                        path: path.clone(),
                        owned: false,
                    });
                }
                Some(plan)
            }
            None => return Ok(Ended::Done),
        },
        None if checked.is_backup_sink() => Some(
            crate::transfer::plan_backup(&mut checked, None, None)
                .map_err(JobError::from_failure)?,
        ),
        None => {
            if checked.keeps_positions() {
                let path = std::env::temp_dir().join(format!(
                    "pump-worker-{}-{}-{}.json",
                    std::process::id(),
                    job.run,
                    job.index
                ));
                write_positions(&path, &record.positions)?;
                if let Ok(mut g) = live.checkpoint.lock() {
                    *g = Some(Checkpoint {
                        path: path.clone(),
                        owned: true,
                    });
                }
                checked
                    .options
                    .extra
                    .set("checkpoint", &path.display().to_string());
            }
            None
        }
    };
    let opened = crate::transfer::open(checked, &registry, plan).map_err(JobError::from_failure)?;
    let mut ctx = Context::new(opened.options);
    ctx.source_done = live.reading.clone();
    if let Some(r) = &w.rate {
        ctx = ctx.with_rate(pump::Rate::parse(r).map_err(|e| JobError::from_failure(e.into()))?);
    }
    if let Ok(mut g) = live.stats.lock() {
        *g = Some(ctx.stats.clone());
    }
    let cancel = ctx.cancel.clone();
    let watcher = tokio::spawn(async move {
        stop.cancelled().await;
        cancel.cancel();
    });
    let result = pump::run(opened.source, opened.sink, ctx).await;
    watcher.abort();
    match result {
        Ok(summary) if summary.cancelled => Ok(Ended::Stopped),
        Ok(summary) if summary.counts.failed > 0 => {
            let first = summary
                .failures
                .first()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default();
            Err(JobError::permanent(format!(
                "{} -> {}: {} items were not written{first}",
                opened.source_spec, opened.sink_spec, summary.counts.failed
            )))
        }
        Ok(_) => Ok(Ended::Done),
        Err(pump::Error::Cancelled) => Ok(Ended::Stopped),
        Err(e) => Err(JobError::from_failure(Failure::from(e))),
    }
}

/// The part of the backup run `run` this job writes: `None` when it is complete already (and
/// then the run is completed, if this was the last part and its job stopped just before).
fn backup_part(
    job: &Job,
    run: &str,
    checked: &crate::transfer::Checked,
) -> Result<Option<pump_sinks::backup::RunPlan>, JobError> {
    use pump_sinks::backup::{complete_parts, plan_part, BackupConfig, PartPlan, PartRequest};
    if !checked.is_backup_sink() {
        return Err(JobError::permanent(format!(
            "the job names the backup run {run}, but its sink {} is not a backup directory",
            checked.sink_spec
        )));
    }
    if run
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(JobError::permanent(format!(
            "the job's backup run {run:?} is not <root>/<run>"
        )));
    }
    let config = BackupConfig::from_spec(&checked.sink_spec, &checked.options)
        .map_err(|e| JobError::permanent(e.to_string()))?;
    let node_dir = pump_formats::bfd::node_dir(&config.dir.join(run), &config.bucket, &config.node);
    let vbuckets: Vec<u16> = checked
        .options
        .vbuckets
        .as_ref()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    // A part that cannot be planned (the run missing, another shape) is the plan's fault, not
    // this attempt's; a file error may pass (a full disk, a mount back).
    let fail = |e: String| JobError {
        permanent: e.contains("is not there") || e.contains("not part"),
        message: format!("{}: {e}", checked.sink_spec),
    };
    match plan_part(&PartRequest {
        node_dir: &node_dir,
        run,
        part: job.index,
        parts: job.of,
        vbuckets: &vbuckets,
        resumable: checked.keeps_positions(),
    })
    .map_err(fail)?
    {
        PartPlan::Write(plan) => {
            for note in &plan.notes {
                eprintln!("job {}/{}: {note}", job.run, job.index);
            }
            Ok(Some(*plan))
        }
        PartPlan::Done => {
            complete_parts(&node_dir).map_err(fail)?;
            Ok(None)
        }
    }
}

fn peers(list: &[String], what: &str) -> Result<Vec<Peer>, JobError> {
    list.iter()
        .map(|p| Peer::parse(p).map_err(|e| JobError::permanent(format!("{what} {p:?}: {e}"))))
        .collect()
}

/// The job's bases not done yet, with their indexes.
fn to_do(bases: &[String], record: &Record) -> Result<Vec<(u32, BaseName)>, JobError> {
    let limit = u32::try_from(bases.len()).unwrap_or(u32::MAX);
    let done = parse_indexes(&record.bases_done, limit)
        .map_err(|e| JobError::permanent(format!("the job's record: {e}")))?;
    let mut out = Vec::new();
    for (i, b) in (0u32..).zip(bases) {
        if done.contains(&i) {
            continue;
        }
        let name = BaseName::parse(b)
            .map_err(|e| JobError::permanent(format!("base {b:?} of the job: {e}")))?;
        out.push((i, name));
    }
    Ok(out)
}

async fn rebuild(
    w: &RebuildWork,
    record: &Record,
    stop: CancellationToken,
    live: Arc<Live>,
) -> Result<Ended, JobError> {
    let lost = peers(std::slice::from_ref(&w.lost), "--peer")?
        .pop()
        .ok_or_else(|| JobError::permanent("no lost peer"))?;
    let from = peers(&w.from, "--from-peer")?;
    let todo = to_do(&w.bases, record)?;
    let index: BTreeMap<BaseName, u32> = todo.iter().map(|(i, b)| (b.clone(), *i)).collect();
    let bases: Vec<BaseName> = todo.into_iter().map(|(_, b)| b).collect();
    let mode = if w.stream {
        let mut s = repair::StreamCopy::default();
        if let Some(m) = w.sort_memory {
            s.sort_memory = usize::try_from(m).unwrap_or(usize::MAX);
        }
        repair::RebuildMode::Stream(s)
    } else {
        repair::RebuildMode::Pages
    };
    let live2 = live.clone();
    let mut on_done = move |base: &BaseName, outcome: repair::BaseOutcome| {
        let Some(i) = index.get(base) else { return };
        let Ok(mut b) = live2.bases.lock() else {
            return;
        };
        let key = match &outcome {
            repair::BaseOutcome::Rebuilt(_) => "rebuilt",
            repair::BaseOutcome::Present => "present",
            repair::BaseOutcome::Elsewhere => "elsewhere",
            repair::BaseOutcome::Failed(_) => "failed",
        };
        *b.counts.entry(key.into()).or_default() += 1;
        match outcome {
            repair::BaseOutcome::Failed(e) => {
                if b.findings.len() < MAX_FINDINGS {
                    b.findings.push(format!("{base}: {e}"));
                }
            }
            _ => {
                b.done.insert(*i);
            }
        }
    };
    let summary = repair::rebuild_bases(
        &lost,
        &from,
        &bases,
        w.threads.max(1),
        mode,
        &stop,
        &mut on_done,
    )
    .await
    .map_err(JobError::from_failure)?;
    if !summary.failed.is_empty() {
        return Err(JobError::permanent(format!(
            "{} of {} bases not rebuilt on {} (first: {})",
            summary.failed.len(),
            bases.len(),
            lost.address,
            summary.failed[0]
        )));
    }
    let settled = summary.rebuilt + summary.present + summary.elsewhere;
    Ok(if settled < bases.len() {
        Ended::Stopped
    } else {
        Ended::Done
    })
}

async fn check(
    w: &CheckWork,
    record: &Record,
    stop: CancellationToken,
    live: Arc<Live>,
) -> Result<Ended, JobError> {
    let peers = peers(&w.peers, "--peer")?;
    let todo = to_do(&w.bases, record)?;
    let full = w.full;
    tokio::task::spawn_blocking(move || {
        for (i, base) in todo {
            if stop.is_cancelled() {
                return Ended::Stopped;
            }
            let reports = repair::check_base(&base, &peers, full);
            let Ok(mut b) = live.bases.lock() else {
                return Ended::Stopped;
            };
            let bad: Vec<_> = reports.iter().filter(|r| r.health != Health::Ok).collect();
            *b.counts.entry("checked".into()).or_default() += 1;
            if !bad.is_empty() {
                *b.counts.entry("bad".into()).or_default() += 1;
            }
            for r in bad {
                if b.findings.len() < MAX_FINDINGS {
                    b.findings.push(format!(
                        "{base} {} {}: {}",
                        r.address,
                        r.health.as_str(),
                        r.message
                    ));
                }
            }
            b.done.insert(i);
        }
        Ended::Done
    })
    .await
    .map_err(|e| JobError {
        message: format!("the check task failed: {e}"),
        permanent: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_passwords_and_usage_errors_are_permanent_a_dead_peer_is_not() {
        for (f, permanent) in [
            (Failure::Usage("-x nope".into()), true),
            (
                Failure::Failed(
                    "sink memcached://127.0.0.1:1: 127.0.0.1:1: authentication as \"u\" refused: Auth failure".into(),
                ),
                true,
            ),
            (
                Failure::Failed("source couchbase://h:1: HTTP 401 Unauthorized".into()),
                true,
            ),
            (
                Failure::Failed("sink memcached://127.0.0.1:1: connect: Connection refused".into()),
                false,
            ),
        ] {
            let text = format!("{f:?}");
            assert_eq!(JobError::from_failure(f).permanent, permanent, "{text}");
        }
    }

    #[test]
    fn a_sample_adds_to_what_earlier_attempts_did() {
        let mut base = Record::planned("R", 0, 7, 1);
        base.items = 100;
        base.bases_done = "0-2".into();
        base.counts.insert("rebuilt".into(), 3);
        base.positions = vec![Position(1, 9, 10, 10, 10)];
        let s = Sample {
            items: 5,
            bases_done: [3, 5].into_iter().collect(),
            counts: [("rebuilt".to_string(), 2)].into_iter().collect(),
            ..Sample::default()
        };
        let mut next = base.next(pump_queue::RecordState::Running, 2);
        Live::merge(&base, &s, &mut next);
        assert_eq!(next.items, 105);
        assert_eq!(next.bases_done, "0-3,5");
        assert_eq!(next.counts["rebuilt"], 5);
        assert_eq!(
            next.positions, base.positions,
            "no new positions: the old ones stay"
        );
        // A backup part counts what its files hold from earlier attempts: that replaces the
        // record's count (a killed attempt committed more than it recorded).
        let s = Sample {
            items: 5,
            before: Some((130, 4000)),
            ..Sample::default()
        };
        Live::merge(&base, &s, &mut next);
        assert_eq!(next.items, 135);
        assert_eq!(next.bytes, 4000);
    }

    #[test]
    fn positions_survive_the_dcp_checkpoint_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.json");
        let p = vec![
            Position(3, 77, 12, 10, 15),
            Position(700, u64::MAX, 1, 1, 1),
        ];
        write_positions(&path, &p).unwrap();
        assert_eq!(read_positions(&path), p);
        let f = sources_checkpoint(&path);
        assert_eq!(f, (77, 12, 10, 15));
        assert!(read_positions(&dir.path().join("absent")).is_empty());
    }

    /// The DCP source reads what the worker wrote (its own loader).
    fn sources_checkpoint(path: &std::path::Path) -> (u64, u64, u64, u64) {
        let c = pump_sources::dcp::CheckpointFile::load(path).unwrap();
        let p = c.position(3);
        (p.uuid, p.seqno, p.snap_start, p.snap_end)
    }
}
