//! Couchbase's own Python tools against `pump cluster up`: couchbase-cli's cbtransfer (a
//! cluster to a backup directory and back into another cluster; a backup the pump wrote in
//! jobs through `pump worker`s, one run of many parts, into a cluster) and cbrecovery (the
//! vbuckets a failover lost, from another cluster), every item compared.
//!
//! Opt-in: couchbase-cli is not part of the project. Point COUCHBASE_CLI_SRC at a checkout of
//! github.com/couchbase/couchbase-cli and run
//!
//! ```sh
//! COUCHBASE_CLI_SRC=/path/to/couchbase-cli cargo nextest run --run-ignored only couchbase_cli
//! ```
//!
//! Its scripts run with a Python 3 of a virtual environment holding what they import
//! (requests, python-snappy, ...): COUCHBASE_CLI_VENV, or one made and kept under the target
//! directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{csv_rows, transfer_ok, LocalCluster};

/// What couchbase-cli's transfer tools import beside the standard library (its Pipfile,
/// unpinned: the versions it pins do not install on a current Python).
const CLI_PY_DEPS: &[&str] = &[
    "requests",
    "requests-toolbelt",
    "python-snappy",
    "cryptography",
    "pem",
    "pyopenssl",
];

fn src() -> PathBuf {
    PathBuf::from(std::env::var("COUCHBASE_CLI_SRC").expect(
        "set COUCHBASE_CLI_SRC to the path of a couchbase-cli checkout (github couchbase/couchbase-cli)",
    ))
}

/// The Python of a virtual environment with couchbase-cli's imports.
fn python() -> PathBuf {
    let venv = std::env::var_os("COUCHBASE_CLI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("couchbase-cli-venv"));
    let py = venv.join("bin/python");
    let ready = || {
        Command::new(&py)
            .args(["-c", "import requests, snappy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return py;
    }
    // nextest runs each test in a process of its own: one builds the environment while the
    // others wait for it (two at once failed, each pip seeing the other's half).
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("the venv's lock file");
    lock.lock().expect("lock the venv");
    if !ready() {
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run the installer");
            assert!(out.status.success(), "{cmd:?}: {}", common::stderr(&out));
        };
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(CLI_PY_DEPS));
    }
    py
}

/// Runs a couchbase-cli tool; panics with its output when it fails.
fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(src().join(name))
        .args(args)
        .current_dir(src())
        .output()
        .expect("run the tool");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        common::stderr(&out)
    );
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    text
}

const ADMIN: &[&str] = &["--user", "Administrator", "--password", "password"];
const CREDS: &[&str] = &["-u", "Administrator", "-p", "password"];

/// key -> (flags, expiry, cas, value) of every item, through the pump's CSV sink.
fn items(c: &LocalCluster) -> std::collections::BTreeMap<String, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("items.csv");
    transfer_ok(&c.spec(), &format!("csv:{}", csv.display()), CREDS);
    let rows = csv_rows(&csv);
    rows[1..]
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                vec![r[1].clone(), r[2].clone(), r[3].clone(), r[4].clone()],
            )
        })
        .collect()
}

