//! The delivery contract (issue 15; the `pump` crate's docs), checked against every sink kind
//! by a parameter. A new sink is added by adding a [`Kind`] and its row in the `suite!` table
//! at the end: its spec, how to read back what it applied, and which checks apply.
//!
//! ```text
//! check                     what it proves                                      sinks
//! in_order_at_least_once    every message applied at least once, a key's        every item kind
//!                           versions in source order (the latest last), through  (network ones
//!                           a fault-injecting peer: TMPFAIL, ENOMEM and resets   behind the peer)
//!                           on a share of the writes, each counted once
//! meta2_copy_is_exact       a meta2 base copied whole: the copy's digests are    meta2
//!                           its source's
//! partial_failure           a key the destination refuses: exit 1, the key in    network kinds
//!                           --failed-keys, the DCP checkpoint kept behind it,    (a file sink
//!                           and a rerun from the checkpoint writes it            refuses none)
//! dry_run                   checks the destination (a bad one fails, naming it)  every kind
//!                           and writes nothing
//! ctrl_c_drains             SIGINT mid-transfer: exit 1, "interrupted", what was every kind
//!                           confirmed is applied, a file sink renames nothing
//! ```
//!
//! Network sinks run against real peers: Debian's memcached (`memcached://`), the reference
//! node in this process (`couchbase://` through a REST map that names the fault peer, and
//! `tap://` into its replica vbuckets).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::faults::{FaultProxy, Faults, Timing, E2BIG, ENOMEM, TMPFAIL};
use common::{pump, stderr, Memcached};
use pump_node::store::{Write, WriteMode, CLIENT_STATES};
use pump_node::{Node, NodeConfig};
use pump_protocol::{vbucket_of, VbucketState};

/// Every kind of sink the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Blackhole,
    Stdout,
    Csv,
    Backup,
    Memcached,
    Couchbase,
    Tap,
    Meta2,
}

impl Kind {
    /// A network sink: it sits behind the fault peer.
    fn is_network(self) -> bool {
        matches!(self, Kind::Memcached | Kind::Couchbase | Kind::Tap)
    }
}

/// A reference node served by this process (a runtime of its own), with a REST map when a
/// couchbase sink needs one.
struct Host {
    node: Node,
    rests: Vec<pump_client::testing::FakeRest>,
    rt: tokio::runtime::Runtime,
}

impl Host {
    fn start(state: VbucketState) -> Host {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = NodeConfig {
            initial_state: state,
            ..NodeConfig::default()
        };
        let node = rt
            .block_on(Node::start(cfg, "127.0.0.1:0".parse().unwrap()))
            .expect("start a node");
        Host {
            node,
            rests: Vec::new(),
            rt,
        }
    }

    fn kv(&self) -> String {
        self.node.kv_addr.to_string()
    }

    /// A REST map of one server, `kv`, holding every vbucket active.
    fn serve_map(&mut self, kv: &str) -> String {
        let chains = vec![vec![0]; 1024];
        let rest = self.rt.block_on(pump_client::testing::FakeRest::start(
            pump_client::testing::bucket_json(&[kv], &chains),
        ));
        let addr = rest.addr.clone();
        self.rests.push(rest);
        addr
    }

    /// The value of `key`, in whatever state its vbucket is.
    fn value(&self, key: &str) -> Option<Vec<u8>> {
        let vb = vbucket_of(key.as_bytes(), 1024);
        let states = [
            VbucketState::Active,
            VbucketState::Replica,
            VbucketState::Pending,
        ];
        self.node
            .bucket
            .get(vb, key.as_bytes(), &states)
            .ok()
            .map(|i| i.value.to_vec())
    }

    /// Writes `key` into its (active) vbucket: a source node's content.
    fn put(&self, key: &str, value: &str) {
        let vb = vbucket_of(key.as_bytes(), 1024);
        self.node
            .bucket
            .write(
                vb,
                Write {
                    key: Bytes::from(key.to_string()),
                    value: Bytes::from(value.to_string()),
                    flags: 0,
                    expiry: 0,
                    datatype: 0,
                    cas: 0,
                    mode: WriteMode::Set,
                },
                CLIENT_STATES,
            )
            .unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.node.halt();
    }
}

