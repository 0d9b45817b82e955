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
        assert_eq!(file.table(root).page(root).unwrap()[0], INTERIOR_TABLE);
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
        shared.push(row.share(b).map(|s| s.to_vec() == b));
    }
    assert_eq!(shared, [Some(true), None]);
}

#[test]
fn windows_come_back_for_reuse_once_their_values_are_dropped_and_values_outlive_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<[Value; 5]> = (0..3000)
        .map(|i| {
            [
                Value::Integer(i),
                Value::Null,
                blob(100, i as u8),
                Value::Null,
                Value::Null,
            ]
        })
        .collect();
    let (path, root) = table(dir.path(), 4096, &rows, &[]);
    let file = SqliteFile::open(&path).unwrap();
    let Backing::File(_, pool) = &file.backing else {
        panic!("a file is read with pread")
    };
    let free = |pool: &WindowPool| pool.0.lock().unwrap().len();
    // Every value kept: no window can come back.
    let mut kept = Vec::new();
    let mut it = file.table(root);
    while let Some(row) = it.next_row().unwrap() {
        let mut cols = [ValueRef::Null; 5];
        row.columns(&mut cols).unwrap();
        let ValueRef::Blob(b) = cols[2] else {
            panic!("not a blob")
        };
        kept.push(row.share(b).expect("a 100-byte value lies in its page"));
    }
    drop(it);
    let before = free(pool);
    // Dropped: the windows the values held are free again, and the next read takes one
    // rather than a new buffer.
    drop(kept);
    let returned = free(pool);
    assert!(returned > before, "{before} -> {returned}");
    let mut it = file.table(root);
    let row = it.next_row().unwrap().unwrap();
    assert_eq!(row.rowid, 1);
    assert!(free(pool) < returned, "the read reused a window");
    // A value taken from a file that is then dropped stays whole.
    let mut cols = [ValueRef::Null; 5];
    row.columns(&mut cols).unwrap();
    let ValueRef::Blob(b) = cols[2] else {
        panic!("not a blob")
    };
    let value = row.share(b).unwrap();
    drop(it);
    drop(file);
    let Value::Blob(want) = blob(100, 0) else {
        unreachable!()
    };
    assert_eq!(&value[..], &want[..]);
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
    let (bytes, path, root, ps) = deep_file(dir.path());
    // Cut at a page boundary: the header still counts every page.
    let half = bytes.len() / 2 / ps * ps;
    let err = corrupt(&path, &bytes[..half], root);
    assert!(
        err.contains(&path.display().to_string())
            && err.contains(&format!("holds {}: it was cut short", half / ps)),
        "{err}"
    );
    // Cut in the middle of a page.
    let err = corrupt(&path, &bytes[..bytes.len() - 1], root);
    assert!(
        err.contains("not a whole number of 1024-byte pages"),
        "{err}"
    );
    // A header whose page count is not valid (another change counter): the file's length
    // counts, and a child past it is out of range.
    let mut stale = bytes[..half].to_vec();
    stale[92] ^= 1;
    let err = corrupt(&path, &stale, root);
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
        err.contains(&format!("page {root}: cell 0 at offset 65534 lies outside")),
        "{err}"
    );
    // Without the page checks, the cell is still never read out of its page.
    std::fs::write(&path, &bad_cell).unwrap();
    let file = SqliteFile::open(&path).unwrap();
    let mut rows = file.table_with(root, Verify::None);
    let err = rows.next_row().err().unwrap();
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
    // The read version: SQLite reads 0 as 1 and refuses what is above 2.
    let (real, _) = table(dir.path(), 1024, &[], &[]);
    let mut bytes = std::fs::read(&real).unwrap();
    bytes[19] = 0;
    std::fs::write(&path, &bytes).unwrap();
    assert!(SqliteFile::open(&path).is_ok());
    bytes[19] = 3;
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteFile::open(&path).err().unwrap();
    assert!(err.contains("file format read version 3"), "{err}");
}

