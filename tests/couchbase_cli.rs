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
    let ready = Command::new(&py)
        .args(["-c", "import requests, snappy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
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
