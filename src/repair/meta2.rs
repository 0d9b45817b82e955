//! meta2 repairs as plans of typed [`Step`]s run by an [`Executor`].
//!
//! `check` inspects every copy; `sync` plans, per bad copy, SetAside + Copy from the best
//! copy (the Copy is verified by the meta2 sink against the source's per-table digests
//! before it is renamed into place, so no second read of both copies follows); `move`
//! plans Freeze (every copy), Copy (to the new service), SetPeers (every copy of the new
//! set, identical value and identical `version:main.admin` bump), Unfreeze, Verify, then
//! SetAside (or Remove with `--delete-source`) of the old copy. `rebuild` runs a Copy for
//! every base a lost service should hold.
//!
//! [`FileExecutor`] does each step on local volumes and keeps an undo journal: on a failure
//! every step done is undone in reverse (statuses restored, created files removed, copies
//! set aside put back). A later proxy executor (an SDS proxy's freeze/copy/set_properties)
//! can implement the same [`Executor`] trait.
//!
//! A move also writes a journal file next to its target (`<target>.move-journal`, JSON: the
//! plan, the steps done, the saved statuses) after every step, so that a move killed midway
//! leaves frozen copies that `check` reports, and a rerun of the same command resumes the
//! plan after the last step done. Test hooks (environment, for tests only):
//! `PUMP_TEST_FAIL_AFTER_STEP=N` makes the process exit abruptly (code 86, no undo) right
//! after step N (1-based) is done and journaled; `PUMP_TEST_ERROR_AT_STEP=N` makes step N
//! fail as a step does (the undo journal then runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pump::progress::ProgressMode;
use pump::{Context, Options, WriterSink};
use pump_sinks::meta2::{Meta2Writer, DEFAULT_SORT_MEMORY};

use pump_meta2::schema::{self, STATUS_FROZEN};
use pump_meta2::{digest, inspect, judge, BaseName, CopyReport, Health, Peer};
use serde::{Deserialize, Serialize};

use crate::cli::Failure;

/// One step of a repair plan. Peers are named by address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// `sys.status` = 4294967295.
    Freeze { peer: String },
    /// Puts back the `sys.status` the copy had before the plan (absent = enabled).
    Unfreeze { peer: String },
    /// Renames the copy beside itself (`<file>.<suffix>`), never deletes it.
    SetAside { peer: String, suffix: String },
    /// Streams `from`'s copy into a new copy at `to` with the pump.
    Copy { from: String, to: String },
    /// Writes `sys.peers` and `version:main.admin` (the same values in every copy).
    SetPeers {
        peer: String,
        peers: Vec<String>,
        admin_version: String,
    },
    /// `peer`'s tables have the same digests as `against`'s (all tables, or all but admin).
    Verify {
        peer: String,
        against: String,
        data_only: bool,
    },
    /// Deletes the copy (a move with `--delete-source`, after Verify).
    Remove { peer: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Freeze { peer } => write!(f, "freeze {peer}"),
            Step::Unfreeze { peer } => write!(f, "unfreeze {peer}"),
            Step::SetAside { peer, suffix } => write!(f, "set aside {peer}'s copy as *.{suffix}"),
            Step::Copy { from, to } => write!(f, "copy {from} -> {to}"),
            Step::SetPeers {
                peer,
                peers,
                admin_version,
            } => {
                write!(
                    f,
                    "set sys.peers={} version:main.admin={admin_version} on {peer}",
                    peers.join(",")
                )
            }
            Step::Verify {
                peer,
                against,
                data_only,
            } => write!(
                f,
                "verify {peer} against {against} ({})",
                if *data_only {
                    "every table but admin"
                } else {
                    "every table"
                }
            ),
            Step::Remove { peer } => write!(f, "remove {peer}'s copy"),
        }
    }
}