/// One sink under test: where it writes, and the peers behind it.
struct Target {
    kind: Kind,
    dir: tempfile::TempDir,
    mc: Option<Memcached>,
    host: Option<Host>,
    proxy: Option<FaultProxy>,
    /// The spec of a network sink, straight to its peer (no faults).
    direct: String,
    /// The spec through the fault peer (network sinks), or the only one.
    spec: String,
}

impl Target {
    fn new(kind: Kind, faults: Faults) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Target {
            kind,
            dir,
            mc: None,
            host: None,
            proxy: None,
            direct: String::new(),
            spec: String::new(),
        };
        let path = |name: &str| t.dir.path().join(name).display().to_string();
        t.spec = match kind {
            Kind::Blackhole => "blackhole:".into(),
            Kind::Stdout => "stdout:".into(),
            Kind::Csv => format!("csv:{}", path("out.csv")),
            Kind::Backup => path("backup"),
            Kind::Meta2 => format!("meta2:{}", path("copy.meta2")),
            Kind::Memcached => {
                let mc = Memcached::start(&["-m", "256"]);
                let proxy = FaultProxy::start(&mc.addr(), faults);
                t.direct = mc.url();
                let spec = format!("memcached://{}", proxy.addr());
                t.mc = Some(mc);
                t.proxy = Some(proxy);
                spec
            }
            Kind::Couchbase => {
                let mut host = Host::start(VbucketState::Active);
                let proxy = FaultProxy::start(&host.kv(), faults);
                // Two maps of the one node: one names the fault peer as the node, the other
                // the node itself (the direct spec).
                let through = host.serve_map(&proxy.addr());
                let kv = host.kv();
                t.direct = format!("couchbase://{}", host.serve_map(&kv));
                t.proxy = Some(proxy);
                t.host = Some(host);
                format!("couchbase://{through}")
            }
            Kind::Tap => {
                let host = Host::start(VbucketState::Replica);
                let proxy = FaultProxy::start(&host.kv(), faults);
                t.direct = format!("tap://{}", host.kv());
                let spec = format!("tap://{}", proxy.addr());
                t.proxy = Some(proxy);
                t.host = Some(host);
                spec
            }
        };
        t
    }

    fn proxy(&self) -> &FaultProxy {
        self.proxy
            .as_ref()
            .expect("a network sink has a fault peer")
    }
}

/// The suite's source: `keys` keys written in rounds, each round a new version of every key
/// (`k{i}` = `k{i}.v{round}.` padded to 24 bytes), then for the first tenth of the keys two
/// more versions back to back (so that versions of one key share a batch too). Returns the
/// CSV file and, per key, its versions in source order.
fn versions_csv(
    dir: &Path,
    keys: usize,
    rounds: usize,
) -> (PathBuf, BTreeMap<String, Vec<String>>) {
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for i in 0..keys {
            rows.push((format!("k{i}"), round));
        }
    }
    for i in 0..keys / 10 {
        rows.push((format!("k{i}"), rounds + 1));
        rows.push((format!("k{i}"), rounds + 2));
    }
    let mut text = String::from("id,value\r\n");
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in rows {
        let value = format!(
            "{k}.v{v}.{}",
            "x".repeat(24usize.saturating_sub(k.len() + 4))
        );
        text.push_str(&format!("{k},{value}\r\n"));
        versions.entry(k).or_default().push(value);
    }
    let path = dir.join("versions.csv");
    std::fs::write(&path, text).unwrap();
    (path, versions)
}

