//! End to end: the backup directory sink and source through the `pump` binary.

mod common;

use std::path::Path;

use common::{csv_rows, data_files, pump, stderr, transfer_ok};
use rusqlite::Connection;

const SCHEMA: &str = "CREATE TABLE cbb_msg (cmd integer, vbucket_id integer, key blob, flg integer, exp integer, cas text, meta blob, val blob, seqno integer, dtype integer, meta_size integer, conf_res integer);";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn gen_to_backup_to_csv_keeps_keys_values_flags_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    let out = dir.path().join("out.csv");
    transfer_ok(
        "gen:max-items=500,min-value-size=20,flags=7,expiry=99,prefix=k_",
        s(&backup),
        &[],
    );
    transfer_ok(s(&backup), &format!("csv:{}", out.display()), &[]);
    let rows = csv_rows(&out);
    assert_eq!(
        rows[0],
        [
            "id",
            "flags",
            "expiration",
            "cas",
            "value",
            "rev",
            "vbid",
            "dtype"
        ]
    );
    assert_eq!(rows.len(), 501);
    let mut keys: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    keys.sort_by_key(|k| k[2..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..500).map(|i| format!("k_{i}")).collect();
    assert_eq!(keys, want);
    for r in &rows[1..] {
        assert_eq!((r[1].as_str(), r[2].as_str()), ("7", "99"));
        assert_eq!(r[4], "b'01234567890123456789'");
    }
}

#[test]
fn cas_values_survive_csv_to_backup_to_csv() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let backup = dir.path().join("bk");
    let out = dir.path().join("out.csv");
    let cas = [
        "1",
        "18446744073709551615",
        "9223372036854775808",
        "1558712345678901234",
    ];
    let mut text = String::from("id,flags,expiration,cas,value,rev,vbid,dtype\r\n");
    for (i, c) in cas.iter().enumerate() {
        text.push_str(&format!(
            "key{i},{i},{},{c},b'v\\x00{i}',b'{}',65535,0\r\n",
            10 + i,
            i + 1
        ));
    }
    std::fs::write(&input, text).unwrap();
    transfer_ok(&format!("csv:{}", input.display()), s(&backup), &[]);
    transfer_ok(s(&backup), &format!("csv:{}", out.display()), &[]);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 5);
    for (i, c) in cas.iter().enumerate() {
        let r = rows.iter().find(|r| r[0] == format!("key{i}")).unwrap();
        assert_eq!(r[3], *c);
        assert_eq!(r[4], format!("b'v\\x00{i}'"));
        assert_eq!(r[5], format!("b'{}'", i + 1));
        assert_eq!(
            (r[1].clone(), r[2].clone()),
            (i.to_string(), (10 + i).to_string())
        );
    }
}

#[test]
fn data_files_open_in_the_sqlite3_shell_with_the_exact_schema_and_user_version_2015() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok(
        "gen:max-items=100",
        s(&backup),
        &["-x", "backup_node=127.0.0.1:8091"],
    );
    let files = data_files(&backup);
    assert_eq!(files.len(), 1);
    let f = s(&files[0]);
    assert!(
        f.contains("-full/bucket-default/node-127.0.0.1%3A8091/data-0000.cbb"),
        "{f}"
    );
    let node_dir = files[0].parent().unwrap();
    for json in [
        "meta.json",
        "seqno.json",
        "failover.json",
        "snapshot_markers.json",
    ] {
        let text = std::fs::read(node_dir.join(json)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&text).unwrap();
    }
    let out = std::process::Command::new("sqlite3")
        .args([f, "PRAGMA user_version;", ".schema"])
        .output()
        .expect("the sqlite3 shell runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("2015\n{SCHEMA}\n")
    );
    let out = std::process::Command::new("sqlite3")
        .args([f, "SELECT count(*) FROM cbb_msg"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100");
}

/// Writes a data file as an older (or current) cbbackup would: `user_version` and its columns.
fn cbbackup_file(path: &Path, user_version: i64, keys: std::ops::Range<u32>, cmd: i64) {
    let cols = [
        "cmd integer",
        "vbucket_id integer",
        "key blob",
        "flg integer",
        "exp integer",
        "cas text",
        "meta blob",
        "val blob",
        "seqno integer",
        "dtype integer",
        "meta_size integer",
        "conf_res integer",
    ];
    let n = match user_version {
        2004 => 8,
        2014 => 11,
        _ => 12,
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = Connection::open(path).unwrap();
    db.execute_batch(&format!(
        "BEGIN; CREATE TABLE cbb_msg ({}); PRAGMA user_version = {user_version}; COMMIT;",
        cols[..n].join(", ")
    ))
    .unwrap();
    let marks = vec!["?"; n].join(",");
    db.execute_batch("BEGIN").unwrap();
    let mut insert = db
        .prepare(&format!("INSERT INTO cbb_msg VALUES ({marks})"))
        .unwrap();
    for k in keys {
        let key = format!("old{k}");
        let vals: Vec<rusqlite::types::Value> = vec![
            cmd.into(),
            i64::from(pump_protocol::vbucket_of(key.as_bytes(), 1024)).into(),
            key.clone().into_bytes().into(),
            i64::from(k).into(),
            0i64.into(),
            (u64::from(k) * 1000).to_string().into(),
            b"".to_vec().into(),
            format!("value of {key}").into_bytes().into(),
            i64::from(k + 1).into(),
            0i64.into(),
            0i64.into(),
            0i64.into(),
        ];
        insert
            .execute(rusqlite::params_from_iter(&vals[..n]))
            .unwrap();
    }
    drop(insert);
    db.execute_batch("COMMIT").unwrap();
}

#[test]
fn a_cbbackup_layout_with_2004_2014_and_2015_files_and_a_diff_run_restores_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bk").join("2019-05-01T101010Z");
    let full = root.join("2019-05-01T101010Z-full").join("bucket-default");
    let diff = root.join("2019-05-02T101010Z-diff").join("bucket-default");
    cbbackup_file(
        &full.join("node-10.1.1.1%3A8091").join("data-0000.cbb"),
        2004,
        0..100,
        0x41,
    );
    cbbackup_file(
        &full.join("node-10.1.1.1%3A8091").join("data-0001.cbb"),
        2014,
        100..200,
        0x41,
    );
    cbbackup_file(
        &full.join("node-10.1.1.2%3A8091").join("data-0000.cbb"),
        2015,
        200..300,
        0x57,
    );
    cbbackup_file(
        &diff.join("node-10.1.1.1%3A8091").join("data-0000.cbb"),
        2015,
        300..350,
        0x57,
    );
    let out = dir.path().join("out.csv");
    transfer_ok(
        s(&dir.path().join("bk")),
        &format!("csv:{}", out.display()),
        &[],
    );
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 351);
    let mut keys: Vec<u32> = rows[1..]
        .iter()
        .map(|r| r[0][3..].parse().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, (0..350).collect::<Vec<_>>());
    let r = rows.iter().find(|r| r[0] == "old150").unwrap();
    assert_eq!(
        (r[1].as_str(), r[3].as_str(), r[4].as_str()),
        ("150", "150000", "b'value of old150'")
    );
}

