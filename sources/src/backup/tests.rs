use super::*;
use pump::Message;
use pump_formats::bfd;
use rusqlite::Connection;

/// Writes a data file of `user_version` with the columns that version has.
fn old_file(path: &std::path::Path, user_version: i64, keys: &[&str]) {
    let db = Connection::open(path).unwrap();
    let cols = match user_version {
        2004 => "cmd integer, vbucket_id integer, key blob, flg integer, exp integer, cas text, meta blob, val blob",
        2014 => "cmd integer, vbucket_id integer, key blob, flg integer, exp integer, cas text, meta blob, val blob, seqno integer, dtype integer, meta_size integer",
        _ => "cmd integer, vbucket_id integer, key blob, flg integer, exp integer, cas text, meta blob, val blob, seqno integer, dtype integer, meta_size integer, conf_res integer",
    };
    db.execute_batch(&format!(
        "CREATE TABLE cbb_msg ({cols}); PRAGMA user_version = {user_version};"
    ))
    .unwrap();
    let n = cols.split(',').count();
    let marks = vec!["?"; n].join(",");
    for (i, k) in keys.iter().enumerate() {
        let vals: Vec<rusqlite::types::Value> = vec![
            0x41i64.into(),
            (i as i64).into(),
            k.as_bytes().to_vec().into(),
            7i64.into(),
            9i64.into(),
            "18446744073709551615".to_string().into(),
            b"3".to_vec().into(),
            format!("v-{k}").into_bytes().into(),
            (i as i64 + 1).into(),
            1i64.into(),
            0i64.into(),
            1i64.into(),
        ];
        db.execute(
            &format!("INSERT INTO cbb_msg VALUES ({marks})"),
            rusqlite::params_from_iter(&vals[..n]),
        )
        .unwrap();
    }
}

async fn read(dir: &std::path::Path, bucket: &str) -> Result<Vec<Message>, Error> {
    let stats = std::sync::Arc::new(pump::Stats::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = pump::channel::bounded(1000, 1 << 30, pump::Filter::default(), stats, cancel);
    let ctx = Context::new(Options::default());
    Box::new(BackupSource::new(dir.to_path_buf(), bucket.into()))
        .run(tx, ctx)
        .await?;
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.extend(b.messages);
    }
    Ok(out)
}

#[tokio::test]
async fn files_of_2004_2014_and_2015_read_in_full_then_diff_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("2020-01-01T000000Z");
    let full = bfd::node_dir(
        &root.join("2020-01-01T000000Z-full"),
        "default",
        "10.0.0.1:8091",
    );
    let diff = bfd::node_dir(
        &root.join("2020-01-02T000000Z-diff"),
        "default",
        "10.0.0.1:8091",
    );
    std::fs::create_dir_all(&full).unwrap();
    std::fs::create_dir_all(&diff).unwrap();
    old_file(&full.join("data-0000.cbb"), 2004, &["a", "b"]);
    old_file(&full.join("data-0001.cbb"), 2014, &["c"]);
    old_file(&diff.join("data-0000.cbb"), 2015, &["d"]);
    let got = read(dir.path(), "default").await.unwrap();
    let keys: Vec<_> = got.iter().map(|m| m.key_display()).collect();
    assert_eq!(keys, ["a", "b", "c", "d"]);
    assert!(got
        .iter()
        .all(|m| m.cas == u64::MAX && m.flags == 7 && m.expiry == 9));
    assert_eq!(&got[0].value[..], b"v-a");
    assert_eq!((got[0].seqno, got[0].rev_seqno), (0, 3));
    assert_eq!(
        (got[2].seqno, got[2].datatype, got[2].conflict_res),
        (1, 1, 0)
    );
    assert_eq!(got[3].conflict_res, 1);
}

