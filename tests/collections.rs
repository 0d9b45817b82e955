//! Collections end to end, judged by the official Python SDK (tests/sdk/scopes.py): scopes and
//! collections created and written by the SDK on one cluster, moved by the pump through a
//! backup or straight to another cluster, and read back by the SDK from their own collections.

mod common;

use std::path::Path;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    create_collection as create, csv_rows, export_cluster, export_file, load_into, pump,
    sdk_script, transfer_ok, Export, LocalCluster, Memcached,
};

const AUTH: [&str; 4] = ["--user", "U", "--password", "P"];

fn up() -> LocalCluster {
    LocalCluster::up(2, 0, &[&["--replicas", "1"][..], &AUTH[..]].concat())
}

fn connstr(c: &LocalCluster) -> String {
    format!("couchbase://{}", c.nodes[0].kv)
}

/// Runs tests/sdk/scopes.py; panics with its output when it fails.
fn sdk(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = sdk_script("scopes.py", args);
    assert!(ok, "scopes.py {args:?} failed:\n{err}\n{out}");
    serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary line ({e}): {out}"))
}

/// The SDK writes scope s1 (c1, c2) and _default documents on `c`; EXPECT.json in `dir`.
fn sdk_write(c: &LocalCluster, dir: &Path) -> String {
    let expect = dir.join("expect.json").display().to_string();
    sdk(&["write", &connstr(c), "U", "P", "default", &expect]);
    expect
}

fn sdk_read(c: &LocalCluster, expect: &str, extra: &[&str]) -> u64 {
    let conn = connstr(c);
    let mut args = vec!["read", &conn[..], "U", "P", "default", expect];
    args.extend_from_slice(extra);
    let v = sdk(&args);
    v["checks"].as_u64().unwrap_or(0)
}

const SRC: [&str; 4] = ["-u", "U", "-p", "P"];
const DEST: [&str; 4] = ["-U", "U", "-P", "P"];
const BOTH: [&str; 8] = ["-u", "U", "-p", "P", "-U", "U", "-P", "P"];

fn with(base: &[&'static str], more: &[&'static str]) -> Vec<&'static str> {
    [base, more].concat()
}

#[test]
fn every_collection_goes_through_a_backup_and_straight_to_another_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    let expect = sdk_write(&a, dir.path());
    // A -> backup -> B (B has no s1 yet).
    let backup = dir.path().join("backup");
    transfer_ok(&a.spec(), backup.to_str().unwrap(), &SRC);
    let b = up();
    transfer_ok(backup.to_str().unwrap(), &b.spec(), &DEST);
    let checks = sdk_read(&b, &expect, &[]);
    // 3 collections x (38 documents + 3 removed)
    assert!(checks >= 3 * 41, "{checks} checks");
    // A -> B2 directly.
    let b2 = up();
    transfer_ok(&a.spec(), &b2.spec(), &BOTH);
    assert!(sdk_read(&b2, &expect, &[]) >= 3 * 41);
    // The backup: the default collection's rows in cbb_msg, the others' in
    // cbb_collection_msg, and the manifest beside them.
    let files = pump_sources::backup::data_files(&backup, "default").unwrap();
    let db = rusqlite::Connection::open(&files[0]).unwrap();
    let default_rows: i64 = db
        .query_row("SELECT count(*) FROM cbb_msg WHERE cmd = 87", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(default_rows, 38);
    let others: i64 = db
        .query_row(
            "SELECT count(DISTINCT collection_id) FROM cbb_collection_msg",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(others, 2);
    let node_dir = files[0].parent().unwrap();
    let cj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node_dir.join("collections.json")).unwrap()).unwrap();
    let scopes = cj["manifest"]["scopes"].as_array().unwrap();
    assert!(scopes.iter().any(|s| s["name"] == "s1"), "{cj}");
}

#[test]
fn map_data_and_include_data_move_what_they_name_where_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    let expect = sdk_write(&a, dir.path());
    let backup = dir.path().join("backup");
    transfer_ok(&a.spec(), backup.to_str().unwrap(), &SRC);
    // --map-data: s1.c1 lands in s2.c9 (created), the rest where it was.
    let b = up();
    let args = with(&DEST, &["--map-data", "default.s1.c1=default.s2.c9"]);
    transfer_ok(backup.to_str().unwrap(), &b.spec(), &args);
    sdk_read(&b, &expect, &["--map", "s1.c1=s2.c9"]);
    // --include-data: only scope s1, straight from the cluster (a DCP stream filter).
    let c = up();
    let args = with(&BOTH, &["--include-data", "default.s1"]);
    transfer_ok(&a.spec(), &c.spec(), &args);
    sdk_read(&c, &expect, &["--only", "s1"]);
    // And from the backup (the channel's filter).
    let d = up();
    let args = with(&DEST, &["--include-data", "default.s1"]);
    transfer_ok(backup.to_str().unwrap(), &d.spec(), &args);
    sdk_read(&d, &expect, &["--only", "s1"]);
}