/// The items line of a summary: (written, skipped, failed).
fn summary(out: &Output) -> (u64, u64, u64) {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with("items "))
        .unwrap_or_else(|| panic!("no summary in {err}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    (n[0], n[1], n[2])
}

/// (key, value) rows of a CSV file in file order.
fn csv_pairs(path: &Path) -> Vec<(String, String)> {
    let rows = common::csv_rows(path);
    let head = &rows[0];
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    let (id, value) = (col("id"), col("value"));
    rows[1..]
        .iter()
        .map(|r| {
            let v = r[value].clone();
            // cbtransfer's bytes literal, as the CSV sink writes values.
            let v = v
                .strip_prefix("b'")
                .and_then(|v| v.strip_suffix('\''))
                .map(str::to_string)
                .unwrap_or(v);
            (r[id].clone(), v)
        })
        .collect()
}

/// (key, value) of each `set` line of the stdout sink, in order.
fn stdout_pairs(out: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(out);
    let mut lines = text.split("\r\n");
    let mut pairs = Vec::new();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix("set ") {
            let key = rest.split(' ').next().unwrap().to_string();
            pairs.push((key, lines.next().unwrap_or("").to_string()));
        }
    }
    pairs
}

/// What a file sink wrote, in order (read back through the pump for a backup).
fn file_pairs(t: &Target, stdout: &[u8]) -> Vec<(String, String)> {
    match t.kind {
        Kind::Stdout => stdout_pairs(stdout),
        Kind::Csv => csv_pairs(&t.dir.path().join("out.csv")),
        Kind::Backup => {
            let csv = t.dir.path().join("back.csv");
            let out = pump(&["transfer", "-q", &t.spec, &format!("csv:{}", csv.display())]);
            assert!(out.status.success(), "{}", stderr(&out));
            csv_pairs(&csv)
        }
        _ => unreachable!("not a file sink"),
    }
}

/// The value a network sink's destination holds for `key`.
fn held(t: &Target, key: &str) -> Option<String> {
    let v = match t.kind {
        Kind::Memcached => {
            t.mc.as_ref()
                .unwrap()
                .text()
                .get_many(&[key.to_string()])
                .pop()
                .flatten()
                .map(|i| i.value)
        }
        Kind::Couchbase | Kind::Tap => t.host.as_ref().unwrap().value(key),
        _ => unreachable!("not a network sink"),
    };
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Every key of `versions`, what the destination holds, read in one go where it can.
fn held_all(t: &Target, keys: &[String]) -> Vec<Option<String>> {
    match t.kind {
        Kind::Memcached => {
            t.mc.as_ref()
                .unwrap()
                .text()
                .get_many(keys)
                .into_iter()
                .map(|i| i.map(|i| String::from_utf8_lossy(&i.value).into_owned()))
                .collect()
        }
        _ => keys.iter().map(|k| held(t, k)).collect(),
    }
}

/// Runs `pump transfer ARGS` and returns its output (stdout captured).
fn transfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pump"))
        .arg("transfer")
        .args(args)
        .output()
        .expect("run pump")
}

/// A faulty peer: TMPFAIL and ENOMEM on a share of the writes (answered in order, as a real
/// server would), resets on a few.
fn faulty() -> Faults {
    Faults {
        statuses: vec![(TMPFAIL, 0.04), (ENOMEM, 0.02)],
        reset: 0.002,
        reset_after: 300,
        timing: Timing::InOrder,
        record: true,
        ..Faults::default()
    }
}

