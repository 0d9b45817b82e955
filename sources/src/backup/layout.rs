//! Which data files a restore reads, and in which order (cbrestore's):
//!
//! - `<dir>/bucket-*/node-*/data-*.cbb` (the old single-run layout): those files;
//! - `<dir>` holding `<ts>-full` / `<ts>-diff` runs (a timestamped root given directly), or
//!   otherwise the newest timestamped root in `<dir>`: every run of that root.
//!
//! Files are read in path order: runs by name (the full run, then the diffs by time), then
//! node directories, then `data-NNNN.cbb` by number.

use std::path::{Path, PathBuf};

use pump_formats::bfd;

/// The data files of `bucket` in restore order, or an error naming the directory (and the
/// buckets the backup holds when `bucket` is not one of them).
pub fn data_files(dir: &Path, bucket: &str) -> Result<Vec<PathBuf>, String> {
    let runs = runs(dir)?;
    let bucket_dir = bfd::bucket_dir_name(bucket);
    let mut files = Vec::new();
    let mut found_bucket = false;
    for run in &runs {
        let b = run.join(&bucket_dir);
        if !b.is_dir() {
            continue;
        }
        found_bucket = true;
        for node in sorted_entries(&b)?
            .into_iter()
            .filter(|p| p.is_dir() && name_of(p).starts_with("node-"))
        {
            files.extend(
                sorted_entries(&node)?
                    .into_iter()
                    .filter(|p| bfd::is_data_file_name(name_of(p))),
            );
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
    Ok(files)
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