#[test]
fn bad_collection_options_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (args, why) in [
        (
            vec!["--map-data", "default.s1=default.s2,default.s1=default.s3"],
            "mapped twice",
        ),
        (
            vec!["--map-data", "default.s1=default"],
            "a scope to a bucket",
        ),
        (
            vec!["--include-data", "default", "--exclude-data", "default.s1"],
            "together",
        ),
    ] {
        let mut a = vec!["transfer", "gen:max-items=10", out.to_str().unwrap()];
        a.extend(args);
        let o = pump(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(why), "{err}");
    }
    assert!(!out.exists(), "nothing written");
    // A map to a bucket the destination is not.
    let b = up();
    let a = up();
    sdk_write(&a, dir.path());
    let (sa, sb) = (a.spec(), b.spec());
    let mut full = vec!["transfer", &sa[..], &sb[..]];
    full.extend(with(&BOTH, &["--map-data", "default=nosuch"]));
    let o = pump(&full);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("\"nosuch\""), "{err}");
    let items = b.contents_with(&["-u", "U", "-p", "P"]);
    assert!(items.is_empty(), "written: {}", items.len());
}

#[test]
fn a_collection_dropped_while_the_stream_runs_stops_and_the_backup_records_the_drop() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    let expect = sdk_write(&a, dir.path());
    // 3,000 more items of 10 KB in s1.c2 (the default collection of gen:, mapped there): more
    // than the DCP flow-control window (1 MiB), so the stream is behind when the drop comes.
    let load = with(
        &DEST,
        &["--map-data", "default._default._default=default.s1.c2"],
    );
    transfer_ok(
        "gen:max-items=3000,min-value-size=10000,prefix=bulk-",
        &a.spec(),
        &load,
    );
    let backup = dir.path().join("backup");
    // A backup held to 1,000 items/s; s1.c2 dropped a second in.
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "transfer",
            &a.spec(),
            backup.to_str().unwrap(),
            "--rate",
            "1000",
            "-t",
            "1",
            "-q",
        ])
        .args(SRC)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let (status, body) = a.rest(
        "DELETE",
        "/pools/default/buckets/default/scopes/s1/collections/c2",
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(run.wait().unwrap().success());
    let files = pump_sources::backup::data_files(&backup, "default").unwrap();
    let node_dir = files[0].parent().unwrap();
    let cj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node_dir.join("collections.json")).unwrap()).unwrap();
    // The drop is recorded: c2 (id 10) among the ids, dropped, and out of the manifest.
    assert_eq!(cj["ids"]["10"], serde_json::json!(["s1", "c2"]), "{cj}");
    assert_eq!(cj["dropped"], serde_json::json!([10]), "{cj}");
    let names: Vec<&str> = cj["manifest"]["scopes"][1]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["c1"]);
    // Its items stopped: fewer rows than it held.
    let c2_rows: i64 = files
        .iter()
        .map(|f| {
            rusqlite::Connection::open(f)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM cbb_collection_msg WHERE collection_id = 10",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0)
        })
        .sum();
    eprintln!("rows of s1.c2 in the backup: {c2_rows} of 3,041");
    assert!(c2_rows < 3000 + 41, "{c2_rows} rows of s1.c2");
    // Restored: every document of the other collections, nothing of s1.c2 (not created).
    let b = up();
    transfer_ok(backup.to_str().unwrap(), &b.spec(), &DEST);
    sdk_read(&b, &expect, &["--skip", "s1.c2"]);
}

#[test]
fn a_backup_of_the_default_collection_alone_is_cbbackups_format() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    transfer_ok("gen:max-items=100", backup.to_str().unwrap(), &[]);
    let files = pump_sources::backup::data_files(&backup, "default").unwrap();
    let db = rusqlite::Connection::open(&files[0]).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, ["cbb_msg"]);
    assert!(!files[0].parent().unwrap().join("collections.json").exists());
}