#[test]
fn a_second_run_from_a_source_without_positions_is_a_new_backup_and_a_restore_reads_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok("gen:max-items=50,prefix=a", s(&backup), &[]);
    transfer_ok("gen:max-items=30,prefix=b", s(&backup), &[]);
    let files = data_files(&backup);
    assert_eq!(files.len(), 2, "{files:?}");
    // Two full runs in two timestamped backups: gen: cannot say what changed since a run.
    assert!(files.iter().all(|f| s(f).contains("-full/")), "{files:?}");
    let root = |p: &Path| p.ancestors().nth(4).unwrap().to_path_buf();
    assert_ne!(root(&files[0]), root(&files[1]));
    let out = dir.path().join("out.csv");
    transfer_ok(s(&backup), &format!("csv:{}", out.display()), &[]);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 31);
    assert!(rows[1..].iter().all(|r| r[0].starts_with('b')));
}

#[test]
fn a_small_cbb_max_mb_rolls_to_data_0001() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok(
        "gen:max-items=3000,min-value-size=1000",
        s(&backup),
        &["-x", "cbb_max_mb=1"],
    );
    let files = data_files(&backup);
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert!(names.contains(&"data-0001.cbb"), "{names:?}");
    let out = dir.path().join("out.csv");
    transfer_ok(s(&backup), &format!("csv:{}", out.display()), &[]);
    assert_eq!(csv_rows(&out).len(), 3001);
}

#[test]
fn a_missing_backup_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = pump(&["transfer", s(&missing), "blackhole:"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(s(&missing)) && err.contains("no such backup directory"),
        "{err}"
    );
}

#[test]
fn a_corrupt_data_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir
        .path()
        .join("bk/2020-01-01T000000Z/2020-01-01T000000Z-full/bucket-default/node-x");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(node.join("data-0000.cbb"), vec![0xa5u8; 8192]).unwrap();
    let out = pump(&["transfer", s(&dir.path().join("bk")), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("data-0000.cbb") && err.contains("not a readable backup data file"),
        "{err}"
    );
}

#[test]
fn an_absent_bucket_is_an_error_listing_the_buckets_in_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok("gen:max-items=5", s(&backup), &["-B", "beer sample"]);
    assert!(s(&data_files(&backup)[0]).contains("bucket-beer+sample"));
    let out = pump(&["transfer", s(&backup), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("beer sample"), "{}", stderr(&out));
    transfer_ok(s(&backup), "blackhole:", &["-b", "beer sample"]);
}

#[test]
fn an_unknown_spec_is_a_usage_error_naming_it() {
    let out = pump(&["transfer", "nosuchkind:foo", "blackhole:"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nosuchkind:foo"), "{}", stderr(&out));
}

#[test]
fn a_failed_source_leaves_no_data_file_under_its_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut text = String::from("id,flags,value\n");
    for i in 0..200 {
        text.push_str(&format!("k{i},0,v\n"));
    }
    text.push_str("broken,notanumber,v\n");
    std::fs::write(&input, text).unwrap();
    let backup = dir.path().join("bk");
    let out = pump(&[
        "transfer",
        &format!("csv:{}", input.display()),
        s(&backup),
        "-x",
        "batch_max_size=10",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("line 202"), "{}", stderr(&out));
    assert!(data_files(&backup).is_empty());
    let partial = common::files_named(&backup, &|n| n.ends_with(".cbb.partial"));
    assert_eq!(
        partial.len(),
        1,
        "the rows read are kept aside under a temporary name"
    );
}
