//! pump's records beside the files of a backup run, so that a run can be diffed against,
//! resumed, listed and trusted.
//!
//! ```text
//! <run>/bucket-<b>/node-<n>/pump-run.json        written and synced before any data file: the
//!                                                 mode, source, bucket, node, the run it diffs
//!                                                 against, and each attempt (start or resume)
//!                           pump-positions.json   where each vbucket's stream stands (the DCP
//!                                                 source's checkpoint: uuid, seqno, snapshot),
//!                                                 the failover logs and the rollbacks seen
//!                           data-NNNN.cbb[.partial], meta.json, seqno.json, failover.json, ...
//!                           pump-complete.json    written and synced last, once every data file
//!                                                 is synced and renamed: the counts, the files,
//!                                                 each vbucket's seqno range, the end positions
//!
//! a run several jobs write (pump-run.json says "parts": N):
//!                           pump-positions-KKKK.json  part K's checkpoint (its vbuckets)
//!                           data-(K*10000+i).cbb      part K's data files
//!                           pump-part-KKKK.json       part K complete (its files synced, renamed)
//!                           pump-parts.lock           held while the last part completes the run
//!                           then, once every part is complete: pump-positions.json (merged),
//!                           meta.json, seqno.json, ..., pump-complete.json
//! ```
//!
//! A run is **complete** from the instant `pump-complete.json` is in place, and only then. A run
//! with `pump-run.json` and no completion record is **incomplete**: a restore refuses it by name
//! (unless told to take what it holds), a rerun of the same backup resumes it. A run with neither
//! was written by another tool (cbbackup): it counts as complete unless `.partial` files lie in it.
//!
//! A rollback seen by a diff run (the vbucket's history diverged from the run it started from)
//! makes every row of that vbucket past the rollback seqno, in every data file written before the
//! stream restarted, stale: [`Rollback`] records which, and a restore leaves those rows out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bfd::{self, RunKind};

/// Written before any data file.
pub const RUN_JSON: &str = "pump-run.json";
/// The source's positions (a DCP checkpoint file).
pub const POSITIONS_JSON: &str = "pump-positions.json";
/// Written last: the run is complete.
pub const COMPLETE_JSON: &str = "pump-complete.json";

/// `pump-run.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `pump 0.1.0`.
    pub tool: String,
    pub mode: RunKind,
    /// RFC 3339, UTC.
    pub started: String,
    /// The source spec, password hidden.
    pub source: String,
    pub bucket: String,
    pub node: String,
    /// The run (`<root>/<run>`) whose end positions this run started from: none for a full run.
    #[serde(default)]
    pub base: Option<String>,
    /// Each start and resume of the run.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Rollbacks seen by the attempts before the last one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<Rollback>,
    /// A run written by this many jobs of a queue run (`pump plan transfer` into a backup
    /// directory): each writes its own data files and its part record, and the run is
    /// complete once every part is (see [`PartRecord`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

/// `pump-part-NNNN.json`: one part of a run that several jobs write, complete. Written and
/// synced once the part's data files are synced and renamed; when every part of the run has
/// one, the run's own files and `pump-complete.json` are written from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub part: u32,
    pub parts: u32,
    /// The part's vbuckets, as `-l` takes them.
    pub vbuckets: String,
    /// What the part holds; its positions are those of its vbuckets only.
    pub completion: Completion,
}

/// A part's data files are numbered from `part * PART_FILES`: `data-30000.cbb` is part 3's
/// first, so that parts written at once never pick the same name.
pub const PART_FILES: u32 = 10_000;

/// The part record's name.
pub fn part_record_name(part: u32) -> String {
    format!("pump-part-{part:04}.json")
}

/// A part's positions (its DCP checkpoint), beside the run's.
pub fn part_positions_name(part: u32) -> String {
    format!("pump-positions-{part:04}.json")
}

/// One start or resume of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// RFC 3339, UTC.
    pub started: String,
    /// The first data file this attempt wrote (`data-NNNN.cbb`, by number).
    pub first_file: u32,
}

/// Where one vbucket's stream stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VbPosition {
    pub uuid: u64,
    pub seqno: u64,
    pub snap_start: u64,
    pub snap_end: u64,
}

/// `pump-positions.json`, the DCP source's checkpoint file:
///
/// ```text
/// {"vbuckets": {"0": {"uuid": 1234, "seqno": 812, "snap_start": 800, "snap_end": 812}, ...},
///  "failover": {"0": [[1234, 700], [987, 0]], ...},     newest first, as the node sent it
///  "rollbacks": {"5": 130, ...}}                          the node asked to restart from there
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    #[serde(default)]
    pub vbuckets: BTreeMap<String, VbPosition>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failover: BTreeMap<String, Vec<[u64; 2]>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollbacks: BTreeMap<String, u64>,
}