/// Carries out steps; undoes what it did when asked.
#[async_trait]
pub trait Executor: Send {
    /// Does one step (idempotent: doing a done step again is harmless).
    async fn execute(&mut self, step: &Step) -> Result<(), String>;
    /// Undoes every step done since the last [`Executor::forget`], newest first; returns the
    /// undo actions that failed.
    async fn undo(&mut self) -> Vec<String>;
    /// Keeps what was done (no undo any more).
    fn forget(&mut self);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Undo {
    Status {
        path: PathBuf,
        old: Option<Vec<u8>>,
    },
    Admin {
        path: PathBuf,
        peers: Option<Vec<u8>>,
        version: Option<Vec<u8>>,
    },
    RemoveFile {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
}

/// Executes steps on local volumes.
pub struct FileExecutor {
    base: BaseName,
    volumes: BTreeMap<String, PathBuf>,
    /// `sys.status` of each copy before the plan (None: absent), for Unfreeze.
    statuses: BTreeMap<String, Option<Vec<u8>>>,
    undo: Vec<Undo>,
    /// How a Copy step streams.
    stream: StreamCopy,
}

impl FileExecutor {
    /// An executor for `base` over these peers.
    pub fn new(base: BaseName, peers: &[Peer]) -> FileExecutor {
        FileExecutor {
            base,
            volumes: peers
                .iter()
                .map(|p| (p.address.clone(), p.volume.clone()))
                .collect(),
            statuses: BTreeMap::new(),
            undo: Vec::new(),
            stream: StreamCopy::default(),
        }
    }

    /// Copy steps stream with these settings.
    pub fn with_stream(self, stream: StreamCopy) -> FileExecutor {
        FileExecutor { stream, ..self }
    }

    /// The file of `peer`'s copy.
    pub fn path(&self, peer: &str) -> Result<PathBuf, String> {
        self.volumes
            .get(peer)
            .map(|v| self.base.path_in(v))
            .ok_or_else(|| format!("{peer}: not a known peer"))
    }

    fn open(&self, peer: &str) -> Result<(PathBuf, rusqlite::Connection), String> {
        let path = self.path(peer)?;
        if !path.is_file() {
            return Err(format!("{peer}: {}: no such file", path.display()));
        }
        let c = rusqlite::Connection::open(&path)
            .map_err(|e| format!("{peer}: {}: {e}", path.display()))?;
        Ok((path, c))
    }
}

fn admin_get(c: &rusqlite::Connection, path: &Path, key: &str) -> Result<Option<Vec<u8>>, String> {
    schema::admin_get(c, key).map_err(|e| format!("{}: {e}", path.display()))
}

fn admin_put(
    c: &rusqlite::Connection,
    path: &Path,
    key: &str,
    v: Option<&[u8]>,
) -> Result<(), String> {
    match v {
        Some(v) => schema::admin_set(c, key, v),
        None => schema::admin_delete(c, key),
    }
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// How a base is streamed into a new copy: meta2 source -> meta2 sink, through the pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCopy {
    /// Bytes of index keys a table may hold before the biggest index is sorted into a run on
    /// disk (the sink's `-x sort_memory`).
    pub sort_memory: usize,
}

impl Default for StreamCopy {
    fn default() -> Self {
        StreamCopy {
            sort_memory: DEFAULT_SORT_MEMORY,
        }
    }
}

impl StreamCopy {
    /// Streams the base at `from` into a new base at `to`; returns the rows copied.
    pub async fn copy(self, from: &Path, to: &Path) -> Result<u64, String> {
        self.copy_with(from, to, true).await
    }

    /// The sink writing `to`; `sync_dir` false leaves the directory's sync to the caller.
    fn sink(self, to: &Path, sync_dir: bool) -> WriterSink<Meta2Writer> {
        let WriterSink(w) = pump_sinks::meta2::meta2_sink_with(to.to_path_buf(), sync_dir);
        WriterSink(w.with_sort_memory(self.sort_memory))
    }

    /// [`StreamCopy::copy`]; `sync_dir` false leaves the directory's sync to the caller.
    async fn copy_with(self, from: &Path, to: &Path, sync_dir: bool) -> Result<u64, String> {
        let options = Options {
            threads: 1,
            ..Options::default()
        };
        let batch = options.extra.batch_max_size;
        let source = Box::new(pump_sources::meta2::Meta2Source::new(
            from.to_path_buf(),
            batch,
        ));
        let sink = Box::new(self.sink(to, sync_dir));
        let ctx = Context::new(options).with_progress(ProgressMode::Off);
        let summary = pump::run(source, sink, ctx)
            .await
            .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
        Ok(summary.counts.items_written)
    }
}

#[async_trait]
impl Executor for FileExecutor {
    async fn execute(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Freeze { peer } => {
                let (path, c) = self.open(peer)?;
                let old = admin_get(&c, &path, "sys.status")?;
                let frozen = STATUS_FROZEN.to_string().into_bytes();
                self.statuses
                    .entry(peer.clone())
                    .or_insert_with(|| old.clone());
                admin_put(&c, &path, "sys.status", Some(&frozen))?;
                self.undo.push(Undo::Status { path, old });
            }
            Step::Unfreeze { peer } => {
                let (path, c) = self.open(peer)?;
                let old = admin_get(&c, &path, "sys.status")?;
                let want = self.statuses.get(peer).cloned().flatten();
                admin_put(&c, &path, "sys.status", want.as_deref())?;
                self.undo.push(Undo::Status { path, old });
            }
            Step::SetAside { peer, suffix } => {
                let path = self.path(peer)?;
                let aside = aside_path(&path, suffix);
                if !path.exists() && aside.exists() {
                    return Ok(());
                }
                std::fs::rename(&path, &aside)
                    .map_err(|e| format!("{peer}: {}: {e}", path.display()))?;
                self.undo.push(Undo::Rename {
                    from: aside,
                    to: path,
                });
            }
            Step::Copy { from, to } => {
                let src = self.path(from)?;
                let dst = self.path(to)?;
                if dst.exists() {
                    return Err(format!(
                        "{to}: {} exists; set it aside first",
                        dst.display()
                    ));
                }
                self.stream
                    .copy(&src, &dst)
                    .await
                    .map_err(|e| format!("{to}: {e}"))?;
                self.undo.push(Undo::RemoveFile { path: dst });
            }
            Step::SetPeers {
                peer,
                peers,
                admin_version,
            } => {
                let (path, c) = self.open(peer)?;
                let key = schema::version_key("admin");
                let old_peers = admin_get(&c, &path, "sys.peers")?;
                let old_version = admin_get(&c, &path, &key)?;
                let tx = c
                    .unchecked_transaction()
                    .map_err(|e| format!("{peer}: {e}"))?;
                admin_put(&tx, &path, "sys.peers", Some(peers.join(",").as_bytes()))?;
                admin_put(&tx, &path, &key, Some(admin_version.as_bytes()))?;
                tx.commit().map_err(|e| format!("{peer}: {e}"))?;
                self.undo.push(Undo::Admin {
                    path,
                    peers: old_peers,
                    version: old_version,
                });
            }
            Step::Verify {
                peer,
                against,
                data_only,
            } => {
                let a = self.path(peer)?;
                let b = self.path(against)?;
                let skip: &[&str] = if *data_only { &["admin"] } else { &[] };
                let da = tokio::task::spawn_blocking({
                    let a = a.clone();
                    let skip: Vec<String> = skip.iter().map(|s| s.to_string()).collect();
                    move || {
                        let s: Vec<&str> = skip.iter().map(String::as_str).collect();
                        digest(&a, &s)
                    }
                });
                let db = digest(&b, skip).map_err(|e| format!("{against}: {e}"))?;
                let da = da
                    .await
                    .map_err(|e| format!("{peer}: {e}"))?
                    .map_err(|e| format!("{peer}: {e}"))?;
                if da != db {
                    return Err(format!(
                        "{peer}: content differs from {against} in {:?}",
                        pump_meta2::tables_differing(&da, &db)
                    ));
                }
                let st = inspect(&a, false);
                if st.health != Health::Ok {
                    return Err(format!("{peer}: {}: {}", st.health, st.message));
                }
            }
            Step::Remove { peer } => {
                let path = self.path(peer)?;
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("{peer}: {}: {e}", path.display())),
                }
            }
        }
        Ok(())
    }

    async fn undo(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(u) = self.undo.pop() {
            let r: Result<(), String> = match &u {
                Undo::Status { path, old } => rusqlite::Connection::open(path)
                    .map_err(|e| e.to_string())
                    .and_then(|c| admin_put(&c, path, "sys.status", old.as_deref())),
                Undo::Admin {
                    path,
                    peers,
                    version,
                } => rusqlite::Connection::open(path)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        admin_put(&c, path, "sys.peers", peers.as_deref())?;
                        admin_put(&c, path, &schema::version_key("admin"), version.as_deref())
                    }),
                Undo::RemoveFile { path } => std::fs::remove_file(path).map_err(|e| e.to_string()),
                Undo::Rename { from, to } => std::fs::rename(from, to).map_err(|e| e.to_string()),
            };
            if let Err(e) = r {
                errors.push(format!("undo {u:?}: {e}"));
            }
        }
        errors
    }

    fn forget(&mut self) {
        self.undo.clear();
    }
}

