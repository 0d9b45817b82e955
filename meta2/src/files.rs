//! The file helpers the meta2 repairs and the meta2 sink share: names beside a base, the
//! check that a volume takes new files, and syncing many paths at once.
//!
//! ```text
//! <base>.pump-tmp              a base being built (tmp_path), renamed into place when verified
//! <base>.corrupted             a bad copy set aside by a sync (corrupted_suffix)
//! <base>.corrupted-<unix time> ... when a .corrupted one is already there
//! <base>.moved-<unix time>     the old copy of a move
//! <base>.<suffix>              aside_path(base, suffix)
//! ```

use std::path::{Path, PathBuf};

pub use crate::copy::tmp_path;

/// `<file>.<suffix>`.
pub fn aside_path(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{suffix}"));
    PathBuf::from(s)
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `corrupted`, or `corrupted-<unix time>` when a `.corrupted` file is already there.
pub fn corrupted_suffix(path: &Path) -> String {
    if aside_path(path, "corrupted").exists() {
        format!("corrupted-{}", now_secs())
    } else {
        "corrupted".into()
    }
}

/// An error naming `dir` unless it is a directory a file can be created in.
pub fn volume_writable(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()));
    }
    let probe = dir.join(format!(".pump-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("{}: not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Fsyncs waiting at once in [`sync_paths`]: the file system commits its journal once for
/// the fsyncs that wait together (ext4 here: 8 at once give about 1,100 fsyncs/s, 32 about
/// 1,400).
const FSYNCS_AT_ONCE: usize = 32;

/// Brings files or directories to disk, e.g. the directories bases were linked into without
/// syncing each: an fsync each, `FSYNCS_AT_ONCE` at a time. `syncfs` would do it in one call
/// but also flushes whatever else is dirty on the file system, which on a busy machine costs
/// far more.
pub fn sync_paths(paths: &[PathBuf]) -> Result<(), String> {
    if paths.is_empty() {
        return Ok(());
    }
    let per = paths.len().div_ceil(FSYNCS_AT_ONCE);
    std::thread::scope(|s| {
        let jobs: Vec<_> = paths
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk.iter().try_for_each(|p| {
                        std::fs::File::open(p)
                            .and_then(|f| f.sync_all())
                            .map_err(|e| format!("{}: {e}", p.display()))
                    })
                })
            })
            .collect();
        jobs.into_iter().try_for_each(|j| {
            j.join()
                .unwrap_or_else(|_| Err("an fsync thread panicked".into()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beside_a_base_and_a_second_corrupted_copy_gets_a_time() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("ABC.1.meta2");
        assert_eq!(aside_path(&base, "x"), d.path().join("ABC.1.meta2.x"));
        assert_eq!(tmp_path(&base), d.path().join("ABC.1.meta2.pump-tmp"));
        assert_eq!(corrupted_suffix(&base), "corrupted");
        std::fs::write(aside_path(&base, "corrupted"), b"").unwrap();
        assert!(corrupted_suffix(&base).starts_with("corrupted-"));
        assert!(volume_writable(d.path()).is_ok());
        let e = volume_writable(&d.path().join("none")).unwrap_err();
        assert!(e.contains("no such directory"), "{e}");
        sync_paths(&[
            base.with_file_name("ABC.1.meta2.corrupted"),
            d.path().to_path_buf(),
        ])
        .unwrap();
        assert!(sync_paths(&[d.path().join("gone")]).is_err());
    }
}