impl Positions {
    /// Where `vb` stands (zeros when never seen).
    pub fn position(&self, vb: u16) -> VbPosition {
        self.vbuckets
            .get(&vb.to_string())
            .copied()
            .unwrap_or_default()
    }

    /// Sets where `vb` stands.
    pub fn set(&mut self, vb: u16, p: VbPosition) {
        self.vbuckets.insert(vb.to_string(), p);
    }

    /// Every vbucket with a position, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u16, VbPosition)> + '_ {
        let mut v: Vec<(u16, VbPosition)> = self
            .vbuckets
            .iter()
            .filter_map(|(k, p)| k.parse().ok().map(|vb| (vb, *p)))
            .collect();
        v.sort_by_key(|(vb, _)| *vb);
        v.into_iter()
    }

    /// Reads `path`; an absent file is empty positions.
    pub fn load(path: &Path) -> Result<Positions, String> {
        Ok(read_json(path)?.unwrap_or_default())
    }
}

/// Per vbucket, what a run holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VbSummary {
    pub mutations: u64,
    pub deletions: u64,
    /// Lowest and highest seqno of its rows (0 when the source gave none).
    pub first_seqno: u64,
    pub last_seqno: u64,
}

impl VbSummary {
    /// Counts one row.
    pub fn add(&mut self, removal: bool, seqno: u64) {
        if removal {
            self.deletions += 1;
        } else {
            self.mutations += 1;
        }
        if seqno > 0 {
            self.first_seqno = if self.first_seqno == 0 {
                seqno
            } else {
                self.first_seqno.min(seqno)
            };
            self.last_seqno = self.last_seqno.max(seqno);
        }
    }

    /// Adds another summary of the same vbucket.
    pub fn merge(&mut self, o: &VbSummary) {
        self.mutations += o.mutations;
        self.deletions += o.deletions;
        if o.first_seqno > 0 {
            self.first_seqno = if self.first_seqno == 0 {
                o.first_seqno
            } else {
                self.first_seqno.min(o.first_seqno)
            };
        }
        self.last_seqno = self.last_seqno.max(o.last_seqno);
    }
}

/// One data file of a complete run and its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCount {
    pub name: String,
    pub rows: u64,
}

/// Rows of `vbucket` with a seqno above `seqno`, in every data file of this run before
/// `before_file` and in every earlier run, are stale: the vbucket's history was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub vbucket: u16,
    pub seqno: u64,
    pub before_file: u32,
}

/// `pump-complete.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// RFC 3339, UTC.
    pub finished: String,
    pub mutations: u64,
    /// Deletions and expirations (a data file keeps both as deletions).
    pub deletions: u64,
    pub expirations: u64,
    /// Key and value bytes of the rows.
    pub bytes: u64,
    pub files: Vec<FileCount>,
    /// Per vbucket id.
    pub vbuckets: BTreeMap<String, VbSummary>,
    /// Where the source's streams ended (a later diff run starts there); none when the source
    /// keeps no positions.
    #[serde(default)]
    pub positions: Option<Positions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<Rollback>,
}

impl Completion {
    /// Rows of the run.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// What a node directory of a run says about the run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// pump wrote it and it completed.
    Complete {
        record: Option<RunRecord>,
        completion: Box<Completion>,
    },
    /// pump started it and it did not complete (killed, interrupted, its source failed).
    Incomplete { record: RunRecord },
    /// Another tool wrote it (no `pump-run.json`); `partial` when it holds `.partial` files
    /// (an older pump's interrupted run).
    Foreign { partial: bool },
}

impl RunState {
    /// Reads the records of `node_dir`.
    pub fn of(node_dir: &Path) -> Result<RunState, String> {
        let record: Option<RunRecord> = read_json(&node_dir.join(RUN_JSON))?;
        let completion: Option<Completion> = read_json(&node_dir.join(COMPLETE_JSON))?;
        Ok(match (record, completion) {
            (record, Some(completion)) => RunState::Complete {
                record,
                completion: Box::new(completion),
            },
            (Some(record), None) => RunState::Incomplete { record },
            (None, None) => RunState::Foreign {
                partial: partial_files(node_dir)?.next().is_some(),
            },
        })
    }

