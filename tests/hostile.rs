//! Hostile files, end to end through the `pump` binary (issue 18): damaged backup pages and
//! values out of range refused by name, a data file cut while it is read, files planted at
//! pump's temporary names, a backup that must get no new file, a FIFO where a data file
//! should be, errors that say where, a refilled meta2 copy's owner and mode, and a move that
//! reports each step as it happens.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{data_files, pump, stderr, transfer_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A backup of `items` gen: items (20-byte values) in `dir`; returns its one data file.
fn backup_of(dir: &Path, items: usize) -> PathBuf {
    transfer_ok(
        &format!("gen:max-items={items},min-value-size=20"),
        s(dir),
        &[],
    );
    let files = data_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// `cp -r`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

/// The page size and the root page of cbb_msg in `file`.
fn layout(file: &Path) -> (usize, u32) {
    let db = rusqlite::Connection::open(file).unwrap();
    let ps: usize = db
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    let root: u32 = db
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'cbb_msg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (ps, root)
}

fn header_at(ps: usize, no: u32) -> usize {
    (no as usize - 1) * ps + if no == 1 { 100 } else { 0 }
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

/// The leaf pages under page `no`, left to right.
fn leaves(b: &[u8], ps: usize, no: u32) -> Vec<u32> {
    let h = header_at(ps, no);
    if b[h] == 0x0d {
        return vec![no];
    }
    assert_eq!(b[h], 0x05);
    let base = (no as usize - 1) * ps;
    let mut kids: Vec<u32> = (0..be16(b, h + 3))
        .map(|i| {
            let at = base + be16(b, h + 12 + 2 * i);
            u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
        })
        .collect();
    kids.push(u32::from_be_bytes(b[h + 8..h + 12].try_into().unwrap()));
    kids.into_iter().flat_map(|k| leaves(b, ps, k)).collect()
}

/// `pump transfer DIR blackhole: EXTRA`: (exit code, items written, stderr).
fn restore(dir: &Path, extra: &[&str]) -> (i32, u64, String) {
    let mut args = vec!["transfer", s(dir), "blackhole:"];
    args.extend_from_slice(extra);
    let out = pump(&args);
    let text = stderr(&out);
    let written = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("items")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), written, text)
}

#[test]
fn backup_pages_damaged_as_the_issue_found_them_are_refused_naming_file_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let file = backup_of(&good, 50_000);
    let (code, written, err) = restore(&good, &[]);
    assert_eq!((code, written), (0, 50_000), "{err}");
    let bytes = std::fs::read(&file).unwrap();
    let (ps, root) = layout(&file);
    let all = leaves(&bytes, ps, root);
    let leaf = all[all.len() / 3];
    // (what, page, offset, new bytes)
    let h = header_at(ps, root);
    let root_cells = be16(&bytes, h + 3);
    let lh = header_at(ps, leaf);
    let leaf_cells = be16(&bytes, lh + 3);
    let cases: Vec<(&str, u32, usize, Vec<u8>)> = vec![
        (
            "the root's cell count",
            root,
            h + 3,
            ((root_cells - 1) as u16).to_be_bytes().to_vec(),
        ),
        (
            "a leaf's cell count",
            leaf,
            lh + 3,
            ((leaf_cells - 25) as u16).to_be_bytes().to_vec(),
        ),
        (
            "one cell pointer",
            leaf,
            lh + 8 + 2 * 5,
            bytes[lh + 8 + 2 * 6..lh + 8 + 2 * 7].to_vec(),
        ),
    ];
    for (i, (what, page, at, new)) in cases.into_iter().enumerate() {
        let copy = dir.path().join(format!("damaged-{i}"));
        copy_dir(&good, &copy);
        let f = data_files(&copy)[0].clone();
        let mut b = bytes.clone();
        b[at..at + new.len()].copy_from_slice(&new);
        std::fs::write(&f, &b).unwrap();
        // Without checks the damage reads short, or a row twice and its neighbour never,
        // and says nothing.
        let csv = dir.path().join(format!("damaged-{i}.csv"));
        transfer_ok(
            s(&copy),
            &format!("csv:{}", csv.display()),
            &["-x", "verify=none"],
        );
        let rows = common::csv_rows(&csv);
        let keys: std::collections::BTreeSet<&str> =
            rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert!(
            keys.len() < 50_000,
            "{what}: the damage is real: {} rows, {} keys",
            rows.len() - 1,
            keys.len()
        );
        for verify in [&[][..], &["-x", "verify=quick"], &["-x", "verify=full"]] {
            let (code, written, err) = restore(&copy, verify);
            assert_eq!(code, 1, "{what} {verify:?}: {err}");
            assert_eq!(
                written, 0,
                "{what} {verify:?}: refused before anything moves"
            );
            assert!(err.contains(s(&f)), "{what} {verify:?}: {err}");
            if verify.is_empty() {
                assert!(err.contains(&format!("page {page}:")), "{what}: {err}");
            }
        }
    }
}