#[test]
fn varints_and_integers_decode_at_every_width() {
    assert_eq!(varint(&[0x7f], 0), Some((0x7f, 1)));
    assert_eq!(varint(&[0x81, 0x00], 0), Some((0x80, 2)));
    assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
    assert_eq!(varint(&[0x81], 0), None);
    // The two-byte path agrees with the general decoder on every two-byte start.
    for b in 0x80..=0xffu8 {
        for c in 0..=0xffu8 {
            let buf = [b, c, 0x01];
            assert_eq!(varint(&buf, 0), varint_long(&buf, 0), "{b:#x} {c:#x}");
            assert_eq!(
                varint(&buf[..2], 0),
                varint_long(&buf[..2], 0),
                "{b:#x} {c:#x}"
            );
        }
    }
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

/// A backup data file as the backup sink writes it (cbb_msg, user_version 2015, the writer's
/// pragmas) of `rows` items like `gen:` makes (key `pymc<i>`, a 20-byte value), at
/// `page_size`; returns it and the root page of cbb_msg.
fn backup_file(dir: &Path, name: &str, rows: usize, page_size: u32) -> (PathBuf, u32) {
    let path = dir.join(name);
    let db = Connection::open(&path).unwrap();
    db.execute_batch(&format!("PRAGMA page_size = {page_size}"))
        .unwrap();
    for (pragma, value) in crate::bfd::WRITER_PRAGMAS {
        db.pragma_update(None, pragma, value).unwrap();
    }
    crate::bfd::create_schema(&db).unwrap();
    db.execute_batch("BEGIN").unwrap();
    {
        let mut insert = db.prepare(crate::bfd::INSERT).unwrap();
        for i in 0..rows {
            let key = format!("pymc{i}");
            insert
                .execute(rusqlite::params![
                    0x57,
                    (i % 1024) as i64,
                    key.as_bytes(),
                    0,
                    0,
                    (i as u64 * 7 + 1).to_string(),
                    b"1".as_slice(),
                    format!("{:020}", i).as_bytes(),
                    i as i64 + 1,
                    0,
                    0,
                    0
                ])
                .unwrap();
        }
    }
    db.execute_batch("COMMIT").unwrap();
    let root: u32 = db
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'cbb_msg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (path, root)
}

/// Where page `no`'s b-tree header starts in the file.
fn header_at(page_size: usize, no: u32) -> usize {
    (no as usize - 1) * page_size + if no == 1 { 100 } else { 0 }
}

/// The child page numbers of interior page `no`, right-most last.
fn children(bytes: &[u8], page_size: usize, no: u32) -> Vec<u32> {
    let h = header_at(page_size, no);
    assert_eq!(bytes[h], INTERIOR_TABLE);
    let cells = u16::from_be_bytes([bytes[h + 3], bytes[h + 4]]) as usize;
    let base = (no as usize - 1) * page_size;
    let mut out: Vec<u32> = (0..cells)
        .map(|i| {
            let p = h + 12 + 2 * i;
            let at = base + u16::from_be_bytes([bytes[p], bytes[p + 1]]) as usize;
            be32(&bytes[at..at + 4])
        })
        .collect();
    out.push(be32(&bytes[h + 8..h + 12]));
    out
}

/// The leaf pages under `no`, left to right.
fn leaves(bytes: &[u8], page_size: usize, no: u32) -> Vec<u32> {
    if bytes[header_at(page_size, no)] == LEAF_TABLE {
        return vec![no];
    }
    children(bytes, page_size, no)
        .into_iter()
        .flat_map(|c| leaves(bytes, page_size, c))
        .collect()
}

/// Reads every row of `bytes` (the file at `path`, rewritten): Ok(rows) or the error.
fn rows_of(path: &Path, bytes: &[u8], root: u32) -> Result<usize, String> {
    std::fs::write(path, bytes).unwrap();
    let file = SqliteFile::open(path)?;
    let counted = file.table(root).count()?;
    let read = through_file(path, root)?.len();
    assert_eq!(counted as usize, read, "count and read disagree");
    Ok(read)
}

/// Changes the cell count (u16 at 3) of page `no`'s header by `delta`.
fn add_to_cell_count(bytes: &mut [u8], page_size: usize, no: u32, delta: i32) {
    let h = header_at(page_size, no);
    let n = u16::from_be_bytes([bytes[h + 3], bytes[h + 4]]) as i32 + delta;
    bytes[h + 3..h + 5].copy_from_slice(&(n as u16).to_be_bytes());
}

fn assert_names_page(err: &str, path: &Path, page: u32) {
    assert!(
        err.contains(&path.display().to_string()) && err.contains(&format!("page {page}:")),
        "the error should name {} and page {page}: {err}",
        path.display()
    );
}

#[test]
fn the_root_cell_count_one_lower_is_refused_naming_the_page_not_read_short() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = backup_file(dir.path(), "data-0000.cbb", 50_000, 4096);
    let good = std::fs::read(&path).unwrap();
    assert_eq!(rows_of(&path, &good, root), Ok(50_000));
    let mut bytes = good.clone();
    assert_eq!(bytes[header_at(4096, root)], INTERIOR_TABLE);
    add_to_cell_count(&mut bytes, 4096, root, -1);
    let err = rows_of(&path, &bytes, root).unwrap_err();
    assert_names_page(&err, &path, root);
}

