//! Which data files a restore reads, and in which order (cbrestore's):
//!
//! - `<dir>/bucket-*/node-*/data-*.cbb` (the old single-run layout): those files;
//! - `<dir>` holding `<ts>-full` / `<ts>-diff` / `<ts>-accu` runs (a timestamped root given
//!   directly), or otherwise the newest timestamped root in `<dir>`: every run of that root.
//!
//! Files are read in path order: runs by name (the full run, then the diffs by time), then
//! node directories, then `data-NNNN.cbb` by number.
//!
//! A run pump started and did not complete (`pump_formats::run`) is refused by name, unless
//! the restore takes what incomplete runs hold (`allow_partial`): then their data files are
//! read too, under either name, after rolling back what an interrupted transaction left in
//! them. A rollback a later run recorded makes the rows of that vbucket past the rollback's
//! seqno stale in every file written before its stream restarted: those rows are left out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pump_formats::bfd;
use pump_formats::run::{self, Positions, Rollback, RunState};

/// A data file to read and, per vbucket, the seqno above which its rows are stale.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: PathBuf,
    pub stale_above: Option<Arc<HashMap<u16, u64>>>,
}

/// The data files of `bucket` in restore order, or an error naming the directory (and the
/// buckets the backup holds when `bucket` is not one of them, or the incomplete runs).
pub fn data_files(dir: &Path, bucket: &str) -> Result<Vec<PathBuf>, String> {
    Ok(restore_plan(dir, bucket, false)?
        .into_iter()
        .map(|f| f.path)
        .collect())
}

/// One node directory of a run, in restore order.
struct NodeRun {
    node_dir: PathBuf,
    state: RunState,
}

/// The data files of `bucket` to restore, with the rows to leave out; see the module doc.
pub fn restore_plan(
    dir: &Path,
    bucket: &str,
    allow_partial: bool,
) -> Result<Vec<DataFile>, String> {
    let runs = runs(dir)?;
    let bucket_dir = bfd::bucket_dir_name(bucket);
    let mut nodes: Vec<NodeRun> = Vec::new();
    let mut found_bucket = false;
    for run in &runs {
        let b = run.join(&bucket_dir);
        if !b.is_dir() {
            continue;
        }
        found_bucket = true;
        for node_dir in sorted_entries(&b)?
            .into_iter()
            .filter(|p| p.is_dir() && name_of(p).starts_with("node-"))
        {
            let state = RunState::of(&node_dir)?;
            nodes.push(NodeRun { node_dir, state });
        }
    }
    if !found_bucket {
        let mut buckets: Vec<String> = Vec::new();
        for run in &runs {
            for p in sorted_entries(run)? {
                if let Some(b) = name_of(&p).strip_prefix("bucket-") {
                    let b = bfd::unquote_plus(b).unwrap_or_else(|| b.to_string());
                    if !buckets.contains(&b) {
                        buckets.push(b);
                    }
                }
            }
        }
        return Err(if buckets.is_empty() {
            format!(
                "no bucket directory (bucket-*) in the backup at {}",
                dir.display()
            )
        } else {
            format!(
                "no bucket {bucket:?} in this backup; it holds: {} (pick one with -b)",
                buckets.join(", ")
            )
        });
    }
    let incomplete: Vec<&NodeRun> = nodes.iter().filter(|n| !n.state.is_complete()).collect();
    if !incomplete.is_empty() && !allow_partial {
        let names: Vec<String> = incomplete
            .iter()
            .map(|n| {
                let why = match &n.state {
                    RunState::Incomplete { record } => format!(
                        "a {} run of {} started {} that did not complete",
                        record.mode, record.source, record.started
                    ),
                    _ => "an interrupted run (.partial files)".to_string(),
                };
                format!("{} ({why})", n.node_dir.display())
            })
            .collect();
        return Err(format!(
            "the backup holds {} incomplete run{}: {}; a restore refuses it: rerun the backup to complete it, or pass --allow-partial to restore what it confirmed",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join("; ")
        ));
    }
    // Every run's rollbacks, as (index of the node run, rollback).
    let mut rollbacks: Vec<(usize, Rollback)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match &n.state {
            RunState::Complete { completion, .. } => {
                rollbacks.extend(completion.rollbacks.iter().map(|r| (i, *r)))
            }
            RunState::Incomplete { record } => {
                rollbacks.extend(record.rollbacks.iter().map(|r| (i, *r)));
                let since = record.attempts.last().map_or(0, |a| a.first_file);
                let current = Positions::load(&n.node_dir.join(run::POSITIONS_JSON))?;
                for (vb, seqno) in current.rollbacks {
                    if let Ok(vbucket) = vb.parse() {
                        rollbacks.push((
                            i,
                            Rollback {
                                vbucket,
                                seqno,
                                before_file: since,
                            },
                        ));
                    }
                }
            }
            RunState::Foreign { .. } => {}
        }
    }
    let mut files = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let listed: Vec<(u32, PathBuf)> = if n.state.is_complete() {
            run::run_data_files(&n.node_dir)?
                .into_iter()
                .filter(|(_, p)| bfd::is_data_file_name(name_of(p)))
                .collect()
        } else {
            let all = run::run_data_files(&n.node_dir)?;
            for (_, p) in &all {
                roll_back_interrupted(p)?;
            }
            all
        };
        for (number, path) in listed {
            let mut stale: HashMap<u16, u64> = HashMap::new();
            for (at, r) in &rollbacks {
                if *at > i || (*at == i && number < r.before_file) {
                    let s = stale.entry(r.vbucket).or_insert(r.seqno);
                    *s = (*s).min(r.seqno);
                }
            }
            files.push(DataFile {
                path,
                stale_above: (!stale.is_empty()).then(|| Arc::new(stale)),
            });
        }
    }
    Ok(files)
}

