//! A restore into a cluster writes each item with its metadata (SET_WITH_META, DEL_WITH_META),
//! as cbrestore does, and the cluster resolves conflicts: an item the destination holds at a
//! newer revision keeps the newer copy, and the pump counts it as skipped. The official Python
//! SDK reads the survivors back. `-x conflict_resolve=0` writes plainly over them.

mod common;

use common::{data_files, pump, sdk_script, stderr, transfer_ok, LocalCluster};

const CLUSTER: &[&str] = &["--user", "U", "--password", "P"];
const DEST: &[&str] = &["-U", "U", "-P", "P"];

/// The keys of a backup's rows.
fn backup_keys(dir: &std::path::Path) -> Vec<String> {
    let mut keys = Vec::new();
    for f in data_files(dir) {
        let db = rusqlite::Connection::open(&f).unwrap();
        let mut q = db.prepare("SELECT key FROM cbb_msg").unwrap();
        let rows = q.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
        keys.extend(rows.map(|k| String::from_utf8(k.unwrap()).unwrap()));
    }
    keys.sort();
    keys
}

/// Runs the SDK's docs.py: the JSON object it prints.
fn sdk_docs(c: &LocalCluster, mode: &str, keys: &[String]) -> serde_json::Value {
    let url = format!("couchbase://{}", c.nodes[0].kv);
    let mut args = vec![url.as_str(), "U", "P", mode];
    args.extend(keys.iter().map(String::as_str));
    let (ok, out, err) = sdk_script("docs.py", &args);
    assert!(ok, "docs.py {mode} failed:\n{err}\n{out}");
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

/// A restore's summary (`--json`): mutations (written, skipped).
fn restore(backup: &str, c: &LocalCluster, extra: &[&str]) -> (u64, u64) {
    let spec = c.spec();
    let mut args = vec!["transfer", backup, spec.as_str()];
    args.extend_from_slice(DEST);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--json", "-q"]);
    let out = pump(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &s["counts"]["mutations"];
    (
        m["written"].as_u64().unwrap(),
        m["skipped"].as_u64().unwrap(),
    )
}

#[test]
fn a_restore_over_newer_revisions_keeps_them_and_counts_each_as_skipped() {
    let (a, c) = (
        LocalCluster::up(1, 0, CLUSTER),
        LocalCluster::up(1, 0, CLUSTER),
    );
    transfer_ok("gen:max-items=20,json=1", &a.spec(), DEST);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("a");
    let backup = backup.to_str().unwrap();
    transfer_ok(&a.spec(), backup, &["-u", "U", "-p", "P"]);
    let keys = backup_keys(std::path::Path::new(backup));
    assert_eq!(keys.len(), 20);
    // Five of the keys are written twice by the SDK into the destination first: revision 2,
    // newer than the backup's revision 1.
    let newer: Vec<String> = keys[..5].to_vec();
    sdk_docs(&c, "upsert", &newer);
    let before = c.contents_with(&["-u", "U", "-p", "P"]);
    assert_eq!(before.len(), 5);

    assert_eq!(restore(backup, &c, &[]), (15, 5), "written, skipped");
    let got = sdk_docs(&c, "get", &keys);
    for k in &newer {
        assert_eq!(got[k]["by"], "sdk", "{k}: {}", got[k]);
        assert_eq!(got[k]["n"], 2, "{k}");
    }
    // The others are the backup's, cas and all: equal to the source cluster's copy.
    let (in_a, in_c) = (
        a.contents_with(&["-u", "U", "-p", "P"]),
        c.contents_with(&["-u", "U", "-p", "P"]),
    );
    for k in &keys[5..] {
        assert!(
            got[k].is_object() && got[k]["by"].is_null(),
            "{k}: {}",
            got[k]
        );
        assert_eq!(in_a[k], in_c[k], "{k}");
    }
    // Again: every item is as new here as in the backup, so nothing is written.
    assert_eq!(restore(backup, &c, &[]), (0, 20));
    // Without conflict resolution, plain SETs write over the newer copies.
    assert_eq!(restore(backup, &c, &["-x", "conflict_resolve=0"]), (20, 0));
    let got = sdk_docs(&c, "get", &newer);
    for k in &newer {
        assert!(got[k]["by"].is_null(), "{k}: {}", got[k]);
    }
}