/// Every message applied at least once and each key's versions in source order, the latest
/// last; through faults for a network sink (and the faults proven to have happened).
fn in_order_at_least_once(kind: Kind) {
    let t = Target::new(kind, faulty());
    let (csv, versions) = versions_csv(t.dir.path(), 1500, 3);
    let messages: usize = versions.values().map(Vec::len).sum();
    let source = format!("csv:{}", csv.display());
    let out = transfer(&[
        "-q",
        "-t",
        "4",
        "-x",
        "batch_max_size=100,backoff_cap=0.05",
        &source,
        &t.spec,
    ]);
    assert!(out.status.success(), "{kind:?}: {}", stderr(&out));
    assert_eq!(
        summary(&out),
        (messages as u64, 0, 0),
        "{kind:?}: each message counted once"
    );
    match kind {
        Kind::Blackhole => {}
        Kind::Stdout | Kind::Csv | Kind::Backup => {
            // A file sink writes each message once, in source order.
            let pairs = file_pairs(&t, &out.stdout);
            let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in pairs {
                per_key.entry(k).or_default().push(v);
            }
            assert_eq!(per_key, versions, "{kind:?}: every version, in order");
        }
        _ => {
            let p = t.proxy();
            let (tmpfails, enomems, resets) = (
                p.counts.status(TMPFAIL),
                p.counts.status(ENOMEM),
                p.counts.resets.load(Ordering::SeqCst),
            );
            assert!(
                tmpfails > 50 && enomems > 20 && resets >= 1,
                "{kind:?}: faults: {tmpfails} TMPFAIL, {enomems} ENOMEM, {resets} resets"
            );
            // At least once: every version reached the destination.
            let forwarded = p.counts.forwarded.lock().unwrap();
            let sent: std::collections::HashSet<(Vec<u8>, Vec<u8>)> =
                forwarded.iter().cloned().collect();
            for (k, vs) in &versions {
                for v in vs {
                    assert!(
                        sent.contains(&(k.as_bytes().to_vec(), v.as_bytes().to_vec())),
                        "{kind:?}: {k} = {v} never reached the destination"
                    );
                }
            }
            // In order: each key ends with its latest version.
            let keys: Vec<String> = versions.keys().cloned().collect();
            let got = held_all(&t, &keys);
            let wrong: Vec<_> = keys
                .iter()
                .zip(got)
                .filter(|(k, v)| v.as_deref() != versions[*k].last().map(String::as_str))
                .map(|(k, v)| (k.clone(), v))
                .take(5)
                .collect();
            assert!(
                wrong.is_empty(),
                "{kind:?}: keys not at their latest version ({tmpfails} TMPFAIL, {enomems} ENOMEM, {resets} resets): {wrong:?}"
            );
        }
    }
}

