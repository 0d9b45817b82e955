//! `pump meta2 ...` and `pump transfer meta2:A meta2:B` end to end, on bases in temporary
//! volumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pump_meta2::generate::{write_base, BaseSpec};
use pump_meta2::{digest, BaseName};

const A: &str = "127.0.0.1:6120";
const B: &str = "127.0.0.2:6120";
const C: &str = "127.0.0.3:6120";
const D: &str = "127.0.0.4:6120";
const E: &str = "127.0.0.5:6120";

fn pump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(args)
        .output()
        .expect("run pump")
}

fn spec(container: &str, peers: &[&str], aliases: usize) -> BaseSpec {
    BaseSpec {
        ns: "OPENIO".into(),
        account: "acct".into(),
        container: container.into(),
        peers: peers.iter().map(|s| s.to_string()).collect(),
        aliases,
    }
}

/// The same base written on one volume per peer; returns (base, [(address, volume)]).
fn copies(
    root: &Path,
    container: &str,
    peers: &[&str],
    aliases: usize,
) -> (BaseName, Vec<(String, PathBuf)>) {
    let s = spec(container, peers, aliases);
    let vols = peers
        .iter()
        .map(|p| {
            let v = root.join(p.replace([':', '.'], "_"));
            write_base(&v, &s).unwrap();
            (p.to_string(), v)
        })
        .collect();
    (s.name(), vols)
}

fn peer_args(vols: &[(String, PathBuf)]) -> Vec<String> {
    vols.iter()
        .flat_map(|(a, v)| ["--peer".to_string(), format!("{a}={}", v.display())])
        .collect()
}

