//! Opening a database file through SQLite for reading only, leaving nothing beside it.
//!
//! SQLite opening a file read-only still writes beside it: a database in WAL mode gets a
//! `-shm` (and a `-wal` when it has none) in its directory, and a hot rollback journal is
//! rolled back into the file, or fails with "attempt to write a readonly database". A backup
//! being read must get no new file and no change, so:
//!
//! ```text
//! not a regular file          refused at once (a FIFO would block the open forever)
//! a hot -journal beside it    refused, naming the journal: the file was left in the middle
//!                             of a transaction (a journal whose header is zeroed is not hot)
//! a non-empty -wal beside it  the file and its -wal are copied into a private temporary
//!                             directory (mode 0700) and the copy is opened there: the -wal's
//!                             committed frames are read, the -shm is made in that directory
//! otherwise                   opened as `file:PATH?immutable=1`: no lock, no side file, and
//!                             (nothing else holding its pages) the same rows
//! ```

use std::path::{Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rusqlite::{Connection, OpenFlags};

/// A file opened read-only through SQLite; holds the private copy, if one was made, for as
/// long as the connection lives.
pub struct ReadOnly {
    /// The connection (drop it before `copy`).
    pub conn: Connection,
    /// The file SQLite reads: the file itself, or its private copy.
    pub read_path: PathBuf,
    copy: Option<tempfile::TempDir>,
}

impl ReadOnly {
    /// True when SQLite reads a private copy (the file had a `-wal` beside it).
    pub fn is_copy(&self) -> bool {
        self.copy.is_some()
    }
}

/// The side file `path` + `suffix` (`-wal`, `-journal`, `-shm`).
pub fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens `path` read-only as described in the module's documentation. Errors name the file
/// (or its journal) and say what is wrong.
pub fn open_read_only(path: &Path) -> Result<ReadOnly, String> {
    let shown = path.display();
    let file = pump_files::open_regular(path).map_err(|e| format!("{shown}: {e}"))?;
    drop(file);
    let journal = side_file(path, "-journal");
    if is_hot_journal(&journal) {
        return Err(format!(
            "{}: a rollback journal beside {shown}: its writer stopped in the middle of a transaction, so the file may hold half of it; SQLite rolls it back only when the file is opened for writing, which reading a backup never does (open a copy of both files with sqlite3 to roll it back, or remove the journal if the file is known to be complete)",
            journal.display()
        ));
    }
    let wal = side_file(path, "-wal");
    let has_wal = std::fs::symlink_metadata(&wal).is_ok_and(|m| m.len() > 0);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let err = |p: &Path, e: rusqlite::Error| format!("{}: {e}", p.display());
    if !has_wal {
        let conn = Connection::open_with_flags(uri(path, "immutable=1"), flags)
            .map_err(|e| err(path, e))?;
        return Ok(ReadOnly {
            conn,
            read_path: path.to_path_buf(),
            copy: None,
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("pump-read-")
        .tempdir()
        .map_err(|e| format!("{shown}: a private copy to read its -wal: {e}"))?;
    let name = path.file_name().unwrap_or(std::ffi::OsStr::new("data"));
    let copy = dir.path().join(name);
    for (from, to) in [
        (path.to_path_buf(), copy.clone()),
        (wal, side_file(&copy, "-wal")),
    ] {
        copy_private(&from, &to)
            .map_err(|e| format!("{}: a private copy to read its -wal: {e}", from.display()))?;
    }
    let conn =
        Connection::open_with_flags(uri(&copy, "mode=ro"), flags).map_err(|e| err(path, e))?;
    Ok(ReadOnly {
        conn,
        read_path: copy,
        copy: Some(dir),
    })
}

/// True when `journal` is a hot rollback journal: there, not empty, its header not zeroed
/// (SQLite's own test, less the lock a live writer would hold).
pub fn is_hot_journal(journal: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = pump_files::open_regular(journal) else {
        return false;
    };
    let mut first = [0u8; 1];
    matches!((&f).read(&mut first), Ok(1)) && first[0] != 0
}

fn copy_private(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = pump_files::open_regular(from)?;
    let mut dst = pump_files::create_private(to)?;
    std::io::copy(&mut src, &mut dst)?;
    Ok(())
}

/// Characters a path keeps in an SQLite URI: the rest is percent-encoded (`?`, `#`, `%`
/// and anything not plain).
const URI_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `file:PATH?QUERY` for `path`.
fn uri(path: &Path, query: &str) -> String {
    let p = path.to_string_lossy();
    format!("file:{}?{query}", utf8_percent_encode(&p, URI_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_wal_mode_file_with_and_without_its_wal_is_read_and_nothing_is_added_beside_it() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let path = src.join("data-0000.cbb");
        let w = Connection::open(&path).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        // A backup directory as a copy holds it: the file and its -wal, no -shm.
        let bk = d.path().join("weird ?#% name");
        std::fs::create_dir(&bk).unwrap();
        let copy = bk.join("data-0000.cbb");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(side_file(&path, "-wal"), side_file(&copy, "-wal")).unwrap();
        drop(w);
        let before = listing(&bk);
        assert_eq!(before, ["data-0000.cbb", "data-0000.cbb-wal"]);
        let r = open_read_only(&copy).unwrap();
        assert!(r.is_copy());
        let n: i64 = r
            .conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "the row only the -wal holds is read");
        drop(r);
        assert_eq!(listing(&bk), before);
        // The same file in WAL mode with no -wal at all: SQLite would make both side files.
        std::fs::remove_file(side_file(&copy, "-wal")).unwrap();
        let r = open_read_only(&copy).unwrap();
        assert!(!r.is_copy());
        let _: i64 = r
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        drop(r);
        assert_eq!(listing(&bk), ["data-0000.cbb"]);
    }

    #[test]
    fn a_hot_journal_is_refused_naming_it_and_a_zeroed_one_is_not_hot() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("data-0000.cbb");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let journal = side_file(&path, "-journal");
        std::fs::write(&journal, [0x5au8; 3000]).unwrap();
        let e = open_read_only(&path).err().unwrap();
        assert!(
            e.starts_with(&format!("{}: a rollback journal", journal.display())),
            "{e}"
        );
        std::fs::write(&journal, [0u8; 3000]).unwrap();
        let r = open_read_only(&path).unwrap();
        let n: i64 = r
            .conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read(&journal).unwrap(), vec![0u8; 3000]);
    }
}