#[test]
#[ignore = "opt-in: COUCHBASE_CLI_SRC=<a couchbase-cli checkout> cargo nextest run --run-ignored only couchbase_cli"]
fn couchbase_cli_cbtransfer_backs_a_cluster_up_and_restores_it_into_another() {
    let mut args = vec!["--replicas", "1"];
    args.extend_from_slice(ADMIN);
    let a = LocalCluster::up(2, 0, &args);
    let b = LocalCluster::up(2, 0, &args);
    let dest: Vec<&str> = ["-U", "Administrator", "-P", "password"].to_vec();
    transfer_ok(
        "gen:max-items=3000,json=1,expiry=2000000000",
        &a.spec(),
        &dest,
    );
    transfer_ok("gen:max-items=1000,prefix=raw-,flags=7", &a.spec(), &dest);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let out = tool(
        "cbtransfer",
        &[
            &a.url(),
            backup.to_str().unwrap(),
            "-u",
            "Administrator",
            "-p",
            "password",
        ],
    );
    assert!(out.contains("done"), "{out}");
    let out = tool(
        "cbtransfer",
        &[
            backup.to_str().unwrap(),
            &b.url(),
            "-u",
            "Administrator",
            "-p",
            "password",
        ],
    );
    assert!(out.contains("done"), "{out}");
    let (ia, ib) = (items(&a), items(&b));
    assert_eq!(ia.len(), 4000);
    // Every item, its flags, expiry, cas (SET_WITH_META keeps it) and value.
    assert_eq!(ia, ib);
    // The backup cbtransfer wrote reads back through the pump too.
    let csv = dir.path().join("backup.csv");
    transfer_ok(
        backup.to_str().unwrap(),
        &format!("csv:{}", csv.display()),
        &[],
    );
    assert_eq!(csv_rows(&csv).len(), 4001);
}

