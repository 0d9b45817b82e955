//! Which run a backup writes, as cbbackup's `-m full|diff|accu`, and resuming an incomplete one.
//!
//! ```text
//! the newest run of this bucket and node is incomplete (pump-run.json, no pump-complete.json)
//!     source keeps positions (DCP): resume it: same run, next data file, from what was confirmed
//!     otherwise:                     write it again (its data files are removed first)
//! -m full                            a new root: <dir>/<ts>/<ts>-full
//! -m diff                            <root>/<ts>-diff from the end positions of the newest complete run
//! -m accu                            <root>/<ts>-accu from the end positions of the root's full run
//! no -m                              diff when the source keeps positions and the newest root holds a
//!                                    complete run of this bucket and node that has them; a full run
//!                                    otherwise (in the newest root's full run when it lacks this
//!                                    bucket and node, else in a new root)
//! ```
//!
//! A run several jobs of a queue run write (`PlanRequest::parts`) is planned once, before the
//! jobs are put; each job then writes one part (`plan_part`): data files numbered from
//! `part * PART_FILES`, its own positions file, its part record when done; the part that finds
//! every part record in place writes the run's end (`complete_parts`). An incomplete run of
//! parts is taken up only by its jobs, never by a `pump transfer` into the same directory.
//!
//! A diff's timestamp is moved past every run already in its root, so that name order stays
//! restore order. The plan writes `pump-run.json` (and the positions a diff starts from) before
//! any data file; a resume first rolls back what an interrupted transaction left in a data file
//! (SQLite's journal), counts what the run already holds, and moves each vbucket's position up
//! to the last row already committed, so that no row is written twice.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pump_formats::bfd::{self, RunKind};
use pump_formats::run::{
    self, Attempt, Completion, FileCount, Positions, Rollback, RunRecord, RunState, VbPosition,
    VbSummary,
};

/// What the caller asks for.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    pub dir: &'a Path,
    pub bucket: &'a str,
    pub node: &'a str,
    /// `-m`; `None`: diff when possible, full otherwise.
    pub mode: Option<RunKind>,
    /// The source keeps positions (a DCP stream): it can stream what changed since a run, and
    /// resume one.
    pub resumable: bool,
    /// The source spec (password hidden), recorded with the run.
    pub source: &'a str,
    pub now: DateTime<Utc>,
    /// The run is written by this many jobs (`pump plan transfer`), each a [`Part`].
    pub parts: Option<u32>,
}

/// The run a backup writes.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Where the data files go.
    pub node_dir: PathBuf,
    /// `<root>/<run>`, relative to the backup directory.
    pub run: String,
    pub mode: RunKind,
    /// The run whose end positions this one starts from.
    pub base: Option<String>,
    /// An incomplete run taken up again.
    pub resumed: bool,
    /// The positions file the source reads and keeps up to date (resumable sources only).
    pub positions: Option<PathBuf>,
    /// The next data file's number.
    pub first_file: u32,
    /// What the run's data files already hold (a resumed run).
    pub prior: Prior,
    /// Sentences for the operator (what was chosen and why).
    pub notes: Vec<String>,
    /// The part of a run several jobs write that this sink writes (see [`plan_part`]).
    pub part: Option<Part>,
}

/// One part of a run several jobs write: its own data files (numbered from
/// `index * PART_FILES`), its own positions file, its part record when done.
#[derive(Debug, Clone)]
pub struct Part {
    pub index: u32,
    pub of: u32,
    /// Its vbuckets, sorted.
    pub vbuckets: Vec<u16>,
}

impl Part {
    /// The data file numbers this part may use.
    pub fn files(&self) -> std::ops::Range<u32> {
        let start = self.index.saturating_mul(run::PART_FILES);
        start..start.saturating_add(run::PART_FILES)
    }
}

/// What a resumed run's earlier attempts wrote.
#[derive(Debug, Clone, Default)]
pub struct Prior {
    pub files: Vec<FileCount>,
    pub vbuckets: BTreeMap<u16, VbSummary>,
    pub mutations: u64,
    pub deletions: u64,
    pub bytes: u64,
    /// Rollbacks the earlier attempts saw.
    pub rollbacks: Vec<Rollback>,
}

/// One run directory of a root, for this bucket and node.
struct RunHere {
    name: String,
    kind: RunKind,
    node_dir: PathBuf,
    state: Option<RunState>,
}