fn run(cmd: &[&str], base: &BaseName, vols: &[(String, PathBuf)], extra: &[&str]) -> Output {
    let b = base.to_string();
    let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    args.push(b);
    args.extend(peer_args(vols));
    args.extend(extra.iter().map(|s| s.to_string()));
    if matches!(cmd.get(1), Some(&("sync" | "move" | "rebuild"))) {
        // The tests' volumes hold one base each: one whose copy is gone holds none.
        args.push("--create".into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pump(&refs)
}

fn check_json(base: &BaseName, vols: &[(String, PathBuf)]) -> (i32, BTreeMap<String, String>) {
    let out = run(&["meta2", "check"], base, vols, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let map = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["peer"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code().unwrap_or(-1), map)
}

fn sql(path: &Path, statements: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(statements).unwrap();
}

/// `pump transfer meta2:SRC meta2:DST`, which must succeed with the same digests on both
/// and a base that passes SQLite's full integrity_check (every index entry against its row).
fn transfer_whole(src: &Path, dst: &Path) {
    transfer_whole_with(src, dst, &[]);
}

/// [`transfer_whole`] with more options.
fn transfer_whole_with(src: &Path, dst: &Path, extra: &[&str]) {
    let (from, to) = (
        format!("meta2:{}", src.display()),
        format!("meta2:{}", dst.display()),
    );
    let mut args = vec!["transfer", &from, &to, "-q"];
    args.extend_from_slice(extra);
    let out = pump(&args);
    assert_ok(&out);
    assert_eq!(digest(src, &[]).unwrap(), digest(dst, &[]).unwrap());
    let c = rusqlite::Connection::open(dst).unwrap();
    let check: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(check, ["ok"], "{}", dst.display());
}

/// The command succeeded; else its stderr is the failure message.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty volume `new` under `root`, the target of a move.
fn new_volume(root: &Path) -> PathBuf {
    let target = root.join("new");
    std::fs::create_dir(&target).unwrap();
    target
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn check_names_each_bad_copy_and_sync_refills_them_all_identical() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "c1", &[A, B, C, D, E], 200);
    let path = |i: usize| base.path_in(&vols[i].1);
    // B deleted.
    std::fs::remove_file(path(1)).unwrap();
    // C truncated in the middle.
    let len = std::fs::metadata(path(2)).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(2))
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    // D: only the minimal admin keys of a copy created but never filled.
    sql(
        &path(3),
        "DELETE FROM admin WHERE k NOT IN ('schema_version','sys.name','sys.type') AND k NOT LIKE 'version:%';
         UPDATE admin SET v = CAST('1:0' AS BLOB) WHERE k LIKE 'version:%';",
    );
    // E: one alias behind.
    sql(
        &path(4),
        "DELETE FROM aliases WHERE alias = 'obj/000199';
         UPDATE admin SET v = CAST('200:1700000000000000' AS BLOB) WHERE k = 'version:main.aliases';",
    );
    let (code, statuses) = check_json(&base, &vols);
    assert_eq!(code, 1);
    assert_eq!(statuses[A], "ok");
    assert_eq!(statuses[B], "missing");
    assert_eq!(statuses[C], "corrupt");
    assert_eq!(statuses[D], "incomplete");
    assert_eq!(statuses[E], "behind");

    // 4 KiB of sort memory: every index of the aliases, contents and chunks goes through runs
    // on disk.
    let out = run(
        &["meta2", "sync"],
        &base,
        &vols,
        &["--json", "--sort-memory", "4096"],
    );
    assert_ok(&out);
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: BTreeMap<&str, u64> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["peer"].as_str().unwrap(), a["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        codes,
        BTreeMap::from([(A, 301), (B, 200), (C, 200), (D, 200), (E, 200)])
    );

    let (code, statuses) = check_json(&base, &vols);
    assert_eq!(code, 0, "{statuses:?}");
    let reference = digest(&path(0), &[]).unwrap();
    for i in 1..5 {
        assert_eq!(digest(&path(i), &[]).unwrap(), reference, "copy {i}");
    }
    for i in 2..5 {
        assert!(
            pump_meta2::check::inspect(
                &PathBuf::from(format!("{}.corrupted", path(i).display())),
                false
            )
            .path
            .exists(),
            "the replaced copy {i} is kept aside"
        );
    }
}

#[test]
fn move_with_a_typo_in_an_address_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "c2", &[A, B, C], 20);
    let target = new_volume(root.path());
    let before = snapshot(root.path());
    let to = |a: &str| format!("{a}={}", target.display());
    for (from, to_arg) in [
        (A, to("127.0.0.300:6120")),
        (A, to("127.0.0.9:612000")),
        (A, to("127.0.0.9")),
        ("127.0.0.1:612O", to(D)),
        (D, to(E)),
        (A, to(B)),
    ] {
        let out = run(
            &["meta2", "move"],
            &base,
            &vols,
            &["--from", from, "--to", &to_arg],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{from} {to_arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut typo = peer_args(&vols);
    typo[1] = format!("127.0.0.1:6l20={}", vols[0].1.display());
    let mut args = vec![
        "meta2".to_string(),
        "move".into(),
        base.to_string(),
        "--create".into(),
        "--from".into(),
        B.into(),
        "--to".into(),
        to(D),
    ];
    args.extend(typo);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(pump(&refs).status.code(), Some(2));
    assert_eq!(snapshot(root.path()), before, "no file changed");
}

#[test]
fn move_dry_run_prints_the_plan_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "c4", &[A, B], 5);
    let target = new_volume(root.path());
    let before = snapshot(root.path());
    let to = format!("{C}={}", target.display());
    let out = run(
        &["meta2", "move"],
        &base,
        &vols,
        &["--from", A, "--to", &to, "--dry-run"],
    );
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("freeze") && text.contains("copy 127.0.0.1:6120 -> 127.0.0.3:6120"),
        "{text}"
    );
    assert_eq!(snapshot(root.path()), before);
}