#[tokio::test]
async fn an_absent_bucket_is_an_error_listing_the_buckets_found() {
    let dir = tempfile::tempdir().unwrap();
    let node = bfd::node_dir(
        &dir.path()
            .join("2020-01-01T000000Z")
            .join("2020-01-01T000000Z-full"),
        "beer sample",
        "n",
    );
    std::fs::create_dir_all(&node).unwrap();
    old_file(&node.join("data-0000.cbb"), 2015, &["a"]);
    let err = read(dir.path(), "default").await.unwrap_err().to_string();
    assert!(
        err.contains("\"default\"") && err.contains("beer sample"),
        "{err}"
    );
    assert_eq!(read(dir.path(), "beer sample").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_garbage_data_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = bfd::node_dir(dir.path(), "default", "n");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(node.join("data-0000.cbb"), vec![0x5a; 4096]).unwrap();
    let err = read(dir.path(), "default").await.unwrap_err().to_string();
    assert!(err.contains("data-0000.cbb"), "{err}");
}

/// A data file of `user_version` with rows of every shape a backup may hold: NULL columns,
/// empty and spilling values (5 kB, 200 kB), key and value as text or blob, cas as text or
/// integer, the meta column as rev_seqno text or raw bytes, numbers stored as text, and
/// deleted rows; `page_size` bytes a page.
fn varied_file(path: &std::path::Path, user_version: i64, page_size: u32, rows: usize) {
    use rusqlite::types::Value;
    let db = Connection::open(path).unwrap();
    let version = bfd::Version::from_user_version(user_version).unwrap();
    let n = version.columns();
    let cols: Vec<String> = bfd::CREATE_TABLE
        .split_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .split(", ")
        .take(n)
        .map(String::from)
        .collect();
    db.execute_batch(&format!(
        "PRAGMA page_size = {page_size}; CREATE TABLE cbb_msg ({}); PRAGMA user_version = {user_version}; BEGIN;",
        cols.join(", ")
    ))
    .unwrap();
    let marks = vec!["?"; n].join(",");
    let mut insert = db
        .prepare(&format!("INSERT INTO cbb_msg VALUES ({marks})"))
        .unwrap();
    for i in 0..rows {
        let value: Value = match i % 40 {
            3 => vec![b'x'; 5000].into(),
            17 => (0..200_000)
                .map(|j| (j * 7 + i) as u8)
                .collect::<Vec<u8>>()
                .into(),
            5 => Value::Null,
            9 => Vec::<u8>::new().into(),
            11 => format!("text value {i}").into(),
            _ => format!("v-{i}-{}", "y".repeat(i % 150)).into_bytes().into(),
        };
        let key: Value = if i % 2 == 0 {
            format!("k{i}").into_bytes().into()
        } else {
            format!("k{i}").into()
        };
        let cas: Value = match i % 3 {
            0 => (u64::MAX - i as u64).to_string().into(),
            1 => (i as i64 * 99).into(),
            _ => Value::Null,
        };
        let meta: Value = match i % 4 {
            0 => (i as i64 + 1).to_string().into_bytes().into(),
            1 => vec![1u8, 2, i as u8].into(),
            2 => Value::Null,
            _ => Vec::<u8>::new().into(),
        };
        let cmd = [0x41i64, 0x42, 0x57, 0x58, 0x59][i % 5];
        let vals: Vec<Value> = vec![
            cmd.into(),
            ((i % 1024) as i64).into(),
            key,
            if i % 7 == 0 {
                Value::Null
            } else {
                (i as i64 * 13).into()
            },
            if i % 6 == 0 {
                "42".to_string().into()
            } else {
                (i as i64).into()
            },
            cas,
            meta,
            value,
            (i as i64 * 5).into(),
            ((i % 8) as i64).into(),
            Value::Null,
            ((i % 2) as i64).into(),
        ];
        insert
            .execute(rusqlite::params_from_iter(&vals[..n]))
            .unwrap();
    }
    drop(insert);
    db.execute_batch("DELETE FROM cbb_msg WHERE rowid % 11 = 0; COMMIT;")
        .unwrap();
}

/// The messages of one file, read straight from its pages (`raw`) or through SQLite.
fn read_one(path: &std::path::Path, raw: bool) -> Result<Vec<Message>, String> {
    let (db, version) = reader::open(path)?;
    let rows = if raw {
        let root = reader::raw_root(path, &db, version)?.expect("a file the raw reader reads");
        reader::Rows::Raw(pump_formats::sqlite_file::SqliteFile::open(path)?, root)
    } else {
        reader::Rows::Sql(db)
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 20);
    let limits = Options::default().batch_limits();
    let cancel = tokio_util::sync::CancellationToken::new();
    let read = reader::Read {
        verify: pump_formats::sqlite_file::Verify::Quick,
        ..Default::default()
    };
    reader::read_file(path, rows, version, read, limits, &tx, &cancel)?;
    drop(tx);
    let mut out = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        out.extend(batch);
    }
    Ok(out)
}

#[test]
fn rows_read_from_pages_equal_rows_read_through_sqlite_in_all_three_versions() {
    let dir = tempfile::tempdir().unwrap();
    for (user_version, page_size, rows) in [
        (2004, 1024, 300),
        (2014, 65536, 300),
        (2015, 4096, 3000),
        (2015, 1024, 0),
    ] {
        let path = dir
            .path()
            .join(format!("{user_version}-{page_size}-{rows}.cbb"));
        varied_file(&path, user_version, page_size, rows);
        let raw = read_one(&path, true).unwrap();
        let sql = read_one(&path, false).unwrap();
        assert_eq!(raw.len(), rows - rows / 11);
        assert_eq!(raw, sql, "{user_version} at page size {page_size}");
    }
}

