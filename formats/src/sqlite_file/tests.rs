use super::*;
use rusqlite::types::Value;
use rusqlite::Connection;

/// A table `t` of five columns in a new file of `page_size`, with `rows` inserted and the
/// rowids in `delete` deleted; returns the file and the table's root page.
fn table(dir: &Path, page_size: u32, rows: &[[Value; 5]], delete: &[i64]) -> (PathBuf, u32) {
    let path = dir.join(format!("t-{page_size}.db"));
    let db = Connection::open(&path).unwrap();
    db.execute_batch(&format!(
        "PRAGMA page_size = {page_size}; CREATE TABLE t (a, b, c, d, e); BEGIN;"
    ))
    .unwrap();
    for r in rows {
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params_from_iter(r),
        )
        .unwrap();
    }
    for id in delete {
        db.execute("DELETE FROM t WHERE rowid = ?1", [id]).unwrap();
    }
    db.execute_batch("COMMIT").unwrap();
    let root: u32 = db
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 't'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (path, root)
}

/// Every row of `t` through SQLite: rowid and the five columns.
fn through_sqlite(path: &Path) -> Vec<(i64, Vec<Value>)> {
    let db = Connection::open(path).unwrap();
    let mut stmt = db.prepare("SELECT rowid, a, b, c, d, e FROM t").unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            (1..6)
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<_, _>>()?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every row of the table at `root` through the raw reader.
fn through_file(path: &Path, root: u32) -> Result<Vec<(i64, Vec<Value>)>, String> {
    let file = SqliteFile::open(path)?;
    let mut rows = file.table(root);
    let mut out = Vec::new();
    while let Some(row) = rows.next_row()? {
        let mut cols = [ValueRef::Null; 5];
        row.columns(&mut cols)?;
        out.push((row.rowid, cols.iter().map(|&c| Value::from(c)).collect()));
    }
    Ok(out)
}

fn blob(n: usize, seed: u8) -> Value {
    Value::Blob((0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect())
}

/// Rows with every serial type: integers of each width (and their edges), reals, NULLs,
/// empty and large text and blobs (large ones spill to overflow pages).
fn varied_rows(n: usize) -> Vec<[Value; 5]> {
    let ints = [
        0i64,
        1,
        -1,
        127,
        -128,
        128,
        32767,
        -32768,
        1 << 23,
        -(1 << 23) - 1,
        1 << 31,
        -(1 << 31),
        1 << 47,
        -(1 << 47) - 5,
        1 << 48,
        i64::MAX,
        i64::MIN,
    ];
    (0..n)
        .map(|i| {
            let big = match i % 50 {
                7 => blob(5000, i as u8),
                23 => blob(200_000, i as u8),
                31 => Value::Text("é".repeat(3000)),
                _ => blob(i % 300, i as u8),
            };
            [
                Value::Integer(ints[i % ints.len()]),
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::Text(format!("key-{i}"))
                },
                big,
                match i % 4 {
                    0 => Value::Real(i as f64 / 7.0),
                    1 => Value::Blob(Vec::new()),
                    2 => Value::Text(String::new()),
                    _ => Value::Integer(i as i64 * 1_000_003),
                },
                Value::Text(i.to_string()),
            ]
        })
        .collect()
}

#[test]
fn rows_read_from_pages_equal_sqlite_rows_at_page_sizes_1024_4096_and_65536() {
    let dir = tempfile::tempdir().unwrap();
    for page_size in [1024, 4096, 65536] {
        let rows = varied_rows(3000);
        let delete: Vec<i64> = (1..3000).step_by(7).collect();
        let (path, root) = table(dir.path(), page_size, &rows, &delete);
        let want = through_sqlite(&path);
        assert_eq!(want.len(), 3000 - delete.len());
        let got = through_file(&path, root).unwrap();
        assert_eq!(got.len(), want.len(), "page size {page_size}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "page size {page_size}");
        }
        // Enough rows for interior pages under the root, and overflow chains.
        let file = SqliteFile::open(&path).unwrap();
        assert_eq!(file.table(root).count().unwrap(), want.len() as u64);
        assert_eq!(file.page_size(), page_size as usize);
        assert_eq!(file.page(root).unwrap()[0], INTERIOR_TABLE);
    }
}

#[test]
fn an_empty_table_and_a_table_of_one_row_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = table(dir.path(), 4096, &[], &[]);
    assert_eq!(through_file(&path, root).unwrap(), vec![]);
    let one = [[
        Value::Null,
        Value::Integer(5),
        Value::Text("x".into()),
        Value::Blob(vec![0, 1]),
        Value::Real(-2.5),
    ]];
    let (path, root) = table(dir.path(), 1024, &one, &[]);
    assert_eq!(through_file(&path, root).unwrap(), through_sqlite(&path));
}