/// `<file>.<suffix>`.
pub fn aside_path(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{suffix}"));
    PathBuf::from(s)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `corrupted`, or `corrupted-<unix time>` when a `.corrupted` file is already there.
fn corrupted_suffix(path: &Path) -> String {
    if aside_path(path, "corrupted").exists() {
        format!("corrupted-{}", now_secs())
    } else {
        "corrupted".into()
    }
}

fn check_test_hook(done: usize) {
    if let Ok(n) = std::env::var("PUMP_TEST_FAIL_AFTER_STEP") {
        if n.trim().parse::<usize>().ok() == Some(done) {
            eprintln!("pump: PUMP_TEST_FAIL_AFTER_STEP={done}: exiting abruptly (test hook)");
            std::process::exit(86);
        }
    }
}

/// Inspects and judges every peer's copy of `base`.
pub fn check_base(base: &BaseName, peers: &[Peer], full: bool) -> Vec<CopyReport> {
    let states: Vec<(String, pump_meta2::CopyState)> = peers
        .iter()
        .map(|p| (p.address.clone(), inspect(&p.path(base), full)))
        .collect();
    judge(&states)
}

/// One peer's answer to a sync, as `openio election sync` gives it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncAnswer {
    pub peer: String,
    pub status: u16,
    pub message: String,
}