/// A meta2 base: the copy is the source, table by table (its digests), or nothing.
fn meta2_copy_is_exact(kind: Kind) {
    let t = Target::new(kind, Faults::default());
    let (src, _) = meta2_source(t.dir.path(), 300);
    let out = transfer(&["-q", &format!("meta2:{}", src.display()), &t.spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = t.dir.path().join("copy.meta2");
    assert_eq!(
        pump_meta2::digest(&src, &[]).unwrap(),
        pump_meta2::digest(&copy, &[]).unwrap()
    );
}

/// A generated meta2 base of `aliases` aliases; returns its path and its volume.
fn meta2_source(dir: &Path, aliases: usize) -> (PathBuf, PathBuf) {
    let spec = pump_meta2::generate::BaseSpec {
        ns: "OPENIO".into(),
        account: "acct".into(),
        container: "conformance".into(),
        peers: vec!["127.0.0.1:6120".into()],
        aliases,
    };
    let volume = dir.join("volume");
    let path = pump_meta2::generate::write_base(&volume, &spec).unwrap();
    (path, volume)
}

/// A key the destination refuses (E2BIG on every write of it): exit 1, listed in
/// --failed-keys, the DCP checkpoint of its vbucket kept behind it, the others complete;
/// a rerun from the checkpoint, the refusal gone, writes it.
fn partial_failure(kind: Kind) {
    assert!(kind.is_network(), "{kind:?} refuses no key");
    let faults = Faults {
        permanent: Some(("bad".into(), E2BIG)),
        ..Faults::default()
    };
    let t = Target::new(kind, faults);
    let source = Host::start(VbucketState::Active);
    let keys: Vec<String> = (0..400).map(|i| format!("good{i}")).collect();
    for k in &keys {
        source.put(k, &format!("{k}-value"));
    }
    let bad = ["bad1", "bad2"];
    for k in bad {
        source.put(k, "never");
    }
    // A tap sink writes replica vbuckets: every vbucket of its node is one.
    let ckpt = t.dir.path().join("ckpt.json");
    let failed = t.dir.path().join("failed.txt");
    let dcp = format!("dcp://{}", source.kv());
    let x = format!("checkpoint={},backoff_cap=0.05", ckpt.display());
    let out = transfer(&[
        "-q",
        "-x",
        &x,
        "--failed-keys",
        failed.to_str().unwrap(),
        &dcp,
        &t.spec,
    ]);
    assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", stderr(&out));
    assert!(
        stderr(&out).contains("2 items were not written"),
        "{}",
        stderr(&out)
    );
    let mut listed: Vec<String> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, bad, "{kind:?}");
    for k in &keys {
        assert_eq!(
            held(&t, k).as_deref(),
            Some(format!("{k}-value").as_str()),
            "{kind:?}"
        );
    }
    // The checkpoint of each bad key's vbucket stays behind it; the others are complete.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&ckpt).unwrap()).unwrap();
    for k in bad {
        let vb = vbucket_of(k.as_bytes(), 1024);
        let seqno = source.node.bucket.vb(vb).unwrap().items[k.as_bytes()].by_seqno;
        let at = saved["vbuckets"][vb.to_string()]["seqno"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            at < seqno,
            "{kind:?}: vbucket {vb} checkpoint {at} passed {k} at {seqno}"
        );
    }
    for k in keys.iter().filter(|k| {
        let vb = vbucket_of(k.as_bytes(), 1024);
        !bad.iter().any(|b| vbucket_of(b.as_bytes(), 1024) == vb)
    }) {
        let vb = vbucket_of(k.as_bytes(), 1024);
        let high = source.node.bucket.vb(vb).unwrap().high_seqno;
        assert_eq!(
            saved["vbuckets"][vb.to_string()]["seqno"].as_u64(),
            Some(high),
            "{kind:?}: vbucket {vb}"
        );
    }
    // The rerun, straight to the destination: the bad keys are read again and written.
    let out = transfer(&["-q", "-x", &x, &dcp, &t.direct]);
    assert!(out.status.success(), "{kind:?}: {}", stderr(&out));
    for k in bad {
        assert_eq!(held(&t, k).as_deref(), Some("never"), "{kind:?}");
    }
}

/// A dry run checks the destination and writes nothing: a good one passes, a bad one fails
/// naming what is wrong.
fn dry_run(kind: Kind) {
    let t = Target::new(kind, Faults::default());
    let (source, good) = if kind == Kind::Meta2 {
        let (src, _) = meta2_source(t.dir.path(), 20);
        (format!("meta2:{}", src.display()), t.spec.clone())
    } else {
        let (csv, _) = versions_csv(t.dir.path(), 50, 1);
        (format!("csv:{}", csv.display()), t.spec.clone())
    };
    let out = transfer(&["-n", "-q", &source, &good]);
    assert!(out.status.success(), "{kind:?}: {}", stderr(&out));
    assert!(stderr(&out).contains("nothing written"), "{}", stderr(&out));
    // Nothing written.
    match kind {
        Kind::Blackhole => {}
        Kind::Stdout => assert!(out.stdout.is_empty()),
        Kind::Csv | Kind::Backup | Kind::Meta2 => {
            let left: Vec<_> = std::fs::read_dir(t.dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !matches!(n.as_str(), "versions.csv" | "volume"))
                .collect();
            assert!(left.is_empty(), "{kind:?}: dry run wrote {left:?}");
        }
        _ => {
            assert_eq!(held(&t, "k0"), None, "{kind:?}: dry run wrote k0");
            assert_eq!(
                t.proxy().counts.writes.load(Ordering::SeqCst),
                0,
                "{kind:?}: a write reached the destination"
            );
            assert!(
                t.proxy().counts.connections.load(Ordering::SeqCst) >= 1,
                "it connected"
            );
        }
    }
    // A destination that cannot be written: the dry run says so.
    let bad: Option<(String, Vec<&str>, &str)> = match kind {
        Kind::Blackhole | Kind::Stdout => None,
        Kind::Csv => Some((
            format!("csv:{}/no/such/dir/x.csv", t.dir.path().display()),
            vec![],
            "does not exist",
        )),
        Kind::Backup => {
            // An old single-run (2.x) backup is there: writing would refuse it.
            let dir = t.dir.path().join("old");
            std::fs::create_dir_all(dir.join("bucket-default").join("node-localhost")).unwrap();
            Some((
                dir.display().to_string(),
                vec![],
                "old (2.x) single-run backup",
            ))
        }
        Kind::Meta2 => {
            let (src, _) = meta2_source(&t.dir.path().join("second"), 5);
            Some((format!("meta2:{}", src.display()), vec![], "exists"))
        }
        Kind::Memcached => Some((
            format!("memcached://127.0.0.1:{}", common::free_port()),
            vec![],
            "could not connect",
        )),
        Kind::Couchbase | Kind::Tap => {
            Some((t.spec.clone(), vec!["-B", "nosuchbucket"], "nosuchbucket"))
        }
    };
    if let Some((spec, extra, why)) = bad {
        let mut args = vec!["-n", "-q"];
        args.extend(extra);
        args.extend([source.as_str(), spec.as_str()]);
        let out = transfer(&args);
        assert_ne!(out.status.code(), Some(0), "{kind:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{kind:?}: {}", stderr(&out));
    }
}

/// Ctrl-C in the middle: the run drains and says what was confirmed, which is applied; a
/// file sink renames nothing into place.
fn ctrl_c_drains(kind: Kind) {
    let t = Target::new(kind, Faults::default());
    let source = if kind == Kind::Meta2 {
        // Large enough that the signal lands while it is being read (20,000 rows were read
        // whole in 0.2 s, before the signal came).
        let (src, _) = meta2_source(t.dir.path(), 60_000);
        format!("meta2:{}", src.display())
    } else {
        "gen:max-items=100000000,min-value-size=20".to_string()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(["transfer", "-q", &source, &t.spec])
        .stdout(if kind == Kind::Stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pump");
    std::thread::sleep(Duration::from_millis(if kind == Kind::Meta2 {
        150
    } else {
        600
    }));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{kind:?}: {err}");
    assert!(err.contains("interrupted"), "{kind:?}: {err}");
    let (confirmed, _, _) = summary(&out);
    match kind {
        Kind::Blackhole => assert!(confirmed > 0),
        Kind::Stdout => {
            // Every confirmed item was printed (a batch is printed before it is confirmed).
            assert!(
                stdout_pairs(&out.stdout).len() as u64 >= confirmed,
                "{kind:?}"
            );
        }
        Kind::Csv | Kind::Backup | Kind::Meta2 => {
            // Nothing renamed into place: the run was not complete.
            let done = common::files_named(t.dir.path(), &|n| {
                n == "out.csv" || n.ends_with(".cbb") || n == "copy.meta2"
            });
            assert!(done.is_empty(), "{kind:?}: {done:?}");
        }
        Kind::Memcached => {
            assert!(confirmed > 0, "{err}");
            let items = t.mc.as_ref().unwrap().text().stat("curr_items");
            assert!(items >= confirmed, "{items} held, {confirmed} confirmed");
        }
        Kind::Couchbase | Kind::Tap => {
            assert!(confirmed > 0, "{err}");
            let items = t.host.as_ref().unwrap().node.bucket.item_count() as u64;
            assert!(
                items >= confirmed,
                "{kind:?}: {items} held, {confirmed} confirmed"
            );
        }
    }
}

/// One test per (sink, check that applies to it): the table a new sink is added to.
macro_rules! suite {
    ($($name:ident => $kind:expr, [$($check:ident),*]);* $(;)?) => {
        $(
            mod $name {
                use super::Kind;
                $(
                    #[test]
                    fn $check() {
                        super::$check($kind);
                    }
                )*
            }
        )*
    };
}

// A file sink takes every message: there is no key it can refuse, so no partial failure.
// A meta2 base is copied whole: its order and at-least-once are the copy being its source.
suite! {
    blackhole => Kind::Blackhole, [in_order_at_least_once, dry_run, ctrl_c_drains];
    stdout => Kind::Stdout, [in_order_at_least_once, dry_run, ctrl_c_drains];
    csv => Kind::Csv, [in_order_at_least_once, dry_run, ctrl_c_drains];
    backup => Kind::Backup, [in_order_at_least_once, dry_run, ctrl_c_drains];
    memcached => Kind::Memcached, [in_order_at_least_once, partial_failure, dry_run, ctrl_c_drains];
    couchbase => Kind::Couchbase, [in_order_at_least_once, partial_failure, dry_run, ctrl_c_drains];
    tap => Kind::Tap, [in_order_at_least_once, partial_failure, dry_run, ctrl_c_drains];
    meta2 => Kind::Meta2, [meta2_copy_is_exact, dry_run, ctrl_c_drains];
}