#[test]
fn backup_values_out_of_their_column_range_are_refused_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    backup_of(&good, 1000);
    for (i, (column, value)) in [
        ("flg", 4_294_967_297i64),
        ("exp", 99_999_999_999),
        ("dtype", 300),
    ]
    .into_iter()
    .enumerate()
    {
        let copy = dir.path().join(format!("bad-{i}"));
        copy_dir(&good, &copy);
        let f = data_files(&copy)[0].clone();
        rusqlite::Connection::open(&f)
            .unwrap()
            .execute(
                &format!("UPDATE cbb_msg SET {column} = ?1 WHERE rowid = 500"),
                [value],
            )
            .unwrap();
        let (code, _, err) = restore(&copy, &[]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(s(&f))
                && err.contains("row 500 (rowid 500)")
                && err.contains(&format!("{column} {value} is not 0 to")),
            "{err}"
        );
    }
}

#[test]
fn a_data_file_cut_while_pump_reads_it_is_an_error_naming_it_and_leaves_no_partial_csv() {
    let dir = tempfile::tempdir().unwrap();
    let bk = dir.path().join("bk");
    transfer_ok("gen:max-items=300000,min-value-size=200", s(&bk), &[]);
    let file = data_files(&bk)[0].clone();
    let len = std::fs::metadata(&file).unwrap().len();
    let out = dir.path().join("out.csv");
    let partial = dir.path().join("out.csv.partial");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(["transfer", s(&bk), &format!("csv:{}", out.display()), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped as soon as its first rows reach the CSV file, cut to half, let go.
    let started = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "never started");
        assert!(child.try_wait().unwrap().is_none(), "finished too soon");
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: signals to the child this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "not a signal: {err}");
    assert!(
        err.contains(s(&file)) && err.contains("shrank while being read"),
        "{err}"
    );
    assert!(!out.exists() && !partial.exists(), "{err}");
}

#[test]
fn a_symlink_planted_at_the_partial_name_is_not_followed_and_files_get_their_final_mode() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"root's secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dir.path().join("OUT.csv");
    std::os::unix::fs::symlink(&victim, dir.path().join("OUT.csv.partial")).unwrap();
    transfer_ok("gen:max-items=100", &format!("csv:{}", out.display()), &[]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's secret");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 101);
    assert!(!dir.path().join("OUT.csv.partial").exists());
    // Every file of a backup and of a CSV gets the mode the umask gives a new file (027
    // here), none the 0600 it was written under.
    let bk = dir.path().join("bk");
    let csv = dir.path().join("u027.csv");
    for (source, sink) in [
        ("gen:max-items=100".to_string(), s(&bk).to_string()),
        ("gen:max-items=100".into(), format!("csv:{}", csv.display())),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pump"));
        cmd.args(["transfer", &source, &sink, "-q"]);
        // SAFETY: umask in the forked child before exec; async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::umask(0o027);
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut files = common::files_named(&bk, &|_| true);
    files.push(csv);
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}", f.display());
    }
}