/// Refills every bad copy of `base` from the best one (or `from`), streaming as `stream` says.
pub async fn sync(
    base: &BaseName,
    peers: &[Peer],
    from: Option<&str>,
    stream: StreamCopy,
) -> Result<Vec<SyncAnswer>, Failure> {
    let states: Vec<(String, pump_meta2::CopyState)> = peers
        .iter()
        .map(|p| (p.address.clone(), inspect(&p.path(base), false)))
        .collect();
    let reports = judge(&states);
    let source = match from {
        Some(f) => {
            let r = reports.iter().find(|r| r.address == f).ok_or_else(|| {
                Failure::Usage(format!("--from {f}: not one of the --peer addresses"))
            })?;
            if !r.health.readable() || r.health == Health::Incomplete {
                return Err(Failure::Failed(format!(
                    "--from {f}: its copy is {}: {}",
                    r.health, r.message
                )));
            }
            f.to_string()
        }
        None => {
            let best = states
                .iter()
                .zip(&reports)
                .filter(|(_, r)| r.health.readable() && r.health != Health::Incomplete)
                .max_by_key(|((_, s), r)| (r.health == Health::Ok, s.version_total()))
                .map(|((a, _), _)| a.clone());
            best.ok_or_else(|| {
                Failure::Failed(format!(
                    "{base}: no copy is complete and sound: nothing to sync from"
                ))
            })?
        }
    };
    let mut exec = FileExecutor::new(base.clone(), peers).with_stream(stream);
    let mut answers = Vec::new();
    for r in &reports {
        if r.address == source {
            answers.push(SyncAnswer {
                peer: r.address.clone(),
                status: 301,
                message: "not SLAVE (the copy used as source)".into(),
            });
            continue;
        }
        if matches!(r.health, Health::Ok | Health::Frozen) {
            answers.push(SyncAnswer {
                peer: r.address.clone(),
                status: 200,
                message: "OK (already good)".into(),
            });
            continue;
        }
        let mut plan = Vec::new();
        if r.health != Health::Missing {
            plan.push(Step::SetAside {
                peer: r.address.clone(),
                suffix: corrupted_suffix(&r.path),
            });
        }
        // No Verify step after the Copy: the meta2 sink already compared every table it
        // built with the digests the source computed over the rows it read (one snapshot),
        // and ran quick_check, before the copy got its name.
        plan.push(Step::Copy {
            from: source.clone(),
            to: r.address.clone(),
        });
        let mut failed = None;
        for step in &plan {
            if let Err(e) = exec.execute(step).await {
                failed = Some(format!("{step}: {e}"));
                break;
            }
        }
        match failed {
            None => {
                exec.forget();
                answers.push(SyncAnswer {
                    peer: r.address.clone(),
                    status: 200,
                    message: format!(
                        "OK (was {}: {}; refilled from {source})",
                        r.health, r.message
                    ),
                });
            }
            Some(e) => {
                let undo = exec.undo().await;
                let mut message = e;
                if !undo.is_empty() {
                    message.push_str(&format!("; undo failed: {}", undo.join("; ")));
                }
                answers.push(SyncAnswer {
                    peer: r.address.clone(),
                    status: 500,
                    message,
                });
            }
        }
    }
    Ok(answers)
}

/// What a move needs to know, saved in its journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveJournal {
    pub base: String,
    pub plan: Vec<Step>,
    pub done: usize,
    pub statuses: BTreeMap<String, Option<Vec<u8>>>,
}

/// The arguments of a move.
pub struct MoveRequest {
    pub base: BaseName,
    pub peers: Vec<Peer>,
    pub from: String,
    pub to: Peer,
    pub delete_source: bool,
    pub dry_run: bool,
    /// How the copy streams.
    pub stream: StreamCopy,
}

fn journal_path(target: &Path) -> PathBuf {
    aside_path(target, "move-journal")
}