#[test]
fn transfer_meta2_keeps_every_storage_class_and_unknown_tables() {
    let root = tempfile::tempdir().unwrap();
    let src = write_base(&root.path().join("v"), &spec("c5", &[A], 10)).unwrap();
    sql(
        &src,
        "CREATE TABLE odd (a, b, c, d, e);
         CREATE INDEX odd_by_b ON odd(b);
         INSERT INTO odd(rowid, a, b, c, d, e) VALUES (7, NULL, 1, 1.0, '1', x'31');
         INSERT INTO odd(rowid, a, b, c, d, e) VALUES (1000, x'00ff', -9223372036854775808, -0.0, 'é\n', '');
         CREATE TABLE shard_ranges (lower TEXT, upper TEXT, cid BLOB, metadata TEXT, PRIMARY KEY(lower));
         INSERT INTO shard_ranges VALUES ('', 'm', x'0102', NULL);",
    );
    let dst = root.path().join("out.meta2");
    transfer_whole(&src, &dst);
    let rows = |p: &Path| -> Vec<String> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut s = c
            .prepare("SELECT rowid, typeof(a)||typeof(b)||typeof(c)||typeof(d)||typeof(e), quote(a)||quote(b)||quote(c)||quote(d)||quote(e) FROM odd ORDER BY rowid")
            .unwrap();
        s.query_map([], |r| {
            Ok(format!(
                "{}:{}:{}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let got = rows(&dst);
    assert_eq!(got, rows(&src));
    assert_eq!(got[0], "7:nullintegerrealtextblob:NULL11.0'1'X'31'");
    let schema = |p: &Path| -> Vec<String> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut s = c
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(schema(&dst), schema(&src));
    let c = rusqlite::Connection::open(&dst).unwrap();
    let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(page, 4096);
    // The sink never writes over an existing base.
    let again = pump(&[
        "transfer",
        &format!("meta2:{}", src.display()),
        &format!("meta2:{}", dst.display()),
        "-q",
    ]);
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_copy_keeps_the_page_size_user_version_and_application_id_of_its_source() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "h1", &[A], 300);
    let original = base.path_in(&vols[0].1);
    let header = |p: &Path| -> (i64, i64, i64) {
        let c = rusqlite::Connection::open(p).unwrap();
        let get = |name: &str| -> i64 {
            c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap()
        };
        (get("page_size"), get("user_version"), get("application_id"))
    };
    // Signed values: SQLite keeps both ids as 32-bit signed numbers.
    for (page, user_version, application_id) in
        [(1024, 7, 0x4d45_5441), (65536, -2, -1), (512, 0, 0)]
    {
        let src = root.path().join(format!("src-{page}.meta2"));
        std::fs::copy(&original, &src).unwrap();
        sql(
            &src,
            &format!(
                "PRAGMA page_size={page}; VACUUM; PRAGMA user_version={user_version};
                 PRAGMA application_id={application_id};"
            ),
        );
        assert_eq!(header(&src), (page, user_version, application_id));
        let dst = root.path().join(format!("dst-{page}.meta2"));
        transfer_whole(&src, &dst);
        assert_eq!(header(&dst), (page, user_version, application_id), "{page}");
    }
}

fn rebuild_lost_volume(extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let vol = |a: &str| root.path().join(a.replace([':', '.'], "_"));
    let mut mine = Vec::new();
    for i in 0..12 {
        let (b, _) = copies(root.path(), &format!("c{i}"), &[A, B, C], 10);
        mine.push(b);
    }
    // Bases A never held.
    for i in 0..3 {
        copies(root.path(), &format!("other{i}"), &[B, C], 10);
    }
    // B's copy of one base is truncated: it is rebuilt from C's.
    let bad = mine[5].path_in(&vol(B));
    let len = std::fs::metadata(&bad).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // B's copy of another base keeps its header and its admin table but fails quick_check
    // (the root page of its chunks table is no b-tree page any more): that base too comes
    // from C's copy, B's being tried first and refused.
    let scribbled = mine[7].path_in(&vol(B));
    pump_meta2::generate::break_root_page(&scribbled, "chunks").unwrap();
    let bytes = std::fs::read(&scribbled).unwrap();
    assert_eq!(
        pump_meta2::check::inspect_admin(&scribbled).health,
        pump_meta2::Health::Ok,
        "the admin keys of the scribbled copy still read"
    );
    std::fs::remove_dir_all(vol(A)).unwrap();
    std::fs::create_dir(vol(A)).unwrap();
    let arg = |a: &str| format!("{a}={}", vol(a).display());
    let (pa, pb, pc) = (arg(A), arg(B), arg(C));
    let mut args = vec![
        "meta2",
        "rebuild",
        "--create",
        "--peer",
        &pa,
        "--from-peer",
        &pb,
        "--from-peer",
        &pc,
        "-q",
        "-t",
        "3",
    ];
    args.extend(extra);
    let out = pump(&args);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rebuilt 12 bases"), "{text}");
    assert!(text.contains("3 not for this service"), "{text}");
    for b in &mine {
        let peers: Vec<(String, PathBuf)> =
            [A, C].iter().map(|a| (a.to_string(), vol(a))).collect();
        let (code, st) = check_json(b, &peers);
        assert_eq!(code, 0, "{b}: {st:?}");
        assert_eq!(
            digest(&b.path_in(&vol(A)), &[]).unwrap(),
            digest(&b.path_in(&vol(C)), &[]).unwrap()
        );
    }
    assert_ne!(
        std::fs::read(mine[7].path_in(&vol(A))).unwrap(),
        bytes,
        "the scribbled copy was not the one copied"
    );
    assert_eq!(BaseName::list(&vol(A)).unwrap().len(), 12);
    let left: Vec<PathBuf> = snapshot(&vol(A))
        .into_keys()
        .filter(|p| !p.to_string_lossy().ends_with(".meta2"))
        .collect();
    assert!(left.is_empty(), "nothing but bases on the volume: {left:?}");

    // A rerun finds every base there and copies nothing.
    let out = pump(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rebuilt 0 bases"), "{text}");
    assert!(text.contains("12 already there"), "{text}");
}

#[test]
fn rebuild_restores_every_base_of_a_lost_volume() {
    rebuild_lost_volume(&[]);
}

#[test]
fn rebuild_streaming_through_the_pump_restores_every_base_too() {
    rebuild_lost_volume(&["--stream"]);
}

#[test]
fn rebuild_streaming_with_index_keys_sorted_in_runs_on_disk_restores_every_base() {
    rebuild_lost_volume(&["--stream", "--sort-memory", "1000"]);
}

#[test]
fn sort_memory_is_refused_where_nothing_is_streamed_and_when_zero() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "z1", &[A, B], 5);
    let before = snapshot(root.path());
    let lost = format!("{A}={}", vols[0].1.display());
    let from = format!("{B}={}", vols[1].1.display());
    let name = base.to_string();
    let rebuild = ["meta2", "rebuild", "--peer", &lost, "--from-peer", &from];
    let sync = ["meta2", "sync", &name, "--peer", &lost, "--peer", &from];
    let proxy = [
        "meta2",
        "sync",
        &name,
        "--proxy",
        "http://127.0.0.1:9",
        "--ns",
        "NS",
    ];
    let cases: [(&[&str], &[&str]); 5] = [
        // A page copy sorts nothing.
        (&rebuild, &["--sort-memory", "1000"]),
        (&rebuild, &["--stream", "--sort-memory", "0"]),
        (&sync, &["--sort-memory", "0"]),
        (&sync, &["--sort-memory", "12T"]),
        // Through a proxy the proxy makes the copies (nothing listens there: refused first).
        (&proxy, &["--sort-memory", "1000"]),
    ];
    for (command, extra) in cases {
        let args = [command, extra].concat();
        let out = pump(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("sort-memory"), "{args:?}: {err}");
    }
    assert_eq!(snapshot(root.path()), before, "nothing was written");
}

#[test]
fn check_volume_mode_and_full_integrity_check() {
    let root = tempfile::tempdir().unwrap();
    let mut bases = Vec::new();
    let mut vols = Vec::new();
    for i in 0..3 {
        let (b, v) = copies(root.path(), &format!("v{i}"), &[A, B], 20);
        bases.push(b);
        vols = v;
    }
    // An index that no longer matches its table: quick_check does not look, integrity_check
    // does.
    sql(
        &bases[1].path_in(&vols[1].1),
        "PRAGMA writable_schema=ON;
         UPDATE sqlite_master SET sql = 'CREATE INDEX alias_index_by_name ON aliases(mtime)'
         WHERE name = 'alias_index_by_name';",
    );
    let volume = |extra: &[&str]| {
        let mut args = vec![
            "meta2".to_string(),
            "check".into(),
            "--volume".into(),
            vols[0].1.display().to_string(),
        ];
        args.extend(peer_args(&vols));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        pump(&refs)
    };
    let rows = |out: &Output| -> Vec<(String, String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["base"].as_str().unwrap().to_string(),
                    r["peer"].as_str().unwrap().to_string(),
                    r["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let quick = volume(&["--json"]);
    assert_eq!(quick.status.code(), Some(0));
    let r = rows(&quick);
    assert_eq!(r.len(), 6, "every base of the volume, every peer: {r:?}");
    assert!(r.iter().all(|(_, _, s)| s == "ok"), "{r:?}");
    let mut seen: Vec<&String> = r.iter().map(|(b, _, _)| b).collect();
    seen.dedup();
    let mut want: Vec<String> = bases.iter().map(|b| b.to_string()).collect();
    want.sort();
    assert_eq!(seen, want.iter().collect::<Vec<_>>());

    let full = volume(&["--json", "--full"]);
    assert_eq!(full.status.code(), Some(1));
    let bad: Vec<(String, String, String)> = rows(&full)
        .into_iter()
        .filter(|(_, _, s)| s != "ok")
        .collect();
    assert_eq!(
        bad,
        [(bases[1].to_string(), B.to_string(), "corrupt".to_string())]
    );
    let text = volume(&["--full"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("integrity_check"),
        "the table says why: {text}"
    );
}

#[test]
fn check_names_unlisted_and_disagreeing_copies() {
    let root = tempfile::tempdir().unwrap();
    // E holds a copy but sys.peers lists A, B, C, D only.
    let s = spec("p1", &[A, B, C, D], 10);
    let vols: Vec<(String, PathBuf)> = [A, B, C, D, E]
        .iter()
        .map(|p| {
            let v = root.path().join(p.replace([':', '.'], "_"));
            write_base(&v, &s).unwrap();
            (p.to_string(), v)
        })
        .collect();
    let base = s.name();
    // D's sys.peers says otherwise.
    sql(
        &base.path_in(&vols[3].1),
        &format!("UPDATE admin SET v = CAST('{A},{B},{D}' AS BLOB) WHERE k = 'sys.peers'"),
    );
    let (code, statuses) = check_json(&base, &vols);
    assert_eq!(code, 1);
    assert_eq!(statuses[A], "ok");
    assert_eq!(statuses[D], "peers-disagree", "{statuses:?}");
    assert_eq!(statuses[E], "not-listed", "{statuses:?}");
}

#[test]
fn sync_answers_per_peer_and_keeps_every_replaced_copy() {
    let root = tempfile::tempdir().unwrap();
    let (base, mut vols) = copies(root.path(), "s1", &[A, B, C, D], 30);
    let path = |vols: &[(String, PathBuf)], i: usize| base.path_in(&vols[i].1);
    // C is behind, and a copy set aside by an earlier sync is already there.
    sql(
        &path(&vols, 2),
        "DELETE FROM aliases WHERE alias = 'obj/000029';
         UPDATE admin SET v = CAST('30:1700000000000000' AS BLOB) WHERE k = 'version:main.aliases';",
    );
    let earlier = PathBuf::from(format!("{}.corrupted", path(&vols, 2).display()));
    std::fs::write(&earlier, b"an earlier copy").unwrap();
    let behind = std::fs::read(path(&vols, 2)).unwrap();
    // D's volume cannot be written: its place is a regular file.
    let blocked = root.path().join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    vols[3].1 = blocked;

    let out = run(&["meta2", "sync"], &base, &vols, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "a copy could not be synced");
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_peer: BTreeMap<&str, (u64, &str)> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["peer"].as_str().unwrap(),
                (
                    a["status"].as_u64().unwrap(),
                    a["message"].as_str().unwrap(),
                ),
            )
        })
        .collect();
    // A and B are equally good: one is the source (301), the other already good (200).
    let mut good = [by_peer[A], by_peer[B]];
    good.sort();
    assert_eq!(good[0], (200, "OK (already good)"), "{by_peer:?}");
    assert_eq!(good[1].0, 301, "{by_peer:?}");
    assert_eq!(by_peer[C].0, 200, "{by_peer:?}");
    assert!(by_peer[C].1.contains("behind"), "{by_peer:?}");
    assert!(by_peer[D].0 >= 400, "{by_peer:?}");
    assert!(!by_peer[D].1.is_empty(), "the reason is given: {by_peer:?}");

    assert_eq!(
        digest(&path(&vols, 2), &[]).unwrap(),
        digest(&path(&vols, 0), &[]).unwrap()
    );
    assert_eq!(std::fs::read(&earlier).unwrap(), b"an earlier copy");
    let dated: Vec<PathBuf> = std::fs::read_dir(path(&vols, 2).parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".meta2.corrupted-"))
        .collect();
    assert_eq!(dated.len(), 1, "{dated:?}");
    assert_eq!(
        std::fs::read(&dated[0]).unwrap(),
        behind,
        "the behind copy is kept"
    );
}

#[test]
fn move_with_delete_source_removes_the_old_copy_only_after_the_move() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "d1", &[A, B, C], 20);
    let target = new_volume(root.path());
    let data = digest(&base.path_in(&vols[1].1), &["admin"]).unwrap();
    let to = format!("{D}={}", target.display());
    let out = run(
        &["meta2", "move"],
        &base,
        &vols,
        &[
            "--from",
            B,
            "--to",
            &to,
            "--delete-source",
            "--sort-memory",
            "1K",
        ],
    );
    assert_ok(&out);
    let old_dir = base.path_in(&vols[1].1).parent().unwrap().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&old_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "nothing of the old copy is left: {left:?}");
    let new_set = vec![
        vols[0].clone(),
        vols[2].clone(),
        (D.to_string(), target.clone()),
    ];
    let (code, statuses) = check_json(&base, &new_set);
    assert_eq!(code, 0, "{statuses:?}");
    assert_eq!(digest(&base.path_in(&target), &["admin"]).unwrap(), data);
}

