//! A verified page copy of a base, for `pump meta2 rebuild` (a copy of a sound peer).
//!
//! The source is read in one read transaction (its shared lock keeps SQLite writers off it):
//! SQLite's backup API copies its pages into `<target>.pump-tmp`, then the copy must pass
//! `quick_check` and hold the same per-table digests as the source ([`crate::digest`]), and
//! is synced to disk, before it is linked to `target` (never over an existing file) and the
//! temporary name removed. The directory is left to the caller to sync. Any failure removes
//! the temporary file and leaves `target` absent.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::check::digest_tables;
use crate::schema;
use crate::Error;

/// `<path>.pump-tmp`, the name a base is built under before it is complete and verified.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pump-tmp");
    PathBuf::from(s)
}

/// Copies `from` to the new file `to` as described above; returns the rows copied.
pub fn copy_verified(from: &Path, to: &Path) -> Result<u64, Error> {
    let rows = build_verified(from, to, true)?;
    link_built(to)?;
    Ok(rows)
}

/// The first half of [`copy_verified`]: the verified copy under `tmp_path(to)`, synced when
/// `sync` (else the caller syncs it, e.g. many at once with `syncfs`, before
/// [`link_built`]). Removes the temporary file on a failure.
pub fn build_verified(from: &Path, to: &Path, sync: bool) -> Result<u64, Error> {
    let tmp = tmp_path(to);
    if to.exists() {
        return Err(Error::Usage(format!("{}: exists", to.display())));
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let _ = std::fs::remove_file(&tmp);
    let r = copy_to_tmp(from, &tmp, sync);
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The second half of [`copy_verified`]: links the verified, synced `tmp_path(to)` to `to`
/// (never over an existing file) and removes the temporary name.
pub fn link_built(to: &Path) -> Result<(), Error> {
    let tmp = tmp_path(to);
    let r = std::fs::hard_link(&tmp, to).map_err(|e| Error::io(to, e));
    let _ = std::fs::remove_file(&tmp);
    r
}

fn copy_to_tmp(from: &Path, tmp: &Path, sync: bool) -> Result<u64, Error> {
    let src = schema::open_read(from)?;
    src.execute_batch("BEGIN")
        .map_err(|e| Error::sqlite(from, e))?;
    let tables = schema::tables(&src).map_err(|e| Error::sqlite(from, e))?;
    let mut dst = Connection::open(tmp).map_err(|e| Error::sqlite(tmp, e))?;
    dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
        .map_err(|e| Error::sqlite(tmp, e))?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| Error::sqlite(tmp, e))?;
        b.run_to_completion(1 << 30, std::time::Duration::ZERO, None)
            .map_err(|e| Error::sqlite(tmp, e))?;
    }
    let mut rows = 0u64;
    let want =
        digest_tables(&src, &tables, &[], Some(&mut rows)).map_err(|e| Error::sqlite(from, e))?;
    drop(src);
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| Error::sqlite(tmp, e))?;
    if check != "ok" {
        return Err(Error::Encoding(format!(
            "{}: quick_check of the copy: {check}",
            tmp.display()
        )));
    }
    // The copy's own sqlite_master, with the columns of the source's tables (the same pages).
    let mut built = schema::master(&dst).map_err(|e| Error::sqlite(tmp, e))?;
    for t in &mut built {
        if let Some(s) = tables.iter().find(|s| s.name == t.name) {
            t.columns = s.columns.clone();
            t.pk = s.pk.clone();
        }
    }
    let got = digest_tables(&dst, &built, &[], None).map_err(|e| Error::sqlite(tmp, e))?;
    if got != want {
        return Err(Error::Encoding(format!(
            "{}: the copy differs from {} in {:?}",
            tmp.display(),
            from.display(),
            crate::tables_differing(&want, &got)
        )));
    }
    dst.close().map_err(|(_, e)| Error::sqlite(tmp, e))?;
    if sync {
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(tmp, e))?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{write_base, BaseSpec};

    fn base(dir: &Path) -> PathBuf {
        let spec = BaseSpec {
            ns: "OPENIO".into(),
            account: "acct".into(),
            container: "copy".into(),
            peers: vec!["127.0.0.1:6120".into()],
            aliases: 30,
        };
        write_base(dir, &spec).unwrap()
    }

    #[test]
    fn a_page_copy_has_the_same_digests_and_counts_the_rows() {
        let d = tempfile::tempdir().unwrap();
        let src = base(&d.path().join("a"));
        let dst = d.path().join("b").join("x.meta2");
        let rows = copy_verified(&src, &dst).unwrap();
        // 30 aliases: 30 contents, 90 chunks, 30 aliases, 30 properties, and the admin keys.
        assert!(rows > 180, "{rows}");
        assert_eq!(
            crate::digest(&src, &[]).unwrap(),
            crate::digest(&dst, &[]).unwrap()
        );
        assert!(!tmp_path(&dst).exists());
        assert!(copy_verified(&src, &dst).is_err(), "never over a file");
    }

    #[test]
    fn a_corrupt_source_leaves_neither_target_nor_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let src = base(&d.path().join("a"));
        let len = std::fs::metadata(&src).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let dst = d.path().join("b").join("x.meta2");
        assert!(copy_verified(&src, &dst).is_err());
        assert!(!dst.exists() && !tmp_path(&dst).exists());
    }
}