#[test]
fn a_file_with_a_wal_or_a_reordered_table_is_read_through_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.cbb");
    varied_file(&path, 2015, 4096, 50);
    let (db, version) = reader::open(&path).unwrap();
    assert!(reader::raw_root(&path, &db, version).unwrap().is_some());
    drop(db);
    // A writer in WAL mode that has not checkpointed: its rows are in the -wal file only.
    let writer = Connection::open(&path).unwrap();
    writer
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             INSERT INTO cbb_msg (cmd, vbucket_id, key, val) VALUES (65, 1, 'walkey', 'w');",
        )
        .unwrap();
    let (db, version) = reader::open(&path).unwrap();
    assert_eq!(reader::raw_root(&path, &db, version).unwrap(), None);
    drop(db);
    let got = block_on_read(dir.path(), &path);
    assert!(got.iter().any(|m| &m.key[..] == b"walkey"));
    drop(writer);

    let path = dir.path().join("reordered.cbb");
    let db = Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE cbb_msg (vbucket_id integer, cmd integer, key blob, flg integer, exp integer, cas text, meta blob, val blob); PRAGMA user_version = 2004;
         INSERT INTO cbb_msg VALUES (3, 65, 'k', 0, 0, '1', '', 'v');",
    )
    .unwrap();
    let (db, version) = reader::open(&path).unwrap();
    assert_eq!(reader::raw_root(&path, &db, version).unwrap(), None);
    let got = read_one(&path, false).unwrap();
    assert_eq!((got[0].vbucket, &got[0].key[..]), (3, &b"k"[..]));
}

/// Reads the one data file `path` of a backup-like directory through [`reader::read_all`].
fn block_on_read(dir: &std::path::Path, path: &std::path::Path) -> Vec<Message> {
    let _ = dir;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 20);
    let stats = pump::Stats::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    reader::read_all(
        &[DataFile {
            path: path.to_path_buf(),
            stale_above: None,
        }],
        Options::default().batch_limits(),
        pump_formats::sqlite_file::Verify::Quick,
        &tx,
        &stats,
        &cancel,
        &pump::RunCollections::default(),
    )
    .unwrap();
    drop(tx);
    let mut out = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn a_data_file_with_a_broken_page_is_an_error_naming_the_file_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let node = bfd::node_dir(dir.path(), "default", "n");
    std::fs::create_dir_all(&node).unwrap();
    let path = node.join("data-0000.cbb");
    varied_file(&path, 2015, 1024, 2000);
    let db = Connection::open(&path).unwrap();
    let root: u32 = db
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'cbb_msg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    // Down the left-most children to the first leaf, whose first cell pointer is then sent
    // out of the page: SQLite's count(*) reads only the cell count, the rows are unreadable.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut page = root as usize;
    while bytes[(page - 1) * 1024] == 0x05 {
        let p = (page - 1) * 1024;
        let cell = p + u16::from_be_bytes([bytes[p + 12], bytes[p + 13]]) as usize;
        page = u32::from_be_bytes(bytes[cell..cell + 4].try_into().unwrap()) as usize;
    }
    let at = (page - 1) * 1024 + 8;
    bytes[at..at + 2].copy_from_slice(&0xfff0u16.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = read(dir.path(), "default").await.unwrap_err().to_string();
    assert!(
        err.contains("data-0000.cbb")
            && err.contains(&format!("page {page}: cell 0 at offset 65520 lies outside")),
        "{err}"
    );
}

/// A 2015 data file holding mutations `(vbucket, seqno, key)`.
fn rows_file(path: &std::path::Path, rows: &[(u16, u64, &str)]) {
    let db = Connection::open(path).unwrap();
    bfd::create_schema(&db).unwrap();
    for (vb, seqno, key) in rows {
        db.execute(
            bfd::INSERT,
            rusqlite::params![
                0x57i64,
                *vb as i64,
                key.as_bytes(),
                0i64,
                0i64,
                "1",
                b"".to_vec(),
                b"v".to_vec(),
                *seqno as i64,
                0i64,
                0i64,
                0i64
            ],
        )
        .unwrap();
    }
}

fn record(mode: bfd::RunKind) -> run::RunRecord {
    run::RunRecord {
        tool: "pump".into(),
        mode,
        started: run::now_text(),
        source: "couchbase://h:1".into(),
        bucket: "default".into(),
        node: "n".into(),
        base: None,
        attempts: vec![run::Attempt {
            started: run::now_text(),
            first_file: 0,
        }],
        rollbacks: Vec::new(),
        parts: None,
    }
}