#[test]
fn memcached_takes_the_default_collection_only_and_refuses_another_by_name_first() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    sdk_write(&a, dir.path());
    let mc = Memcached::start(&[]);
    let (src, dst) = (a.spec(), mc.url());
    let mut args = vec!["transfer", &src[..], &dst[..]];
    args.extend(SRC);
    let o = pump(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("collection s1.c1 and 1 more") && err.contains("default collection only"),
        "{err}"
    );
    assert_eq!(mc.text().stat("curr_items"), 0, "nothing written");
    // Left out: the default collection's 38 documents go.
    transfer_ok(&src, &dst, &with(&SRC, &["--exclude-data", "default.s1"]));
    assert_eq!(mc.text().stat("curr_items"), 38);
    // Or mapped into the default collection.
    let mc2 = Memcached::start(&[]);
    transfer_ok(
        &src,
        &mc2.url(),
        &with(
            &SRC,
            &[
                "--include-data",
                "default.s1.c1",
                "--map-data",
                "default.s1.c1=default._default._default",
            ],
        ),
    );
    let got = mc2.text().get_many(&["same-key".to_string()]);
    assert!(String::from_utf8_lossy(&got[0].as_ref().unwrap().value).contains("s1.c1"));
}

/// `pump transfer C csv:FILE` with `extra`, read back.
fn export(c: &LocalCluster, extra: &[&str]) -> Export {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("all.csv");
    let args = [&SRC[..], extra].concat();
    transfer_ok(&c.spec(), &format!("csv:{}", csv.display()), &args);
    export_file(&csv)
}

fn per_collection(e: &Export) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for (place, _) in e.keys() {
        *n.entry(place.clone()).or_insert(0) += 1;
    }
    n
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

#[test]
fn csv_and_stdout_name_scope_and_collection_and_csv_reads_them_back_into_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    let expect = sdk_write(&a, dir.path());
    let csv = dir.path().join("a.csv");
    transfer_ok(&a.spec(), &format!("csv:{}", csv.display()), &SRC);
    let rows = csv_rows(&csv);
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
            "dtype",
            "scope",
            "collection"
        ]
    );
    let e = export_file(&csv);
    assert_eq!(
        per_collection(&e),
        counts(&[("_default._default", 38), ("s1.c1", 38), ("s1.c2", 38)])
    );
    // The same key in each collection, each with its own value.
    for place in ["s1.c1", "s1.c2"] {
        let (value, _) = &e[&(place.to_string(), "same-key".to_string())];
        assert!(value.contains(place), "{place}: {value}");
    }
    // Read back into a cluster without s1: the SDK finds every document in its collection.
    let b = up();
    transfer_ok(&format!("csv:{}", csv.display()), &b.spec(), &DEST);
    assert!(sdk_read(&b, &expect, &[]) >= 3 * 41);
    // stdout: a line outside the default collection ends with its scope and collection.
    let (src, dst) = (a.spec(), "stdout:".to_string());
    let mut args = vec!["transfer", &src[..], &dst[..], "-q", "-k", "^same-key$"];
    args.extend(SRC);
    let o = pump(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut heads: Vec<&str> = out.lines().filter(|l| l.starts_with("set ")).collect();
    heads.sort_unstable();
    assert_eq!(heads.len(), 3, "{out}");
    assert!(heads.iter().any(|l| l.ends_with(" s1.c1")), "{out}");
    assert!(heads.iter().any(|l| l.ends_with(" s1.c2")), "{out}");
    assert!(
        heads
            .iter()
            .any(|l| !l.ends_with(" s1.c1") && !l.ends_with(" s1.c2") && l.split(' ').count() == 6),
        "the default collection's line has no suffix: {out}"
    );
}