fn write_journal(path: &Path, j: &MoveJournal) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(j).map_err(|e| e.to_string())?;
    let tmp = aside_path(path, "tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn volume_writable(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()));
    }
    let probe = dir.join(format!(".pump-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("{}: not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Plans a move after checking everything; writes nothing.
fn plan_move(req: &MoveRequest) -> Result<(Vec<Step>, Vec<Peer>), Failure> {
    if !req.peers.iter().any(|p| p.address == req.from) {
        return Err(Failure::Usage(format!(
            "--from {}: not one of the --peer addresses",
            req.from
        )));
    }
    if req.peers.iter().any(|p| p.address == req.to.address) {
        return Err(Failure::Usage(format!(
            "--to {}: already a peer of {}",
            req.to.address, req.base
        )));
    }
    volume_writable(&req.to.volume)
        .map_err(|e| Failure::Usage(format!("--to {}: {e}", req.to.address)))?;
    let reports = check_base(&req.base, &req.peers, false);
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.health != Health::Ok)
        .map(|r| format!("{}: {}: {}", r.address, r.health, r.message))
        .collect();
    if !bad.is_empty() {
        return Err(Failure::Failed(format!(
            "{}: every copy must pass check before a move (run `pump meta2 sync` first): {}",
            req.base,
            bad.join("; ")
        )));
    }
    let listed = inspect(&req.peers[0].path(&req.base), false).peers;
    let mut given: Vec<String> = req.peers.iter().map(|p| p.address.clone()).collect();
    given.sort();
    if listed != given {
        return Err(Failure::Usage(format!(
            "{}: sys.peers is {} but --peer gives {}",
            req.base,
            listed.join(","),
            given.join(",")
        )));
    }
    let target = req.to.path(&req.base);
    if target.exists() {
        return Err(Failure::Usage(format!(
            "--to {}: {} exists",
            req.to.address,
            target.display()
        )));
    }
    let admin_n = req
        .peers
        .iter()
        .filter_map(|p| {
            inspect(&p.path(&req.base), false)
                .versions
                .get("admin")
                .copied()
        })
        .max()
        .unwrap_or(0);
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let admin_version = format!("{}:{when}", admin_n + 1);
    let mut new_peers: Vec<String> = given.iter().filter(|a| **a != req.from).cloned().collect();
    new_peers.push(req.to.address.clone());
    new_peers.sort();
    let mut plan = Vec::new();
    for p in &given {
        plan.push(Step::Freeze { peer: p.clone() });
    }
    plan.push(Step::Copy {
        from: req.from.clone(),
        to: req.to.address.clone(),
    });
    for p in &new_peers {
        plan.push(Step::SetPeers {
            peer: p.clone(),
            peers: new_peers.clone(),
            admin_version: admin_version.clone(),
        });
    }
    for p in &given {
        if *p != req.from {
            plan.push(Step::Unfreeze { peer: p.clone() });
        }
    }
    plan.push(Step::Unfreeze {
        peer: req.to.address.clone(),
    });
    plan.push(Step::Verify {
        peer: req.to.address.clone(),
        against: req.from.clone(),
        data_only: true,
    });
    plan.push(Step::Unfreeze {
        peer: req.from.clone(),
    });
    if req.delete_source {
        plan.push(Step::Remove {
            peer: req.from.clone(),
        });
    } else {
        plan.push(Step::SetAside {
            peer: req.from.clone(),
            suffix: format!("moved-{}", now_secs()),
        });
    }
    let mut all = req.peers.clone();
    all.push(req.to.clone());
    Ok((plan, all))
}

/// Moves one copy of a base to a new service; resumes an interrupted move of the same base
/// to the same target from its journal.
pub async fn move_base(req: &MoveRequest) -> Result<Vec<String>, Failure> {
    let target = req.to.path(&req.base);
    let journal_file = journal_path(&target);
    let mut all = req.peers.clone();
    all.push(req.to.clone());
    let (mut journal, resumed) = if journal_file.exists() {
        let text = std::fs::read(&journal_file)
            .map_err(|e| Failure::Failed(format!("{}: {e}", journal_file.display())))?;
        let j: MoveJournal = serde_json::from_slice(&text).map_err(|e| {
            Failure::Failed(format!(
                "{}: not a move journal: {e}",
                journal_file.display()
            ))
        })?;
        if j.base != req.base.to_string() {
            return Err(Failure::Usage(format!(
                "{}: the journal is for {}",
                journal_file.display(),
                j.base
            )));
        }
        (j, true)
    } else {
        let (plan, _) = plan_move(req)?;
        (
            MoveJournal {
                base: req.base.to_string(),
                plan,
                done: 0,
                statuses: BTreeMap::new(),
            },
            false,
        )
    };
    let mut lines = Vec::new();
    if req.dry_run {
        for (i, s) in journal.plan.iter().enumerate() {
            let mark = if i < journal.done { " (done)" } else { "" };
            lines.push(format!("{:>2}. {s}{mark}", i + 1));
        }
        return Ok(lines);
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Failed(format!("{}: {e}", dir.display())))?;
    }
    if resumed {
        lines.push(format!(
            "resuming the move journaled in {} after step {}",
            journal_file.display(),
            journal.done
        ));
    } else {
        // Save every copy's status before anything is written: Unfreeze puts it back.
        for p in &req.peers {
            let c = rusqlite::Connection::open_with_flags(
                p.path(&req.base),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| Failure::Failed(format!("{}: {e}", p.address)))?;
            let v = schema::admin_get(&c, "sys.status")
                .map_err(|e| Failure::Failed(format!("{}: {e}", p.address)))?;
            journal.statuses.insert(p.address.clone(), v);
        }
        let from_status = journal.statuses.get(&req.from).cloned().flatten();
        journal.statuses.insert(req.to.address.clone(), from_status);
        write_journal(&journal_file, &journal).map_err(Failure::Failed)?;
    }
    let mut exec = FileExecutor::new(req.base.clone(), &all).with_stream(req.stream);
    exec.statuses = journal.statuses.clone();
    let start = journal.done;
    for i in start..journal.plan.len() {
        let step = journal.plan[i].clone();
        // A step cut short by a kill may have left a partial result: redo it from scratch.
        if resumed && i == start {
            if let Step::Copy { to, .. } = &step {
                let t = exec.path(to).map_err(Failure::Failed)?;
                let _ = std::fs::remove_file(&t);
                let _ = std::fs::remove_file(pump_sinks::meta2::tmp_path(&t));
            }
        }
        let injected = std::env::var("PUMP_TEST_ERROR_AT_STEP")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            == Some(i + 1);
        let result = if injected {
            Err("PUMP_TEST_ERROR_AT_STEP (test hook)".to_string())
        } else {
            exec.execute(&step).await
        };
        if let Err(e) = result {
            let undo = exec.undo().await;
            let mut msg = format!("step {} ({step}) failed: {e}", i + 1);
            if resumed {
                msg.push_str(&format!(
                    "; the journal {} is kept: fix the cause and rerun",
                    journal_file.display()
                ));
            } else if undo.is_empty() {
                let _ = std::fs::remove_file(&journal_file);
                msg.push_str("; every copy is back as it was");
            } else {
                msg.push_str(&format!("; undo failed: {}", undo.join("; ")));
            }
            return Err(Failure::Failed(msg));
        }
        journal.done = i + 1;
        write_journal(&journal_file, &journal).map_err(Failure::Failed)?;
        lines.push(format!("{:>2}. {step}: done", i + 1));
        check_test_hook(i + 1);
    }
    exec.forget();
    std::fs::remove_file(&journal_file)
        .map_err(|e| Failure::Failed(format!("{}: {e}", journal_file.display())))?;
    Ok(lines)
}

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct RebuildSummary {
    pub rebuilt: usize,
    pub present: usize,
    /// Bases on the other volumes that do not list the lost service.
    pub elsewhere: usize,
    pub failed: Vec<String>,
    /// The size of the copies made.
    pub bytes: u64,
}