#[test]
fn a_leaf_cell_count_25_lower_is_refused_naming_the_page_not_read_short() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = backup_file(dir.path(), "data-0000.cbb", 50_000, 4096);
    let good = std::fs::read(&path).unwrap();
    let all = leaves(&good, 4096, root);
    for leaf in [all[0], all[all.len() / 2], *all.last().unwrap()] {
        let mut bytes = good.clone();
        add_to_cell_count(&mut bytes, 4096, leaf, -25);
        let err = rows_of(&path, &bytes, root).unwrap_err();
        assert_names_page(&err, &path, leaf);
        // One more than it holds: the pointer past the last is no cell.
        let mut bytes = good.clone();
        add_to_cell_count(&mut bytes, 4096, leaf, 1);
        let err = rows_of(&path, &bytes, root).unwrap_err();
        assert_names_page(&err, &path, leaf);
    }
}

#[test]
fn a_cell_pointer_copied_from_its_neighbour_is_refused_naming_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = backup_file(dir.path(), "data-0000.cbb", 50_000, 4096);
    let good = std::fs::read(&path).unwrap();
    let leaf = leaves(&good, 4096, root)[3];
    let h = header_at(4096, leaf);
    for (from, to) in [(6, 5), (5, 6), (0, 1)] {
        let mut bytes = good.clone();
        let (src, dst) = (h + 8 + 2 * from, h + 8 + 2 * to);
        let v = [bytes[src], bytes[src + 1]];
        bytes[dst..dst + 2].copy_from_slice(&v);
        let err = rows_of(&path, &bytes, root).unwrap_err();
        assert_names_page(&err, &path, leaf);
    }
    // An interior page's pointer: a child read twice, its neighbour never.
    let interior = children(&good, 4096, root)[0];
    let h = header_at(4096, interior);
    let mut bytes = good.clone();
    let v = [bytes[h + 12 + 2 * 4], bytes[h + 12 + 2 * 4 + 1]];
    bytes[h + 12 + 2 * 3..h + 12 + 2 * 3 + 2].copy_from_slice(&v);
    let err = rows_of(&path, &bytes, root).unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn children_out_of_rowid_order_and_leaves_at_two_depths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = backup_file(dir.path(), "data-0000.cbb", 50_000, 4096);
    let good = std::fs::read(&path).unwrap();
    // Two children of an interior page swapped: every row is read, in the wrong order.
    let interior = children(&good, 4096, root)[0];
    let h = header_at(4096, interior);
    let base = (interior as usize - 1) * 4096;
    let cell = |b: &[u8], i: usize| {
        base + u16::from_be_bytes([b[h + 12 + 2 * i], b[h + 12 + 2 * i + 1]]) as usize
    };
    let mut bytes = good.clone();
    let (a, b) = (cell(&bytes, 2), cell(&bytes, 3));
    let (ca, cb) = (be32(&bytes[a..a + 4]), be32(&bytes[b..b + 4]));
    bytes[a..a + 4].copy_from_slice(&cb.to_be_bytes());
    bytes[b..b + 4].copy_from_slice(&ca.to_be_bytes());
    let err = rows_of(&path, &bytes, root).unwrap_err();
    assert!(err.contains("rowid"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    // The root's right-most child pointed at a leaf: that leaf is one level up.
    let mut bytes = good.clone();
    let leaf = *leaves(&good, 4096, root).last().unwrap();
    let rh = header_at(4096, root);
    bytes[rh + 8..rh + 12].copy_from_slice(&leaf.to_be_bytes());
    let err = rows_of(&path, &bytes, root).unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_wrong_fragmented_byte_count_or_content_start_is_refused_naming_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = backup_file(dir.path(), "data-0000.cbb", 5_000, 4096);
    let good = std::fs::read(&path).unwrap();
    let leaf = leaves(&good, 4096, root)[2];
    let h = header_at(4096, leaf);
    let mut bytes = good.clone();
    bytes[h + 7] = bytes[h + 7].wrapping_add(9);
    let err = rows_of(&path, &bytes, root).unwrap_err();
    assert_names_page(&err, &path, leaf);
    let mut bytes = good.clone();
    let start = u16::from_be_bytes([bytes[h + 5], bytes[h + 6]]);
    bytes[h + 5..h + 7].copy_from_slice(&(start + 40).to_be_bytes());
    let err = rows_of(&path, &bytes, root).unwrap_err();
    assert_names_page(&err, &path, leaf);
}

#[test]
fn a_page_changed_after_a_checked_count_is_caught_as_the_rows_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (path, root) = backup_file(dir.path(), "data-0000.cbb", 5_000, 4096);
    let good = std::fs::read(&path).unwrap();
    let file = SqliteFile::open(&path).unwrap();
    assert_eq!(file.table(root).count().unwrap(), 5_000);
    // Between the count and the read, a leaf's cell pointer comes to repeat its neighbour.
    let leaf = leaves(&good, 4096, root)[1];
    let h = header_at(4096, leaf);
    let mut bytes = good.clone();
    let v = [bytes[h + 8 + 2 * 4], bytes[h + 8 + 2 * 4 + 1]];
    bytes[h + 8 + 2 * 3..h + 8 + 2 * 3 + 2].copy_from_slice(&v);
    std::fs::write(&path, &bytes).unwrap();
    let mut rows = file.table_counted(root);
    let err = loop {
        match rows.next_row() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("read to the end"),
            Err(e) => break e,
        }
    };
    assert!(
        err.contains(&format!("page {leaf}:")) && err.contains("out of order"),
        "{err}"
    );
}

