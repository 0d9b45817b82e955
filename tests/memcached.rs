//! `memcached://` as a sink and a source, against Debian's real memcached (1.6), started on a
//! free port by each test and read back with an independent text-protocol client.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{gen_value, now, pump, LocalCluster, Memcached};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The `i`th item of the restore test: value length, flags and expiry all vary, some values are
/// binary, a third never expire.
fn varied_item(i: usize, base_expiry: u64) -> (String, Vec<u8>, u32, u64) {
    let mut value = format!("v{i}:").repeat(1 + i % 40).into_bytes();
    if i.is_multiple_of(7) {
        value.extend([0u8, 0xff, b'\'', b'"', b',', b'\n']);
    }
    let flags = (i as u32).wrapping_mul(2_654_435_761);
    let expiry = if i.is_multiple_of(3) {
        0
    } else {
        base_expiry + i as u64
    };
    (format!("r_{i}"), value, flags, expiry)
}

/// Python's `repr` of bytes, as cbtransfer writes values that are not plain text, quoted as
/// Python's csv module quotes a field holding a comma or a double quote.
fn bytes_field(v: &[u8]) -> String {
    let mut s = String::from("b'");
    for &b in v {
        match b {
            b'\'' => s.push_str("\\'"),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('\'');
    if s.contains([',', '"']) {
        s = format!("\"{}\"", s.replace('"', "\"\""));
    }
    s
}

#[test]
fn restore_100000_items_from_a_backup_keeps_value_flags_and_expiry() {
    let n = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let base_expiry = now() + 10_000_000;
    let items: Vec<_> = (0..n).map(|i| varied_item(i, base_expiry)).collect();
    let mut csv = String::from("id,flags,expiration,cas,value,rev,vbid,dtype\r\n");
    for (k, v, f, e) in &items {
        csv.push_str(&format!("{k},{f},{e},0,{},,0,0\r\n", bytes_field(v)));
    }
    let input = dir.path().join("items.csv");
    std::fs::write(&input, csv).unwrap();
    let backup = dir.path().join("backup");
    let out = pump(&[
        "transfer",
        "-q",
        &format!("csv:{}", input.display()),
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let mc = Memcached::start(&["-m", "256"]);
    let out = pump(&["transfer", "-q", backup.to_str().unwrap(), &mc.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("100000 written"), "{}", stderr(&out));

    let mut c = mc.text();
    assert_eq!(c.stat("curr_items"), n as u64);
    let all: Vec<String> = items.iter().map(|(k, ..)| k.clone()).collect();
    let now = now();
    for ((k, v, f, e), got) in items.iter().zip(c.get_many(&all)) {
        let got = got.unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!((&got.value, got.flags), (v, *f), "{k}");
        if *e == 0 {
            assert_eq!(got.ttl, -1, "{k}");
        } else {
            // memcached's clock ticks in whole seconds from its own start: allow it a few.
            let want = (*e - now) as i64;
            assert!(
                (got.ttl - want).abs() <= 3,
                "{k}: ttl {} want {want}",
                got.ttl
            );
        }
    }
    // And every value once more through a client that is not ours at all.
    let values = mc.third_party_values(&all);
    assert_eq!(values.len(), n);
    for (k, v, ..) in &items {
        assert_eq!(values.get(k), Some(v), "{k}, read by memcache-async");
    }
}

#[test]
fn memcached_to_backup_to_memcached_keeps_every_item() {
    let from = Memcached::start(&[]);
    let base_expiry = now() + 5_000_000;
    let items: Vec<_> = (0..3000).map(|i| varied_item(i, base_expiry)).collect();
    let mut c = from.text();
    for (k, v, f, e) in &items {
        c.set(k, *f, *e, v);
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let out = pump(&["transfer", "-q", &from.url(), backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("3000 written"), "{}", stderr(&out));

    let to = Memcached::start(&[]);
    let out = pump(&["transfer", "-q", backup.to_str().unwrap(), &to.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Vec<String> = items.iter().map(|(k, ..)| k.clone()).collect();
    let a = c.get_many(&all);
    let b = to.text().get_many(&all);
    for ((k, x), y) in all.iter().zip(a).zip(b) {
        let (x, y) = (x.unwrap(), y.unwrap_or_else(|| panic!("{k} missing")));
        assert_eq!((&x.value, x.flags), (&y.value, y.flags), "{k}");
        if x.ttl == -1 {
            assert_eq!(y.ttl, -1, "{k}");
        } else {
            assert!(
                (x.ttl - y.ttl).abs() <= 2,
                "{k}: ttl {} then {}",
                x.ttl,
                y.ttl
            );
        }
    }
    assert_eq!(to.text().stat("curr_items"), 3000);
    let values = to.third_party_values(&all);
    for (k, v, ..) in &items {
        assert_eq!(values.get(k), Some(v), "{k}, read by memcache-async");
    }
}

#[test]
fn deletions_remove_their_keys_and_a_key_already_gone_is_counted_as_skipped() {
    // A backup of 100 items, 40 of them turned into deletions (TAP and DCP commands).
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    let out = pump(&[
        "transfer",
        "-q",
        "gen:max-items=100,min-value-size=5,prefix=d_",
        backup,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut deleted = HashSet::new();
    for f in common::data_files(std::path::Path::new(backup)) {
        let db = rusqlite::Connection::open(&f).unwrap();
        db.execute(
            "UPDATE cbb_msg SET cmd = CASE WHEN rowid % 2 = 0 THEN 66 ELSE 88 END WHERE rowid % 5 < 2",
            [],
        )
        .unwrap();
        let mut q = db
            .prepare("SELECT key FROM cbb_msg WHERE cmd IN (66, 88)")
            .unwrap();
        let keys = q.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
        deleted.extend(keys.map(|k| String::from_utf8(k.unwrap()).unwrap()));
    }
    assert_eq!(deleted.len(), 40);

    // The server holds every key but 10 of the deleted ones.
    let mc = Memcached::start(&[]);
    let mut c = mc.text();
    let all = keys("d_", 100);
    let absent: HashSet<&String> = all
        .iter()
        .filter(|k| deleted.contains(*k))
        .take(10)
        .collect();
    for k in all.iter().filter(|k| !absent.contains(k)) {
        c.set(k, 0, 0, b"old");
    }
    let out = pump(&["transfer", "-q", backup, &mc.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("90 written, 10 skipped"),
        "{}",
        stderr(&out)
    );
    for (k, got) in all.iter().zip(c.get_many(&all)) {
        if deleted.contains(k) {
            assert!(got.is_none(), "{k} was deleted in the backup");
        } else {
            assert_eq!(got.expect(k).value, b"01234", "{k}");
        }
    }
}

#[test]
fn add_keeps_existing_keys_and_counts_them_as_skipped() {
    let mc = Memcached::start(&[]);
    let mut c = mc.text();
    for i in 0..50 {
        c.set(&format!("a_{i}"), 1, 0, b"old");
    }
    let out = pump(&[
        "transfer",
        "-q",
        "--add",
        "gen:max-items=200,min-value-size=5,prefix=a_",
        &mc.url(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("150 written, 50 skipped"),
        "{}",
        stderr(&out)
    );
    let got = c.get_many(&keys("a_", 200));
    assert!(got[..50]
        .iter()
        .all(|i| i.as_ref().unwrap().value == b"old"));
    assert!(got[50..]
        .iter()
        .all(|i| i.as_ref().unwrap().value == b"01234"));
}

#[test]
fn a_value_over_1mb_is_reported_and_listed_while_the_good_ones_land() {
    // The source server takes 2 MB items, the destination only 1 MB (the default).
    let from = Memcached::start(&["-I", "2m"]);
    let to = Memcached::start(&[]);
    let out = pump(&[
        "transfer",
        "-q",
        "gen:max-items=1000,min-value-size=100,prefix=good_",
        &from.url(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    from.text().set("big", 5, 0, &vec![b'x'; 1_500_000]);

    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.txt");
    let out = pump(&[
        "transfer",
        "-q",
        &from.url(),
        &to.url(),
        "--failed-keys",
        failed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("1000 written") && err.contains("1 failed"),
        "{err}"
    );
    assert!(err.contains("\"big\"") && err.contains("E2BIG"), "{err}");
    let listed = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.starts_with("big\t"), "{listed}");

    let mut c = to.text();
    assert_eq!(c.stat("curr_items"), 1000);
    let got = c.get_many(&keys("good_", 1000));
    assert!(got
        .iter()
        .all(|i| i.as_ref().unwrap().value == gen_value(100)));
}

#[test]
fn a_full_server_ends_with_every_item_either_written_or_listed_as_failed() {
    let mc = Memcached::start(&["-M", "-m", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.txt");
    let out = pump(&[
        "transfer",
        "-q",
        "-x",
        "max_retry=2,backoff_cap=0.05",
        "gen:max-items=30000,min-value-size=100,prefix=m_",
        &mc.url(),
        "--failed-keys",
        failed.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ENOMEM"), "{err}");
    let listed: HashSet<String> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert!(
        !listed.is_empty() && listed.len() < 30_000,
        "{}",
        listed.len()
    );
    let all = keys("m_", 30_000);
    let got = mc.text().get_many(&all);
    for (k, item) in all.iter().zip(got) {
        assert!(
            item.is_some() != listed.contains(k),
            "{k}: on the server {} and listed {}",
            item.is_some(),
            listed.contains(k)
        );
    }
}

fn sasl_server() -> (Memcached, tempfile::TempDir) {
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
            "pumpuser",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (Debian package sasl2-bin)");
    p.stdin.take().unwrap().write_all(b"s3cret").unwrap();
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

/// GET over the binary protocol after SASL PLAIN, written out byte by byte here (a SASL
/// memcached has no text protocol to read back with).
fn sasl_get(addr: &str, key: &str) -> Option<Vec<u8>> {
    fn request(s: &mut TcpStream, opcode: u8, key: &[u8], value: &[u8]) -> (u16, Vec<u8>) {
        let mut req = vec![0x80, opcode];
        req.extend((key.len() as u16).to_be_bytes());
        req.extend([0, 0, 0, 0]);
        req.extend(((key.len() + value.len()) as u32).to_be_bytes());
        req.extend([0u8; 12]);
        req.extend(key);
        req.extend(value);
        s.write_all(&req).unwrap();
        let mut head = [0u8; 24];
        s.read_exact(&mut head).unwrap();
        let status = u16::from_be_bytes([head[6], head[7]]);
        let body = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut b = vec![0u8; body];
        s.read_exact(&mut b).unwrap();
        let skip = head[4] as usize + u16::from_be_bytes([head[2], head[3]]) as usize;
        (status, b[skip..].to_vec())
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(request(&mut s, 0x21, b"PLAIN", b"\0pumpuser\0s3cret").0, 0);
    match request(&mut s, 0x00, key.as_bytes(), b"") {
        (0, v) => Some(v),
        (1, _) => None,
        (st, _) => panic!("GET {key}: status {st:#x}"),
    }
}

#[test]
fn sasl_with_the_right_password_writes_and_a_wrong_one_fails_before_any_data() {
    let (mc, _dir) = sasl_server();
    let bad = format!("memcached://pumpuser:wrong@{}", mc.addr());
    let out = pump(&["transfer", "-q", "gen:max-items=100,prefix=bad_", &bad]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&mc.addr()) && err.contains("authentication"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the password is shown: {err}");

    let out = pump(&[
        "transfer",
        "-q",
        "-U",
        "pumpuser",
        "-P",
        "s3cret",
        "gen:max-items=100,min-value-size=4,prefix=good_",
        &mc.url(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sasl_get(&mc.addr(), "good_99"), Some(b"0123".to_vec()));
    for i in 0..100 {
        assert_eq!(sasl_get(&mc.addr(), &format!("bad_{i}")), None);
    }

    let out = pump(&["transfer", "-q", "gen:max-items=10,prefix=none_", &mc.url()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("requires authentication"), "{err}");
}

#[test]
fn a_server_that_is_not_there_is_a_clear_error_naming_it() {
    // A port nothing listens on: bind one, note it, and let it go.
    let port = common::free_port();
    let out = pump(&[
        "transfer",
        "-q",
        "gen:max-items=10",
        &format!("memcached://127.0.0.1:{port}"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "could not connect to memcached at 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn a_server_killed_mid_transfer_is_a_clear_error_and_a_rerun_completes() {
    let n = 1_000_000;
    let src = format!("gen:max-items={n},min-value-size=100,prefix=k_");
    let mut mc = Memcached::start(&["-m", "1024"]);
    let port = mc.port;
    let child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(["transfer", "-q", "-x", "max_retry=3", &src, &mc.url()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = mc.text();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.stat("curr_items") == 0 {
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(c);
    mc.stop();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    if out.status.success() {
        // The transfer outran the kill: nothing to prove on this machine.
        eprintln!("the transfer finished before the server was killed");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    // Killed while a connection is still being opened, a worker cannot connect at all.
    assert!(
        err.contains("lost the connection") || err.contains("could not connect"),
        "{err}"
    );

    let mc = Memcached::start_with(port, &["-m", "1024"], &[]);
    let out = pump(&["transfer", "-q", &src, &mc.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = mc.text();
    assert_eq!(c.stat("curr_items"), n as u64);
    assert_eq!(c.stat("evictions"), 0);
}

#[test]
fn memcached_to_memcached_keeps_every_key_value_flags_and_expiry() {
    let from = Memcached::start(&[]);
    let to = Memcached::start(&[]);
    let expiry = now() + 5_000_000;
    let src = format!("gen:max-items=5000,min-value-size=30,prefix=t_,flags=17,expiry={expiry}");
    assert!(pump(&["transfer", "-q", &src, &from.url()])
        .status
        .success());
    let mut c = from.text();
    c.set("odd%key/ü", 9, 0, b"no expiry");
    c.set("empty", 0, 0, b"");
    let mut all = keys("t_", 5000);
    all.extend(["odd%key/ü".to_string(), "empty".to_string()]);

    let out = pump(&["transfer", "-q", &from.url(), &to.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("5002 written"), "{}", stderr(&out));
    let a = c.get_many(&all);
    let b = to.text().get_many(&all);
    for ((k, x), y) in all.iter().zip(a).zip(b) {
        let (x, y) = (x.unwrap(), y.unwrap_or_else(|| panic!("{k} missing")));
        assert_eq!((&x.value, x.flags), (&y.value, y.flags), "{k}");
        assert!(
            (x.ttl - y.ttl).abs() <= 2,
            "{k}: ttl {} then {}",
            x.ttl,
            y.ttl
        );
    }
    assert_eq!(
        to.text().get_many(&["odd%key/ü".into()])[0]
            .as_ref()
            .unwrap()
            .ttl,
        -1
    );
}

/// The items line of a transfer's summary: (written, skipped, failed).
fn summary_counts(out: &std::process::Output) -> (u64, u64, u64) {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with("items "))
        .unwrap_or_else(|| panic!("no summary in {err}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (nums[0], nums[1], nums[2])
}

/// The measurement of issue 15, as a test: a full backup of 100,000 keys, then a diff that
/// rewrites 10% of them, restored into Debian's memcached through a proxy that answers
/// TMPFAIL to 5% of the writes (at once, as a naive proxy does) and forwards the rest, with
/// -t 1 and -t 4. Every key must end with its latest value, and the summary must count each
/// of the 110,000 messages once.
#[test]
fn a_full_and_diff_backup_restored_through_tmpfails_ends_with_every_latest_value_counted_once() {
    use common::faults::{FaultProxy, Faults, Timing, TMPFAIL};
    let n = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    // A cluster of 100,000 keys (16-byte values) backed up full; then 10% of its keys
    // rewritten (17 bytes) and backed up again: a diff run of those.
    let cluster = LocalCluster::up(1, 0, &[]);
    let load = |gen: String| {
        let out = pump(&["transfer", "-q", &gen, &cluster.spec()]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    load(format!("gen:max-items={n},min-value-size=16,prefix=w_"));
    let out = pump(&["transfer", "-q", &cluster.spec(), backup]);
    assert!(out.status.success(), "{}", stderr(&out));
    load(format!(
        "gen:max-items={},start={},min-value-size=17,prefix=w_",
        n / 10,
        n - n / 10
    ));
    let out = pump(&["transfer", "-q", "-m", "diff", &cluster.spec(), backup]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(cluster);
    assert_eq!(
        std::fs::read_dir(backup)
            .unwrap()
            .flatten()
            .flat_map(|root| std::fs::read_dir(root.path()).unwrap().flatten())
            .filter(|run| run.file_name().to_string_lossy().ends_with("-diff"))
            .count(),
        1,
        "one diff run"
    );
    for threads in ["1", "4"] {
        let mc = Memcached::start(&["-m", "256"]);
        let proxy = FaultProxy::start(
            &mc.addr(),
            Faults {
                statuses: vec![(TMPFAIL, 0.05)],
                timing: Timing::Immediate,
                ..Faults::default()
            },
        );
        let out = pump(&[
            "transfer",
            "-q",
            "-t",
            threads,
            backup,
            &format!("memcached://{}", proxy.addr()),
        ]);
        assert!(out.status.success(), "-t {threads}: {}", stderr(&out));
        let tmpfails = proxy.counts.status(TMPFAIL);
        assert!(tmpfails > 2_000, "-t {threads}: only {tmpfails} TMPFAILs");
        assert_eq!(
            summary_counts(&out),
            (110_000, 0, 0),
            "-t {threads}: each message once: {}",
            stderr(&out)
        );
        let all = keys("w_", n);
        let got = mc.text().get_many(&all);
        let (mut missing, mut wrong) = (0, 0);
        for (i, item) in got.iter().enumerate() {
            let want = if i >= n - n / 10 { 17 } else { 16 };
            match item {
                None => missing += 1,
                Some(it) if it.value.len() != want => wrong += 1,
                Some(_) => {}
            }
        }
        assert_eq!(
            (missing, wrong),
            (0, 0),
            "-t {threads}: keys missing, keys with an older value ({tmpfails} TMPFAILs)"
        );
    }
}

/// Issue 15's bench stopped at 1 M items with "no answer within 30.0s while waiting for
/// answers". memcached's hash walk (`lru_crawler metadump hash`) holds the item lock of the
/// bucket it is at while it waits for room to write the listing; a GET of a key under the same
/// lock waits for it. A source that reads the listing only between GET rounds deadlocks as
/// soon as the listing outgrows the socket buffers (a few hundred thousand keys): the crawler
/// waits for the source to read, the source for its GETs, the GETs for the crawler. With one
/// worker thread (`-t 1`, 1024 item locks) it stopped every time at 400,000 items before the
/// fix. The source now drains the listing into a spool file while it fetches.
#[test]
fn a_listing_larger_than_the_socket_buffers_is_read_while_the_values_are_fetched() {
    let n = 400_000;
    let mc = Memcached::start(&["-t", "1", "-m", "256"]);
    // A fast loader: pipelined `set ... noreply`, then one `version` to wait for them all.
    let mut s = TcpStream::connect(mc.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let value = [b'v'; 100];
    let mut buf = Vec::with_capacity(10_000 * 150);
    for i in 0..n {
        write!(buf, "set key:{i:08} 0 0 {} noreply\r\n", value.len()).unwrap();
        buf.extend_from_slice(&value);
        buf.extend_from_slice(b"\r\n");
        if buf.len() > 1 << 20 || i == n - 1 {
            s.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    s.write_all(b"version\r\n").unwrap();
    let mut answer = [0u8; 8];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"VERSION ");
    assert_eq!(mc.text().stat("curr_items"), n as u64);

    let started = Instant::now();
    let out = pump(&["transfer", "-q", "-x", "timeout=5", &mc.url(), "blackhole:"]);
    let err = stderr(&out);
    assert!(out.status.success(), "after {:?}: {err}", started.elapsed());
    assert!(err.contains(&format!("{n} written")), "{err}");
}