/// Rebuilds on `lost` every base that lists it in `sys.peers` on the other volumes.
pub async fn rebuild(
    lost: &Peer,
    others: &[Peer],
    threads: usize,
    quiet: bool,
    mode: RebuildMode,
) -> Result<RebuildSummary, Failure> {
    volume_writable(&lost.volume)
        .map_err(|e| Failure::Usage(format!("--peer {}: {e}", lost.address)))?;
    let mut holders: BTreeMap<BaseName, Vec<PathBuf>> = BTreeMap::new();
    for p in others {
        let bases = BaseName::list(&p.volume).map_err(|e| Failure::Failed(e.to_string()))?;
        for b in bases {
            holders.entry(b.clone()).or_default().push(p.path(&b));
        }
    }
    let work: Vec<(BaseName, Vec<PathBuf>)> = holders.into_iter().collect();
    let total = work.len();
    let threads = threads.max(1);
    let mut summary = RebuildSummary::default();
    let mut set = tokio::task::JoinSet::new();
    let mut iter = work.into_iter();
    let mut done = 0usize;
    // Streamed copies are linked as they finish; their directories are synced at the end.
    let mut streamed: Vec<BaseName> = Vec::new();
    let mut pending: Pending = Vec::new();
    let mut linking: Option<Linking> = None;
    let started = std::time::Instant::now();
    loop {
        while set.len() < threads {
            let Some((base, copies)) = iter.next() else {
                break;
            };
            let lost = lost.clone();
            set.spawn(async move {
                let r = rebuild_one(&base, &copies, &lost, mode).await;
                (base, r)
            });
        }
        let Some(r) = set.join_next().await else {
            break;
        };
        let (base, r) = r.map_err(|e| Failure::Failed(format!("a rebuild task failed: {e}")))?;
        done += 1;
        match r {
            Ok(Rebuilt::Copied(bytes)) => {
                streamed.push(base);
                summary.rebuilt += 1;
                summary.bytes += bytes;
            }
            Ok(Rebuilt::Built { bytes, aside }) => {
                pending.push((base, bytes, aside));
                if pending.len() >= LINK_BATCH {
                    // One batch links while the next is copied.
                    finish_linking(linking.take(), &mut summary).await?;
                    linking = Some(start_linking(lost, std::mem::take(&mut pending)));
                }
            }
            Ok(Rebuilt::Present) => summary.present += 1,
            Ok(Rebuilt::Elsewhere) => summary.elsewhere += 1,
            Err(e) => summary.failed.push(format!("{base}: {e}")),
        }
        if !quiet && (done.is_multiple_of(1000) || done == total) {
            eprintln!(
                "rebuild: {done}/{total} bases looked at ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
        }
    }
    finish_linking(linking.take(), &mut summary).await?;
    if !pending.is_empty() {
        let last = start_linking(lost, pending);
        finish_linking(Some(last), &mut summary).await?;
    }
    // Each streamed base was synced before its link; the links reach the disk here, before
    // the summary says they are done.
    let dirs = parent_dirs(streamed.iter().map(|b| lost.path(b)));
    pump_sinks::meta2::sync_paths(&dirs).map_err(Failure::Failed)?;
    Ok(summary)
}

/// Verified copies are synced (fsyncs in parallel) and linked this many at a time.
const LINK_BATCH: usize = 256;

/// The copies of a batch not linked yet: each base, its size, where a bad copy that was in
/// place went.
type Pending = Vec<(BaseName, u64, Option<PathBuf>)>;
type Linking = tokio::task::JoinHandle<(Vec<Result<(), String>>, Pending)>;

/// Starts syncing the verified copies of `batch` (their temporary files) to disk at once,
/// then linking each into place and syncing their directories, on a blocking task; a base
/// whose link fails gets back the bad copy set aside for it. The copies of the next bases go
/// on meanwhile.
fn start_linking(lost: &Peer, batch: Pending) -> Linking {
    let lost = lost.clone();
    tokio::task::spawn_blocking(move || {
        let tmps: Vec<PathBuf> = batch
            .iter()
            .map(|(b, _, _)| pump_meta2::copy::tmp_path(&lost.path(b)))
            .collect();
        let synced = pump_sinks::meta2::sync_paths(&tmps);
        let results: Vec<Result<(), String>> = batch
            .iter()
            .map(|(b, _, aside)| {
                let target = lost.path(b);
                let r = synced.clone().and_then(|()| {
                    pump_meta2::copy::link_built(&target).map_err(|e| e.to_string())
                });
                if r.is_err() {
                    let _ = std::fs::remove_file(pump_meta2::copy::tmp_path(&target));
                    if let Some(a) = aside {
                        let _ = std::fs::rename(a, &target);
                    }
                }
                r
            })
            .collect();
        // The links reach the disk before the batch counts as rebuilt.
        let dirs = parent_dirs(batch.iter().map(|(b, _, _)| lost.path(b)));
        let results = match pump_sinks::meta2::sync_paths(&dirs) {
            Ok(()) => results,
            Err(e) => results
                .into_iter()
                .map(|r| r.and(Err(format!("linked but not synced: {e}"))))
                .collect(),
        };
        (results, batch)
    })
}

/// Waits for a batch started by [`start_linking`] and counts it.
async fn finish_linking(
    linking: Option<Linking>,
    summary: &mut RebuildSummary,
) -> Result<(), Failure> {
    let Some(linking) = linking else {
        return Ok(());
    };
    let (results, batch) = linking
        .await
        .map_err(|e| Failure::Failed(format!("a rebuild task failed: {e}")))?;
    for ((base, bytes, _), r) in batch.into_iter().zip(results) {
        match r {
            Ok(()) => {
                summary.rebuilt += 1;
                summary.bytes += bytes;
            }
            Err(e) => summary.failed.push(format!("{base}: {e}")),
        }
    }
    Ok(())
}

/// The distinct directories of `paths`.
fn parent_dirs(paths: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// How a rebuild copies each base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildMode {
    /// The image of a sound, complete peer copy (it passes quick_check in the read
    /// transaction the image is taken in) is written, read back and compared, and synced
    /// before its link ([`pump_meta2::copy::copy_verified`]).
    Pages,
    /// Each base streams through the pump (meta2 source -> meta2 sink), as `sync` does.
    Stream(StreamCopy),
}

enum Rebuilt {
    /// Copied and linked (a streamed copy).
    Copied(u64),
    /// A verified copy under the temporary name, to sync and link ([`start_linking`]);
    /// `aside`: where a bad copy that was in place went.
    Built {
        bytes: u64,
        aside: Option<PathBuf>,
    },
    Present,
    Elsewhere,
}

async fn rebuild_one(
    base: &BaseName,
    copies: &[PathBuf],
    lost: &Peer,
    mode: RebuildMode,
) -> Result<Rebuilt, String> {
    let target = lost.path(base);
    let copies = copies.to_vec();
    let address = lost.address.clone();
    // Everything but a streamed copy reads and writes files: off the async workers.
    let plan = tokio::task::spawn_blocking(move || {
        let r = plan_one(&copies, &address, &target, mode);
        (r, target)
    })
    .await
    .map_err(|e| format!("{base}: {e}"))?;
    let (plan, target) = plan;
    let (src, aside, stream) = match plan? {
        Planned::Done(r) => return Ok(r),
        Planned::Stream { src, aside, stream } => (src, aside, stream),
    };
    // The directories are synced once each at the end of the rebuild.
    match stream.copy_with(&src, &target, false).await {
        Ok(_rows) => Ok(Rebuilt::Copied(
            std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0),
        )),
        Err(e) => {
            if let Some(a) = aside {
                let _ = std::fs::rename(&a, &target);
            }
            Err(e)
        }
    }
}