/// A database of two 4096-byte pages whose page 2 is a table leaf holding `cells` (offset in
/// the page, bytes), pointed at in that order, with the content area starting at `top` and
/// `frag` fragmented bytes.
fn one_leaf(cells: &[(usize, &[u8])], top: u16, frag: u8) -> Bytes {
    let mut db = vec![0u8; 2 * 4096];
    db[..16].copy_from_slice(MAGIC);
    db[16..18].copy_from_slice(&4096u16.to_be_bytes());
    db[18..20].copy_from_slice(&[1, 1]);
    db[21..24].copy_from_slice(&[64, 32, 32]);
    db[24..28].copy_from_slice(&[0, 0, 0, 1]);
    db[28..32].copy_from_slice(&2u32.to_be_bytes());
    db[92..96].copy_from_slice(&[0, 0, 0, 1]);
    db[56..60].copy_from_slice(&1u32.to_be_bytes());
    let page = &mut db[4096..];
    page[0] = LEAF_TABLE;
    page[3..5].copy_from_slice(&(cells.len() as u16).to_be_bytes());
    page[5..7].copy_from_slice(&top.to_be_bytes());
    page[7] = frag;
    for (i, (at, bytes)) in cells.iter().enumerate() {
        page[8 + 2 * i..10 + 2 * i].copy_from_slice(&(*at as u16).to_be_bytes());
        page[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    Bytes::from(db)
}

#[test]
fn overlapping_cells_are_refused_whether_their_offsets_fall_or_rise() {
    let path = Path::new("one-leaf.cbb");
    let count = |db: Bytes| SqliteFile::from_bytes(path, db).unwrap().table(2).count();
    // Cells of 5 bytes (payload size 3, rowid, a record of one integer): SQLite's layout
    // (falling offsets), and the same cells at rising offsets, are both read.
    let (a, b): (&[u8], &[u8]) = (&[3, 5, 2, 1, 9], &[3, 6, 2, 1, 8]);
    assert_eq!(count(one_leaf(&[(4091, a), (4086, b)], 4086, 0)), Ok(2));
    assert_eq!(count(one_leaf(&[(4086, a), (4091, b)], 4086, 0)), Ok(2));
    // Overlapping, at falling offsets: the cell at 3998 runs into the one at 4000 (the
    // fragmented count makes the space add up).
    let err = count(one_leaf(&[(4000, a), (3998, &[3, 6, 3, 5, 2])], 3998, 88)).unwrap_err();
    assert!(err.contains("page 2:") && err.contains("overlap"), "{err}");
    // At rising offsets: the cell at 4001 (rowid 2) lies across the one at 4000 (rowid 5).
    let err = count(one_leaf(&[(4001, &[5, 2]), (4000, a)], 4000, 84)).unwrap_err();
    assert!(err.contains("page 2:") && err.contains("overlap"), "{err}");
}