    /// True when a restore may read it as it is.
    pub fn is_complete(&self) -> bool {
        matches!(
            self,
            RunState::Complete { .. } | RunState::Foreign { partial: false }
        )
    }
}

/// One bucket and node directory of a run, wherever it lies in a backup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRun {
    /// The timestamped root (`""` for the old single-run layout).
    pub root: String,
    /// The run directory's name (`""` for the old single-run layout).
    pub run: String,
    pub kind: RunKind,
    pub bucket: String,
    pub node: String,
    pub node_dir: PathBuf,
}

/// Every bucket and node directory of every run of the backup at `dir`, in restore order
/// (roots, runs, buckets and nodes by name). `dir` may also be one root, or a 2.x backup
/// (`bucket-*/node-*` directly in it).
pub fn list_node_runs(dir: &Path) -> Result<Vec<NodeRun>, String> {
    let names = |d: &Path| -> Result<Vec<String>, String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map_err(|e| format!("cannot list {}: {e}", d.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        Ok(v)
    };
    let buckets_of =
        |run_dir: &Path, root: &str, run: &str, kind: RunKind| -> Result<Vec<NodeRun>, String> {
            let mut out = Vec::new();
            for b in names(run_dir)? {
                let Some(bucket) = b.strip_prefix("bucket-") else {
                    continue;
                };
                let bucket = bfd::unquote_plus(bucket).unwrap_or_else(|| bucket.to_string());
                for n in names(&run_dir.join(&b))? {
                    let Some(node) = n.strip_prefix("node-") else {
                        continue;
                    };
                    out.push(NodeRun {
                        root: root.to_string(),
                        run: run.to_string(),
                        kind,
                        bucket: bucket.clone(),
                        node: bfd::unquote_plus(node).unwrap_or_else(|| node.to_string()),
                        node_dir: run_dir.join(&b).join(&n),
                    });
                }
            }
            Ok(out)
        };
    let top = names(dir)?;
    if top.iter().any(|n| n.starts_with("bucket-")) {
        return buckets_of(dir, "", "", RunKind::Full);
    }
    let mut out = Vec::new();
    if top.iter().any(|n| bfd::run_kind(n).is_some()) {
        let root = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        for run in top.iter().filter(|n| bfd::run_kind(n).is_some()) {
            let kind = bfd::run_kind(run).unwrap_or(RunKind::Full);
            out.extend(buckets_of(&dir.join(run), root, run, kind)?);
        }
        return Ok(out);
    }
    for root in top.iter().filter(|n| bfd::is_timestamp(n)) {
        for run in names(&dir.join(root))? {
            if let Some(kind) = bfd::run_kind(&run) {
                out.extend(buckets_of(&dir.join(root).join(&run), root, &run, kind)?);
            }
        }
    }
    Ok(out)
}

/// The `.partial` files of a node directory.
pub fn partial_files(node_dir: &Path) -> Result<impl Iterator<Item = PathBuf>, String> {
    let entries = match std::fs::read_dir(node_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new().into_iter()),
        Err(e) => return Err(format!("cannot list {}: {e}", node_dir.display())),
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".partial"))
        })
        .collect();
    v.sort();
    Ok(v.into_iter())
}

/// The data files of a run's node directory, final or temporary names, by number:
/// `(number, path)`. A number present under both names (a rename cut short) is listed once,
/// under its final name.
pub fn run_data_files(node_dir: &Path) -> Result<Vec<(u32, PathBuf)>, String> {
    let entries = std::fs::read_dir(node_dir)
        .map_err(|e| format!("cannot list {}: {e}", node_dir.display()))?;
    let mut found: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let (base, partial) = match name.strip_suffix(".partial") {
            Some(b) => (b, true),
            None => (name, false),
        };
        if !bfd::is_data_file_name(base) {
            continue;
        }
        let Some(n) = base[5..base.len() - 4].parse::<u32>().ok() else {
            continue;
        };
        if partial && found.contains_key(&n) {
            continue;
        }
        found.insert(n, e.path());
    }
    Ok(found.into_iter().collect())
}

/// Reads a JSON file; `None` when it does not exist; an error naming the file otherwise.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not a pump run record: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `value` as JSON under a temporary name, syncs it, renames it into place and syncs
/// the directory: the file is either absent or whole, and on disk once this returns.
pub fn write_json_synced<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| format!("{}: cannot encode: {e}", path.display()))?;
    write_synced(path, &text)
}