#[test]
fn a_collection_appearing_in_the_middle_of_a_run_is_created_on_the_destination() {
    // A CSV file whose first 3,000 rows are of the default collection and whose last 50 are
    // of s9.c9: in batches of 10, the sink starts (and maps the collections it knows) long
    // before the csv source reaches s9.c9.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("late.csv");
    let mut text =
        String::from("id,flags,expiration,cas,value,rev,vbid,dtype,scope,collection\r\n");
    for i in 0..3000 {
        text.push_str(&format!("d{i},0,0,0,v{i},,65535,0,,\r\n"));
    }
    for i in 0..50 {
        text.push_str(&format!("late{i},0,0,0,w{i},,65535,0,s9,c9\r\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let b = up();
    let (spec, bspec) = (format!("csv:{}", csv.display()), b.spec());
    let mut all = vec![
        "transfer",
        &spec[..],
        &bspec[..],
        "-x",
        "batch_max_size=10",
        "-v",
    ];
    all.extend(DEST);
    let o = pump(&all);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("collection s9.c9") && err.contains("appeared during the run"),
        "created during the run, not before: {err}"
    );
    let got = export(&b, &[]);
    assert_eq!(
        per_collection(&got),
        counts(&[("_default._default", 3000), ("s9.c9", 50)])
    );
    assert_eq!(got[&("s9.c9".to_string(), "late7".to_string())].0, "b'w7'");
}

#[test]
fn key_and_vbucket_filters_keep_each_item_in_its_collection() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    sdk_write(&a, dir.path());
    let all = export(&a, &[]);
    // -k into another cluster: the three same-keys, each in its own collection.
    let b = up();
    transfer_ok(&a.spec(), &b.spec(), &with(&BOTH, &["-k", "^same-key$"]));
    let got = export(&b, &[]);
    let want: Export = all
        .iter()
        .filter(|((_, k), _)| k == "same-key")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (value, _)) in &want {
        assert_eq!(&got[k].0, value, "{k:?}");
    }
    // -l: the items of those vbuckets, of every collection, and no others.
    let half = export(&a, &["-l", "0-511"]);
    let want: Export = all
        .iter()
        .filter(|(_, (_, vb))| *vb <= 511)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(half.len() < all.len() && !half.is_empty());
    assert_eq!(half, want);
    assert_eq!(
        per_collection(&half).len(),
        3,
        "{:?}",
        per_collection(&half)
    );
}

