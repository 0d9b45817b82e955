//! End to end: the defaults and errors an operator meets first, each case of issue 17's "Why"
//! that lost data or time: a forgotten colon, an overwritten file, a mistyped volume, exit
//! codes, Ctrl-C, a closed stdout, the CSV line, a port in use, bytes, -v, filters matching
//! nothing, backups that cannot restore as "0 written, exit 0".

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{pump, stderr, transfer_ok, LocalCluster};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pump_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pump"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_bare_word_naming_a_kind_is_a_usage_error_that_suggests_the_colon_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["transfer", "gen:max-items=10", "blackhole"][..],
            "did you mean blackhole:?",
        ),
        (
            &["transfer", "gen:max-items=10", "stdout"][..],
            "did you mean stdout:?",
        ),
        (&["transfer", "gen", "blackhole:"][..], "did you mean gen:?"),
        (
            &["transfer", "gen:max-items=10", "CSV"][..],
            "did you mean csv:?",
        ),
    ] {
        let out = pump_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
    // A directory that happens to have such a name is still reachable as a path.
    let out = pump_in(
        dir.path(),
        &["transfer", "gen:max-items=10", "./blackhole", "-q"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("blackhole").is_dir());
}

#[test]
fn a_csv_sink_refuses_an_existing_file_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keep.csv");
    std::fs::write(&file, "precious\n").unwrap();
    let sink = format!("csv:{}", file.display());
    let out = pump(&["transfer", "gen:max-items=10", &sink]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--overwrite"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious\n");
    transfer_ok("gen:max-items=10", &sink, &["--overwrite"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 11);
}

#[test]
fn usage_errors_and_a_missing_source_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-backup");
    let out = pump(&["transfer", s(&missing), "blackhole:"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no such backup directory"),
        "{}",
        stderr(&out)
    );
    for args in [
        &["transfer", "gen:", "blackhole:", "--rate", "fast"][..],
        &["transfer", "gen:", "blackhole:", "-m", "diff"][..],
        &["transfer", "gen:", "blackhole:", "--replace-ttl", "all"][..],
        &["transfer", "gen:", "blackhole:", "--allow-partial"][..],
        &["info", s(&missing)][..],
    ] {
        let out = pump(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    for args in [
        &[
            "transfer",
            "gen:max-items=10000000,min-value-size=100",
            "stdout:",
            "-q",
        ][..],
        &["kinds"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is gone (as `| head -1` leaves): the pump stops without a word.
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("Broken pipe") && !err.contains("panicked"),
            "{err}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn a_csv_error_names_the_line_that_is_bad_with_crlf_lines_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.csv");
    std::fs::write(
        &file,
        "id,flags,expiration,cas,value,rev,vbid,dtype\r\nk1,0,0,1,v,,0,0\r\nk2,0,0,1,v,,0,0\r\nk3,x,0,1,v,,0,0\r\n",
    )
    .unwrap();
    let out = pump(&["transfer", &format!("csv:{}", file.display()), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("line 4: flags \"x\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = pump(&["node", "--kv-port", &port, "--rest-port", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("KV port 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
    let out = pump(&[
        "transfer",
        "gen:max-items=1",
        "blackhole:",
        "--metrics",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("--metrics 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bytes_count_what_was_written_and_verbose_says_what_runs() {
    let c = LocalCluster::up(1, 0, &[]);
    transfer_ok("gen:max-items=2000,min-value-size=100", &c.spec(), &[]);
    // Everything is there already: --add skips it all, and no byte is written.
    let out = pump(&[
        "transfer",
        "gen:max-items=2000,min-value-size=100",
        &c.spec(),
        "-a",
        "-v",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("0 written, 2000 skipped"), "{err}");
    let bytes = err
        .lines()
        .find(|l| l.trim_start().starts_with("bytes"))
        .unwrap();
    assert_eq!(
        bytes.split_whitespace().collect::<Vec<_>>(),
        ["bytes", "0", "written"],
        "{err}"
    );
    assert!(err.contains("0 items/s, 0.0 MB/s"), "{err}");
    // -v tells the kinds, the batches and the filters, whatever the kinds.
    assert!(
        err.contains("source gen:max-items=2000,min-value-size=100: kind gen"),
        "{err}"
    );
    assert!(
        err.contains(&format!("sink {}: kind couchbase", c.spec())),
        "{err}"
    );
    assert!(err.contains("batches of 1000 items"), "{err}");
    let quiet = pump(&["transfer", "gen:max-items=10", "blackhole:"]);
    assert!(!stderr(&quiet).contains("batches of"), "{}", stderr(&quiet));
}

#[test]
fn filters_that_match_nothing_warn() {
    let out = pump(&[
        "transfer",
        "gen:max-items=500",
        "blackhole:",
        "-k",
        "^nothing",
    ]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("warning: the filters matched nothing: all 500 items read were left out (-k \"^nothing\")"),
        "{err}"
    );
    let out = pump(&[
        "transfer",
        "gen:max-items=500",
        "blackhole:",
        "-k",
        "^pymc1",
    ]);
    assert!(
        !stderr(&out).contains("matched nothing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restore_filters_and_rewrites_values_deletions_and_expiries() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let out = dir.path().join("out.csv");
    let head = "id,flags,expiration,cas,value,rev,vbid,dtype\n";
    std::fs::write(
        &input,
        format!("{head}beer1,0,1000000000,1,{{\"type\":\"beer\"}},,0,0\nwine1,0,0,1,{{\"type\":\"wine\"}},,0,0\nbeer2,0,4000000000,1,{{\"type\":\"beer\"}},,0,0\n"),
    )
    .unwrap();
    let backup = dir.path().join("bk");
    transfer_ok(&format!("csv:{}", input.display()), s(&backup), &[]);
    transfer_ok(
        s(&backup),
        &format!("csv:{}", out.display()),
        &[
            "--filter-values",
            "beer",
            "--replace-ttl",
            "expired",
            "--replace-ttl-with",
            "0",
        ],
    );
    let rows = common::csv_rows(&out);
    let got: Vec<(String, String)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("beer1".into(), "0".into()),
            ("beer2".into(), "4000000000".into())
        ]
    );
    transfer_ok(
        s(&backup),
        &format!("csv:{}", out.display()),
        &[
            "--overwrite",
            "--replace-ttl",
            "all",
            "--replace-ttl-with",
            "2100-01-01T00:00:00Z",
        ],
    );
    let rows = common::csv_rows(&out);
    assert!(rows[1..].iter().all(|r| r[2] == "4102444800"), "{rows:?}");
}

#[test]
fn a_restore_never_ends_as_nothing_written_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    transfer_ok("gen:max-items=0", s(&empty), &[]);
    let out = pump(&["transfer", s(&empty), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds no items"), "{}", stderr(&out));
    // A directory with no run at all.
    std::fs::create_dir(dir.path().join("nothing")).unwrap();
    let out = pump(&["transfer", s(&dir.path().join("nothing")), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no backup found"), "{}", stderr(&out));
}

#[test]
fn an_interrupted_backup_is_refused_by_restore_and_a_rerun_writes_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    let child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "transfer",
            "gen:max-items=10000000",
            s(&backup),
            "--rate",
            "100k",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: a signal to the child this test started, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
    let out = pump(&["transfer", s(&backup), "blackhole:"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-partial"), "{}", stderr(&out));
    // gen: keeps no positions: the same command writes the run again, in the same place.
    let out = pump(&["transfer", "gen:max-items=1000", s(&backup), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("written again"), "{}", stderr(&out));
    assert!(common::files_named(&backup, &|n| n.ends_with(".partial")).is_empty());
    let out = pump(&["transfer", s(&backup), "blackhole:"]);
    assert!(stderr(&out).contains("1000 written"), "{}", stderr(&out));
}

#[test]
fn a_meta2_volume_must_exist_and_hold_bases_unless_create() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1");
    let typo = dir.path().join("v2-typo");
    let peers = "127.0.0.1:6120,127.0.0.2:6120";
    let out = pump(&["meta2", "generate", "--volume", s(&v1), "--peers", peers]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let base = list.split_whitespace().next().unwrap().to_string();
    let p1 = format!("127.0.0.1:6120={}", v1.display());
    let p2 = format!("127.0.0.2:6120={}", typo.display());
    let out = pump(&["meta2", "sync", &base, "--peer", &p1, "--peer", &p2]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no such volume directory"),
        "{}",
        stderr(&out)
    );
    assert!(!typo.exists(), "the mistyped volume was not created");
    std::fs::create_dir(&typo).unwrap();
    let out = pump(&["meta2", "sync", &base, "--peer", &p1, "--peer", &p2]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no meta2 base"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&typo).unwrap().count(), 0);
    let out = pump(&[
        "meta2", "sync", &base, "--peer", &p1, "--peer", &p2, "--create",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
}
