//! The command line itself: exit codes, filters, Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pump() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pump"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = pump().args(args).output().expect("run pump");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gen_to_stdout_writes_one_set_per_item_with_its_real_vbucket() {
    let (code, out, err) = run(&[
        "transfer",
        "gen:max-items=50,min-value-size=4,prefix=k",
        "stdout:",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let sets: Vec<&str> = out.lines().filter(|l| l.starts_with("set ")).collect();
    assert_eq!(sets.len(), 50);
    // "hello" hashes to 528 of 1024; check one generated key against the shared hash too.
    let k0 = sets.iter().find(|l| l.starts_with("set k0 ")).expect("k0");
    let vb: u16 = k0.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(vb, pump_protocol::vbucket_of(b"k0", 1024));
    assert!(err.contains("50 written"), "{err}");
}

#[test]
fn vbucket_list_and_key_regex_filter_what_travels() {
    let (code, out, _) = run(&[
        "transfer",
        "gen:max-items=2000,min-value-size=1,prefix=k",
        "stdout:",
        "-q",
        "-l",
        "0-99",
    ]);
    assert_eq!(code, 0);
    let vbs: Vec<u16> = out
        .lines()
        .filter(|l| l.starts_with("set "))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!vbs.is_empty() && vbs.iter().all(|vb| *vb < 100), "{vbs:?}");
    let expected = (0..2000)
        .filter(|i| pump_protocol::vbucket_of(format!("k{i}").as_bytes(), 1024) < 100)
        .count();
    assert_eq!(vbs.len(), expected);

    let (code, out, err) = run(&[
        "transfer",
        "gen:max-items=200,min-value-size=1,prefix=k",
        "stdout:",
        "-q",
        "-k",
        "^k1[0-9]$",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| l.starts_with("set ")).count(), 10);
    assert!(err.contains("190 filtered out"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_name_what_was_wrong() {
    let (code, _, err) = run(&["transfer", "nosuchkind:x", "blackhole:"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nosuchkind:x") && err.contains("not a source"),
        "{err}"
    );

    let (code, _, err) = run(&["transfer", "gen:", "blackhole:", "-x", "batch_max_size=0"]);
    assert_eq!(code, 2);
    assert!(err.contains("batch_max_size=0"), "{err}");

    let (code, _, err) = run(&["transfer", "gen:", "blackhole:", "-x", "colour=blue"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("colour") && err.contains("batch_max_size"),
        "{err}"
    );

    let (code, _, err) = run(&["transfer", "gen:", "blackhole:", "-l", "9-3"]);
    assert_eq!(code, 2);
    assert!(err.contains("9-3"), "{err}");

    let (code, _, err) = run(&["transfer", "gen:", "blackhole:", "-k", "("]);
    assert_eq!(code, 2);
    assert!(err.contains("-k"), "{err}");

    let (code, _, _) = run(&["transfer", "gen:"]);
    assert_eq!(code, 2);
}

#[test]
fn a_rest_peer_that_refuses_connections_is_named_with_the_reason() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let cases = [
        vec![
            "transfer".into(),
            format!("couchbase://127.0.0.1:{port}"),
            "blackhole:".into(),
        ],
        vec!["recover".into(), url.clone(), url.clone()],
        vec!["cluster".into(), "failover".into(), url.clone(), "0".into()],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&url), "{args:?} names the peer: {err}");
        assert!(
            err.contains("Connection refused"),
            "{args:?} says why: {err}"
        );
    }
}

#[test]
fn dry_run_reads_everything_and_writes_nothing() {
    let (code, out, err) = run(&["transfer", "gen:max-items=100", "stdout:", "-n", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("dry run"), "{err}");
    assert!(err.contains("0 written, 100 skipped"), "{err}");
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(out, "");
}

#[test]
fn ctrl_c_drains_and_reports_what_was_confirmed() {
    let child = pump()
        .args([
            "transfer",
            "gen:max-items=1000000000,min-value-size=10",
            "blackhole:",
            "-q",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn pump");
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "pump did not stop after SIGINT"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let written: u64 = err
        .lines()
        .find(|l| l.trim_start().starts_with("items"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("summary items line");
    assert!(written > 0 && written < 1_000_000_000, "{err}");
    assert!(err.contains(&format!("{written} items confirmed")), "{err}");
}

/// Every `.rs` file under `dir`, recursively.
fn sources_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The repair phases sit below the command line: they take `Failure` and the registry from
/// `src/failure.rs` and `src/kinds.rs`, never from `src/cli` (the grep of issue 15).
#[test]
fn the_repair_phases_never_import_the_command_line() {
    let repair = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/repair");
    let files = sources_under(&repair);
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::cli"),
            "{} imports crate::cli",
            f.display()
        );
    }
}

/// Test hooks exist only in test builds: the binary reads no test variable of the
/// environment (the meta2 move's hooks are `#[cfg(test)]`).
#[test]
fn no_test_hook_is_read_from_the_environment() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for f in sources_under(&src) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("PUMP_TEST_"),
            "{} reads a test hook",
            f.display()
        );
    }
}
