//! Backup data files (cbb_msg in SQLite) through the restore reader
//! ([`pump_sources::backup::read_data_file`], `-x verify=quick`), with SQLite as the oracle.
//!
//! ```text
//! seeds     real files as a backup holds them: user_version 2015, 2014 and 2004, pages of
//!           512 to 4096 bytes, trees of two and three levels, values spilling to overflow
//!           pages, deleted rows (freeblocks), and the damaged files of issue 18 (corpus/cbb)
//! input     a seed and up to 8 edits, half of them aimed at page headers and cell pointers
//! checks    no panic, no file made beside the data file; rows read are the rows SQLite reads
//!           (same count, same keys in the same order: no short read, no row twice) and SQLite
//!           can read the file; a file SQLite finds sound (quick_check ok, every column of
//!           every row readable) is not refused but for a value out of its column's range;
//!           every error names the file
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump_formats::bfd;
use pump_formats::sqlite_file::Verify;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::mutate::{apply, edits, Edit};

/// A data file of `user_version` (2004, 2014, 2015) with `rows` rows at `page_size`: keys
/// `pymc<i>`, 20-byte values, one value in `big` (if any) of 3,000 bytes (overflow pages),
/// every `delete`-th row deleted (freeblocks).
pub fn backup_file(
    path: &Path,
    user_version: i64,
    rows: usize,
    page_size: u32,
    big: Option<usize>,
    delete: Option<usize>,
) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(path);
    let db = Connection::open(path)?;
    let version = bfd::Version::from_user_version(user_version).unwrap_or(bfd::Version::V2015);
    let n = version.columns();
    let cols = bfd::CREATE_TABLE
        .split_once('(')
        .map(|(_, c)| c.trim_end_matches(')'))
        .unwrap_or("")
        .split(", ")
        .take(n)
        .collect::<Vec<_>>()
        .join(", ");
    db.execute_batch(&format!(
        "PRAGMA page_size = {page_size}; PRAGMA journal_mode = OFF;
         CREATE TABLE cbb_msg ({cols}); PRAGMA user_version = {user_version}; BEGIN;"
    ))?;
    {
        let marks = vec!["?"; n].join(",");
        let mut insert = db.prepare(&format!("INSERT INTO cbb_msg VALUES ({marks})"))?;
        for i in 0..rows {
            let value: Vec<u8> = if big.is_some_and(|b| b > 0 && i % b == 0) {
                (0..3000).map(|j| (j * 7 + i) as u8).collect()
            } else {
                format!("{i:020}").into_bytes()
            };
            let row: Vec<Value> = vec![
                0x57i64.into(),
                (((i * 37) % 1024) as i64).into(),
                format!("pymc{i}").into_bytes().into(),
                (i as i64 % 7).into(),
                (i as i64 % 5).into(),
                (i as u64 * 11 + 1).to_string().into(),
                b"1".to_vec().into(),
                value.into(),
                (i as i64 + 1).into(),
                (i as i64 % 3).into(),
                0i64.into(),
                (i as i64 % 2).into(),
            ];
            insert.execute(rusqlite::params_from_iter(&row[..n]))?;
        }
    }
    if let Some(d) = delete {
        db.execute(&format!("DELETE FROM cbb_msg WHERE rowid % {d} = 0"), [])?;
    }
    db.execute_batch("COMMIT")
}

/// A seed: its bytes, page size, and a rollback journal to put beside it.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub page_size: usize,
    pub journal: Option<Vec<u8>>,
}

/// The built seeds, then the corpus files.
pub fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut out = Vec::new();
        for (name, v, rows, ps, big, delete) in [
            ("2015-512-two-levels", 2015, 400, 512u32, None, None),
            ("2015-512-three-levels", 2015, 3000, 512, None, Some(13)),
            ("2015-1024-overflow", 2015, 150, 1024, Some(10), Some(7)),
            ("2014-4096", 2014, 300, 4096, Some(50), None),
            ("2004-1024", 2004, 200, 1024, None, Some(5)),
            ("2015-empty", 2015, 0, 4096, None, None),
        ] {
            let path = dir.path().join(name);
            backup_file(&path, v, rows, ps, big, delete).expect("a seed file");
            out.push(Seed {
                name: name.into(),
                bytes: std::fs::read(&path).expect("the seed file"),
                page_size: ps as usize,
                journal: None,
            });
        }
        out.extend(corpus());
        out
    })
}