/// A data file of an incomplete run with a journal beside it was cut in the middle of a
/// transaction: opening it for writing rolls that transaction back, leaving what was committed.
fn roll_back_interrupted(path: &Path) -> Result<(), String> {
    if !bfd::has_hot_journal(path) {
        return Ok(());
    }
    let err = |e: rusqlite::Error| {
        format!(
            "{}: cannot roll back its interrupted transaction: {e}",
            path.display()
        )
    };
    let db = rusqlite::Connection::open(path).map_err(err)?;
    db.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(err)?;
    drop(db);
    eprintln!(
        "{}: rolled back the transaction its backup was writing when it stopped",
        path.display()
    );
    Ok(())
}

/// The run directories to read, in order.
fn runs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = sorted_entries(dir)?;
    if entries
        .iter()
        .any(|p| p.is_dir() && name_of(p).starts_with("bucket-"))
    {
        return Ok(vec![dir.to_path_buf()]);
    }
    let is_run = |p: &PathBuf| p.is_dir() && bfd::run_kind(name_of(p)).is_some();
    if entries.iter().any(is_run) {
        return Ok(entries.into_iter().filter(is_run).collect());
    }
    let root = entries
        .into_iter()
        .filter(|p| p.is_dir() && bfd::is_timestamp(name_of(p)))
        .max()
        .ok_or_else(|| {
            format!(
                "no backup found in {}: expected <timestamp>/<timestamp>-full/bucket-*/node-*/data-*.cbb",
                dir.display()
            )
        })?;
    let runs: Vec<PathBuf> = sorted_entries(&root)?.into_iter().filter(is_run).collect();
    if runs.is_empty() {
        return Err(format!("no -full or -diff run in {}", root.display()));
    }
    Ok(runs)
}

fn name_of(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Reads the `collections.json` of each run the restore reads (in `files`' order) into
/// `collections`: every id it names, and its manifest (the newest uid wins). A file that does
/// not parse is an error naming it.
pub fn publish_collections(
    files: &[DataFile],
    collections: &pump::RunCollections,
) -> Result<(), String> {
    let mut seen: Vec<&Path> = Vec::new();
    for f in files {
        let Some(dir) = f.path.parent() else { continue };
        if seen.contains(&dir) {
            continue;
        }
        seen.push(dir);
        let path = dir.join(bfd::COLLECTIONS_JSON);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad = |what: String| format!("{}: {what}", path.display());
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let manifest = pump_protocol::collections::Manifest::from_value(&v["manifest"])
            .map_err(|e| bad(format!("the manifest: {e}")))?;
        if let Some(ids) = v["ids"].as_object() {
            for (id, p) in ids {
                let id: u32 = id
                    .parse()
                    .map_err(|_| bad(format!("ids: {id:?} is not a collection id")))?;
                let (Some(scope), Some(name)) = (p[0].as_str(), p[1].as_str()) else {
                    return Err(bad(format!("ids: {id}: not [scope, collection]")));
                };
                collections.remember(
                    id,
                    pump_protocol::collections::CollectionPath::new(scope, name),
                );
            }
        }
        collections.publish(manifest);
    }
    Ok(())
}