#[test]
#[ignore = "opt-in: COUCHBASE_CLI_SRC=<a couchbase-cli checkout> cargo nextest run --run-ignored only couchbase_cli"]
fn couchbase_cli_cbrecovery_brings_back_the_vbuckets_a_failover_lost() {
    // 64 vbuckets: cbrecovery transfers and commits one vbucket at a time.
    let mut args = vec!["--vbuckets", "64"];
    args.extend_from_slice(ADMIN);
    let a = LocalCluster::up(2, 0, &[&args[..], &["--replicas", "1"]].concat());
    let b = LocalCluster::up(2, 1, &args);
    let dest: Vec<&str> = ["-U", "Administrator", "-P", "password"].to_vec();
    transfer_ok("gen:max-items=2000,json=1,vbuckets=64", &a.spec(), &dest);
    transfer_ok("gen:max-items=2000,json=1,vbuckets=64", &b.spec(), &dest);
    b.failover(1);
    assert_eq!(b.missing().len(), 32);
    let out = tool(
        "cbrecovery",
        &[
            &a.url(),
            &b.url(),
            "-u",
            "Administrator",
            "-p",
            "password",
            "-U",
            "Administrator",
            "-P",
            "password",
            "-b",
            "default",
            "-B",
            "default",
        ],
    );
    assert!(out.contains("32 vbuckets recovered"), "{out}");
    assert_eq!(b.missing(), Vec::<u64>::new());
    let strip_cas = |m: std::collections::BTreeMap<String, Vec<String>>| {
        m.into_iter()
            .map(|(k, v)| (k, (v[0].clone(), v[1].clone(), v[3].clone())))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(strip_cas(items(&a)), strip_cas(items(&b)));
}

#[test]
#[ignore = "opt-in: COUCHBASE_CLI_SRC=<a couchbase-cli checkout> cargo nextest run --run-ignored only couchbase_cli"]
fn couchbase_cli_cbtransfer_reads_a_pump_backup_of_a_cluster_with_collections() {
    // A cluster whose DCP producer speaks collections: the pump's backup of its default
    // collection alone is cbbackup's format, and cbtransfer reads every item of it; a backup
    // that also holds another collection still gives cbtransfer the default collection's.
    let mut args = vec!["--replicas", "1"];
    args.extend_from_slice(ADMIN);
    let a = LocalCluster::up(2, 0, &args);
    let dest: Vec<&str> = ["-U", "Administrator", "-P", "password"].to_vec();
    transfer_ok("gen:max-items=2000,json=1", &a.spec(), &dest);
    let dir = tempfile::tempdir().unwrap();
    // cbtransfer's CSV sink writes a file per bucket and node (NAME_BUCKET_NODE.csv): every
    // row of each, read back.
    let read_back =
        |backup: &Path, name: &str| -> std::collections::BTreeMap<String, Vec<String>> {
            let out_dir = dir.path().join(name);
            std::fs::create_dir(&out_dir).unwrap();
            let csv = out_dir.join("items.csv");
            let out = tool(
                "cbtransfer",
                &[
                    backup.to_str().unwrap(),
                    &format!("csv:{}", csv.display()),
                    "-b",
                    "default",
                    "-u",
                    "Administrator",
                    "-p",
                    "password",
                ],
            );
            assert!(out.contains("done"), "{out}");
            let files = common::files_named(&out_dir, &|n| n.ends_with(".csv"));
            assert!(!files.is_empty(), "no CSV file from cbtransfer: {out}");
            files
                .iter()
                .flat_map(|f| csv_rows(f).into_iter().skip(1))
                .map(|r| (r[0].clone(), vec![r[1].clone(), r[2].clone(), r[4].clone()]))
                .collect()
        };
    let strip = |m: std::collections::BTreeMap<String, Vec<String>>| {
        m.into_iter()
            .map(|(k, v)| (k, vec![v[0].clone(), v[1].clone(), v[3].clone()]))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let want = strip(items(&a));
    assert_eq!(want.len(), 2000);
    let only_default = dir.path().join("only-default");
    transfer_ok(&a.spec(), only_default.to_str().unwrap(), CREDS);
    assert_eq!(read_back(&only_default, "a.csv"), want);
    // s1.c1 with 500 items of its own: the backup holds them apart, cbtransfer the rest.
    let (status, body) = a.rest("POST", "/pools/default/buckets/default/scopes", "name=s1");
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.rest(
        "POST",
        "/pools/default/buckets/default/scopes/s1/collections",
        "name=c1",
    );
    assert_eq!(status, 200, "{body}");
    let mut to_c1 = dest.clone();
    to_c1.extend(["--map-data", "default._default._default=default.s1.c1"]);
    transfer_ok("gen:max-items=500,prefix=c1-", &a.spec(), &to_c1);
    let with_c1 = dir.path().join("with-c1");
    transfer_ok(&a.spec(), with_c1.to_str().unwrap(), CREDS);
    assert_eq!(read_back(&with_c1, "b.csv"), want);
}

#[test]
#[ignore = "opt-in: COUCHBASE_CLI_SRC=<a couchbase-cli checkout> cargo nextest run --run-ignored only couchbase_cli"]
fn couchbase_cli_cbtransfer_restores_a_backup_written_in_jobs_by_pump_workers() {
    use pump_queue::testing::Beanstalkd;
    let a = LocalCluster::up(2, 0, ADMIN);
    let b = LocalCluster::up(2, 0, ADMIN);
    let dest: Vec<&str> = ["-U", "Administrator", "-P", "password"].to_vec();
    transfer_ok("gen:max-items=5000,json=1", &a.spec(), &dest);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    // One backup run of 8 parts, written by two workers: per-part data files, one meta.json.
    let q = Beanstalkd::start();
    let url = q.url("cbtransfer");
    let planned = common::pump(
        &[
            &["plan", "transfer", &a.spec(), backup.to_str().unwrap()][..],
            &["--queue", &url, "--jobs", "8"],
            CREDS,
        ]
        .concat(),
    );
    assert!(planned.status.success(), "{}", common::stderr(&planned));
    let worker = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pump"))
            .args([&["worker", &url, "--drain"][..], CREDS].concat())
            .output()
            .unwrap()
    };
    let (w1, w2) = std::thread::scope(|s| {
        let h = s.spawn(worker);
        (worker(), h.join().unwrap())
    });
    for w in [&w1, &w2] {
        assert!(w.status.success(), "{}", common::stderr(w));
    }
    assert!(common::data_files(&backup).len() > 1, "one file per part");
    let out = tool(
        "cbtransfer",
        &[
            backup.to_str().unwrap(),
            &b.url(),
            "-u",
            "Administrator",
            "-p",
            "password",
        ],
    );
    assert!(out.contains("done"), "{out}");
    let (ia, ib) = (items(&a), items(&b));
    assert_eq!(ia.len(), 5000);
    assert_eq!(ia, ib);
}