#[test]
fn a_backup_with_a_wal_beside_a_data_file_gets_no_new_file_and_its_wal_rows_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let bk = dir.path().join("bk");
    let file = backup_of(&bk, 1000);
    // A writer in WAL mode adds a row that only its -wal holds; the backup is the copy of
    // the file and its -wal (no -shm), as a copy taken while the writer ran holds them.
    let live = dir.path().join("live.cbb");
    std::fs::copy(&file, &live).unwrap();
    let w = rusqlite::Connection::open(&live).unwrap();
    w.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         INSERT INTO cbb_msg (cmd, vbucket_id, key, flg, exp, cas, meta, val, seqno, dtype, meta_size, conf_res)
         VALUES (87, 3, 'only-in-the-wal', 0, 0, '1', '1', 'w', 1, 0, 0, 0);",
    )
    .unwrap();
    std::fs::copy(&live, &file).unwrap();
    let mut wal = file.clone().into_os_string();
    wal.push("-wal");
    let mut live_wal = live.clone().into_os_string();
    live_wal.push("-wal");
    std::fs::copy(&live_wal, &wal).unwrap();
    drop(w);
    let node_dir = file.parent().unwrap();
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(node_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    assert!(before.contains(&"data-0000.cbb-wal".to_string()));
    let csv = dir.path().join("out.csv");
    transfer_ok(s(&bk), &format!("csv:{}", csv.display()), &[]);
    assert_eq!(listing(), before, "no -shm, no other file");
    let rows = common::csv_rows(&csv);
    assert_eq!(rows.len(), 1002);
    assert!(rows.iter().any(|r| r[0] == "only-in-the-wal"));
}

#[test]
fn a_fifo_named_like_a_data_file_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let bk = dir.path().join("bk");
    let file = backup_of(&bk, 10);
    std::fs::remove_file(&file).unwrap();
    let c = std::ffi::CString::new(s(&file)).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(["transfer", s(&bk), "blackhole:"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("pump hangs on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(s(&file)) && err.contains("not a regular file (a FIFO)"),
        "{err}"
    );
}

#[test]
fn errors_on_a_damaged_backup_name_the_file_and_the_table_page_or_row() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    backup_of(&good, 1000);
    type Damage<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Damage, &[&str]); 4] = [
        (
            "cbb_msg dropped",
            &|f| {
                rusqlite::Connection::open(f)
                    .unwrap()
                    .execute_batch("DROP TABLE cbb_msg; CREATE TABLE other (x);")
                    .unwrap()
            },
            &["no table cbb_msg", "table other"],
        ),
        (
            "cbb_msg replaced by a view",
            &|f| {
                rusqlite::Connection::open(f)
                    .unwrap()
                    .execute_batch(
                        "ALTER TABLE cbb_msg RENAME TO x; CREATE VIEW cbb_msg AS SELECT * FROM x;",
                    )
                    .unwrap()
            },
            &["cbb_msg is a view, not a table"],
        ),
        (
            "a garbage -journal",
            &|f| {
                let mut j = f.as_os_str().to_owned();
                j.push("-journal");
                std::fs::write(j, vec![0x5a; 3000]).unwrap();
            },
            &["-journal: a rollback journal beside"],
        ),
        (
            "an unknown cmd",
            &|f| {
                rusqlite::Connection::open(f)
                    .unwrap()
                    .execute("UPDATE cbb_msg SET cmd = 7 WHERE rowid = 100", [])
                    .unwrap();
            },
            &["row 100 (rowid 100): unknown cmd 0x7", ": page "],
        ),
    ];
    for (i, (what, damage, want)) in cases.into_iter().enumerate() {
        let copy = dir.path().join(format!("case-{i}"));
        copy_dir(&good, &copy);
        let f = data_files(&copy)[0].clone();
        damage(&f);
        let (code, _, err) = restore(&copy, &[]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains(s(&f)), "{what}: {err}");
        for w in want {
            assert!(err.contains(w), "{what}: {err}");
        }
        assert!(!err.contains("Query returned no rows"), "{what}: {err}");
    }
}