async fn read_partial(dir: &std::path::Path, allow: bool) -> Result<Vec<Message>, Error> {
    let stats = std::sync::Arc::new(pump::Stats::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = pump::channel::bounded(1000, 1 << 30, pump::Filter::default(), stats, cancel);
    let mut o = Options::default();
    if allow {
        o.extra.set("allow_partial", "1");
    }
    let spec = pump::Spec::parse(dir.to_str().unwrap()).unwrap();
    let src = BackupKind.open(&spec, &o)?;
    src.run(tx, Context::new(o)).await?;
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.extend(b.messages);
    }
    Ok(out)
}

use pump_formats::run;

#[tokio::test]
async fn an_incomplete_run_is_refused_by_name_unless_partial_runs_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("2020-01-01T000000Z");
    let full = bfd::node_dir(&root.join("2020-01-01T000000Z-full"), "default", "n");
    let diff = bfd::node_dir(&root.join("2020-01-02T000000Z-diff"), "default", "n");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::create_dir_all(&diff).unwrap();
    rows_file(&full.join("data-0000.cbb"), &[(1, 1, "a"), (2, 1, "b")]);
    run::write_json_synced(&diff.join(run::RUN_JSON), &record(bfd::RunKind::Diff)).unwrap();
    // Killed while renaming: one file under its final name, one still temporary.
    rows_file(&diff.join("data-0000.cbb"), &[(1, 2, "c")]);
    rows_file(&diff.join("data-0001.cbb.partial"), &[(3, 1, "d")]);
    let e = read_partial(dir.path(), false).await.unwrap_err();
    assert!(e.is_usage() || e.to_string().contains("incomplete"), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("2020-01-02T000000Z-diff") && e.contains("--allow-partial"),
        "{e}"
    );
    let got = read_partial(dir.path(), true).await.unwrap();
    let keys: Vec<_> = got.iter().map(|m| m.key_display()).collect();
    assert_eq!(keys, ["a", "b", "c", "d"]);
    // Written by an older pump or cut short: .partial files and no record are refused too.
    std::fs::remove_file(diff.join(run::RUN_JSON)).unwrap();
    let e = read_partial(dir.path(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(".partial files"), "{e}");
}

#[tokio::test]
async fn rows_a_later_rollback_made_stale_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("2020-01-01T000000Z");
    let full = bfd::node_dir(&root.join("2020-01-01T000000Z-full"), "default", "n");
    let diff = bfd::node_dir(&root.join("2020-01-02T000000Z-diff"), "default", "n");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::create_dir_all(&diff).unwrap();
    rows_file(
        &full.join("data-0000.cbb"),
        &[
            (5, 1, "a"),
            (5, 2, "b"),
            (6, 3, "kept"),
            (5, 3, "gone"),
            (5, 4, "gone2"),
        ],
    );
    rows_file(&diff.join("data-0000.cbb"), &[(5, 3, "new")]);
    let done = run::Completion {
        files: vec![run::FileCount {
            name: "data-0000.cbb".into(),
            rows: 1,
        }],
        rollbacks: vec![run::Rollback {
            vbucket: 5,
            seqno: 2,
            before_file: 0,
        }],
        ..run::Completion::default()
    };
    run::write_json_synced(&diff.join(run::COMPLETE_JSON), &done).unwrap();
    let got = read_partial(dir.path(), false).await.unwrap();
    let keys: Vec<_> = got.iter().map(|m| m.key_display()).collect();
    assert_eq!(keys, ["a", "b", "kept", "new"]);
}