/// The directory of the corpus of damaged files.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/cbb")
}

/// The corpus files (`NAME.cbb`, and `NAME.cbb-journal` beside one), by name.
pub fn corpus() -> Vec<Seed> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cbb"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            let page_size = match u16::from_be_bytes([*bytes.get(16)?, *bytes.get(17)?]) {
                1 => 65536,
                n => n as usize,
            };
            let mut j = p.clone().into_os_string();
            j.push("-journal");
            Some(Seed {
                name: p.file_stem()?.to_string_lossy().into_owned(),
                bytes,
                page_size,
                journal: std::fs::read(j).ok(),
            })
        })
        .collect()
}

/// Input: a seed (modulo the seeds) and edits.
pub type Input = (usize, Vec<Edit>);

fn input() -> impl Strategy<Value = Input> {
    (any::<usize>(), edits(8))
}

/// What SQLite makes of a file: its user_version, quick_check, and every row's key (with
/// every column read), or the error.
struct Sqlite {
    user_version: Option<i64>,
    sound: bool,
    keys: Result<Vec<Vec<u8>>, String>,
}

fn sqlite(path: &Path) -> Sqlite {
    let uri = format!("file:{}?immutable=1", path.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let Ok(db) = Connection::open_with_flags(&uri, flags) else {
        return Sqlite {
            user_version: None,
            sound: false,
            keys: Err("SQLite cannot open it".into()),
        };
    };
    let user_version = db.query_row("PRAGMA user_version", [], |r| r.get(0)).ok();
    let sound = db
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .is_ok_and(|v| v == ["ok"]);
    let keys = (|| -> rusqlite::Result<Vec<Vec<u8>>> {
        let mut stmt = db.prepare("SELECT * FROM cbb_msg")?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut keys = Vec::new();
        while let Some(r) = rows.next()? {
            for i in 0..n {
                r.get_ref(i)?;
            }
            keys.push(match r.get_ref(2)? {
                rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => {
                    b.to_vec()
                }
                _ => Vec::new(),
            });
        }
        Ok(keys)
    })()
    .map_err(|e| e.to_string());
    Sqlite {
        user_version,
        sound,
        keys,
    }
}

/// Refusals that a file SQLite finds sound may still earn: a value out of its column's
/// range or of the wrong type, a table that is not cbbackup's, a reserved serial type, a
/// file cut in the middle of a page (SQLite reads the missing bytes as zeros), a record whose
/// header does not describe its payload exactly (SQLite parses a record's header only as far
/// as the columns it is asked for, and quick_check reads no record of a table: a serial type
/// split in two reads as NULL and a stray column, silently).
fn refusal_of_a_sound_file(e: &str) -> bool {
    [
        "(rowid ",
        "table cbb_msg: row ",
        "no table cbb_msg",
        "cbb_msg is a",
        "user_version",
        "is reserved",
        "whole number of",
        ": record ",
        "table cbb_msg has no column",
    ]
    .iter()
    .any(|w| e.contains(w))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn check(dir: &Path, (seed, edits): &Input) -> Result<(), String> {
    let seeds = seeds();
    let seed = &seeds[seed % seeds.len()];
    let bytes = apply(&seed.bytes, edits, Some(seed.page_size));
    for f in listing(dir) {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let path = dir.join("data-0000.cbb");
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    if let Some(j) = &seed.journal {
        let mut p = path.clone().into_os_string();
        p.push("-journal");
        std::fs::write(p, j).map_err(|e| e.to_string())?;
    }
    let before = listing(dir);
    let read = pump_sources::backup::read_data_file(&path, Verify::Quick);
    if listing(dir) != before {
        return Err(format!(
            "reading made files beside the data file: {:?} -> {:?}",
            before,
            listing(dir)
        ));
    }
    if seed.journal.is_some() {
        // SQLite would roll the journal back; the reader must refuse, naming it.
        return match read {
            Err(e) if e.contains("-journal") => Ok(()),
            other => Err(format!("a hot journal beside the file, and: {other:?}")),
        };
    }
    let oracle = sqlite(&path);
    match read {
        Ok(messages) => {
            let keys = oracle.keys.map_err(|e| {
                format!(
                    "{} rows read from a file SQLite cannot read ({e})",
                    messages.len()
                )
            })?;
            let got: Vec<&[u8]> = messages.iter().map(|m| &m.key[..]).collect();
            let want: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            if got != want {
                return Err(format!(
                    "{} rows read where SQLite reads {} (or other keys)",
                    got.len(),
                    want.len()
                ));
            }
            Ok(())
        }
        Err(e) => {
            if !e.contains(&path.display().to_string()) {
                return Err(format!("an error that does not name the file: {e}"));
            }
            let versioned = matches!(oracle.user_version, Some(2004 | 2014 | 2015));
            if oracle.sound && oracle.keys.is_ok() && versioned && !refusal_of_a_sound_file(&e) {
                return Err(format!(
                    "a file SQLite reads whole and finds sound is refused: {e}"
                ));
            }
            Ok(())
        }
    }
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("pump-fuzz-cbb-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let d = dir.path().to_path_buf();
    crate::check_all(runner, input(), move |i| check(&d, i))
}

/// Writes the corpus of damaged files (the cases of issue 18, on a small real file) into
/// `dir`: pages damaged as the issue found them, values out of range, a dropped table, a view,
/// an unknown cmd, a garbage journal.
pub fn write_corpus(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let err = |e: rusqlite::Error| e.to_string();
    let base = dir.join("base.tmp");
    backup_file(&base, 2015, 400, 512, None, None).map_err(err)?;
    let good = std::fs::read(&base).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&base);
    let ps = 512usize;
    let root = 2u32;
    let hdr = |no: u32| (no as usize - 1) * ps;
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]) as usize;
    let child = |b: &[u8], no: u32, i: usize| {
        let h = hdr(no);
        let at = h + be16(b, h + 12 + 2 * i);
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    };
    let leaf = child(&good, root, 10);
    let mut made = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<PathBuf, String> {
        let p = dir.join(format!("{name}.cbb"));
        std::fs::write(&p, bytes).map_err(|e| e.to_string())?;
        made.push(p.clone());
        Ok(p)
    };
    let with_count = |no: u32, delta: i32| {
        let mut b = good.clone();
        let h = hdr(no);
        let n = (be16(&b, h + 3) as i32 + delta) as u16;
        b[h + 3..h + 5].copy_from_slice(&n.to_be_bytes());
        b
    };
    put("root-cell-count-minus-1", &with_count(root, -1))?;
    put("leaf-cell-count-minus-5", &with_count(leaf, -5))?;
    put("leaf-cell-count-plus-1", &with_count(leaf, 1))?;
    let mut b = good.clone();
    let h = hdr(leaf);
    let v = [b[h + 8 + 2 * 3], b[h + 8 + 2 * 3 + 1]];
    b[h + 8 + 2 * 2..h + 8 + 2 * 2 + 2].copy_from_slice(&v);
    put("leaf-cell-pointer-repeated", &b)?;
    let mut b = good.clone();
    let (a, c) = (child(&b, root, 4), child(&b, root, 5));
    let h = hdr(root);
    for (i, to) in [(4, c), (5, a)] {
        let at = h + be16(&good, h + 12 + 2 * i);
        b[at..at + 4].copy_from_slice(&to.to_be_bytes());
    }
    put("root-children-swapped", &b)?;
    for (name, sql) in [
        (
            "flg-4294967297",
            "UPDATE cbb_msg SET flg = 4294967297 WHERE rowid = 200",
        ),
        (
            "exp-99999999999",
            "UPDATE cbb_msg SET exp = 99999999999 WHERE rowid = 200",
        ),
        (
            "dtype-300",
            "UPDATE cbb_msg SET dtype = 300 WHERE rowid = 200",
        ),
        (
            "unknown-cmd",
            "UPDATE cbb_msg SET cmd = 7 WHERE rowid = 100",
        ),
        (
            "cbb_msg-dropped",
            "DROP TABLE cbb_msg; CREATE TABLE other (x)",
        ),
        (
            "cbb_msg-a-view",
            "ALTER TABLE cbb_msg RENAME TO x; CREATE VIEW cbb_msg AS SELECT * FROM x",
        ),
    ] {
        let p = put(name, &good)?;
        Connection::open(&p)
            .and_then(|db| db.execute_batch(sql))
            .map_err(err)?;
    }
    let p = put("garbage-journal", &good)?;
    let mut j = p.into_os_string();
    j.push("-journal");
    std::fs::write(&j, vec![0x5au8; 1024]).map_err(|e| e.to_string())?;
    Ok(made)
}