/// Plans the run (see the module doc), creates its directory and writes its records.
pub fn plan(req: &PlanRequest<'_>) -> Result<RunPlan, String> {
    let dir = req.dir;
    if bfd::node_dir(dir, req.bucket, req.node).is_dir() {
        return Err(format!(
            "{} holds an old (2.x) single-run backup; write to a new directory",
            dir.display()
        ));
    }
    if !req.resumable && matches!(req.mode, Some(RunKind::Diff | RunKind::Accu)) {
        return Err(format!(
            "-m {}: the source keeps no positions, so it cannot stream only what changed since a run (a dcp:// or couchbase:// source can); use -m full",
            req.mode.map_or("", RunKind::name)
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let newest_root = subdirs(dir)?
        .into_iter()
        .filter(|n| bfd::is_timestamp(n))
        .max();
    let runs = match &newest_root {
        Some(root) => runs_here(&dir.join(root), req.bucket, req.node)?,
        None => Vec::new(),
    };
    if let Some(last) = runs.last() {
        if let Some(RunState::Incomplete { record }) = &last.state {
            let root = newest_root.as_deref().unwrap_or_default();
            if req.parts.is_some() {
                return Err(format!(
                    "the newest run of bucket {} in {} ({root}/{}) is incomplete: complete it first (the same pump transfer, or the jobs of the queue run writing it: pump plan status), or remove {}",
                    req.bucket,
                    dir.display(),
                    last.name,
                    last.node_dir.display()
                ));
            }
            return take_up(req, root, last, record.clone());
        }
    }
    let mut notes = Vec::new();
    if let Some(last) = runs.last() {
        if matches!(last.state, Some(RunState::Foreign { partial: true })) {
            notes.push(format!(
                "{}: an interrupted run of another tool or an older pump (.partial files); a restore refuses this backup until it is removed",
                last.node_dir.display()
            ));
        }
    }
    let complete_with_positions = |r: &&RunHere| match &r.state {
        Some(RunState::Complete { completion, .. }) => completion.positions.is_some(),
        _ => false,
    };
    let base = match req.mode {
        Some(RunKind::Full) => None,
        Some(RunKind::Accu) => runs
            .iter()
            .rfind(|r| r.kind == RunKind::Full && complete_with_positions(r)),
        Some(RunKind::Diff) | None if req.resumable => runs.iter().rfind(complete_with_positions),
        _ => None,
    };
    let ts = |t: DateTime<Utc>| t.format(bfd::TIMESTAMP_FORMAT).to_string();
    let (root, run_name, mode, base_name, seed) = match (base, &newest_root) {
        (Some(base), Some(root)) => {
            let mode = req.mode.unwrap_or(RunKind::Diff);
            let name = bfd::run_dir_name(&ts(after_every_run(dir, root, req.now)?), mode);
            let seed = match &base.state {
                Some(RunState::Complete { completion, .. }) => completion.positions.clone(),
                _ => None,
            };
            (
                root.clone(),
                name,
                mode,
                Some(format!("{root}/{}", base.name)),
                seed,
            )
        }
        _ => {
            if matches!(req.mode, Some(RunKind::Diff | RunKind::Accu)) {
                notes.push(format!(
                    "-m {}: no complete run with positions of bucket {} in {} to start from: writing a full run",
                    req.mode.map_or("", RunKind::name),
                    req.bucket,
                    dir.display()
                ));
            }
            // The newest root's full run, when it lacks this bucket and node and no full run
            // was asked for; a new root otherwise.
            let reuse = match (&newest_root, req.mode) {
                (Some(root), None) if runs.is_empty() => subdirs(&dir.join(root))?
                    .into_iter()
                    .filter(|n| bfd::run_kind(n) == Some(RunKind::Full))
                    .max()
                    .map(|full| (root.clone(), full)),
                _ => None,
            };
            match reuse {
                Some((root, full)) => (root, full, RunKind::Full, None, None),
                None => {
                    let mut t = req.now;
                    while newest_root.as_deref().is_some_and(|r| ts(t).as_str() <= r) {
                        t += chrono::Duration::seconds(1);
                    }
                    let root = ts(t);
                    let name = bfd::run_dir_name(&root, RunKind::Full);
                    (root, name, RunKind::Full, None, None)
                }
            }
        }
    };
    let node_dir = bfd::node_dir(&dir.join(&root).join(&run_name), req.bucket, req.node);
    std::fs::create_dir_all(&node_dir)
        .map_err(|e| format!("cannot create {}: {e}", node_dir.display()))?;
    let positions = req.resumable.then(|| node_dir.join(run::POSITIONS_JSON));
    if let Some(path) = &positions {
        let mut seed = seed.unwrap_or_default();
        seed.rollbacks.clear();
        run::write_json_synced(path, &seed)?;
    }
    let record = RunRecord {
        tool: tool_name(),
        mode,
        started: run::now_text(),
        source: req.source.to_string(),
        bucket: req.bucket.to_string(),
        node: req.node.to_string(),
        base: base_name.clone(),
        attempts: vec![Attempt {
            started: run::now_text(),
            first_file: 0,
        }],
        rollbacks: Vec::new(),
        parts: req.parts,
    };
    run::write_json_synced(&node_dir.join(run::RUN_JSON), &record)?;
    if let Some(b) = &base_name {
        notes.push(format!(
            "{mode} run {root}/{run_name}: what changed since {b}"
        ));
    }
    Ok(RunPlan {
        node_dir,
        run: format!("{root}/{run_name}"),
        mode,
        base: base_name,
        resumed: false,
        positions,
        first_file: 0,
        prior: Prior::default(),
        notes,
        part: None,
    })
}

/// The plan for an incomplete run: resume it, or write it again when the source keeps no
/// positions.
fn take_up(
    req: &PlanRequest<'_>,
    root: &str,
    last: &RunHere,
    mut record: RunRecord,
) -> Result<RunPlan, String> {
    let node_dir = last.node_dir.clone();
    let run_name = format!("{root}/{}", last.name);
    if let Some(parts) = record.parts {
        return Err(format!(
            "the newest run of bucket {} in {} ({run_name}) is incomplete and written by {parts} jobs of a queue run: let them finish (pump plan status, pump plan retry), or remove {}",
            req.bucket,
            req.dir.display(),
            node_dir.display()
        ));
    }
    if let Some(mode) = req.mode {
        if mode != record.mode {
            return Err(format!(
                "the newest run of bucket {} in {} ({run_name}, -m {}) is incomplete: rerun with -m {} to complete it, or remove {}",
                req.bucket,
                req.dir.display(),
                record.mode,
                record.mode,
                node_dir.display()
            ));
        }
    }
    // (A run an embedder's sink planned records no source: it is taken as this one.)
    if req.resumable && !record.source.is_empty() && record.source != req.source {
        return Err(format!(
            "the newest run of bucket {} in {} ({run_name}) is an incomplete run of {}, not of {}: rerun it with that source to complete it, or remove {}",
            req.bucket,
            req.dir.display(),
            record.source,
            req.source,
            node_dir.display()
        ));
    }
    if !req.resumable {
        // Nothing says where the source stood: the run is written again from the start.
        for (_, f) in run::run_data_files(&node_dir)? {
            remove_with_journal(&f)?;
        }
        for name in [run::COMPLETE_JSON, run::POSITIONS_JSON] {
            let _ = std::fs::remove_file(node_dir.join(name));
        }
        record.attempts.push(Attempt {
            started: run::now_text(),
            first_file: 0,
        });
        record.source = req.source.to_string();
        run::write_json_synced(&node_dir.join(run::RUN_JSON), &record)?;
        return Ok(RunPlan {
            node_dir,
            run: run_name.clone(),
            mode: record.mode,
            base: record.base.clone(),
            resumed: false,
            positions: None,
            first_file: 0,
            prior: Prior::default(),
            notes: vec![format!(
                "{run_name} was incomplete and {} keeps no positions to resume from: written again",
                req.source
            )],
            part: None,
        });
    }
    let positions_path = node_dir.join(run::POSITIONS_JSON);
    let mut positions = Positions::load(&positions_path)?;
    // Rollbacks the last attempt saw apply to the files it wrote onwards.
    let since = record.attempts.last().map_or(0, |a| a.first_file);
    for (vb, seqno) in std::mem::take(&mut positions.rollbacks) {
        if let Ok(vbucket) = vb.parse::<u16>() {
            record.rollbacks.push(Rollback {
                vbucket,
                seqno,
                before_file: since,
            });
        }
    }
    let files = run::run_data_files(&node_dir)?;
    let prior = take_up_files(&files, record.rollbacks.clone(), &mut positions)?;
    run::write_json_synced(&positions_path, &positions)?;
    let first_file = files.last().map_or(0, |(n, _)| n + 1);
    record.attempts.push(Attempt {
        started: run::now_text(),
        first_file,
    });
    run::write_json_synced(&node_dir.join(run::RUN_JSON), &record)?;
    let rows: u64 = prior.files.iter().map(|f| f.rows).sum();
    Ok(RunPlan {
        node_dir,
        run: run_name.clone(),
        mode: record.mode,
        base: record.base.clone(),
        resumed: true,
        positions: Some(positions_path),
        first_file,
        prior,
        notes: vec![format!(
            "resuming the incomplete {} run {run_name} (attempt {}): {rows} rows already confirmed",
            record.mode,
            record.attempts.len()
        )],
        part: None,
    })
}

/// Counts what the data files of an interrupted attempt hold (rolling back what an interrupted
/// transaction left in them) and moves each vbucket's position up to the last row committed
/// since its last rollback, so that no row is written twice.
fn take_up_files(
    files: &[(u32, PathBuf)],
    rollbacks: Vec<Rollback>,
    positions: &mut Positions,
) -> Result<Prior, String> {
    let mut prior = Prior {
        rollbacks,
        ..Prior::default()
    };
    // Per vbucket, the highest seqno committed in files written since its last rollback.
    let mut committed: BTreeMap<u16, u64> = BTreeMap::new();
    for (n, path) in files {
        let counts = scan_file(path)?;
        for (vb, s) in &counts.vbuckets {
            prior.vbuckets.entry(*vb).or_default().merge(s);
            let restarted = prior
                .rollbacks
                .iter()
                .filter(|r| r.vbucket == *vb)
                .map(|r| r.before_file)
                .max()
                .unwrap_or(0);
            if *n >= restarted {
                let c = committed.entry(*vb).or_default();
                *c = (*c).max(s.last_seqno);
            }
        }
        prior.mutations += counts.mutations;
        prior.deletions += counts.deletions;
        prior.bytes += counts.bytes;
        prior.files.push(FileCount {
            name: bfd::data_file_name(*n),
            rows: counts.rows,
        });
    }
    for (vb, seqno) in committed {
        let p = positions.position(vb);
        // Without a uuid (a file written by a source that keeps none, or cut before its
        // first save) the rows cannot be placed in the vbucket's history: it is read again
        // from the file's seqno.
        if seqno > p.seqno && p.uuid != 0 {
            let (snap_start, snap_end) = if p.snap_end >= seqno {
                (p.snap_start, p.snap_end)
            } else {
                (seqno, seqno)
            };
            positions.set(
                vb,
                VbPosition {
                    uuid: p.uuid,
                    seqno,
                    snap_start,
                    snap_end,
                },
            );
        }
    }
    Ok(prior)
}

/// What a job writing one part of a run asks for.
#[derive(Debug, Clone)]
pub struct PartRequest<'a> {
    /// The run's node directory (planned, with its `pump-run.json`, before the jobs were put).
    pub node_dir: &'a Path,
    /// `<root>/<run>`, for messages.
    pub run: &'a str,
    pub part: u32,
    pub parts: u32,
    /// The part's vbuckets.
    pub vbuckets: &'a [u16],
    /// The source keeps positions: the part resumes from its positions file.
    pub resumable: bool,
}

/// What a part's job does.
#[derive(Debug, Clone)]
pub enum PartPlan {
    /// The part is complete already (its record is there): only the run may remain to complete.
    Done,
    /// Write the part, from where an earlier attempt left it.
    Write(Box<RunPlan>),
}

/// Plans one part of a run several jobs write: its data files are numbered from
/// `part * PART_FILES`. A source that keeps positions resumes after what an earlier attempt
/// committed (its interrupted transactions rolled back; the part's positions file starts from
/// the run's, a diff's seed, for its vbuckets, moved up to what its files already hold); any
/// other source writes the part again (the earlier attempt's files are removed first).
pub fn plan_part(req: &PartRequest<'_>) -> Result<PartPlan, String> {
    let node_dir = req.node_dir;
    let record: RunRecord = run::read_json(&node_dir.join(run::RUN_JSON))?.ok_or_else(|| {
        format!(
            "{}: no {}: the run {} this job writes is not there (the backup directory must be the same, at the same path, for the planner and every worker)",
            node_dir.display(),
            run::RUN_JSON,
            req.run
        )
    })?;
    if record.parts != Some(req.parts) || req.part >= req.parts {
        return Err(format!(
            "{}: the run {} is written by {} job(s), not part {} of {}",
            node_dir.display(),
            req.run,
            record.parts.map_or("one".to_string(), |n| n.to_string()),
            req.part,
            req.parts
        ));
    }
    if node_dir.join(run::part_record_name(req.part)).exists()
        || node_dir.join(run::COMPLETE_JSON).exists()
    {
        return Ok(PartPlan::Done);
    }
    let part = Part {
        index: req.part,
        of: req.parts,
        vbuckets: req.vbuckets.to_vec(),
    };
    let block = part.files();
    let mut files: Vec<(u32, PathBuf)> = run::run_data_files(node_dir)?
        .into_iter()
        .filter(|(n, _)| block.contains(n))
        .collect();
    if !req.resumable {
        // Nothing says where the source stood: the part is written again from the start.
        for (_, f) in files.drain(..) {
            remove_with_journal(&f)?;
        }
    }
    let mut positions = Positions::default();
    let positions_path = req
        .resumable
        .then(|| node_dir.join(run::part_positions_name(req.part)));
    if let Some(path) = &positions_path {
        positions = if path.exists() {
            Positions::load(path)?
        } else {
            let mut seed = Positions::load(&node_dir.join(run::POSITIONS_JSON))?;
            seed.rollbacks.clear();
            keep_vbuckets(&mut seed, req.vbuckets);
            seed
        };
    }
    let prior = take_up_files(&files, Vec::new(), &mut positions)?;
    if let Some(path) = &positions_path {
        // A first attempt with nothing to start from (a full run) has nothing to write: the
        // source starts from zero without the file, and writes it itself.
        if path.exists() || positions != Positions::default() {
            run::write_json_synced(path, &positions)?;
        }
    }
    let first_file = files.last().map_or(block.start, |(n, _)| n + 1);
    if first_file >= block.end {
        return Err(format!(
            "{}: part {} of {} has used all of its {} data file numbers",
            node_dir.display(),
            req.part,
            req.run,
            run::PART_FILES
        ));
    }
    let rows: u64 = prior.files.iter().map(|f| f.rows).sum();
    let resumed = !files.is_empty();
    Ok(PartPlan::Write(Box::new(RunPlan {
        node_dir: node_dir.to_path_buf(),
        run: req.run.to_string(),
        mode: record.mode,
        base: record.base.clone(),
        resumed,
        positions: positions_path,
        first_file,
        prior,
        notes: if resumed {
            vec![format!(
                "resuming part {} of {} of the run {}: {rows} rows already confirmed",
                req.part, req.parts, req.run
            )]
        } else {
            Vec::new()
        },
        part: Some(part),
    })))
}

/// Leaves only `vbuckets` (sorted) in `p`.
pub fn keep_vbuckets(p: &mut Positions, vbuckets: &[u16]) {
    let keep = |k: &String| {
        k.parse::<u16>()
            .is_ok_and(|vb| vbuckets.binary_search(&vb).is_ok())
    };
    p.vbuckets.retain(|k, _| keep(k));
    p.failover.retain(|k, _| keep(k));
    p.rollbacks.retain(|k, _| keep(k));
}

/// Held while a part completes the run, so that two parts ending at once do not both write
/// the run's files.
pub const PARTS_LOCK: &str = "pump-parts.lock";

/// Completes a run several jobs wrote, once every part has its record: its merged positions,
/// the files cbrestore reads, and `pump-complete.json` last. `Ok(false)`: parts remain.
/// Called by each part as it completes, under an exclusive lock on [`PARTS_LOCK`] (`flock`,
/// released when the process dies), so the last one completes the run, and again by a job
/// whose part was done.
pub fn complete_parts(node_dir: &Path) -> Result<bool, String> {
    let lock_path = node_dir.join(PARTS_LOCK);
    let err = |e: std::io::Error| format!("{}: {e}", lock_path.display());
    // Never through a planted symlink (the run directory is the pump's own).
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(err)?;
    lock.lock().map_err(err)?;
    let done = complete_parts_locked(node_dir);
    let _ = lock.unlock();
    done
}

fn complete_parts_locked(node_dir: &Path) -> Result<bool, String> {
    if node_dir.join(run::COMPLETE_JSON).exists() {
        return Ok(true);
    }
    let record: RunRecord = run::read_json(&node_dir.join(run::RUN_JSON))?
        .ok_or_else(|| format!("{}: no {}", node_dir.display(), run::RUN_JSON))?;
    let Some(parts) = record.parts else {
        return Err(format!(
            "{}: a run of one writer, not of several jobs",
            node_dir.display()
        ));
    };
    // Parts mostly end in order: looking from the last one, a job that is not the run's last
    // stops at its first look (reading every record each time was quadratic in the parts).
    if (0..parts)
        .rev()
        .any(|k| !node_dir.join(run::part_record_name(k)).exists())
    {
        return Ok(false);
    }
    let mut records = Vec::new();
    for k in 0..parts {
        match run::read_json::<run::PartRecord>(&node_dir.join(run::part_record_name(k)))? {
            Some(r) => records.push(r),
            None => return Ok(false),
        }
    }
    let mut all = Completion {
        finished: run::now_text(),
        ..Completion::default()
    };
    let mut positions: Option<Positions> = None;
    for r in records {
        let c = r.completion;
        all.mutations += c.mutations;
        all.deletions += c.deletions;
        all.expirations += c.expirations;
        all.bytes += c.bytes;
        all.files.extend(c.files);
        for (vb, s) in c.vbuckets {
            all.vbuckets.entry(vb).or_default().merge(&s);
        }
        all.rollbacks.extend(c.rollbacks);
        if let Some(p) = c.positions {
            let into = positions.get_or_insert_with(Positions::default);
            into.vbuckets.extend(p.vbuckets);
            into.failover.extend(p.failover);
        }
    }
    all.files.sort_by_key(|f| {
        f.name
            .strip_prefix("data-")
            .and_then(|n| n.strip_suffix(".cbb"))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    all.positions = positions.clone();
    if let Some(p) = &positions {
        run::write_json_synced(&node_dir.join(run::POSITIONS_JSON), p)?;
    }
    write_run_end(node_dir, positions.as_ref(), &all)?;
    Ok(true)
}

/// The files cbrestore reads beside the data files (seqno, failover logs and snapshot markers
/// from the source's positions when it keeps them), then `pump-complete.json`, last.
pub fn write_run_end(
    node_dir: &Path,
    positions: Option<&Positions>,
    completion: &Completion,
) -> Result<(), String> {
    let seqno_json = match positions {
        Some(p) => {
            let map: serde_json::Map<String, serde_json::Value> = p
                .iter()
                .filter(|(_, pos)| pos.seqno > 0)
                .map(|(vb, pos)| (vb.to_string(), pos.seqno.into()))
                .collect();
            serde_json::Value::Object(map).to_string()
        }
        None => {
            let mut seqnos = vec![0u64; 1024];
            for (vb, s) in &completion.vbuckets {
                if let Ok(vb) = vb.parse::<usize>() {
                    if vb >= seqnos.len() {
                        seqnos.resize(vb + 1, 0);
                    }
                    seqnos[vb] = s.last_seqno;
                }
            }
            bfd::seqno_json(&seqnos)
        }
    };
    let failover_json = positions
        .map(|p| serde_json::to_string(&p.failover).unwrap_or_else(|_| "{}".into()))
        .unwrap_or_else(|| "{}".into());
    let markers_json = positions
        .map(|p| {
            let map: serde_json::Map<String, serde_json::Value> = p
                .iter()
                .map(|(vb, pos)| {
                    (
                        vb.to_string(),
                        serde_json::json!([pos.snap_start, pos.snap_end]),
                    )
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        })
        .unwrap_or_else(|| "{}".into());
    let json = [
        (bfd::META_JSON, bfd::meta_json("seqno", "0.0.0")),
        (bfd::SEQNO_JSON, seqno_json),
        (bfd::FAILOVER_JSON, failover_json),
        (bfd::SNAPSHOT_MARKERS_JSON, markers_json),
    ];
    for (name, text) in json {
        run::write_synced(&node_dir.join(name), text.as_bytes())?;
    }
    run::sync_dir(node_dir)?;
    // Last: from here on the run is complete.
    run::write_json_synced(&node_dir.join(run::COMPLETE_JSON), completion)
}

/// What one data file holds.
#[derive(Debug, Default)]
struct FileScan {
    rows: u64,
    mutations: u64,
    deletions: u64,
    bytes: u64,
    vbuckets: BTreeMap<u16, VbSummary>,
}

/// Opens a data file of an interrupted run for writing, which rolls back what an interrupted
/// transaction left in it (its journal), then counts its rows.
fn scan_file(path: &Path) -> Result<FileScan, String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let db = rusqlite::Connection::open(path).map_err(err)?;
    let mut st = db
        .prepare("SELECT vbucket_id, cmd, seqno, length(key) + length(val) FROM cbb_msg")
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    let mut out = FileScan::default();
    while let Some(r) = rows.next().map_err(err)? {
        let vb: i64 = r.get(0).map_err(err)?;
        let cmd: i64 = r.get(1).map_err(err)?;
        let seqno: Option<i64> = r.get(2).map_err(err)?;
        let bytes: Option<i64> = r.get(3).map_err(err)?;
        let removal = !matches!(cmd, bfd::cmd::DCP_MUTATION | bfd::cmd::TAP_MUTATION);
        out.rows += 1;
        if removal {
            out.deletions += 1;
        } else {
            out.mutations += 1;
        }
        out.bytes += bytes.unwrap_or(0).max(0) as u64;
        out.vbuckets
            .entry(u16::try_from(vb).unwrap_or(u16::MAX))
            .or_default()
            .add(removal, seqno.unwrap_or(0).max(0) as u64);
    }
    Ok(out)
}

fn remove_with_journal(path: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(bfd::journal_path(path));
    std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

/// `now`, moved past the timestamp of every run already in `root`.
fn after_every_run(dir: &Path, root: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let newest = subdirs(&dir.join(root))?
        .into_iter()
        .filter(|n| bfd::run_kind(n).is_some())
        .map(|n| n[..18].to_string())
        .max()
        .unwrap_or_default();
    let mut t = now;
    while t.format(bfd::TIMESTAMP_FORMAT).to_string() <= newest {
        t += chrono::Duration::seconds(1);
    }
    Ok(t)
}

/// The runs of `root` holding this bucket and node, in name (restore) order.
fn runs_here(root: &Path, bucket: &str, node: &str) -> Result<Vec<RunHere>, String> {
    let mut names: Vec<String> = subdirs(root)?;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Some(kind) = bfd::run_kind(&name) else {
            continue;
        };
        let node_dir = bfd::node_dir(&root.join(&name), bucket, node);
        if !node_dir.is_dir() {
            continue;
        }
        let state = RunState::of(&node_dir)?;
        // A directory a crash left empty holds no run.
        let empty = matches!(state, RunState::Foreign { partial: false })
            && run::run_data_files(&node_dir)?.is_empty();
        out.push(RunHere {
            name,
            kind,
            node_dir,
            state: (!empty).then_some(state),
        });
    }
    out.retain(|r| r.state.is_some());
    Ok(out)
}

/// Names of the directories in `dir`.
fn subdirs(dir: &Path) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

/// `pump <version>`, recorded with each run.
pub fn tool_name() -> String {
    format!("pump {}", env!("CARGO_PKG_VERSION"))
}

/// A run's completion record from what it holds.
pub fn completion(
    prior: &Prior,
    files: Vec<FileCount>,
    vbuckets: &BTreeMap<u16, VbSummary>,
    counts: (u64, u64, u64, u64),
    positions: Option<Positions>,
    rollbacks: Vec<Rollback>,
) -> Completion {
    let mut all = prior.vbuckets.clone();
    for (vb, s) in vbuckets {
        all.entry(*vb).or_default().merge(s);
    }
    let (mutations, deletions, expirations, bytes) = counts;
    let mut all_files = prior.files.clone();
    all_files.extend(files);
    let mut all_rollbacks = prior.rollbacks.clone();
    all_rollbacks.extend(rollbacks);
    Completion {
        finished: run::now_text(),
        mutations: prior.mutations + mutations,
        deletions: prior.deletions + deletions + expirations,
        expirations,
        bytes: prior.bytes + bytes,
        files: all_files,
        vbuckets: all.into_iter().map(|(vb, s)| (vb.to_string(), s)).collect(),
        positions,
        rollbacks: all_rollbacks,
    }
}
