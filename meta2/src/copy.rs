//! A verified page copy of a base, for `pump meta2 rebuild` (a copy of a sound peer).
//!
//! The source is read in one read transaction (its shared lock keeps SQLite writers off it):
//! it must pass `quick_check`, then SQLite serializes its pages (the image of the database
//! file as that transaction sees it, whatever the journal mode) and the image is written to
//! `<target>.pump-tmp` (created private: mode 0600, never through a planted file or symlink)
//! in one write, read back and compared byte for byte, synced to disk and given the source
//! copy's mode, owner and group, before it is linked to `target` (never over an existing file)
//! and the temporary name removed. The copy is thus the same bytes as a source that passed the check: the same
//! tables, rows and admin values, with no row decoded. The directory is left to the caller
//! to sync. Any failure removes the temporary file and leaves `target` absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, MAIN_DB};

use crate::schema;
use crate::Error;

/// `<path>.pump-tmp`, the name a base is built under before it is complete and verified.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pump-tmp");
    PathBuf::from(s)
}

/// Copies `from` to the new file `to` as described above; returns the bytes copied.
pub fn copy_verified(from: &Path, to: &Path) -> Result<u64, Error> {
    let bytes = build_verified(from, to, true)?;
    link_built(to)?;
    Ok(bytes)
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
    let image = read_checked(&src, from)?;
    drop(src);
    let perms = pump_files::Perms::of(from).map_err(|e| Error::io(from, e))?;
    let mut f = pump_files::create_private(tmp).map_err(|e| Error::io(tmp, e))?;
    f.write_all(&image).map_err(|e| Error::io(tmp, e))?;
    if sync {
        f.sync_all().map_err(|e| Error::io(tmp, e))?;
    }
    perms.apply(&f).map_err(|e| Error::io(tmp, e))?;
    drop(f);
    let written = std::fs::read(tmp).map_err(|e| Error::io(tmp, e))?;
    if written != image {
        return Err(Error::Encoding(format!(
            "{}: the copy read back is not the {} bytes of {}",
            tmp.display(),
            image.len(),
            from.display()
        )));
    }
    Ok(image.len() as u64)
}

/// The image of the database file of `conn`, taken in the same read transaction as a
/// `quick_check` that it passed.
fn read_checked(conn: &Connection, path: &Path) -> Result<Vec<u8>, Error> {
    let sqlite = |e| Error::sqlite(path, e);
    conn.execute_batch("BEGIN").map_err(sqlite)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sqlite)?;
    if check != "ok" {
        return Err(Error::Encoding(format!(
            "{}: quick_check: {check}",
            path.display()
        )));
    }
    let image = conn.serialize(MAIN_DB).map_err(sqlite)?.to_vec();
    conn.execute_batch("COMMIT").map_err(sqlite)?;
    Ok(image)
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
    fn a_page_copy_is_the_bytes_of_the_source() {
        let d = tempfile::tempdir().unwrap();
        let src = base(&d.path().join("a"));
        let dst = d.path().join("b").join("x.meta2");
        let bytes = copy_verified(&src, &dst).unwrap();
        assert_eq!(bytes, std::fs::metadata(&src).unwrap().len());
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert_eq!(
            crate::digest(&src, &[]).unwrap(),
            crate::digest(&dst, &[]).unwrap()
        );
        assert!(!tmp_path(&dst).exists());
        assert!(copy_verified(&src, &dst).is_err(), "never over a file");
    }

    #[test]
    fn a_page_copy_takes_the_mode_owner_and_group_of_its_source() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let src = base(&d.path().join("a"));
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            std::os::unix::fs::chown(&src, Some(4321), Some(8765)).unwrap();
        }
        let dst = d.path().join("b").join("x.meta2");
        copy_verified(&src, &dst).unwrap();
        let (s, t) = (
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&dst).unwrap(),
        );
        assert_eq!(t.mode() & 0o7777, 0o640);
        assert_eq!((t.uid(), t.gid()), (s.uid(), s.gid()));
        if root {
            assert_eq!((t.uid(), t.gid()), (4321, 8765));
        }
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

    #[test]
    fn a_copy_of_a_base_in_wal_mode_holds_what_its_wal_holds() {
        let d = tempfile::tempdir().unwrap();
        let src = base(&d.path().join("a"));
        let w = Connection::open(&src).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             INSERT INTO admin(k, v) VALUES ('only.in.the.wal', 'x');",
        )
        .unwrap();
        // The writer stays open: the row is in the -wal file only, not in the base's file.
        let dst = d.path().join("b").join("x.meta2");
        copy_verified(&src, &dst).unwrap();
        assert_eq!(
            crate::digest(&src, &[]).unwrap(),
            crate::digest(&dst, &[]).unwrap()
        );
        let c = schema::open_read(&dst).unwrap();
        assert_eq!(
            schema::admin_get(&c, "only.in.the.wal").unwrap(),
            Some(b"x".to_vec())
        );
        drop(w);
    }

    #[test]
    fn a_source_that_fails_quick_check_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        let src = base(&d.path().join("a"));
        // The root page of the chunks table is no b-tree page any more: the file keeps its
        // length, its header and its admin table, only quick_check sees the damage.
        crate::generate::break_root_page(&src, "chunks").unwrap();
        assert_eq!(crate::check::inspect_admin(&src).health, crate::Health::Ok);
        let dst = d.path().join("b").join("x.meta2");
        let e = copy_verified(&src, &dst).unwrap_err().to_string();
        assert!(e.contains("quick_check") || e.contains("malformed"), "{e}");
        assert!(!dst.exists() && !tmp_path(&dst).exists());
    }
}
