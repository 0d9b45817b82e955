//! End to end: backups an operator can trust: diff runs from stored positions, a rollback
//! restreaming one vbucket, a backup killed at half and resumed, `info`, `examine`, `verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{files_named, pump, stderr, transfer_ok, LocalCluster};
use rusqlite::Connection;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `pump info BACKUP --json`.
fn info(backup: &Path) -> serde_json::Value {
    let out = pump(&["info", s(backup), "--json"]);
    assert!(out.status.success(), "info: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("info --json prints JSON")
}

/// `pump verify A B` -> (exit code, stdout, stderr).
fn verify(a: &str, b: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["verify", a, b];
    args.extend_from_slice(extra);
    let out = pump(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// Every row of every data file (final or temporary name) under `dir`: (vbucket, seqno, key).
fn rows(dir: &Path) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    for f in files_named(dir, &|n| n.contains(".cbb") && !n.ends_with("-journal")) {
        // Opened for writing: a hot journal left by a kill is rolled back, as a resume does.
        let db = Connection::open(&f).unwrap();
        let mut st = db
            .prepare("SELECT vbucket_id, seqno, key FROM cbb_msg")
            .unwrap();
        let r = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        out.extend(r.map(Result::unwrap));
    }
    out
}

/// The runs of a backup as `info --json` lists them.
fn runs(backup: &Path) -> Vec<serde_json::Value> {
    info(backup)["runs"].as_array().unwrap().clone()
}

#[test]
fn a_diff_run_holds_only_what_changed_and_full_then_diff_restores_equal() {
    let a = LocalCluster::up(2, 0, &[]);
    let b = LocalCluster::up(2, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok(
        "gen:max-items=10000,min-value-size=30,prefix=k",
        &a.spec(),
        &[],
    );
    transfer_ok(&a.spec(), s(&backup), &[]);
    // 10% of the keys change, with other values and flags.
    transfer_ok(
        "gen:max-items=1000,min-value-size=50,prefix=k,flags=9",
        &a.spec(),
        &[],
    );
    let out = pump(&["transfer", &a.spec(), s(&backup), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("diff run"), "{}", stderr(&out));
    let r = runs(&backup);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0]["kind"].as_str(), r[1]["kind"].as_str()),
        (Some("full"), Some("diff"))
    );
    assert_eq!(r[0]["mutations"], 10000);
    // The diff run holds the changed items and nothing else.
    assert_eq!(r[1]["mutations"], 1000);
    assert_eq!(r[1]["state"], "complete");
    let diff_dir = PathBuf::from(r[1]["path"].as_str().unwrap());
    let keys: std::collections::BTreeSet<Vec<u8>> =
        rows(&diff_dir).into_iter().map(|(_, _, k)| k).collect();
    let want: std::collections::BTreeSet<Vec<u8>> =
        (0..1000).map(|i| format!("k{i}").into_bytes()).collect();
    assert_eq!(keys, want);
    // A third run with no change holds nothing.
    transfer_ok(&a.spec(), s(&backup), &[]);
    assert_eq!(runs(&backup)[2]["mutations"], 0);
    // Full, then the diffs, restored into an empty cluster: equal to the source.
    transfer_ok(s(&backup), &b.spec(), &[]);
    let (code, out, err) = verify(&a.spec(), &b.spec(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("equal: A and B hold the same 10000 items"),
        "{out}"
    );
    // -m full starts a new root; -m accu diffs against the full run.
    transfer_ok(&a.spec(), s(&backup), &["-m", "accu"]);
    let r = runs(&backup);
    assert_eq!(r.last().unwrap()["kind"], "accu");
    assert_eq!(
        r.last().unwrap()["base"],
        r[0]["root"].as_str().unwrap().to_string() + "/" + r[0]["run"].as_str().unwrap()
    );
    assert_eq!(r.last().unwrap()["mutations"], 1000);
    transfer_ok(&a.spec(), s(&backup), &["-m", "full"]);
    let r = runs(&backup);
    assert_ne!(r.last().unwrap()["root"], r[0]["root"]);
    assert_eq!(r.last().unwrap()["mutations"], 10000);
}

#[test]
fn a_source_without_positions_writes_a_new_full_run_not_a_diff_of_everything() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok("gen:max-items=500", s(&backup), &[]);
    transfer_ok("gen:max-items=500", s(&backup), &[]);
    let r = runs(&backup);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r["kind"] == "full"), "{r:?}");
    assert_ne!(r[0]["root"], r[1]["root"]);
    let out = pump(&["transfer", "gen:max-items=5", s(&backup), "-m", "diff"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keeps no positions"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_rolled_back_vbucket_alone_is_restreamed_and_the_restore_is_still_equal() {
    let a = LocalCluster::up(1, 0, &["--test-hooks"]);
    let b = LocalCluster::up(1, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok("gen:max-items=3000,prefix=a", &a.spec(), &[]);
    // The vbucket that rolls back, and where: after the a-keys it holds.
    let vb = pump_protocol::vbucket_of(b"a0", 1024);
    let at = (0..3000)
        .filter(|i| pump_protocol::vbucket_of(format!("a{i}").as_bytes(), 1024) == vb)
        .count();
    transfer_ok("gen:max-items=3000,prefix=b", &a.spec(), &[]);
    transfer_ok(&a.spec(), s(&backup), &[]);
    let (status, body) = a.post("/pump/rollback", &format!("vbucket={vb}&seqno={at}"));
    assert_eq!(status, 200, "{body}");
    // The rollback happened: the b-keys of that vbucket are gone from the node.
    let gone: Vec<String> = (0..3000)
        .map(|i| format!("b{i}"))
        .filter(|k| pump_protocol::vbucket_of(k.as_bytes(), 1024) == vb)
        .collect();
    assert!(!gone.is_empty());
    let now = a.contents();
    assert!(gone.iter().all(|k| !now.contains_key(k)));
    assert_eq!(now.len(), 6000 - gone.len());
    transfer_ok("gen:max-items=300,prefix=c", &a.spec(), &[]);
    let out = pump(&["transfer", &a.spec(), s(&backup), "-q"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // Said, for that vbucket only.
    assert!(err.contains(&format!("vbucket {vb} rolled back")), "{err}");
    assert_eq!(err.matches("rolled back").count(), 1, "{err}");
    let r = runs(&backup);
    let diff = r.last().unwrap();
    assert_eq!(diff["kind"], "diff");
    assert_eq!(
        diff["rollbacks"],
        serde_json::json!([{"vbucket": vb, "seqno": at, "before_file": 0}])
    );
    // Only the changes: the c-keys (those of the rolled-back vbucket came from its restream).
    assert_eq!(diff["mutations"], 300);
    // A restore leaves out the full run's rows of that vbucket past the rollback.
    transfer_ok(s(&backup), &b.spec(), &[]);
    let (code, out, err) = verify(&a.spec(), &b.spec(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("same {} items", 6300 - gone.len())),
        "{out}"
    );
    let text = pump(&["info", s(&backup)]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains(&format!("vbucket {vb} rolled back to seqno {at}")),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

/// Sum of the confirmed seqnos of a run's positions file (a fresh cluster: one seqno an item).
fn confirmed(positions: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(positions) else {
        return 0;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return 0;
    };
    v["vbuckets"]
        .as_object()
        .map(|m| m.values().map(|p| p["seqno"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

#[test]
fn a_backup_killed_at_half_is_refused_then_resumed_by_the_same_command_and_restores_every_item_once(
) {
    use std::os::unix::process::ExitStatusExt;
    const N: u64 = 60_000;
    let a = LocalCluster::up(2, 0, &[]);
    let b = LocalCluster::up(2, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok(
        &format!("gen:max-items={N},min-value-size=20"),
        &a.spec(),
        &[],
    );
    // Held to 20,000 items/s: three seconds, killed once half is confirmed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(["transfer", &a.spec(), s(&backup), "--rate", "20k", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let positions = loop {
        assert!(Instant::now() < deadline, "the backup never reached half");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before half"
        );
        let found = if backup.exists() {
            files_named(&backup, &|n| n == "pump-positions.json")
        } else {
            Vec::new()
        };
        if let Some(p) = found.first() {
            if confirmed(p) >= N / 2 {
                break p.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL, by pid
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed, not ended: {status:?}");
    let node_dir = positions.parent().unwrap().to_path_buf();
    assert!(!node_dir.join("pump-complete.json").exists());
    let held = rows(&backup).len() as u64;
    assert!(
        (N / 2..N).contains(&held),
        "the kill came mid-run: {held} of {N} rows"
    );
    // The killed, not-rerun backup is refused by name.
    let out = pump(&["transfer", s(&backup), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("incomplete") && err.contains(s(&node_dir)) && err.contains("--allow-partial"),
        "{err}"
    );
    // The same command again: completes the same run from what was confirmed.
    let out = pump(&["transfer", &a.spec(), s(&backup), "--json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming the incomplete full run"),
        "{}",
        stderr(&out)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = summary["counts"]["mutations"]["written"].as_u64().unwrap();
    assert_eq!(
        written,
        N - held,
        "only what the killed run had not confirmed"
    );
    assert_eq!(summary["runs"][0]["resumed"], true);
    assert_eq!(summary["runs"][0]["complete"], true);
    assert_eq!(summary["runs"][0]["path"], s(&node_dir));
    // Every item once, nothing left under a temporary name, one run.
    let all = rows(&backup);
    let keys: std::collections::HashSet<&Vec<u8>> = all.iter().map(|(_, _, k)| k).collect();
    assert_eq!((all.len() as u64, keys.len() as u64), (N, N));
    assert!(files_named(&backup, &|n| n.ends_with(".partial")
        || n.ends_with("-journal"))
    .is_empty());
    let r = runs(&backup);
    assert_eq!(
        (r.len(), r[0]["state"].as_str(), r[0]["mutations"].as_u64()),
        (1, Some("complete"), Some(N))
    );
    assert_eq!(r[0]["attempts"], 2);
    transfer_ok(s(&backup), &b.spec(), &[]);
    let (code, out, err) = verify(&a.spec(), &b.spec(), &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn allow_partial_restores_what_an_interrupted_backup_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let backup = dir.path().join("bk");
    // A source that fails at its 1501st row: the backup is incomplete.
    let mut text = String::from("id,flags,expiration,cas,value,rev,vbid,dtype\n");
    for i in 0..1500 {
        text.push_str(&format!("k{i},0,0,1,v{i},,0,0\n"));
    }
    text.push_str("bad,notanumber,0,1,v,,0,0\n");
    std::fs::write(&input, text).unwrap();
    let out = pump(&[
        "transfer",
        &format!("csv:{}", input.display()),
        s(&backup),
        "-x",
        "batch_max_size=100",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = pump(&["transfer", s(&backup), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1), "refused: {}", stderr(&out));
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
    let out = pump(&["transfer", s(&backup), "blackhole:", "--allow-partial"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1500 written"), "{}", stderr(&out));
}

#[test]
fn info_and_examine_say_what_the_data_files_hold() {
    let a = LocalCluster::up(1, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    transfer_ok(
        "gen:max-items=2000,min-value-size=10,prefix=k",
        &a.spec(),
        &[],
    );
    transfer_ok(&a.spec(), s(&backup), &[]);
    transfer_ok(
        "gen:max-items=10,min-value-size=25,prefix=k,flags=5,expiry=4000000000",
        &a.spec(),
        &[],
    );
    transfer_ok(&a.spec(), s(&backup), &[]);
    let v = info(&backup);
    let r = v["runs"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    // Checked against the data files, read with SQLite.
    for run in r {
        let node_dir = PathBuf::from(run["path"].as_str().unwrap());
        let db = Connection::open(node_dir.join("data-0000.cbb")).unwrap();
        let (n, bytes): (u64, u64) = db
            .query_row(
                "SELECT count(*), sum(length(key) + length(val)) FROM cbb_msg",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (run["mutations"].as_u64(), run["bytes"].as_u64()),
            (Some(n), Some(bytes))
        );
        let mut st = db
            .prepare("SELECT vbucket_id, count(*), min(seqno), max(seqno) FROM cbb_msg GROUP BY vbucket_id")
            .unwrap();
        let per_vb: Vec<(u64, u64, u64, u64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(run["vbucket_count"].as_u64(), Some(per_vb.len() as u64));
        for (vb, count, lo, hi) in per_vb {
            let got = &run["vbuckets"][vb.to_string()];
            assert_eq!(got["mutations"].as_u64(), Some(count));
            assert_eq!(got["seqnos"], serde_json::json!([lo, hi]));
        }
        assert_eq!(run["source"], a.spec());
        assert_eq!(run["state"], "complete");
        assert!(run["started"].as_str().unwrap().ends_with('Z'));
        assert!(run.get("collections").is_some());
    }
    // k3 changed between the runs: two versions, the diff's applied last.
    let out = pump(&["examine", s(&backup), "k3", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions = e["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["value"], "0123456789");
    assert_eq!(
        (
            versions[0]["flags"].as_u64(),
            versions[0]["expiry"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(versions[1]["value"], "0123456789012345678901234");
    assert_eq!(
        (
            versions[1]["flags"].as_u64(),
            versions[1]["expiry"].as_u64()
        ),
        (Some(5), Some(4_000_000_000))
    );
    assert_eq!(versions[1]["op"], "mutation");
    assert!(versions[1]["seqno"].as_u64() > versions[0]["seqno"].as_u64());
    assert_eq!(versions[1]["restored"], true);
    assert!(versions[0].get("restored").is_none());
    // A key that is not there: exit 1.
    let out = pump(&["examine", s(&backup), "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn verify_finds_one_changed_value_among_a_million_items_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    let source = "gen:max-items=1000000,min-value-size=20,prefix=k";
    transfer_ok(source, s(&backup), &[]);
    let file = files_named(&backup, &|n| n == "data-0000.cbb")[0].clone();
    let db = Connection::open(&file).unwrap();
    let changed = db
        .execute(
            "UPDATE cbb_msg SET val = CAST('changed!' AS BLOB) WHERE key = CAST('k765432' AS BLOB)",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let (code, out, err) = verify(source, s(&backup), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("different: k765432: value"), "{out}");
    assert!(
        out.contains("differ: 0 missing in B, 0 extra in B, 1 different, in 1 vbuckets"),
        "{out}"
    );
    assert!(
        out.contains("A gen:max-items=1000000,min-value-size=20,prefix=k: 1000000 items"),
        "{out}"
    );
    let (code, out, _) = verify(source, s(&backup), &["--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["different"][0]["key"], "k765432");
    assert_eq!(v["different"][0]["b"]["value_start"], "changed!");
    assert_eq!(
        v["vbuckets_differing"][0]["vbucket"],
        pump_protocol::vbucket_of(b"k765432", 1024)
    );
}

#[test]
fn verify_names_missing_and_extra_keys_and_exits_0_when_equal() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    let head = "id,flags,expiration,cas,value,rev,vbid,dtype\n";
    std::fs::write(
        &a,
        format!("{head}k1,0,0,1,v1,,0,0\nk2,0,0,1,v2,,0,0\nk3,1,0,1,v3,,0,0\n"),
    )
    .unwrap();
    std::fs::write(
        &b,
        format!("{head}k1,0,0,1,v1,,0,0\nk3,2,0,1,v3,,0,0\nk4,0,0,1,v4,,0,0\n"),
    )
    .unwrap();
    let (code, out, err) = verify(
        &format!("csv:{}", a.display()),
        &format!("csv:{}", b.display()),
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("missing in B: k2"), "{out}");
    assert!(out.contains("extra in B: k4"), "{out}");
    assert!(out.contains("different: k3: flags 1 / 2"), "{out}");
    let (code, out, _) = verify(
        &format!("csv:{}", a.display()),
        &format!("csv:{}", a.display()),
        &[],
    );
    assert_eq!(code, 0, "{out}");
}