#[tokio::test]
async fn a_backup_holding_no_row_fails_instead_of_restoring_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let full = bfd::node_dir(
        &dir.path()
            .join("2020-01-01T000000Z")
            .join("2020-01-01T000000Z-full"),
        "default",
        "n",
    );
    std::fs::create_dir_all(&full).unwrap();
    rows_file(&full.join("data-0000.cbb"), &[]);
    let e = read_partial(dir.path(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no items") && e.contains("nothing to restore"),
        "{e}"
    );
    // And a directory holding no run at all names what it expected.
    let empty = tempfile::tempdir().unwrap();
    let e = read_partial(empty.path(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no backup found"), "{e}");
}

/// A 2015 file of 100 good rows, row `bad_at` (1-based) having `column` set to `value`.
fn file_with_value(path: &std::path::Path, column: &str, value: i64, bad_at: usize) {
    varied_file(path, 2015, 4096, 100);
    let db = Connection::open(path).unwrap();
    let rowid: i64 = db
        .query_row(
            "SELECT rowid FROM cbb_msg ORDER BY rowid LIMIT 1 OFFSET ?1",
            [bad_at as i64 - 1],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        &format!("UPDATE cbb_msg SET {column} = ?1 WHERE rowid = ?2"),
        rusqlite::params![value, rowid],
    )
    .unwrap();
}

#[test]
fn values_out_of_their_column_range_are_errors_naming_the_row_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    for (column, value, what) in [
        ("flg", 4_294_967_297, "flg 4294967297"),
        ("exp", 99_999_999_999, "exp 99999999999"),
        ("dtype", 300, "dtype 300"),
        ("flg", -1, "flg -1"),
        ("conf_res", 256, "conf_res 256"),
        ("seqno", -5, "seqno -5"),
    ] {
        let path = dir.path().join(format!("{column}{value}.cbb"));
        file_with_value(&path, column, value, 37);
        for raw in [true, false] {
            let err = read_one(&path, raw).unwrap_err();
            assert!(
                err.contains(&path.display().to_string())
                    && err.contains("row 37")
                    && err.contains(what),
                "raw {raw}: {err}"
            );
        }
    }
}

#[test]
fn a_file_that_shrinks_while_read_is_an_error_naming_it_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-0000.cbb");
    let db = Connection::open(&path).unwrap();
    bfd::create_schema(&db).unwrap();
    db.execute_batch("BEGIN").unwrap();
    let value = vec![b'v'; 2000];
    for i in 0..10_000i64 {
        db.execute(
            bfd::INSERT,
            rusqlite::params![
                0x57,
                i % 1024,
                format!("k{i}"),
                0,
                0,
                "1",
                b"1".as_slice(),
                &value[..],
                i + 1,
                0,
                0,
                0
            ],
        )
        .unwrap();
    }
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 16 << 20, "{len}");
    // The reader waits on a channel of one batch: it has counted every row and sent its
    // first batch when the file is cut to a quarter under it.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let reader = std::thread::spawn({
        let path = path.clone();
        move || {
            let stats = pump::Stats::default();
            let cancel = tokio_util::sync::CancellationToken::new();
            let limits = pump::BatchLimits {
                max_items: 100,
                max_bytes: 1 << 30,
            };
            reader::read_all(
                &[DataFile {
                    path,
                    stale_above: None,
                }],
                limits,
                pump_formats::sqlite_file::Verify::Quick,
                &tx,
                &stats,
                &cancel,
                &pump::RunCollections::default(),
            )
        }
    });
    let first = rx.blocking_recv().expect("a first batch");
    assert_eq!(first.len(), 100);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 4)
        .unwrap();
    let mut received = first.len();
    while let Some(batch) = rx.blocking_recv() {
        // What was sent is whole: values read before the cut, not zeros.
        assert!(batch.iter().all(|m| m.value[..] == value[..]));
        received += batch.len();
    }
    let err = reader.join().unwrap().unwrap_err();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("shrank while being read"),
        "{err}"
    );
    assert!(received < 10_000, "{received}");
    assert!(first.iter().all(|m| m.value[..] == value[..]));
}

#[test]
fn a_file_that_loses_rows_between_the_count_and_the_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data-0000.cbb");
    varied_file(&path, 2015, 1024, 2000);
    let (rows, (version, counted)) =
        reader::prepare(&path, pump_formats::sqlite_file::Verify::Quick).unwrap();
    assert_eq!(counted, 2000 - 2000 / 11);
    // Between the count and the read, the root loses a cell: a child's rows are no longer
    // reached (a read without the count to compare would end short, and say nothing).
    let db = Connection::open(&path).unwrap();
    let root: u32 = db
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'cbb_msg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    let mut bytes = std::fs::read(&path).unwrap();
    let h = (root as usize - 1) * 1024;
    let n = u16::from_be_bytes([bytes[h + 3], bytes[h + 4]]);
    bytes[h + 3..h + 5].copy_from_slice(&(n - 1).to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 20);
    let cancel = tokio_util::sync::CancellationToken::new();
    let read = reader::Read {
        verify: pump_formats::sqlite_file::Verify::Quick,
        counted: Some(counted),
        stale: None,
    };
    let err = reader::read_file(
        &path,
        rows,
        version,
        read,
        Options::default().batch_limits(),
        &tx,
        &cancel,
    )
    .unwrap_err();
    drop(tx);
    while rx.try_recv().is_ok() {}
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("were counted before: the file changed"),
        "{err}"
    );
}