#[test]
fn columns_missing_from_a_record_read_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let db = Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 'x');
         ALTER TABLE t ADD COLUMN c; ALTER TABLE t ADD COLUMN d; ALTER TABLE t ADD COLUMN e;",
    )
    .unwrap();
    drop(db);
    let root = 2;
    let got = through_file(&path, root).unwrap();
    assert_eq!(got, through_sqlite(&path));
    assert_eq!(got[0].1[2], Value::Null);
}

#[test]
fn values_read_in_place_share_the_map_and_spilled_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        [
            Value::Null,
            Value::Null,
            blob(10, 1),
            Value::Null,
            Value::Null,
        ],
        [
            Value::Null,
            Value::Null,
            blob(9000, 2),
            Value::Null,
            Value::Null,
        ],
    ];
    let (path, root) = table(dir.path(), 4096, &rows, &[]);
    let file = SqliteFile::open(&path).unwrap();
    let mut it = file.table(root);
    let mut shared = Vec::new();
    while let Some(row) = it.next_row().unwrap() {
        let mut cols = [ValueRef::Null; 5];
        row.columns(&mut cols).unwrap();
        let ValueRef::Blob(b) = cols[2] else {
            panic!("not a blob")
        };
        shared.push(file.share(b).map(|s| s.to_vec() == b));
    }
    assert_eq!(shared, [Some(true), None]);
}

/// A file of a few thousand rows whose root is an interior page; returns its bytes, path,
/// root and page size.
fn deep_file(dir: &Path) -> (Vec<u8>, PathBuf, u32, usize) {
    let (path, root) = table(dir, 1024, &varied_rows(2000), &[]);
    let bytes = std::fs::read(&path).unwrap();
    (bytes, path, root, 1024)
}

fn corrupt(path: &Path, bytes: &[u8], root: u32) -> String {
    std::fs::write(path, bytes).unwrap();
    through_file(path, root).unwrap_err()
}

#[test]
fn a_truncated_file_is_an_error_naming_the_file_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, path, root, _) = deep_file(dir.path());
    let err = corrupt(&path, &bytes[..bytes.len() / 2], root);
    assert!(
        err.contains(&path.display().to_string()) && err.contains("out of range"),
        "{err}"
    );
    let err = corrupt(&path, &bytes[..60], root);
    assert!(err.contains("shorter than the 100-byte header"), "{err}");
}

#[test]
fn a_child_pointer_out_of_range_is_an_error_naming_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, path, root, ps) = deep_file(dir.path());
    let at = (root as usize - 1) * ps + 8;
    bytes[at..at + 4].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
    let err = corrupt(&path, &bytes, root);
    assert!(
        err.contains(&format!("page {}", 0x7fff_0000u32)) && err.contains("out of range"),
        "{err}"
    );
}

#[test]
fn a_cycle_in_the_tree_is_an_error_not_an_endless_walk() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, path, root, ps) = deep_file(dir.path());
    let at = (root as usize - 1) * ps + 8;
    bytes[at..at + 4].copy_from_slice(&root.to_be_bytes());
    let err = corrupt(&path, &bytes, root);
    assert!(
        err.contains(&format!("page {root}")) && err.contains("cycle"),
        "{err}"
    );
    let err = SqliteFile::open(&path)
        .unwrap()
        .table(root)
        .count()
        .unwrap_err();
    assert!(err.contains("cycle"), "{err}");
}

