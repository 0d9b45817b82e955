//! Passwords kept out of the command line (issue 18, item 5): `--password-file` and the
//! environment for `node`, `cluster up` and the commands taking `-p/-P`, the argument line of
//! a node holding no password, and no output ever holding one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::{csv_rows, stderr, LocalCluster};

const PASSWORD: &str = "s3cr:t/P@ss w0rd";

/// `pump ARGS` with `env` set (and the password variables of the caller's shell cleared).
fn pump_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pump"));
    for v in ["PUMP_PASSWORD", "PUMP_PASSWORD_DEST", "PUMP_NODE_PASSWORD"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run pump")
}

fn no_password_in(out: &Output) {
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        for part in ["s3cr", "P@ss", "w0rd"] {
            assert!(!text.contains(part), "{part:?} printed: {text}");
        }
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn cluster_up_and_transfers_take_the_password_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let pw = pw.display().to_string();
    let cluster = LocalCluster::up(1, 0, &["--user", "admin", "--password-file", &pw]);
    let argv = cmdline(cluster.pid());
    assert!(
        argv.contains("--password-file") && !argv.contains("s3cr"),
        "{argv}"
    );
    let spec = cluster.spec();

    // The node does require the password: none, or a wrong one, is refused.
    let out = pump_env(
        &["transfer", "gen:max-items=10", &spec, "-U", "admin", "-q"],
        &[],
    );
    assert!(!out.status.success(), "no password: {}", stderr(&out));
    let out = pump_env(
        &["transfer", "gen:max-items=10", &spec, "-U", "admin", "-q"],
        &[("PUMP_PASSWORD_DEST", "wrong-one")],
    );
    assert!(
        !out.status.success() && !stderr(&out).contains("wrong-one"),
        "{}",
        stderr(&out)
    );

    // -P from a file, then -p from the environment.
    let out = pump_env(
        &[
            "transfer",
            "gen:max-items=100",
            &spec,
            "-U",
            "admin",
            "--password-dest-file",
            &pw,
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    no_password_in(&out);
    let csv = dir.path().join("out.csv");
    let sink = format!("csv:{}", csv.display());
    let out = pump_env(
        &["transfer", &spec, &sink, "-u", "admin"],
        &[("PUMP_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    no_password_in(&out);
    assert_eq!(csv_rows(&csv).len(), 1 + 100, "the header and 100 rows");

    // The argument wins over the variable; the file may be standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "transfer",
            &spec,
            "blackhole:",
            "-u",
            "admin",
            "--password-file",
            "-",
        ])
        .env("PUMP_PASSWORD", "wrong-one")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), PASSWORD.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    no_password_in(&out);
    let out = pump_env(
        &[
            "transfer",
            &spec,
            "blackhole:",
            "-u",
            "admin",
            "-p",
            "wrong-one",
        ],
        &[("PUMP_PASSWORD", PASSWORD)],
    );
    assert!(!out.status.success(), "-p wrong-one won: {}", stderr(&out));
}

#[test]
fn a_node_takes_its_password_from_the_environment_and_it_is_not_in_its_argument_line() {
    let mut node = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "node",
            "--kv-port",
            "0",
            "--rest-port",
            "0",
            "--user",
            "admin",
        ])
        .env("PUMP_NODE_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rest="))
        .unwrap_or_else(|| panic!("no rest= in {line:?}"))
        .to_string();
    let argv = cmdline(node.id());
    let spec = format!("couchbase://{rest}");
    let refused = pump_env(&["transfer", "gen:max-items=10", &spec, "-q"], &[]);
    let taken = pump_env(
        &["transfer", "gen:max-items=10", &spec, "-U", "admin", "-q"],
        &[("PUMP_PASSWORD_DEST", PASSWORD)],
    );
    node.kill().unwrap();
    node.wait().unwrap();
    assert!(
        !argv.contains("s3cr") && argv.contains("--user admin"),
        "{argv}"
    );
    assert!(
        !refused.status.success(),
        "no credentials: {}",
        stderr(&refused)
    );
    assert!(taken.status.success(), "{}", stderr(&taken));
    no_password_in(&taken);
}

#[test]
fn a_user_without_a_password_or_a_password_given_twice_is_a_usage_error() {
    let out = pump_env(
        &[
            "node",
            "--kv-port",
            "0",
            "--rest-port",
            "0",
            "--user",
            "admin",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--password-file or PUMP_NODE_PASSWORD"),
        "{}",
        stderr(&out)
    );
    let out = pump_env(
        &[
            "cluster",
            "up",
            "--kv-port",
            "0",
            "--rest-port",
            "0",
            "--password",
            PASSWORD,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs --user"), "{}", stderr(&out));
    no_password_in(&out);
    let out = pump_env(
        &[
            "transfer",
            "gen:",
            "blackhole:",
            "-u",
            "a",
            "-p",
            PASSWORD,
            "--password-file",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = pump_env(
        &[
            "transfer",
            "gen:",
            "blackhole:",
            "-u",
            "a",
            "--password-file",
            "/nonexistent/pw",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("password file /nonexistent/pw"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cluster_failover_and_recover_take_the_credentials_and_never_print_them() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let pw = pw.display().to_string();
    let auth = ["--user", "admin", "--password-file", pw.as_str()];
    let from = LocalCluster::up(1, 0, &auth);
    let to = LocalCluster::up(2, 0, &auth);
    let url = to.url();
    // The REST port refuses a failover without the credentials, and takes -u with the file.
    let out = pump_env(&["cluster", "failover", &url, "1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = pump_env(
        &[
            "cluster",
            "failover",
            &url,
            "1",
            "-u",
            "admin",
            "--password-file",
            &pw,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    no_password_in(&out);
    // A dry run of the recovery, the credentials from the environment, then in the URLs.
    let out = pump_env(
        &[
            "recover",
            "-n",
            &from.url(),
            &url,
            "-u",
            "admin",
            "-U",
            "admin",
        ],
        &[
            ("PUMP_PASSWORD", PASSWORD),
            ("PUMP_PASSWORD_DEST", PASSWORD),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    no_password_in(&out);
    let with = |u: &str| u.replace("http://", "http://admin:s3cr%3At%2FP%40ss%20w0rd@");
    let out = pump_env(&["recover", "-n", &with(&from.url()), &with(&url)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    no_password_in(&out);
}
