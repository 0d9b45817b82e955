//! Scale-out end to end: `pump plan` puts jobs on Debian's beanstalkd, `pump worker` processes
//! run them against the reference cluster and meta2 volumes, and `pump plan status|retry`
//! read the run back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{pump, stderr, transfer_ok, LocalCluster};
use pump_queue::testing::Beanstalkd;
use pump_queue::{Client, JobState, Tube};

/// A `pump worker` process; its stderr goes to a file the test reads.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
    pid: u32,
}

impl Worker {
    fn start(dir: &Path, name: &str, url: &str, args: &[&str]) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pump"))
            .arg("worker")
            .arg(url)
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start pump worker");
        Worker {
            pid: child.id(),
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.pid as i32, sig) }, 0, "kill {sig}");
    }

    /// Waits for the process to exit.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} still running after {within:?}; its log:\n{}",
                self.pid,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        eventually(within, &format!("{needle:?} in the worker's log"), || {
            let l = self.log();
            l.contains(needle).then_some(l)
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pump plan ARGS`: the run id it printed.
fn plan(args: &[&str]) -> String {
    let out = pump(&[&["plan"], args].concat());
    assert!(out.status.success(), "pump plan {args:?}: {}", stderr(&out));
    let run = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        !run.is_empty() && !run.contains(char::is_whitespace),
        "{run:?}"
    );
    run
}

/// `pump plan status RUN --queue URL --json`.
fn status(url: &str, run: &str) -> serde_json::Value {
    let out = pump(&["plan", "status", run, "--queue", url, "--json"]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(st: &serde_json::Value, standing: &str) -> u64 {
    st["counts"][standing].as_u64().unwrap()
}

fn jobs(st: &serde_json::Value) -> Vec<serde_json::Value> {
    st["jobs"].as_array().unwrap().clone()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(b: &Beanstalkd) -> (tokio::runtime::Runtime, Client) {
    let rt = rt();
    let c = rt
        .block_on(Client::connect(&b.addr(), Duration::from_secs(5)))
        .unwrap();
    (rt, c)
}

/// Waits until `victim` holds a job whose record shows items moved, freezes it (SIGSTOP) and
/// checks that the job is still its and unfinished: then it is mid-job, and stays so. Returns
/// the job's index and the items its record holds.
fn freeze_mid_job(url: &str, run: &str, victim: &Worker) -> (usize, u64) {
    let tag = format!("pid {}", victim.pid);
    eventually(Duration::from_secs(60), "the victim mid-job", || {
        let st = status(url, run);
        let j = jobs(&st).into_iter().find(|j| {
            j["standing"] == "running"
                && j["record"]["worker"]
                    .as_str()
                    .is_some_and(|w| w.ends_with(&tag))
                && j["record"]["items"].as_u64().unwrap_or(0) > 0
        })?;
        victim.signal(libc::SIGSTOP);
        let again = &jobs(&status(url, run))[j["index"].as_u64()? as usize];
        if again["standing"] == "running" && again["record"]["state"] == "running" {
            Some((
                again["index"].as_u64()? as usize,
                again["record"]["items"].as_u64()?,
            ))
        } else {
            victim.signal(libc::SIGCONT);
            None
        }
    })
}

#[test]
fn a_backup_in_16_jobs_on_3_workers_one_killed_mid_job_is_one_run_that_restores_key_by_key() {
    let b = Beanstalkd::start();
    let url = b.url("copy");
    let src = LocalCluster::up(3, 0, &[]);
    let dst = LocalCluster::up(3, 0, &[]);
    transfer_ok("gen:max-items=200000,min-value-size=20", &src.spec(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    // Each job's source held to 10k items/s: 12,500 items take over a second whatever the
    // machine's speed, and a record goes every 250 ms.
    let run = plan(&[
        "transfer",
        &src.spec(),
        backup,
        "--queue",
        &url,
        "--jobs",
        "16",
        "--ttr",
        "1",
        "-t",
        "1",
        "-x",
        "batch_max_size=5",
        "--rate",
        "10k",
    ]);
    let st = status(&url, &run);
    assert_eq!(
        (count(&st, "ready"), st["manifest"]["jobs"].as_u64()),
        (16, Some(16))
    );
    // The plan made the run, once, for 16 parts; the jobs name it.
    let nodes = pump_formats::run::list_node_runs(Path::new(backup)).unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let node_dir = nodes[0].node_dir.clone();
    let record: pump_formats::run::RunRecord =
        pump_formats::run::read_json(&node_dir.join("pump-run.json"))
            .unwrap()
            .unwrap();
    assert_eq!(record.parts, Some(16));

    let victim = Worker::start(dir.path(), "victim", &url, &[]);
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &format!("w{i}"), &url, &["--drain"]))
        .collect();
    let (index, items) = freeze_mid_job(&url, &run, &victim);
    victim.signal(libc::SIGKILL);
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(120)).success(), "{}", w.log());
    }
    let st = status(&url, &run);
    assert_eq!(count(&st, "done"), 16, "{st}");
    assert!(st["items"].as_u64().unwrap() >= 200_000, "{st}");
    let rec = &jobs(&st)[index]["record"];
    assert_eq!(rec["attempt"].as_u64(), Some(2), "{rec}");
    let logs: String = workers.iter().map(Worker::log).collect();
    assert!(
        logs.contains(&format!("{items} items moved before")),
        "the killed job did not resume from its record ({items} items): {logs}"
    );
    assert!(
        logs.contains(&format!("resuming part {index} of 16")),
        "the killed job's part did not go on from its files: {logs}"
    );
    let pids: std::collections::BTreeSet<String> = jobs(&st)
        .iter()
        .map(|j| j["record"]["worker"].as_str().unwrap().to_string())
        .collect();
    assert!(pids.len() > 1, "one worker did every job: {pids:?}");

    // One run, complete once: one node directory, one meta.json, seqno.json and completion
    // record, 16 part records, each part's files in its own numbers, no row written twice.
    assert_eq!(
        pump_formats::run::list_node_runs(Path::new(backup))
            .unwrap()
            .len(),
        1
    );
    let pump_formats::run::RunState::Complete { completion, .. } =
        pump_formats::run::RunState::of(&node_dir).unwrap()
    else {
        panic!("the run is not complete")
    };
    assert_eq!(completion.mutations, 200_000, "{completion:?}");
    assert_eq!(completion.vbuckets.len(), 1024);
    let names: Vec<String> = std::fs::read_dir(&node_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for f in [
        "meta.json",
        "seqno.json",
        "failover.json",
        "pump-complete.json",
    ] {
        assert!(names.iter().any(|n| n == f), "{f}: {names:?}");
    }
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
    for k in 0..16 {
        assert!(
            names.contains(&format!("pump-part-{k:04}.json")),
            "part {k}: {names:?}"
        );
        assert!(
            names.contains(&format!("data-{}.cbb", k * 10_000)) || k == 0,
            "part {k}'s data file: {names:?}"
        );
    }
    assert!(names.contains(&"data-0000.cbb".to_string()), "{names:?}");
    let seqnos: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(node_dir.join("seqno.json")).unwrap())
            .unwrap();
    assert_eq!(seqnos.as_object().unwrap().len(), 1024, "{seqnos}");
    // The backup restores into another cluster, equal key by key.
    transfer_ok(backup, &dst.spec(), &[]);
    assert_eq!(src.contents(), dst.contents());
}

#[test]
fn a_job_whose_sink_refuses_the_password_is_buried_with_that_error_until_retried() {
    let b = Beanstalkd::start();
    let url = b.url("auth");
    let src = LocalCluster::up(1, 0, &[]);
    let dst = LocalCluster::up(1, 0, &["--user", "admin", "--password", "s3cret"]);
    transfer_ok("gen:max-items=5000", &src.spec(), &[]);
    // max_retry=1: a refused password is retried like a busy server until the engine tells
    // them apart; the test needs no ten attempts per job.
    let run = plan(&[
        "transfer",
        &src.spec(),
        &dst.spec(),
        "--queue",
        &url,
        "--jobs",
        "2",
        "-x",
        "max_retry=1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(
        dir.path(),
        "wrong",
        &url,
        &["--drain", "-U", "admin", "-P", "wrong"],
    );
    w.wait(Duration::from_secs(30));
    let st = status(&url, &run);
    assert_eq!(count(&st, "buried"), 2, "{st}");
    for j in jobs(&st) {
        let e = j["record"]["error"].as_str().unwrap();
        assert!(e.contains("authentication") && e.contains("admin"), "{e}");
        assert!(!e.contains("wrong"), "the password is printed: {e}");
        assert_eq!(j["record"]["failures"].as_u64(), Some(1), "retried: {j}");
    }
    let text = pump(&["plan", "status", &run, "--queue", &url]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("2 buried") && text.contains("authentication"),
        "{text}"
    );
    assert!(w.log().contains("buried"), "{}", w.log());

    let out = pump(&["plan", "retry", &run, "--queue", &url]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kicked 2"),
        "{out:?}"
    );
    let mut w = Worker::start(
        dir.path(),
        "right",
        &url,
        &["--drain", "-U", "admin", "-P", "s3cret"],
    );
    assert!(w.wait(Duration::from_secs(30)).success(), "{}", w.log());
    let st = status(&url, &run);
    assert_eq!(count(&st, "done"), 2, "{st}");
    let csv = dir.path().join("dst.csv");
    transfer_ok(
        &dst.spec(),
        &format!("csv:{}", csv.display()),
        &["-u", "admin", "-p", "s3cret"],
    );
    assert_eq!(
        common::csv_rows(&csv).len(),
        5001,
        "the header and every item"
    );
}

#[test]
fn a_malformed_job_body_is_buried_by_id_and_stays_in_the_queue() {
    let b = Beanstalkd::start();
    let url = b.url("junk");
    let (rt, mut c) = client(&b);
    let tube = Tube::new("junk").unwrap();
    rt.block_on(c.use_tube(&tube)).unwrap();
    let id = rt
        .block_on(c.put(100, 0, 60, &b"{\"hello\": 1"[..]))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(dir.path(), "w", &url, &["--drain"]);
    assert!(w.wait(Duration::from_secs(20)).success(), "{}", w.log());
    let log = w.log();
    assert!(
        log.contains(&format!("job {id} in {url}")) && log.contains("not a pump job"),
        "{log}"
    );
    let st = rt.block_on(c.stats_job(id)).unwrap().unwrap();
    assert_eq!((st.state, st.pri), (JobState::Buried, 100));
    assert_eq!(
        rt.block_on(c.peek(id)).unwrap().unwrap().body,
        &b"{\"hello\": 1"[..]
    );

    // A good job whose newest record is garbage: set aside too, not left held.
    let run = plan(&[
        "transfer",
        "gen:max-items=10",
        "blackhole:",
        "--queue",
        &url,
        "--jobs",
        "1",
    ]);
    let rtube = pump_queue::record::record_tube(&tube, &run, 0).unwrap();
    rt.block_on(c.use_tube(&rtube)).unwrap();
    rt.block_on(c.put(0, 0, 60, &b"garbage"[..])).unwrap();
    let mut w = Worker::start(dir.path(), "w2", &url, &["--drain"]);
    assert!(w.wait(Duration::from_secs(20)).success(), "{}", w.log());
    let log = w.log();
    assert!(
        log.contains("not a pump job record") && log.contains("buried"),
        "{log}"
    );
    let ts = rt.block_on(c.stats_tube(&tube)).unwrap().unwrap();
    assert_eq!((ts.buried, ts.reserved, ts.ready), (2, 0, 0));
}

#[test]
fn a_job_of_another_pump_version_is_refused_by_name_and_stays_in_the_queue() {
    let b = Beanstalkd::start();
    let url = b.url("old");
    let (rt, mut c) = client(&b);
    let tube = Tube::new("old").unwrap();
    let mut job = pump_queue::Job::new(
        "20260101T000000Z-0001",
        0,
        1,
        60,
        pump_queue::Work::Transfer(pump_queue::TransferWork {
            source: "gen:max-items=10".into(),
            sink: "blackhole:".into(),
            vbuckets: "0-1023".into(),
            bucket_source: "default".into(),
            bucket_destination: None,
            key: None,
            threads: 1,
            extra: String::new(),
            add: false,
            backup_run: None,
            rate: None,
            include_data: None,
            exclude_data: None,
            map_data: None,
        }),
    );
    job.pump = "0.0.1".into();
    let manifest = pump_queue::Manifest::new(&job.run, 1, "transfer", "gen -> blackhole", 1, 60);
    let ids = rt
        .block_on(pump_queue::run::put_run(
            &mut c,
            &tube,
            &manifest,
            &[job.clone()],
            10,
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::start(dir.path(), "w", &url, &[]);
    let log = w.wait_for_log("released for 30s", Duration::from_secs(20));
    assert!(
        log.contains("planned by pump 0.0.1")
            && log.contains(&format!("this worker is pump {}", pump_queue::PUMP_VERSION)),
        "{log}"
    );
    drop(w);
    let st = rt.block_on(c.stats_job(ids[0])).unwrap().unwrap();
    assert_eq!(st.state, JobState::Delayed);
    let s = status(&url, &job.run);
    assert_eq!(count(&s, "delayed"), 1, "{s}");
    let rec = &jobs(&s)[0]["record"];
    assert_eq!(rec["state"], "refused");
    assert!(rec["error"].as_str().unwrap().contains("0.0.1"), "{rec}");
}

#[test]
fn a_worker_rides_out_beanstalkd_going_away_mid_run_and_every_job_completes() {
    let binlog = tempfile::tempdir().unwrap();
    let mut b = Beanstalkd::start_with_binlog(binlog.path());
    let url = b.url("flaky");
    let src = LocalCluster::up(2, 0, &[]);
    let dst = LocalCluster::up(2, 0, &[]);
    transfer_ok("gen:max-items=60000", &src.spec(), &[]);
    // Each job's source held to 10k items/s: 7,500 items take most of a second.
    let run = plan(&[
        "transfer",
        &src.spec(),
        &dst.spec(),
        "--queue",
        &url,
        "--jobs",
        "8",
        "--ttr",
        "2",
        "-t",
        "1",
        "-x",
        "batch_max_size=5",
        "--rate",
        "10k",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(dir.path(), "w", &url, &["--drain"]);
    eventually(Duration::from_secs(20), "a running job", || {
        (count(&status(&url, &run), "running") > 0).then_some(())
    });
    b.kill();
    w.wait_for_log("connecting again", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    b.restart();
    assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    let log = w.log();
    assert!(
        log.contains(&b.addr()) && log.contains("answers again"),
        "{log}"
    );
    let st = status(&url, &run);
    assert_eq!(count(&st, "done"), 8, "{st}");
    assert_eq!(src.contents(), dst.contents());
}

#[test]
fn plans_that_cannot_run_are_refused_and_put_nothing() {
    let b = Beanstalkd::start();
    let url = b.url("refused");
    let dir = tempfile::tempdir().unwrap();
    let csv = format!("csv:{}", dir.path().join("x.csv").display());
    let vols = meta2_volumes(dir.path(), 3);
    let empty_lost = format!("127.0.0.2:6120={}", vols[1].display());
    let from = format!("127.0.0.1:6120={}", vols[0].display());
    for (args, why) in [
        (
            vec![
                "transfer",
                "gen:",
                "memcached://u:pw@127.0.0.1:1",
                "--queue",
                &url,
            ],
            "credentials do not go into the queue",
        ),
        (
            vec![
                "transfer",
                "dcp://127.0.0.1:1",
                "blackhole:",
                "--queue",
                &url,
                "-x",
                "checkpoint=/tmp/c",
            ],
            "the queue keeps each job's checkpoint",
        ),
        (
            vec!["transfer", "gen:", &csv, "--queue", &url],
            "cannot take 16 jobs",
        ),
        (
            vec![
                "transfer",
                "dcp://127.0.0.1:1",
                "blackhole:",
                "--queue",
                &url,
                "--jobs",
                "1",
            ],
            "use --jobs 2 or more",
        ),
        (
            vec![
                "transfer",
                "gen:",
                "blackhole:",
                "--queue",
                "beanstalk://h:0",
            ],
            "not a port",
        ),
        (
            vec![
                "transfer",
                "gen:",
                "blackhole:",
                "--queue",
                &url,
                "--jobs",
                "0",
            ],
            "at least 1",
        ),
        (
            vec![
                "meta2",
                "rebuild",
                "--peer",
                &empty_lost,
                "--from-peer",
                &from,
                "--queue",
                &url,
            ],
            "holds no meta2 base; if it is a new or emptied volume, pass --create",
        ),
    ] {
        let out = pump(&[&["plan"], args.as_slice()].concat());
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(why), "{args:?}: {e}");
        assert!(!e.contains("pw@"), "{e}");
    }
    let (rt, mut c) = client(&b);
    let st = rt.block_on(c.stats()).unwrap();
    assert_eq!(st.total_jobs, 0, "a refused plan put jobs");
    let out = pump(&["plan", "status", "20260101T000000Z-0000", "--queue", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no run"), "{}", stderr(&out));
    let out = pump(&[
        "plan",
        "status",
        "--queue",
        &format!("beanstalk://127.0.0.1:{}", common::free_port()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    // A worker told to drain a queue it cannot reach says so and exits; a wrong URL is a usage
    // error.
    let dead = format!("beanstalk://127.0.0.1:{}", common::free_port());
    let out = pump(&["worker", &dead, "--drain"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot connect") && stderr(&out).contains(&dead),
        "{}",
        stderr(&out)
    );
    let out = pump(&["worker", "http://127.0.0.1:11300", "--drain"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("beanstalk://"), "{}", stderr(&out));
}

/// Three meta2 volumes: the bases on v1 and v3, listing v2's service, v2 empty (lost).
fn meta2_volumes(dir: &Path, bases: usize) -> Vec<PathBuf> {
    let vols: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("v{i}"))).collect();
    for v in &vols {
        std::fs::create_dir_all(v).unwrap();
    }
    for v in [&vols[0], &vols[2]] {
        let out = pump(&[
            "meta2",
            "generate",
            "--volume",
            v.to_str().unwrap(),
            "--peers",
            PEERS,
            "--bases",
            &bases.to_string(),
            "--aliases",
            "1",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    vols
}

const PEERS: &str = "127.0.0.1:6120,127.0.0.2:6120,127.0.0.3:6120";

fn peer_args(vols: &[PathBuf]) -> Vec<String> {
    (0..3)
        .flat_map(|i| {
            [
                "--peer".to_string(),
                format!("127.0.0.{}:6120={}", i + 1, vols[i].display()),
            ]
        })
        .collect()
}

#[test]
fn a_meta2_rebuild_of_2000_bases_through_2_workers_passes_check() {
    let b = Beanstalkd::start();
    let url = b.url("rebuild");
    let dir = tempfile::tempdir().unwrap();
    let vols = meta2_volumes(dir.path(), 2000);
    let run = plan(&[
        "meta2",
        "rebuild",
        "--peer",
        &format!("127.0.0.2:6120={}", vols[1].display()),
        "--from-peer",
        &format!("127.0.0.1:6120={}", vols[0].display()),
        "--from-peer",
        &format!("127.0.0.3:6120={}", vols[2].display()),
        "--queue",
        &url,
        "--create",
    ]);
    let mut ws: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &format!("w{i}"), &url, &["--drain"]))
        .collect();
    for w in &mut ws {
        assert!(w.wait(Duration::from_secs(120)).success(), "{}", w.log());
    }
    let st = status(&url, &run);
    assert_eq!(
        (count(&st, "done"), st["items"].as_u64()),
        (20, Some(2000)),
        "{st}"
    );
    let rebuilt: u64 = jobs(&st)
        .iter()
        .map(|j| j["record"]["counts"]["rebuilt"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(rebuilt, 2000);
    assert!(
        ws.iter().all(|w| w.log().contains("done:")),
        "a worker idled"
    );
    let mut args = vec![
        "meta2".to_string(),
        "check".into(),
        "--volume".into(),
        vols[1].display().to_string(),
    ];
    args.extend(peer_args(&vols));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pump(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains(" ok ")).count(),
        6000,
        "every copy ok"
    );
}

#[test]
fn a_volume_check_in_jobs_reports_each_bad_copy() {
    let b = Beanstalkd::start();
    let url = b.url("check");
    let dir = tempfile::tempdir().unwrap();
    let vols = meta2_volumes(dir.path(), 30);
    // v2 gets its copies back, then one is truncated and one removed.
    let out = pump(&[
        "meta2",
        "rebuild",
        "--peer",
        &format!("127.0.0.2:6120={}", vols[1].display()),
        "--from-peer",
        &format!("127.0.0.1:6120={}", vols[0].display()),
        "--create",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = common::files_named(&vols[1], &|n| n.ends_with(".meta2"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[3])
        .unwrap();
    f.set_len(1000).unwrap();
    std::fs::remove_file(&files[7]).unwrap();
    let mut args = vec![
        "meta2".to_string(),
        "check".into(),
        "--volume".into(),
        vols[0].display().to_string(),
        "--queue".into(),
        url.clone(),
        "--jobs".into(),
        "3".into(),
    ];
    args.extend(peer_args(&vols));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = plan(&args);
    let mut w = Worker::start(dir.path(), "w", &url, &["--drain"]);
    assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    let st = status(&url, &run);
    assert_eq!(count(&st, "done"), 3, "{st}");
    let (mut checked, mut bad, mut findings) = (0, 0, Vec::new());
    for j in jobs(&st) {
        checked += j["record"]["counts"]["checked"].as_u64().unwrap_or(0);
        bad += j["record"]["counts"]["bad"].as_u64().unwrap_or(0);
        for f in j["record"]["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            findings.push(f.as_str().unwrap().to_string());
        }
    }
    assert_eq!((checked, bad), (30, 2), "{findings:?}");
    let name = |p: &Path| {
        p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".meta2")
            .to_string()
    };
    assert!(
        findings
            .iter()
            .any(|f| f.contains(&name(&files[3])) && f.contains("127.0.0.2:6120")),
        "{findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.contains(&name(&files[7])) && f.contains("missing")),
        "{findings:?}"
    );
}

/// A meta2 rebuild in one long job (one base at a time), stopped midway by `signal`; a second
/// worker finishes it from the bases the first recorded as done.
fn stop_a_rebuild_midway_and_resume(signal: i32) -> (serde_json::Value, String) {
    let b = Beanstalkd::start();
    let url = b.url("resume");
    let dir = tempfile::tempdir().unwrap();
    let vols = meta2_volumes(dir.path(), 300);
    let run = plan(&[
        "meta2",
        "rebuild",
        "--peer",
        &format!("127.0.0.2:6120={}", vols[1].display()),
        "--from-peer",
        &format!("127.0.0.1:6120={}", vols[0].display()),
        "--from-peer",
        &format!("127.0.0.3:6120={}", vols[2].display()),
        "--queue",
        &url,
        "--create",
        "--jobs",
        "1",
        "--ttr",
        "1",
        "-t",
        "1",
        "--stream",
    ]);
    let first = Worker::start(dir.path(), "first", &url, &[]);
    // Mid-job: the job is held by this worker and its record lists bases done, not all.
    let done_before = eventually(Duration::from_secs(60), "a record of bases done", || {
        let st = status(&url, &run);
        let j = &jobs(&st)[0];
        let done = j["record"]["counts"]["rebuilt"].as_u64().unwrap_or(0);
        (j["standing"] == "running" && done > 0).then_some(done)
    });
    first.signal(signal);
    eventually(Duration::from_secs(30), "the job back in the queue", || {
        (jobs(&status(&url, &run))[0]["standing"] == "ready").then_some(())
    });
    // Read again: a status reads the records before the jobs' states, so the one that saw the
    // job ready may hold the record before the last.
    let st = status(&url, &run);
    let rec = &jobs(&st)[0]["record"];
    let done_at_stop = rec["counts"]["rebuilt"].as_u64().unwrap();
    assert!(
        done_at_stop >= done_before && done_at_stop < 300,
        "not mid-job: {done_at_stop} of 300 done"
    );
    let mut second = Worker::start(dir.path(), "second", &url, &["--drain"]);
    assert!(
        second.wait(Duration::from_secs(120)).success(),
        "{}",
        second.log()
    );
    let st = status(&url, &run);
    let rec = jobs(&st)[0]["record"].clone();
    assert_eq!(rec["state"], "done", "{rec}");
    assert_eq!(rec["attempt"].as_u64(), Some(2), "{rec}");
    assert_eq!(rec["bases_done"], "0-299", "{rec}");
    let log = second.log();
    assert!(
        log.contains(&format!("resumed from {done_at_stop} bases done")),
        "{log}"
    );
    let mut args = vec![
        "meta2".to_string(),
        "check".into(),
        "--volume".into(),
        vols[1].display().to_string(),
    ];
    args.extend(peer_args(&vols));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pump(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(first);
    (rec, log)
}

#[test]
fn a_worker_killed_mid_job_leaves_its_checkpoint_and_the_next_resumes_from_it() {
    let (rec, _) = stop_a_rebuild_midway_and_resume(libc::SIGKILL);
    assert_eq!(
        rec["items"].as_u64(),
        Some(300),
        "a base was counted twice: {rec}"
    );
}

#[test]
fn ctrl_c_on_a_worker_releases_its_job_with_its_checkpoint() {
    let (rec, _) = stop_a_rebuild_midway_and_resume(libc::SIGINT);
    assert_eq!(rec["items"].as_u64(), Some(300), "{rec}");
}

#[test]
fn a_worker_killed_mid_transfer_job_leaves_dcp_positions_the_next_resumes_from() {
    let b = Beanstalkd::start();
    let url = b.url("dcp");
    let src = LocalCluster::up(2, 0, &[]);
    let dst = LocalCluster::up(2, 0, &[]);
    transfer_ok("gen:max-items=120000,min-value-size=20", &src.spec(), &[]);
    // Each job's source held to 20k items/s: 30,000 items take a second and a half whatever
    // the machine's speed, and a record goes every 250 ms.
    let run = plan(&[
        "transfer",
        &src.spec(),
        &dst.spec(),
        "--queue",
        &url,
        "--jobs",
        "4",
        "--ttr",
        "1",
        "-t",
        "1",
        "-x",
        "batch_max_size=5",
        "--rate",
        "20k",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let victim = Worker::start(dir.path(), "victim", &url, &[]);
    let (index, items) = freeze_mid_job(&url, &run, &victim);
    assert!(items > 0 && items < 120_000 / 4 + 1000, "{items}");
    victim.signal(libc::SIGKILL);
    let mut ws: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &format!("w{i}"), &url, &["--drain"]))
        .collect();
    for w in &mut ws {
        assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    }
    let st = status(&url, &run);
    assert_eq!(count(&st, "done"), 4, "{st}");
    // Jobs of over a second with a TTR of one: touched, every 250 ms, and none timed out.
    let (rt, mut c) = client(&b);
    let server = rt.block_on(c.stats()).unwrap();
    assert!(server.touches >= 4, "{server:?}");
    assert_eq!(server.timeouts, 0, "{server:?}");
    let rec = &jobs(&st)[index]["record"];
    assert_eq!(rec["attempt"].as_u64(), Some(2), "{rec}");
    assert!(
        rec["items"].as_u64().unwrap() >= 120_000 / 4 - 1000,
        "{rec}"
    );
    let logs: String = ws.iter().map(Worker::log).collect();
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("job {}/4", index + 1)) && l.contains("attempt 2"))
        .unwrap_or_else(|| panic!("no second attempt of job {}: {logs}", index + 1));
    assert!(
        line.contains(&format!("{items} items moved before")) && !line.contains("from 0 vbucket"),
        "{line}"
    );
    let resumed: u64 = line
        .split("resumed from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(resumed > 0 && line.contains("vbucket positions"), "{line}");
    assert_eq!(src.contents(), dst.contents());
}

#[test]
fn a_restore_split_into_jobs_fills_a_cluster_from_one_backup() {
    let b = Beanstalkd::start();
    let url = b.url("restore");
    let src = LocalCluster::up(2, 0, &[]);
    let dst = LocalCluster::up(2, 0, &[]);
    transfer_ok("gen:max-items=30000,min-value-size=20", &src.spec(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    // A backup of vbuckets 0-99 only: the plan splits those, as its seqno.json lists them.
    transfer_ok(&src.spec(), backup.to_str().unwrap(), &["-l", "0-99"]);
    let run = plan(&[
        "transfer",
        backup.to_str().unwrap(),
        &dst.spec(),
        "--queue",
        &url,
        "--jobs",
        "4",
    ]);
    let listed = pump(&["plan", "status", "--queue", &url]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&run) && listed.contains("4 ready"),
        "{listed}"
    );
    assert!(listed.contains("100 vbuckets"), "{listed}");
    let mut w = Worker::start(dir.path(), "w", &url, &["--drain", "--concurrency", "2"]);
    assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    let st = status(&url, &run);
    let expected: std::collections::BTreeMap<_, _> = src
        .contents()
        .into_iter()
        .filter(|(k, _)| pump_protocol::vbucket_of(k.as_bytes(), 1024) < 100)
        .collect();
    assert_eq!(count(&st, "done"), 4, "{st}");
    assert_eq!(st["items"].as_u64(), Some(expected.len() as u64), "{st}");
    assert_eq!(dst.contents(), expected);
}

#[test]
fn a_backup_run_of_jobs_under_way_is_taken_up_by_its_jobs_only() {
    let b = Beanstalkd::start();
    let url = b.url("parts");
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    // A queue that does not answer: refused before any run is made in the directory.
    let dead = format!("beanstalk://127.0.0.1:{}", common::free_port());
    let out = pump(&[
        "plan",
        "transfer",
        "gen:max-items=100",
        backup,
        "--queue",
        &dead,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    assert!(!Path::new(backup).join("bucket-default").exists());
    assert!(pump_formats::run::list_node_runs(Path::new(backup)).map_or(true, |v| v.is_empty()));

    let run = plan(&[
        "transfer",
        "gen:max-items=3000,vbuckets=16",
        backup,
        "--queue",
        &url,
        "--jobs",
        "4",
    ]);
    // While its jobs have not run, neither a second plan nor a pump transfer takes it up.
    let out = pump(&[
        "plan",
        "transfer",
        "gen:max-items=10,vbuckets=16",
        backup,
        "--queue",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is incomplete"), "{}", stderr(&out));
    let out = pump(&["transfer", "gen:max-items=10", backup]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("written by 4 jobs of a queue run"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&status(&url, &run), "ready"), 4);
    let listed = pump(&["plan", "status", "--queue", &url, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["tube"]["ready"].as_u64(), Some(4), "{listed}");
    // A restore refuses the run until every part is complete.
    let csv = dir.path().join("early.csv");
    let out = pump(&["transfer", backup, &format!("csv:{}", csv.display())]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));

    let mut w = Worker::start(dir.path(), "w", &url, &["--drain", "--concurrency", "2"]);
    assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    assert_eq!(count(&status(&url, &run), "done"), 4);
    let csv = dir.path().join("all.csv");
    transfer_ok(backup, &format!("csv:{}", csv.display()), &[]);
    assert_eq!(
        common::csv_rows(&csv).len(),
        1 + 3000,
        "a header and every item"
    );
    // Complete: the next pump transfer writes a new run beside it.
    transfer_ok("gen:max-items=10", backup, &[]);
    assert_eq!(
        pump_formats::run::list_node_runs(Path::new(backup))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_full_then_a_diff_backup_in_jobs_restore_a_cluster_equal() {
    let b = Beanstalkd::start();
    let url = b.url("diff");
    let src = LocalCluster::up(2, 0, &[]);
    let dst = LocalCluster::up(2, 0, &[]);
    transfer_ok("gen:max-items=20000,min-value-size=20", &src.spec(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    let backup_in_jobs = |mode: &str| {
        let run = plan(&[
            "transfer",
            &src.spec(),
            backup,
            "--queue",
            &url,
            "--jobs",
            "4",
            "-m",
            mode,
        ]);
        let mut w = Worker::start(dir.path(), mode, &url, &["--drain", "--concurrency", "2"]);
        assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
        assert_eq!(count(&status(&url, &run), "done"), 4);
    };
    backup_in_jobs("full");
    // 100 new items and 50 changed ones: the diff run, in jobs, holds those only.
    transfer_ok("gen:max-items=100,prefix=new", &src.spec(), &[]);
    transfer_ok("gen:max-items=50,min-value-size=30", &src.spec(), &[]);
    backup_in_jobs("diff");
    let runs = pump_formats::run::list_node_runs(Path::new(backup)).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let rows = |n: &pump_formats::run::NodeRun| match pump_formats::run::RunState::of(&n.node_dir)
        .unwrap()
    {
        pump_formats::run::RunState::Complete { completion, .. } => completion.mutations,
        other => panic!("{}: not complete: {other:?}", n.node_dir.display()),
    };
    assert_eq!(
        (runs[0].kind, runs[1].kind),
        (
            pump_formats::bfd::RunKind::Full,
            pump_formats::bfd::RunKind::Diff
        )
    );
    assert_eq!(rows(&runs[0]), 20_000);
    assert_eq!(rows(&runs[1]), 150, "the diff holds what changed only");
    transfer_ok(backup, &dst.spec(), &[]);
    assert_eq!(src.contents(), dst.contents());
}

#[test]
fn transfer_jobs_carry_include_exclude_and_map_data_to_the_workers() {
    use common::{create_collection, export_cluster, load_into};
    let b = Beanstalkd::start();
    let url = b.url("collections");
    let src = LocalCluster::up(2, 0, &[]);
    create_collection(&src, "s1", "c1");
    create_collection(&src, "s1", "c2");
    load_into(&src, 400, "d-", "_default", "_default");
    load_into(&src, 400, "c1-", "s1", "c1");
    load_into(&src, 400, "c2-", "s1", "c2");
    let all = export_cluster(&src, &[]);
    assert_eq!(all.len(), 1200);
    // Two runs in jobs on one queue: scope s1 only with s1.c1 renamed s2.c9; all but s1.c2.
    let (mapped, excluded) = (LocalCluster::up(2, 0, &[]), LocalCluster::up(2, 0, &[]));
    let runs = [
        plan(&[
            "transfer",
            &src.spec(),
            &mapped.spec(),
            "--queue",
            &url,
            "--jobs",
            "4",
            "--include-data",
            "default.s1",
            "--map-data",
            "default.s1.c1=default.s2.c9",
        ]),
        plan(&[
            "transfer",
            &src.spec(),
            &excluded.spec(),
            "--queue",
            &url,
            "--jobs",
            "4",
            "--exclude-data",
            "default.s1.c2",
        ]),
    ];
    // The jobs on the queue hold the options as given.
    let (rt, mut c) = client(&b);
    rt.block_on(c.use_tube(&Tube::new("collections").unwrap()))
        .unwrap();
    let peeked = rt.block_on(c.peek_ready()).unwrap().expect("a ready job");
    let body = String::from_utf8_lossy(&peeked.body).into_owned();
    assert!(
        body.contains(r#""include_data":"default.s1""#)
            && body.contains(r#""map_data":"default.s1.c1=default.s2.c9""#),
        "{body}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut ws: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &format!("w{i}"), &url, &["--drain"]))
        .collect();
    for w in &mut ws {
        assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    }
    for run in &runs {
        assert_eq!(count(&status(&url, run), "done"), 4, "{run}");
    }
    // Each worker applied them: the rows each destination holds, by collection and key.
    let moved = |from: &str, to: &str, keep: &dyn Fn(&str) -> bool| -> common::Export {
        all.iter()
            .filter(|((place, _), _)| keep(place))
            .map(|((place, key), v)| {
                let place = if place == from { to } else { place };
                ((place.to_string(), key.clone()), v.clone())
            })
            .collect()
    };
    assert_eq!(
        export_cluster(&mapped, &[]),
        moved("s1.c1", "s2.c9", &|p| p.starts_with("s1."))
    );
    assert_eq!(
        export_cluster(&excluded, &[]),
        moved("", "", &|p| p != "s1.c2")
    );
}

/// A slot reserves its next job once the job before has read everything, while that one still
/// waits on its destination: here memcached's answers, held back by a proxy, so that the first
/// job's source is done and its sink is not. One slot then holds two jobs, never three, and
/// both finish once the answers come.
#[test]
fn a_slot_reads_its_next_job_while_the_one_before_waits_for_its_writes() {
    let b = Beanstalkd::start();
    let url = b.url("overlap");
    let mc = common::Memcached::start(&[]);
    let proxy = common::faults::FaultProxy::start(&mc.addr(), Default::default());
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    transfer_ok(
        "gen:max-items=300,min-value-size=10",
        backup.to_str().unwrap(),
        &[],
    );
    let sink = format!("memcached://{}", proxy.addr());
    let run = plan(&[
        "transfer",
        backup.to_str().unwrap(),
        &sink,
        "--queue",
        &url,
        "--jobs",
        "3",
    ]);
    proxy.hold_answers(true);
    let mut w = Worker::start(dir.path(), "w", &url, &["--drain", "--concurrency", "1"]);
    let (rt, mut c) = client(&b);
    let tube = Tube::new("overlap").unwrap();
    let mut stats = || rt.block_on(c.stats_tube(&tube)).unwrap().unwrap();
    let held = eventually(
        Duration::from_secs(30),
        "two jobs reserved by one slot",
        || {
            let s = stats();
            (s.reserved == 2).then_some(s)
        },
    );
    assert_eq!(held.ready, 1, "{held:?}");
    // Both wait on their answers: the slot takes no third job meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let s = stats();
    assert_eq!((s.reserved, s.ready), (2, 1), "{s:?}");
    eventually(Duration::from_secs(10), "the jobs' answers held", || {
        (proxy.counts.held.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    });
    let s = stats();
    assert_eq!((s.reserved, s.ready), (2, 1), "{s:?}");
    proxy.hold_answers(false);
    assert!(w.wait(Duration::from_secs(60)).success(), "{}", w.log());
    let st = status(&url, &run);
    assert_eq!(count(&st, "done"), 3, "{st}");
    let mut m = mc.text();
    assert_eq!(m.stat("curr_items"), 300);
    let keys: Vec<String> = (0..300).map(|i| format!("pymc{i}")).collect();
    assert!(m
        .get_many(&keys)
        .iter()
        .all(|i| i.as_ref().is_some_and(|i| i.value == common::gen_value(10))));
}