#[test]
fn a_cut_overflow_chain_and_a_bad_cell_offset_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [[
        Value::Null,
        Value::Null,
        blob(9000, 3),
        Value::Null,
        Value::Null,
    ]];
    let (path, root) = table(dir.path(), 1024, &rows, &[]);
    let good = std::fs::read(&path).unwrap();
    let page = (root as usize - 1) * 1024;
    let cell = page + u16::from_be_bytes([good[page + 8], good[page + 9]]) as usize;
    // payload size (2 bytes), rowid (1 byte), local bytes, then the first overflow page.
    let (size, after) = varint(&good, cell).unwrap();
    let after = varint(&good, after).unwrap().1;
    let usable = 1024;
    let min_local = (usable - 12) * 32 / 255 - 23;
    let k = min_local + (size as usize - min_local) % (usable - 4);
    let local = if k <= usable - 35 { k } else { min_local };
    let mut cut = good.clone();
    cut[after + local..after + local + 4].copy_from_slice(&0u32.to_be_bytes());
    let err = corrupt(&path, &cut, root);
    assert!(err.contains("overflow chain ends after"), "{err}");
    let mut bad_cell = good.clone();
    bad_cell[page + 8..page + 10].copy_from_slice(&0xfffeu16.to_be_bytes());
    let err = corrupt(&path, &bad_cell, root);
    assert!(
        err.contains(&format!("page {root}")) && err.contains("out of the page"),
        "{err}"
    );
    let mut not_table = good;
    not_table[page] = 0x0a;
    let err = corrupt(&path, &not_table, root);
    assert!(err.contains("not a table b-tree page"), "{err}");
}

#[test]
fn a_bad_header_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let mut bytes = vec![0u8; 4096];
    bytes[..16].copy_from_slice(MAGIC);
    bytes[16..18].copy_from_slice(&1000u16.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteFile::open(&path).err().unwrap();
    assert!(
        err.contains("x.db") && err.contains("page size 1000"),
        "{err}"
    );
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = SqliteFile::open(&path).err().unwrap();
    assert!(err.contains("magic"), "{err}");
}

#[test]
fn varints_and_integers_decode_at_every_width() {
    assert_eq!(varint(&[0x7f], 0), Some((0x7f, 1)));
    assert_eq!(varint(&[0x81, 0x00], 0), Some((0x80, 2)));
    assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
    assert_eq!(varint(&[0x81], 0), None);
    assert_eq!(int_be(&[0xff]), -1);
    assert_eq!(int_be(&[0x80, 0, 0]), -(1 << 23));
    assert_eq!(int_be(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff]), (1 << 47) - 1);
    assert_eq!(int_be(&[0x80, 0, 0, 0, 0, 1]), -(1 << 47) + 1);
    assert_eq!(int_be(&[0xff, 0xfe]), -2);
    assert_eq!(int_be(&i64::MIN.to_be_bytes()), i64::MIN);
}

/// Every row and column of the table at `root` of `data`, and its count: an error is fine,
/// a panic is not.
fn walk_all(data: &[u8], root: u32) -> Result<usize, String> {
    let file = SqliteFile::from_bytes(Path::new("fuzz.db"), Bytes::copy_from_slice(data))?;
    let mut rows = file.table(root);
    let mut n = 0;
    while let Some(row) = rows.next_row()? {
        let mut cols = [ValueRef::Null; 5];
        row.columns(&mut cols)?;
        n += 1;
    }
    file.table(root).count()?;
    Ok(n)
}

#[test]
fn random_damage_gives_errors_or_rows_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _, root, page_size) = deep_file(dir.path());
    assert_eq!(walk_all(&bytes, root), Ok(2000));
    // A fixed xorshift sequence: the same damage on every run, so a failure reproduces.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut errors, mut read) = (0, 0);
    for round in 0..600 {
        let mut damaged = bytes.clone();
        // 1 to 8 bytes set to random values: anywhere in even rounds, in the first 40 bytes
        // of a page (its header and first cell pointers) in odd ones.
        for _ in 0..1 + next() % 8 {
            let at = if round % 2 == 0 {
                (next() as usize) % damaged.len()
            } else {
                let pages = damaged.len() / page_size;
                (next() as usize % pages) * page_size + (next() as usize % 40)
            };
            damaged[at] = next() as u8;
        }
        if round % 10 == 0 {
            damaged.truncate((next() as usize) % bytes.len());
        }
        let r = std::panic::catch_unwind(|| walk_all(&damaged, root));
        match r {
            Ok(Ok(_)) => read += 1,
            Ok(Err(e)) => {
                assert!(e.contains("fuzz.db"), "round {round}: {e}");
                errors += 1;
            }
            Err(_) => panic!("round {round}: the reader panicked"),
        }
    }
    // Both outcomes happen: damage in values or unused space reads, the rest is refused.
    assert!(errors > 50 && read > 50, "{errors} errors, {read} read");
}
