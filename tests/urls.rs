//! Specs and URLs end to end: a password holding `/`, `@` and `:` in every URL kind (as typed
//! and percent-encoded), never printed; an IPv6 literal.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{pump, stderr, LocalCluster, Memcached};

const USER: &str = "pumpuser";
/// `/`, `@` and `:` in one password, each fragment distinct so that any part of it shown is
/// caught.
const PASSWORD: &str = "Zq9/Xk7@Wv5:Ty3";
const ENCODED: &str = "Zq9%2FXk7%40Wv5%3ATy3";
const FRAGMENTS: [&str; 4] = ["Zq9", "Xk7", "Wv5", "Ty3"];

/// Neither stdout nor stderr shows any part of the password.
fn shows_no_password(what: &str, out: &Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for f in FRAGMENTS {
        assert!(!text.contains(f), "{what}: {f} shown in {text}");
    }
}

fn ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
    shows_no_password(what, out);
}

fn written(out: &Output) -> u64 {
    let err = stderr(out);
    err.lines()
        .find_map(|l| l.trim().strip_prefix("items"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no items line in {err}"))
}

/// A memcached with SASL that knows USER with PASSWORD.
fn sasl_memcached() -> (Memcached, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb");
    let mut p = Command::new("saslpasswd2")
        .args([
            "-a",
            "memcached",
            "-c",
            "-p",
            "-f",
            db.to_str().unwrap(),
            USER,
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (Debian package sasl2-bin)");
    p.stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    assert!(p.wait().unwrap().success());
    std::fs::write(
        dir.path().join("memcached.conf"),
        format!("mech_list: plain\nsasldb_path: {}\n", db.display()),
    )
    .unwrap();
    let conf = dir.path().to_str().unwrap().to_string();
    let mc = Memcached::start_with(
        common::free_port(),
        &["-S"],
        &[("SASL_CONF_PATH", conf.as_str())],
    );
    (mc, dir)
}

#[test]
fn a_password_with_slash_at_and_colon_works_in_every_url_kind_and_is_never_printed() {
    // Two nodes, one replica: node 1 holds replicas, which a TAP sink writes into.
    let cluster = LocalCluster::up(
        2,
        0,
        &["--replicas", "1", "--user", USER, "--password", PASSWORD],
    );
    let (rest, kv0, kv1) = (
        &cluster.nodes[0].rest,
        &cluster.nodes[0].kv,
        &cluster.nodes[1].kv,
    );
    let replicas_on_1: Vec<String> = cluster
        .map()
        .iter()
        .enumerate()
        .filter(|(_, chain)| chain.get(1) == Some(&1))
        .map(|(vb, _)| vb.to_string())
        .collect();
    let actives_on_0: Vec<String> = cluster
        .map()
        .iter()
        .enumerate()
        .filter(|(_, chain)| chain.first() == Some(&0))
        .map(|(vb, _)| vb.to_string())
        .collect();
    assert!(!replicas_on_1.is_empty() && !actives_on_0.is_empty());
    let (mc, _sasl) = sasl_memcached();
    let dir = tempfile::tempdir().unwrap();
    for (i, pw) in [PASSWORD, ENCODED].into_iter().enumerate() {
        let cred = format!("{USER}:{pw}@");
        let gen = format!("gen:max-items=200,min-value-size=8,prefix=k{i}_");
        // Sinks: the cluster (REST map, then SASL on each node), a memcached with SASL, a
        // node's replica vbuckets over TAP.
        let out = pump(&["transfer", &gen, &format!("couchbase://{cred}{rest}")]);
        ok("couchbase:// sink", &out);
        assert_eq!(written(&out), 200);
        let out = pump(&[
            "transfer",
            &gen,
            &format!("memcached://{cred}{}", mc.addr()),
        ]);
        ok("memcached:// sink", &out);
        assert_eq!(written(&out), 200);
        let out = pump(&[
            "transfer",
            "-l",
            &replicas_on_1.join(","),
            &gen,
            &format!("tap://{cred}{kv1}"),
        ]);
        ok("tap:// sink", &out);
        assert!(written(&out) > 0);
        // Sources: the cluster, a node's DCP and TAP streams.
        let csv = dir.path().join(format!("all{i}.csv"));
        let out = pump(&[
            "transfer",
            &format!("couchbase://{cred}{rest}"),
            &format!("csv:{}", csv.display()),
        ]);
        ok("couchbase:// source", &out);
        assert!(written(&out) >= 200 * (i as u64 + 1));
        let out = pump(&[
            "transfer",
            "-l",
            &actives_on_0.join(","),
            &format!("dcp://{cred}{kv0}"),
            "blackhole:",
        ]);
        ok("dcp:// source", &out);
        let out = pump(&[
            "transfer",
            "-l",
            &actives_on_0.join(","),
            &format!("tap://{cred}{kv0}"),
            "blackhole:",
        ]);
        ok("tap:// source", &out);
        // REST URLs: recover (nothing missing) and cluster failover (no such node).
        let url = format!("http://{cred}{rest}");
        let out = pump(&["recover", "-n", &url, &url]);
        ok("recover http://", &out);
        let out = pump(&["cluster", "failover", &url, "n_9@nowhere"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        shows_no_password("cluster failover http://", &out);
    }
    // A wrong password containing the right one: refused, and still never printed.
    for url in [
        format!("dcp://{USER}:{PASSWORD}-wrong@{kv0}"),
        format!("memcached://{USER}:{PASSWORD}-wrong@{}", mc.addr()),
    ] {
        let (source, sink) = if url.starts_with("dcp") {
            (url.as_str(), "blackhole:")
        } else {
            ("gen:max-items=5", url.as_str())
        };
        let out = pump(&["transfer", "-l", &actives_on_0.join(","), source, sink]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("authentication"), "{}", stderr(&out));
        // The error names the flags that give the credentials of that side.
        let flags = if url.starts_with("dcp") {
            "-u/-p"
        } else {
            "-U/-P"
        };
        assert!(stderr(&out).contains(flags), "{}", stderr(&out));
        shows_no_password("a wrong password", &out);
    }
    // A refusal of the credentials is never retried: one connection, then the error.
    let proxy = common::faults::FaultProxy::start(&mc.addr(), Default::default());
    let out = pump(&[
        "transfer",
        "-t",
        "1",
        "gen:max-items=5",
        &format!("memcached://{USER}:wrong@{}", proxy.addr()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not retried"), "{}", stderr(&out));
    // The error names the peer and the user it was refused to.
    assert!(
        stderr(&out).contains(&proxy.addr()) && stderr(&out).contains(&format!("{USER:?}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        proxy
            .counts
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection: no retry"
    );
    // A password that breaks the URL (a raw % starting no escape is kept, a raw # is not):
    // a usage error that names the spec, not the password.
    let out = pump(&[
        "transfer",
        "gen:max-items=5",
        &format!("memcached://{USER}:{PASSWORD}@{}#x", mc.addr()),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    shows_no_password("a bad URL", &out);
}

#[test]
fn memcached_on_an_ipv6_literal_works_as_a_sink_and_a_source() {
    let mc = Memcached::start_ipv6(&[]);
    let url = format!("memcached://{}", mc.addr());
    assert!(url.starts_with("memcached://[::1]:"), "{url}");
    let out = pump(&["transfer", "gen:max-items=300,prefix=v6_", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(written(&out), 300);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("v6.csv");
    let out = pump(&["transfer", &url, &format!("csv:{}", csv.display())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = common::csv_rows(&csv);
    assert_eq!(rows.len(), 301, "a header and every item");
    assert!(rows[1..].iter().all(|r| r[0].starts_with("v6_")));
}