/// Writes `bytes` under a temporary name made private (0600, never through a planted file
/// or symlink), syncs, gives it its final mode, renames it into place, syncs the directory.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(bfd::partial_name(name));
    pump_files::write_replacing(&tmp, path, bytes)
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Syncs a directory (its entries: renames and new files).
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: cannot sync: {e}", dir.display()))
}

/// The current time as RFC 3339 text, UTC, seconds.
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_complete_only_with_its_completion_record() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path();
        assert_eq!(
            RunState::of(node).unwrap(),
            RunState::Foreign { partial: false }
        );
        std::fs::write(node.join("data-0000.cbb.partial"), b"").unwrap();
        assert_eq!(
            RunState::of(node).unwrap(),
            RunState::Foreign { partial: true }
        );
        assert!(!RunState::of(node).unwrap().is_complete());
        let record = RunRecord {
            tool: "pump".into(),
            mode: RunKind::Full,
            started: now_text(),
            source: "gen:".into(),
            bucket: "default".into(),
            node: "localhost".into(),
            base: None,
            attempts: vec![Attempt {
                started: now_text(),
                first_file: 0,
            }],
            rollbacks: Vec::new(),
            parts: None,
        };
        write_json_synced(&node.join(RUN_JSON), &record).unwrap();
        assert!(matches!(
            RunState::of(node).unwrap(),
            RunState::Incomplete { .. }
        ));
        let done = Completion {
            mutations: 3,
            files: vec![FileCount {
                name: "data-0000.cbb".into(),
                rows: 3,
            }],
            ..Completion::default()
        };
        write_json_synced(&node.join(COMPLETE_JSON), &done).unwrap();
        let state = RunState::of(node).unwrap();
        assert!(state.is_complete());
        let RunState::Complete { completion, .. } = state else {
            panic!()
        };
        assert_eq!(completion.rows(), 3);
        assert!(!node.join("pump-complete.json.partial").exists());
    }

    #[test]
    fn node_runs_are_listed_in_restore_order_with_their_names_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("2020-01-01T000000Z");
        for (run, bucket) in [
            ("2020-01-02T000000Z-diff", "b b"),
            ("2020-01-01T000000Z-full", "b b"),
            ("2020-01-01T000000Z-full", "a"),
        ] {
            std::fs::create_dir_all(bfd::node_dir(&root.join(run), bucket, "h:1")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("not-a-root")).unwrap();
        let got: Vec<(String, String, String)> = list_node_runs(dir.path())
            .unwrap()
            .into_iter()
            .map(|n| (n.run, n.bucket, n.node))
            .collect();
        assert_eq!(
            got,
            [
                ("2020-01-01T000000Z-full".into(), "a".into(), "h:1".into()),
                ("2020-01-01T000000Z-full".into(), "b b".into(), "h:1".into()),
                ("2020-01-02T000000Z-diff".into(), "b b".into(), "h:1".into()),
            ]
        );
        // One root given directly lists the same runs.
        assert_eq!(list_node_runs(&root).unwrap().len(), 3);
    }

    #[test]
    fn data_files_are_listed_by_number_under_either_name_once() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "data-0000.cbb",
            "data-0001.cbb.partial",
            "data-0002.cbb",
            "data-0002.cbb.partial",
            "meta.json",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let got: Vec<(u32, String)> = run_data_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, p)| (n, p.file_name().unwrap().to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "data-0000.cbb".to_string()),
                (1, "data-0001.cbb.partial".to_string()),
                (2, "data-0002.cbb".to_string())
            ]
        );
    }

    #[test]
    fn summaries_keep_counts_and_seqno_ranges() {
        let mut s = VbSummary::default();
        s.add(false, 7);
        s.add(true, 3);
        s.add(false, 0);
        assert_eq!(
            (s.mutations, s.deletions, s.first_seqno, s.last_seqno),
            (2, 1, 3, 7)
        );
        let mut t = VbSummary::default();
        t.merge(&s);
        assert_eq!(t, s);
    }

    #[test]
    fn positions_read_what_the_dcp_checkpoint_writes() {
        let text = r#"{"vbuckets": {"3": {"uuid": 7, "seqno": 12, "snap_start": 10, "snap_end": 12}},
                       "failover": {"3": [[7, 5], [1, 0]]}, "rollbacks": {"3": 5}}"#;
        let p: Positions = serde_json::from_str(text).unwrap();
        assert_eq!(p.position(3).seqno, 12);
        assert_eq!(p.position(4), VbPosition::default());
        assert_eq!(p.failover["3"], vec![[7, 5], [1, 0]]);
        assert_eq!(p.rollbacks["3"], 5);
        let empty: Positions = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Positions::default());
    }
}