enum Planned {
    Done(Rebuilt),
    /// Stream `src` to the target (`aside`: where a bad copy that was there went).
    Stream {
        src: PathBuf,
        aside: Option<PathBuf>,
        stream: StreamCopy,
    },
}

fn plan_one(
    copies: &[PathBuf],
    address: &str,
    target: &Path,
    mode: RebuildMode,
) -> Result<Planned, String> {
    // A page copy checks the pages it copies (quick_check of the copy): the candidates need
    // only their admin keys read here.
    let look = |c: &PathBuf| match mode {
        RebuildMode::Pages => pump_meta2::check::inspect_admin(c),
        RebuildMode::Stream(_) => inspect(c, false),
    };
    let states: Vec<pump_meta2::CopyState> = copies.iter().map(look).collect();
    if !states.iter().any(|s| s.peers.iter().any(|p| p == address)) {
        return Ok(Planned::Done(Rebuilt::Elsewhere));
    }
    let existing = inspect(target, false);
    let mut candidates: Vec<&pump_meta2::CopyState> = states
        .iter()
        .filter(|s| {
            s.health == Health::Ok
                && schema::REQUIRED_KEYS
                    .iter()
                    .all(|k| s.admin.contains_key(*k))
        })
        .collect();
    candidates.sort_by_key(|s| std::cmp::Reverse(s.version_total()));
    let best = candidates
        .first()
        .ok_or_else(|| "no sound, complete copy on the other volumes".to_string())?;
    if existing.health == Health::Ok && existing.version_total() >= best.version_total() {
        return Ok(Planned::Done(Rebuilt::Present));
    }
    let mut aside = None;
    if existing.health != Health::Missing {
        let a = aside_path(target, &corrupted_suffix(target));
        std::fs::rename(target, &a).map_err(|e| format!("{}: {e}", target.display()))?;
        aside = Some(a);
    }
    if let RebuildMode::Stream(stream) = mode {
        return Ok(Planned::Stream {
            src: best.path.clone(),
            aside,
            stream,
        });
    }
    // The best copy first; a copy whose pages fail the checks gives way to the next.
    let mut errors = Vec::new();
    for c in candidates {
        match pump_meta2::copy::build_verified(&c.path, target, false) {
            Ok(bytes) => return Ok(Planned::Done(Rebuilt::Built { bytes, aside })),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(a) = aside {
        let _ = std::fs::rename(&a, target);
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_copy_gives_its_sort_memory_to_the_sink() {
        let to = Path::new("/nonexistent/x.meta2");
        assert_eq!(
            StreamCopy::default().sink(to, true).0.sort_memory(),
            DEFAULT_SORT_MEMORY
        );
        let small = StreamCopy { sort_memory: 1000 };
        assert_eq!(small.sink(to, false).0.sort_memory(), 1000);
        let exec = FileExecutor::new(BaseName::of("a", "c"), &[]).with_stream(small);
        assert_eq!(exec.stream, small);
    }
}