#[test]
fn transfer_of_a_base_refuses_key_and_vbucket_filters_and_rehash_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "f1", &[A], 5);
    let src = format!("meta2:{}", base.path_in(&vols[0].1).display());
    for filter in [["-k", "^x"], ["-l", "3"], ["-x", "rehash=1"]] {
        let out_path = root.path().join(format!("out{}.meta2", filter[0]));
        let dst = format!("meta2:{}", out_path.display());
        let out = pump(&["transfer", filter[0], filter[1], &src, &dst]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{filter:?}: {err}");
        assert!(err.contains("copied whole"), "{err}");
        assert!(!out_path.exists(), "{filter:?}: nothing written");
    }
}

#[test]
fn a_base_moves_only_between_meta2_specs_or_into_a_blackhole() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "p1", &[A], 5);
    let src = format!("meta2:{}", base.path_in(&vols[0].1).display());
    let out_path = root.path().join("out.meta2");
    let dst = format!("meta2:{}", out_path.display());
    let csv = root.path().join("out.csv");
    let csv_spec = format!("csv:{}", csv.display());
    for (from, to, gives) in [
        ("gen:max-items=10", dst.as_str(), "key-value items"),
        (src.as_str(), "memcached://127.0.0.1:11211", "a meta2 base"),
        (src.as_str(), csv_spec.as_str(), "a meta2 base"),
    ] {
        let out = pump(&["transfer", from, to]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{from} -> {to}: {err}");
        assert!(
            err.contains(&format!("{to} cannot take what {from} gives ({gives})")),
            "{err}"
        );
    }
    assert!(!out_path.exists() && !csv.exists(), "nothing written");
    // The source alone, as its benchmark runs it.
    assert_ok(&pump(&["transfer", &src, "blackhole:", "-q"]));
}

