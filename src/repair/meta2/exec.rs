//! The steps of a repair plan and their executor on local volumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pump::progress::ProgressMode;
use pump::{Context, Options, WriterSink};
use pump_meta2::schema::{self, STATUS_FROZEN};
use pump_meta2::{digest, inspect, BaseName, Health, Peer};
use pump_sinks::meta2::{Meta2Writer, DEFAULT_SORT_MEMORY};
use serde::{Deserialize, Serialize};

use super::aside_path;

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
    pub(super) statuses: BTreeMap<String, Option<Vec<u8>>>,
    /// The mode, owner and group of each copy set aside, for the copy that replaces it.
    replaced: BTreeMap<String, pump_files::Perms>,
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
            replaced: BTreeMap::new(),
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
    /// The sink writing `to`; `sync_dir` false leaves the directory's sync to the caller.
    fn sink(self, to: &Path, sync_dir: bool) -> WriterSink<Meta2Writer> {
        let WriterSink(w) = pump_sinks::meta2::meta2_sink_with(to.to_path_buf(), sync_dir);
        WriterSink(w.with_sort_memory(self.sort_memory))
    }

    /// Streams the base at `from` into a new base at `to`, which takes the mode, owner and
    /// group of `from`; returns the rows copied. `sync_dir` false leaves the directory's sync
    /// to the caller.
    pub(super) async fn copy_with(
        self,
        from: &Path,
        to: &Path,
        sync_dir: bool,
    ) -> Result<u64, String> {
        let perms = pump_files::Perms::of(from).map_err(|e| format!("{}: {e}", from.display()))?;
        self.copy_as(from, to, sync_dir, perms).await
    }

    /// [`StreamCopy::copy_with`], the new base given `perms` (mode, owner, group) before it
    /// takes its name.
    pub(super) async fn copy_as(
        self,
        from: &Path,
        to: &Path,
        sync_dir: bool,
        perms: pump_files::Perms,
    ) -> Result<u64, String> {
        let options = Options {
            threads: 1,
            ..Options::default()
        };
        let batch = options.extra.batch_max_size;
        let source = Box::new(pump_sources::meta2::Meta2Source::new(
            from.to_path_buf(),
            batch,
        ));
        let WriterSink(w) = self.sink(to, sync_dir);
        let sink = Box::new(WriterSink(w.with_perms(perms)));
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
                    if let Ok(p) = pump_files::Perms::of(&aside) {
                        self.replaced.insert(peer.clone(), p);
                    }
                    return Ok(());
                }
                // The copy that replaces this one takes its mode, owner and group (those
                // the meta2 service expects), not those of whoever runs the repair.
                if let Ok(p) = pump_files::Perms::of(&path) {
                    self.replaced.insert(peer.clone(), p);
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
                let perms = match self.replaced.get(to) {
                    Some(p) => *p,
                    None => pump_files::Perms::of(&src)
                        .map_err(|e| format!("{from}: {}: {e}", src.display()))?,
                };
                self.stream
                    .copy_as(&src, &dst, true, perms)
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
