//! Which run directory a backup writes, following cbbackup's default (diff) mode:
//!
//! - no timestamped root in the directory yet: `<dir>/<ts>/<ts>-full`;
//! - a root whose newest `-full` run has no data for this bucket and node: that full run;
//! - otherwise: a new `<root>/<ts>-diff` under the newest root.
//!
//! A run counts as holding data when its node directory has a complete `data-NNNN.cbb` (a run
//! that failed left only `.partial` files and is written again). Two runs in the same second
//! get distinct diff names: a diff's timestamp is moved past every run already in its root, so
//! that name order stays restore order.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pump_formats::bfd::{self, RunKind};

/// Creates (if needed) and returns the node directory this run writes its files into.
pub fn plan_run_dir(
    dir: &Path,
    bucket: &str,
    node: &str,
    now: DateTime<Utc>,
) -> Result<PathBuf, String> {
    let flat = bfd::node_dir(dir, bucket, node);
    if flat.is_dir() {
        return Err(format!(
            "{} holds an old (2.x) single-run backup; write to a new directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ts = |t: DateTime<Utc>| t.format(bfd::TIMESTAMP_FORMAT).to_string();
    let latest_root = subdirs(dir)?
        .into_iter()
        .filter(|n| bfd::is_timestamp(n))
        .max();
    let node_dir = match latest_root {
        None => {
            let t = ts(now);
            bfd::node_dir(
                &dir.join(&t).join(bfd::run_dir_name(&t, RunKind::Full)),
                bucket,
                node,
            )
        }
        Some(root) => {
            let root = dir.join(root);
            let full = subdirs(&root)?
                .into_iter()
                .filter(|n| bfd::run_kind(n) == Some(RunKind::Full))
                .max();
            match full {
                None => bfd::node_dir(
                    &root.join(bfd::run_dir_name(&ts(now), RunKind::Full)),
                    bucket,
                    node,
                ),
                Some(full) => {
                    let in_full = bfd::node_dir(&root.join(full), bucket, node);
                    if !has_data_files(&in_full) {
                        in_full
                    } else {
                        // Restores read runs in name order: this diff must sort after
                        // every run already there, even within the same second.
                        let newest = subdirs(&root)?
                            .into_iter()
                            .filter(|n| bfd::run_kind(n).is_some())
                            .map(|n| n[..18].to_string())
                            .max()
                            .unwrap_or_default();
                        let mut t = now;
                        while ts(t) <= newest {
                            t += chrono::Duration::seconds(1);
                        }
                        bfd::node_dir(
                            &root.join(bfd::run_dir_name(&ts(t), RunKind::Diff)),
                            bucket,
                            node,
                        )
                    }
                }
            }
        }
    };
    std::fs::create_dir_all(&node_dir)
        .map_err(|e| format!("cannot create {}: {e}", node_dir.display()))?;
    Ok(node_dir)
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

fn has_data_files(node_dir: &Path) -> bool {
    std::fs::read_dir(node_dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_str().is_some_and(bfd::is_data_file_name))
    })
}
