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