#[test]
fn check_and_sync_note_each_listed_service_no_peer_gives() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = copies(root.path(), "n1", &[A, B, C], 5);
    let given = &vols[..1];
    for (cmd, done) in [("check", "checked"), ("sync", "synced")] {
        let out = run(&["meta2", cmd], &base, given, &[]);
        assert_ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        for left in [B, C] {
            let note =
                format!("sys.peers lists {left}, which no --peer gives: its copy was not {done}");
            assert!(err.contains(&note), "{cmd}: {err}");
        }
        assert!(!err.contains(A), "{cmd}: {err}");
    }
    // Every service given: no note.
    let out = run(&["meta2", "check"], &base, &vols, &[]);
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("note"));
}

#[test]
fn check_rejects_a_bad_address_with_usage_exit() {
    let out = pump(&[
        "meta2",
        "check",
        &format!("{}.1", "A".repeat(64)),
        "--peer",
        "127.0.0.1:99999=/tmp",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every row of `table` as text (storage class and value of each column), in `order`.
fn rows_of(path: &Path, table: &str, cols: &[&str], order: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let each: Vec<String> = cols
        .iter()
        .map(|c| format!("typeof({c})||':'||quote({c})"))
        .collect();
    let mut s = c
        .prepare(&format!(
            "SELECT {} FROM {table} ORDER BY {order}",
            each.join("||','||")
        ))
        .unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn transfer_meta2_keeps_integer_keys_without_rowid_tables_gaps_collations_and_orphans() {
    let root = tempfile::tempdir().unwrap();
    let src = write_base(&root.path().join("v"), &spec("c6", &[A], 20)).unwrap();
    sql(
        &src,
        "PRAGMA foreign_keys=OFF;
         CREATE TABLE ipk (id INTEGER PRIMARY KEY, v);
         INSERT INTO ipk VALUES (3, 1.5), (10, 'x'), (11, x'00'), (-4, NULL), (12, x''), (13, '');
         CREATE TABLE wr (a TEXT, b INT, c, PRIMARY KEY(a, b)) WITHOUT ROWID;
         CREATE INDEX wr_by_c ON wr(c);
         INSERT INTO wr VALUES ('z', 2, 1), ('a', 9, 'q'), ('a', 1, -0.0);
         CREATE TABLE nc (name TEXT COLLATE NOCASE PRIMARY KEY, v);
         INSERT INTO nc VALUES ('b', 1), ('A', 2), ('c', 3), ('D', 4), ('e', 5);
         DELETE FROM nc WHERE name IN ('c', 'e');
         CREATE TABLE sparse (k TEXT PRIMARY KEY, v);
         INSERT INTO sparse(rowid, k, v) VALUES (5000000000000, 'a', 1), (1, 'c', 2), (77, 'b', 3);
         CREATE TABLE hidden (rowid TEXT PRIMARY KEY, x);
         INSERT INTO hidden VALUES ('q', 1), ('p', 2);
         INSERT INTO chunks VALUES ('orphan', x'dead', '0', x'beef', 1, 1);",
    );
    let dst = root.path().join("out.meta2");
    transfer_whole(&src, &dst);
    // The INTEGER PRIMARY KEY is the rowid: kept, gaps and negative ones included.
    let ipk = rows_of(&dst, "ipk", &["id", "v"], "id");
    assert_eq!(ipk, rows_of(&src, "ipk", &["id", "v"], "id"));
    assert_eq!(ipk[0], "integer:-4,null:NULL");
    assert_eq!(ipk[1], "integer:3,real:1.5");
    // Empty BLOB and TEXT stay what they were.
    assert_eq!(ipk[4], "integer:12,blob:X''");
    assert_eq!(ipk[5], "integer:13,text:''");
    let wr = rows_of(&dst, "wr", &["a", "b", "c"], "a, b");
    assert_eq!(wr, rows_of(&src, "wr", &["a", "b", "c"], "a, b"));
    assert_eq!(wr.len(), 3);
    // Sent in the key's own collation order, so the new rowids follow it.
    assert_eq!(
        rows_of(&dst, "nc", &["name", "v"], "rowid"),
        [
            "text:'A',integer:2",
            "text:'b',integer:1",
            "text:'D',integer:4"
        ]
    );
    assert_eq!(
        rows_of(&dst, "sparse", &["k", "v"], "k"),
        rows_of(&src, "sparse", &["k", "v"], "k")
    );
    assert_eq!(
        rows_of(&dst, "hidden", &["rowid", "x"], "1"),
        rows_of(&src, "hidden", &["rowid", "x"], "1")
    );
    // A row whose foreign key has no parent is copied as it is.
    let c = rusqlite::Connection::open(&dst).unwrap();
    let orphans: i64 = c
        .query_row("SELECT count(*) FROM chunks WHERE id = 'orphan'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(orphans, 1);
    let wr_flag: i64 = c
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE name = 'wr'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(wr_flag, 1, "still WITHOUT ROWID");
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// The sink writes a table's pages itself when it knows its layout, and leaves to SQLite
/// what it does not (WITHOUT ROWID, AUTOINCREMENT, generated columns, partial and
/// expression indexes); either way the base is the source's, indexes included.
#[test]
fn transfer_meta2_builds_every_kind_of_index_and_leaves_the_rest_to_sqlite() {
    every_kind_of_index(&[]);
}

/// The same base with 2000 bytes for a table's index keys: every index is sorted in runs on
/// disk (a few rows each, a row each in `big`) and merged.
#[test]
fn transfer_meta2_sorts_index_keys_beyond_its_memory_in_runs_on_disk() {
    every_kind_of_index(&["-x", "sort_memory=2000"]);
}

fn every_kind_of_index(extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let src = write_base(&root.path().join("v"), &spec("c7", &[A], 30)).unwrap();
    let mut statements = String::from(
        "CREATE TABLE kinds (a TEXT, b, c TEXT COLLATE RTRIM, d INT, UNIQUE(d));
         CREATE INDEX kinds_b_desc ON kinds(b DESC, a COLLATE NOCASE);
         CREATE INDEX kinds_c ON kinds(c);
         CREATE INDEX kinds_a_nocase ON kinds(a COLLATE NOCASE);
         CREATE UNIQUE INDEX kinds_a_d ON kinds(a, d);
         CREATE INDEX kinds_partial ON kinds(b) WHERE d > 10;
         CREATE INDEX kinds_expr ON kinds(lower(a), d + 1);
         CREATE TRIGGER kinds_touch AFTER UPDATE ON kinds BEGIN SELECT 1; END;
         CREATE TABLE counter (id INTEGER PRIMARY KEY AUTOINCREMENT, v);
         CREATE TABLE gen (a INT, b INT GENERATED ALWAYS AS (a * 2) VIRTUAL);
         CREATE INDEX gen_b ON gen(b);
         CREATE TABLE big (k TEXT PRIMARY KEY, v BLOB);
         CREATE INDEX big_v ON big(v);
         CREATE TABLE added (k TEXT PRIMARY KEY, a);
         INSERT INTO added VALUES ('old', 1);
         ALTER TABLE added ADD COLUMN d DEFAULT 7;
         INSERT INTO added VALUES ('new', 2, 8);
         CREATE TABLE reals (k TEXT PRIMARY KEY, r REAL);
         INSERT INTO reals VALUES ('a', 1), ('b', 2.5);",
    );
    let words = ["x", "X", "y ", "y", "", "Zed", "zed  "];
    for i in 0..400i64 {
        let a = words[i as usize % words.len()];
        let b = match i % 5 {
            0 => "NULL".to_string(),
            1 => format!("{}", i % 17),
            2 => format!("{}.5", i % 13),
            3 => format!("'t{}'", i % 11),
            _ => format!("x'{:02x}'", i % 7),
        };
        statements.push_str(&format!(
            "INSERT INTO kinds VALUES ('{a}', {b}, '{a}{}', {i});
             INSERT INTO counter(v) VALUES ({i});
             INSERT INTO gen(a) VALUES ({});",
            " ".repeat(i as usize % 3),
            i % 9
        ));
    }
    // Keys and values that spill into overflow pages, in a key index too.
    for i in 0..60 {
        statements.push_str(&format!(
            "INSERT INTO big VALUES ('{i:03}' || hex(randomblob({})), randomblob({}));",
            i * 40,
            i * 300
        ));
    }
    statements.push_str("DELETE FROM counter WHERE id % 7 = 0;");
    sql(&src, &statements);
    let dst = root.path().join("out.meta2");
    transfer_whole_with(&src, &dst, extra);
    let mut left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["out.meta2", "v"],
        "only the base is left beside the source"
    );
    let schema = |p: &Path| -> Vec<(String, String, Option<String>)> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut s = c
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(schema(&dst), schema(&src));
    // Each index answers from the copy what it answers from the source.
    for (table, index, cols) in [
        ("kinds", "kinds_b_desc", "b, a"),
        ("kinds", "kinds_c", "c"),
        ("kinds", "kinds_a_nocase", "a"),
        ("kinds", "kinds_a_d", "a, d"),
        ("kinds", "kinds_partial", "b"),
        ("kinds", "sqlite_autoindex_kinds_1", "d"),
        ("big", "big_v", "v"),
        ("big", "sqlite_autoindex_big_1", "k"),
    ] {
        let listed = |p: &Path| -> Vec<String> {
            let where_ = if index == "kinds_partial" {
                " WHERE d > 10"
            } else {
                ""
            };
            let c = rusqlite::Connection::open(p).unwrap();
            let mut s = c
                .prepare(&format!(
                    "SELECT rowid, {} FROM {table} INDEXED BY {index}{where_}",
                    cols.split(", ")
                        .map(|c| format!("quote({c})"))
                        .collect::<Vec<_>>()
                        .join("||','||")
                ))
                .unwrap();
            s.query_map([], |r| {
                Ok(format!(
                    "{}:{}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        let got = listed(&dst);
        assert!(!got.is_empty(), "{index}");
        assert_eq!(got, listed(&src), "{index}");
    }
    // A row older than a column with a default, and a REAL stored as an integer, come back
    // as SQLite reads them.
    assert_eq!(
        rows_of(&dst, "added", &["k", "a", "d"], "k"),
        [
            "text:'new',integer:2,integer:8",
            "text:'old',integer:1,integer:7"
        ]
    );
    assert_eq!(
        rows_of(&dst, "reals", &["k", "r"], "k"),
        ["text:'a',real:1.0", "text:'b',real:2.5"]
    );
    let c = rusqlite::Connection::open(&dst).unwrap();
    let seq: i64 = c
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'counter'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seq, 400, "AUTOINCREMENT's counter");
    let b: i64 = c
        .query_row("SELECT sum(b) FROM gen INDEXED BY gen_b", [], |r| r.get(0))
        .unwrap();
    assert_eq!(b, (0..400i64).map(|i| (i % 9) * 2).sum::<i64>());
}