#[test]
fn a_dcp_transfer_stopped_midway_resumes_from_its_checkpoint_with_every_collection() {
    let dir = tempfile::tempdir().unwrap();
    let a = up();
    sdk_write(&a, dir.path());
    // 2,000 more items in s1.c2 and 1,000 in the default collection.
    let load = with(
        &DEST,
        &["--map-data", "default._default._default=default.s1.c2"],
    );
    transfer_ok(
        "gen:max-items=2000,min-value-size=2000,prefix=bulk-",
        &a.spec(),
        &load,
    );
    transfer_ok(
        "gen:max-items=1000,min-value-size=2000,prefix=dflt-",
        &a.spec(),
        &DEST,
    );
    let original = export(&a, &[]);
    assert_eq!(original.len(), 3 * 38 + 3000);
    let b = up();
    let checkpoint = dir.path().join("ckpt.json");
    let x = format!("checkpoint={},batch_max_size=20", checkpoint.display());
    let (src, dst) = (a.spec(), b.spec());
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "transfer", &src, &dst, "-t", "1", "-q", "--rate", "1000", "-x", &x,
        ])
        .args(BOTH)
        .spawn()
        .unwrap();
    let progress = || -> u64 {
        std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["vbuckets"]
                    .as_object()
                    .map(|m| m.values().filter_map(|p| p["seqno"].as_u64()).sum())
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress() < 200 {
        assert!(
            Instant::now() < deadline,
            "no progress checkpointed in 60 s"
        );
        assert!(
            run.try_wait().unwrap().is_none(),
            "the transfer ended before it was stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Stopped midway, hard: its own process id.
    run.kill().unwrap();
    run.wait().unwrap();
    let partial = export(&b, &[]).len();
    assert!(
        partial < original.len(),
        "{partial} items already copied: not midway"
    );
    let mut all = vec!["transfer", &src[..], &dst[..], "-x", &x[..]];
    all.extend(BOTH);
    let o = pump(&all);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let received: usize = err
        .split_whitespace()
        .zip(err.split_whitespace().skip(1))
        .find(|(_, w)| *w == "received,")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no received count in: {err}"));
    assert!(
        received < original.len(),
        "the rerun resumed ({received} of {} items streamed again): {err}",
        original.len()
    );
    // Nothing lost: every item, in its collection, equal.
    let copied = export(&b, &[]);
    assert_eq!(per_collection(&copied), per_collection(&original));
    for (k, (value, _)) in &original {
        assert_eq!(copied.get(k).map(|v| &v.0), Some(value), "{k:?}");
    }
}

#[test]
fn recover_brings_back_every_collection_of_the_lost_vbuckets_mapped_by_name() {
    let from = LocalCluster::up(2, 0, &[]);
    let to = LocalCluster::up(3, 0, &["--recovery-api", "shipped"]);
    // The same names on both, under other ids: `to` made s0.c0 first.
    create(&to, "s0", "c0");
    for c in [&from, &to] {
        create(c, "s1", "c1");
        load_into(c, 3000, "d-", "_default", "_default");
        load_into(c, 3000, "c1-", "s1", "c1");
    }
    let ids = |c: &LocalCluster| {
        let (_, body) = c.rest("GET", "/pools/default/buckets/default/scopes", "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "s1")
            .map(|s| s["collections"][0]["uid"].clone())
            .unwrap()
    };
    assert_ne!(ids(&from), ids(&to), "the test needs ids that differ");
    let want = export_cluster(&from, &[]);
    assert_eq!(
        per_collection(&want),
        counts(&[("_default._default", 3000), ("s1.c1", 3000)])
    );
    to.failover(2);
    let map = to.map();
    let lost = (0..map.len()).filter(|vb| map[*vb][0] < 0).count();
    assert!(lost > 200, "a third of the vbuckets lost, not {lost}");
    let out = pump(&["recover", &from.url(), &to.url()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Every item back, each in its own collection.
    assert_eq!(export_cluster(&to, &[]), want);
}

#[test]
fn a_collection_created_on_the_source_after_a_run_comes_with_the_next_run_from_its_checkpoint() {
    // A DCP run streams each vbucket to the seqno it had at the start: a collection created
    // later (its system event and items after that seqno) comes with the next run from the
    // checkpoint, created on the destination by name before its items.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (LocalCluster::up(2, 0, &[]), LocalCluster::up(2, 0, &[]));
    // The destination's ids differ from the source's: it made s0.c0 first.
    create(&b, "s0", "c0");
    load_into(&a, 500, "d-", "_default", "_default");
    let x = format!("checkpoint={}", dir.path().join("ckpt.json").display());
    transfer_ok(&a.spec(), &b.spec(), &["-x", &x]);
    create(&a, "s5", "c5");
    load_into(&a, 300, "n-", "s5", "c5");
    let o = pump(&["transfer", &a.spec(), &b.spec(), "-x", &x, "-v"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let received: usize = err
        .split_whitespace()
        .zip(err.split_whitespace().skip(1))
        .find(|(_, w)| *w == "received,")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no received count in: {err}"));
    assert_eq!(received, 300, "only the new collection's items: {err}");
    let got = export_cluster(&b, &[]);
    assert_eq!(
        per_collection(&got),
        counts(&[("_default._default", 500), ("s5.c5", 300)])
    );
    assert_eq!(got, export_cluster(&a, &[]));
}

#[test]
fn a_tap_sink_refuses_by_name_a_collection_the_node_lacks_before_writing_anything() {
    let (a, b) = (LocalCluster::up(1, 0, &[]), LocalCluster::up(1, 0, &[]));
    create(&a, "s1", "c1");
    load_into(&a, 100, "d-", "_default", "_default");
    load_into(&a, 100, "c1-", "s1", "c1");
    let tap = format!("tap://{}", b.nodes[0].kv);
    let o = pump(&["transfer", &a.spec(), &tap]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the source holds collection s1.c1")
            && err.contains("has no collection s1.c1")
            && err.contains("create it on the destination first"),
        "{err}"
    );
    assert!(export_cluster(&b, &[]).is_empty(), "nothing written");
}

#[test]
fn a_backup_whose_collections_json_does_not_parse_or_lacks_a_rows_id_is_refused_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalCluster::up(1, 0, &[]);
    create(&a, "s1", "c1");
    load_into(&a, 200, "c1-", "s1", "c1");
    let backup = dir.path().join("backup");
    transfer_ok(&a.spec(), backup.to_str().unwrap(), &[]);
    let files = pump_sources::backup::data_files(&backup, "default").unwrap();
    let cj = files[0].parent().unwrap().join("collections.json");
    let good = std::fs::read(&cj).unwrap();
    let restore = |what: &str| -> String {
        let b = LocalCluster::up(1, 0, &[]);
        let o = pump(&["transfer", backup.to_str().unwrap(), &b.spec()]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            export_cluster(&b, &[]).is_empty(),
            "{what}: nothing written"
        );
        err
    };
    // A manifest cut short: the file is named.
    std::fs::write(&cj, &good[..good.len() / 2]).unwrap();
    let err = restore("cut");
    assert!(
        err.contains("collections.json") && err.contains("not JSON"),
        "{err}"
    );
    // A manifest that parses as JSON but not as a manifest (a uid that is not hex).
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["manifest"]["uid"] = serde_json::json!("zz");
    std::fs::write(&cj, v.to_string()).unwrap();
    let err = restore("bad uid");
    assert!(err.contains("collections.json: the manifest:"), "{err}");
    // Rows of a collection id the file never names.
    std::fs::write(&cj, &good).unwrap();
    for f in &files {
        rusqlite::Connection::open(f)
            .unwrap()
            .execute("UPDATE cbb_collection_msg SET collection_id = 119", [])
            .unwrap();
    }
    let err = restore("unknown id");
    assert!(
        err.contains("collection id 0x77 is not named in the run's collections.json"),
        "{err}"
    );
}
