//! End to end: the `csv:FILE` source and sink through the `pump` binary.

mod common;

use common::{csv_rows, pump, stderr, transfer_ok};

#[test]
fn csv_to_csv_keeps_binary_values_as_bytes_literals() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let out = dir.path().join("out.csv");
    std::fs::write(
        &input,
        "id,flags,expiration,cas,value,rev,vbid,dtype\r\n\
         a,1,2,3,b'\\x00\\xff\\'q',b'',10,0\r\n\
         b,0,0,0,\"plain, with a comma\",,65535,0\r\n\
         c,0,0,0,\"b\"\"it's\"\"\",,1,0\r\n",
    )
    .unwrap();
    transfer_ok(
        &format!("csv:{}", input.display()),
        &format!("csv:{}", out.display()),
        &[],
    );
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 4);
    // Python's repr picks double quotes for bytes holding ' and no ".
    assert_eq!(
        rows[1],
        ["a", "1", "2", "3", "b\"\\x00\\xff'q\"", "b''", "10", "0"]
    );
    assert_eq!(rows[2][4], "b'plain, with a comma'");
    // vbid 65535 means unknown: the key's hash.
    assert_eq!(
        rows[2][6],
        pump_protocol::vbucket_of(b"b", 1024).to_string()
    );
    assert_eq!(rows[3][4], "b\"it's\"");
}

#[test]
fn a_malformed_csv_line_is_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    std::fs::write(&input, "id,flags,value\nk1,0,v\nk2,0,v\nk3,0,b'\\xZZ'\n").unwrap();
    let out = pump(&[
        "transfer",
        &format!("csv:{}", input.display()),
        "blackhole:",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.csv") && err.contains("line 4"), "{err}");
}

#[test]
fn a_missing_csv_file_is_an_error_naming_it() {
    let out = pump(&["transfer", "csv:/nonexistent/in.csv", "blackhole:"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/in.csv"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failed_source_leaves_no_csv_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut text = String::from("id,flags,value\n");
    for i in 0..100 {
        text.push_str(&format!("k{i},0,v\n"));
    }
    text.push_str("k,0\n");
    std::fs::write(&input, text).unwrap();
    let out_path = dir.path().join("out.csv");
    let out = pump(&[
        "transfer",
        &format!("csv:{}", input.display()),
        &format!("csv:{}", out_path.display()),
        "-x",
        "batch_max_size=10",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("line 102"), "{}", stderr(&out));
    assert!(!out_path.exists());
    // Nor under its temporary name: a CSV run has no resume, its partial rows are removed.
    assert!(!dir.path().join("out.csv.partial").exists());
}