const A: &str = "127.0.0.1:6120";
const B: &str = "127.0.0.2:6120";
const C: &str = "127.0.0.3:6120";
const D: &str = "127.0.0.4:6120";

/// One copy of a base on one volume per peer; (base, [(address, volume)]).
fn meta2_copies(root: &Path, peers: &[&str]) -> (pump_meta2::BaseName, Vec<(String, PathBuf)>) {
    let spec = pump_meta2::generate::BaseSpec {
        ns: "OPENIO".into(),
        account: "acct".into(),
        container: "hostile".into(),
        peers: peers.iter().map(|s| s.to_string()).collect(),
        aliases: 20,
    };
    let vols = peers
        .iter()
        .map(|p| {
            let v = root.join(p.replace([':', '.'], "_"));
            pump_meta2::generate::write_base(&v, &spec).unwrap();
            (p.to_string(), v)
        })
        .collect();
    (spec.name(), vols)
}

fn meta2_args(
    cmd: &[&str],
    base: &pump_meta2::BaseName,
    vols: &[(String, PathBuf)],
) -> Vec<String> {
    let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    args.push(base.to_string());
    for (a, v) in vols {
        args.push("--peer".into());
        args.push(format!("{a}={}", v.display()));
    }
    args
}

#[test]
fn a_refilled_meta2_copy_takes_the_owner_group_and_mode_of_the_copy_it_replaces() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = meta2_copies(root.path(), &[A, B, C]);
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let (owner_b, owner_a) = if as_root {
        ((4321, 8765), (1234, 5678))
    } else {
        let m = std::fs::metadata(base.path_in(&vols[0].1)).unwrap();
        ((m.uid(), m.gid()), (m.uid(), m.gid()))
    };
    let (pa, pb, pc) = (
        base.path_in(&vols[0].1),
        base.path_in(&vols[1].1),
        base.path_in(&vols[2].1),
    );
    // The source copy (A) and the corrupt one (B) each as their service keeps them; C is lost.
    std::fs::set_permissions(&pa, std::fs::Permissions::from_mode(0o604)).unwrap();
    std::fs::set_permissions(&pb, std::fs::Permissions::from_mode(0o640)).unwrap();
    if as_root {
        std::os::unix::fs::chown(&pa, Some(owner_a.0), Some(owner_a.1)).unwrap();
        std::os::unix::fs::chown(&pb, Some(owner_b.0), Some(owner_b.1)).unwrap();
    }
    let len = std::fs::metadata(&pb).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pb)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::remove_file(&pc).unwrap();
    // C's volume holds no copy any more: --create says that is expected.
    let args = meta2_args(&["meta2", "sync", "--from", A, "--create"], &base, &vols);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pump(&refs);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(meta(&pb), (owner_b.0, owner_b.1, 0o640), "B as it was kept");
    assert_eq!(
        meta(&pc),
        (owner_a.0, owner_a.1, 0o604),
        "C as its source A"
    );
    if !as_root {
        eprintln!("not root: owners checked only as the current user's");
    }
}

#[test]
fn meta2_move_prints_each_step_started_and_done() {
    let root = tempfile::tempdir().unwrap();
    let (base, vols) = meta2_copies(root.path(), &[A, B, C]);
    let target = root.path().join("new-volume");
    std::fs::create_dir_all(&target).unwrap();
    let mut args = meta2_args(&["meta2", "move"], &base, &vols);
    args.extend([
        "--from".to_string(),
        B.into(),
        "--to".into(),
        format!("{D}={}", target.display()),
        "--create".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pump(&refs);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines[0].starts_with(&format!("moving {base} from {B} to {D}")),
        "{said}"
    );
    for n in 1..=13 {
        let started = lines
            .iter()
            .position(|l| l.starts_with(&format!("{n:>2}. ")) && l.ends_with(": started"));
        let done = lines
            .iter()
            .position(|l| l.starts_with(&format!("{n:>2}. ")) && l.ends_with(": done"));
        assert!(started.is_some() && started < done, "step {n}: {said}");
    }
}
