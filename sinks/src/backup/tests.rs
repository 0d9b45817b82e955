use super::*;
use pump::{BatchSender, Message};
use pump_formats::bfd;
use pump_formats::run::{self, RunState, VbPosition};

fn config(dir: &std::path::Path, max: u64) -> BackupConfig {
    BackupConfig {
        dir: dir.to_path_buf(),
        bucket: "my bucket".into(),
        node: "127.0.0.1:8091".into(),
        cbb_max_bytes: max,
        spec: dir.display().to_string(),
    }
}

/// Sends its batches, then fails if asked.
struct Batches(Vec<Vec<Message>>, bool);

#[async_trait]
impl pump::Source for Batches {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        for b in self.0 {
            out.send_messages(b).await?;
        }
        if self.1 {
            return Err(Error::source("test:", "broken on purpose"));
        }
        Ok(())
    }
}

async fn run_sink(cfg: BackupConfig, batches: Vec<Vec<Message>>, fail: bool) -> bool {
    pump::run(
        Box::new(Batches(batches, fail)),
        Box::new(BackupSink::new(cfg)),
        Context::new(Options::default()),
    )
    .await
    .is_ok()
}

fn items(n: usize, from: usize, size: usize) -> Vec<Message> {
    (from..from + n)
        .map(|i| Message {
            vbucket: (i % 1024) as u16,
            seqno: i as u64 + 1,
            cas: u64::MAX - i as u64,
            ..Message::mutation(format!("k{i}"), vec![b'v'; size])
        })
        .collect()
}

fn only_node_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let root = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let run = std::fs::read_dir(&root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    bfd::node_dir(&run, "my bucket", "127.0.0.1:8091")
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn request<'a>(
    dir: &'a std::path::Path,
    bucket: &'a str,
    mode: Option<RunKind>,
    resumable: bool,
) -> PlanRequest<'a> {
    PlanRequest {
        dir,
        bucket,
        node: "n",
        mode,
        resumable,
        source: "couchbase://h:1",
        now: chrono::Utc::now(),
        parts: None,
    }
}

/// Marks the run of `plan` complete, with end positions when `positions`.
fn complete(plan: &RunPlan, positions: bool) {
    std::fs::write(plan.node_dir.join("data-0000.cbb"), b"").unwrap();
    let c = run::Completion {
        positions: positions.then(run::Positions::default),
        ..run::Completion::default()
    };
    run::write_json_synced(&plan.node_dir.join(run::COMPLETE_JSON), &c).unwrap();
}

#[test]
fn runs_are_full_then_diffs_from_positions_and_an_incomplete_run_is_taken_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = plan(&request(d, "b", None, true)).unwrap();
    assert_eq!(
        (full.mode, full.resumed, full.base.clone()),
        (RunKind::Full, false, None)
    );
    assert!(full
        .node_dir
        .to_str()
        .unwrap()
        .contains("-full/bucket-b/node-n"));
    assert!(full.node_dir.join(run::RUN_JSON).exists());
    assert!(full.positions.as_ref().unwrap().exists());
    // Not complete: the same run is resumed, its next file after the ones it holds.
    std::fs::write(full.node_dir.join("data-0000.cbb.partial"), b"").unwrap();
    rusqlite::Connection::open(full.node_dir.join("data-0000.cbb.partial"))
        .and_then(|db| bfd::create_schema(&db))
        .unwrap();
    let again = plan(&request(d, "b", None, true)).unwrap();
    assert_eq!(
        (again.node_dir.clone(), again.resumed, again.first_file),
        (full.node_dir.clone(), true, 1)
    );
    let rec: run::RunRecord = run::read_json(&full.node_dir.join(run::RUN_JSON))
        .unwrap()
        .unwrap();
    assert_eq!(rec.attempts.len(), 2);
    // Asked for another mode while it is incomplete: refused, naming the mode to use.
    let e = plan(&request(d, "b", Some(RunKind::Diff), true)).unwrap_err();
    assert!(e.contains("-m full") && e.contains("incomplete"), "{e}");
    // A source without positions writes it again from the start.
    let redo = plan(&request(d, "b", None, false)).unwrap();
    assert_eq!(
        (redo.node_dir.clone(), redo.resumed),
        (full.node_dir.clone(), false)
    );
    assert!(!full.node_dir.join("data-0000.cbb.partial").exists());
    complete(&full, true);
    let d1 = plan(&request(d, "b", None, true)).unwrap();
    assert_eq!(d1.mode, RunKind::Diff);
    assert!(
        d1.base.as_deref().unwrap().ends_with("-full"),
        "{:?}",
        d1.base
    );
    complete(&d1, true);
    let d2 = plan(&request(d, "b", None, true)).unwrap();
    assert!(d2.run.ends_with("-diff"), "{}", d2.run);
    assert_ne!(
        d1.node_dir, d2.node_dir,
        "two runs in one second get distinct diff runs"
    );
    assert_eq!(d2.base.as_deref(), Some(d1.run.as_str()));
    let root = |p: &std::path::Path| p.ancestors().nth(3).unwrap().to_path_buf();
    assert_eq!(root(&full.node_dir), root(&d2.node_dir));
    complete(&d2, true);
    // accu: from the full run, not the newest diff.
    let accu = plan(&request(d, "b", Some(RunKind::Accu), true)).unwrap();
    assert!(accu.run.ends_with("-accu") && accu.base.as_deref() == Some(full.run.as_str()));
    complete(&accu, true);
    // A different bucket goes into the same full run.
    let other = plan(&request(d, "other", None, true)).unwrap();
    assert_eq!(
        other.node_dir.ancestors().nth(2),
        full.node_dir.ancestors().nth(2)
    );
    // No positions (gen:, memcached://...): a new root with a full run, never a diff.
    let fresh = plan(&request(d, "b", None, false)).unwrap();
    assert_eq!(fresh.mode, RunKind::Full);
    assert_ne!(root(&fresh.node_dir), root(&full.node_dir));
    let e = plan(&request(d, "b", Some(RunKind::Diff), false)).unwrap_err();
    assert!(e.contains("positions") && e.contains("-m full"), "{e}");
    // -m full: a new root.
    complete(&fresh, false);
    let f2 = plan(&request(d, "b", Some(RunKind::Full), true)).unwrap();
    assert_ne!(root(&f2.node_dir), root(&fresh.node_dir));
}

#[tokio::test]
async fn a_complete_run_writes_renamed_data_files_and_json_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        run_sink(
            config(dir.path(), 1 << 30),
            vec![items(10, 0, 5), items(5, 10, 5)],
            false
        )
        .await
    );
    let node = only_node_dir(dir.path());
    assert!(node
        .to_str()
        .unwrap()
        .contains("bucket-my+bucket/node-127.0.0.1%3A8091"));
    assert_eq!(
        names(&node),
        [
            "data-0000.cbb",
            "failover.json",
            "meta.json",
            "pump-complete.json",
            "pump-run.json",
            "seqno.json",
            "snapshot_markers.json"
        ]
    );
    let done: run::Completion = run::read_json(&node.join(run::COMPLETE_JSON))
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.mutations, done.rows(), done.bytes),
        (15, 15, 10 * 7 + 5 * 8)
    );
    assert_eq!(done.vbuckets["14"].last_seqno, 15);
    assert_eq!(done.positions, None);
    let db = rusqlite::Connection::open(node.join("data-0000.cbb")).unwrap();
    let (n, cas): (i64, String) = db
        .query_row(
            "SELECT count(*), max(cas) FROM cbb_msg WHERE key = CAST('k0' AS BLOB)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, cas), (1, u64::MAX.to_string()));
    let total: i64 = db
        .query_row("SELECT count(*) FROM cbb_msg", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 15);
    let seqnos: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.join("seqno.json")).unwrap()).unwrap();
    assert_eq!(seqnos["14"], 15);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["pred"], serde_json::json!([]));
}

#[tokio::test]
async fn data_files_roll_once_their_values_pass_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let batches = (0..4).map(|i| items(10, i * 10, 100)).collect();
    assert!(run_sink(config(dir.path(), 1500), batches, false).await);
    let node = only_node_dir(dir.path());
    let files: Vec<_> = names(&node)
        .into_iter()
        .filter(|n| n.ends_with(".cbb"))
        .collect();
    // 1000 value bytes per batch: a file rolls after its second batch.
    assert_eq!(files, ["data-0000.cbb", "data-0001.cbb"]);
}

#[tokio::test]
async fn a_failed_source_leaves_only_temporary_names() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!run_sink(config(dir.path(), 1 << 30), vec![items(10, 0, 5)], true).await);
    let node = only_node_dir(dir.path());
    assert_eq!(names(&node), ["data-0000.cbb.partial", "pump-run.json"]);
    assert!(!RunState::of(&node).unwrap().is_complete());
}

#[tokio::test]
async fn a_resumed_run_goes_on_in_its_next_file_and_its_record_counts_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!run_sink(config(dir.path(), 1 << 30), vec![items(10, 0, 5)], true).await);
    let node = only_node_dir(dir.path());
    let req = PlanRequest {
        dir: dir.path(),
        bucket: "my bucket",
        node: "127.0.0.1:8091",
        mode: None,
        resumable: true,
        source: "dcp://h:1",
        now: chrono::Utc::now(),
        parts: None,
    };
    // The DCP source had saved the uuids of vbuckets 1-9 (each before its first row left),
    // not vbucket 0's.
    let positions = node.join(run::POSITIONS_JSON);
    let mut known = run::Positions::load(&positions).unwrap();
    for vb in 1..10 {
        known.set(vb, with_uuid(0x5eed));
    }
    run::write_json_synced(&positions, &known).unwrap();
    let p = plan(&req).unwrap();
    assert!(p.resumed);
    assert_eq!((p.first_file, p.prior.mutations), (1, 10));
    // The committed rows moved each vbucket's position: a DCP source resumes after them...
    let pos = run::Positions::load(p.positions.as_ref().unwrap()).unwrap();
    assert_eq!(
        pos.position(9),
        VbPosition {
            seqno: 10,
            snap_start: 10,
            snap_end: 10,
            uuid: 0x5eed
        }
    );
    // ...but not a vbucket whose uuid the file did not hold yet: its rows are read again.
    assert_eq!(pos.position(0), VbPosition::default());
    let ok = pump::run(
        Box::new(Batches(vec![items(5, 10, 5)], false)),
        Box::new(BackupSink::with_plan(config(dir.path(), 1 << 30), p)),
        Context::new(Options::default()),
    )
    .await
    .is_ok();
    assert!(ok);
    let files: Vec<String> = names(&node)
        .into_iter()
        .filter(|n| n.contains(".cbb"))
        .collect();
    assert_eq!(files, ["data-0000.cbb", "data-0001.cbb"]);
    let done: run::Completion = run::read_json(&node.join(run::COMPLETE_JSON))
        .unwrap()
        .unwrap();
    assert_eq!((done.mutations, done.rows()), (15, 15));
    assert_eq!(done.files.len(), 2);
    let rec: run::RunRecord = run::read_json(&node.join(run::RUN_JSON)).unwrap().unwrap();
    assert_eq!(
        rec.attempts
            .iter()
            .map(|a| a.first_file)
            .collect::<Vec<_>>(),
        [0, 1]
    );
}

/// A vbucket at seqno 0 under `uuid`, as the DCP source saves it once its stream opened.
fn with_uuid(uuid: u64) -> VbPosition {
    VbPosition {
        uuid,
        ..VbPosition::default()
    }
}

async fn run_part(
    cfg: BackupConfig,
    plan: Box<RunPlan>,
    batches: Vec<Vec<Message>>,
    fail: bool,
) -> bool {
    pump::run(
        Box::new(Batches(batches, fail)),
        Box::new(BackupSink::with_plan(cfg, *plan)),
        Context::new(Options::default()),
    )
    .await
    .is_ok()
}

fn part_plan(node: &std::path::Path, part: u32, vbuckets: &[u16]) -> PartPlan {
    plan_part(&PartRequest {
        node_dir: node,
        run: "r",
        part,
        parts: 3,
        vbuckets,
        resumable: true,
    })
    .unwrap()
}

#[tokio::test]
async fn a_run_of_three_parts_is_complete_once_every_part_is_and_a_cut_part_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 30);
    let mut req = request(dir.path(), "my bucket", None, true);
    req.node = "127.0.0.1:8091";
    req.parts = Some(3);
    let run_plan = plan(&req).unwrap();
    let node = run_plan.node_dir.clone();
    // One item in each of vbuckets 0-9 (part 0), 10-19 (part 1), 20-29 (part 2).
    let of = |lo: usize| -> Vec<Message> {
        items(300, 0, 5)
            .into_iter()
            .filter(|m| (lo..lo + 10).contains(&(m.vbucket as usize)))
            .collect()
    };
    let vbs = |lo: u16| (lo..lo + 10).collect::<Vec<u16>>();
    let PartPlan::Write(p0) = part_plan(&node, 0, &vbs(0)) else {
        panic!("part 0 is not done yet")
    };
    assert_eq!(p0.first_file, 0);
    assert!(run_part(cfg.clone(), p0, vec![of(0)], false).await);
    // Part 1 is cut: its source fails after one batch.
    let PartPlan::Write(p1) = part_plan(&node, 1, &vbs(10)) else {
        panic!("part 1 is not done yet")
    };
    assert_eq!(p1.first_file, 10_000);
    // A first attempt of a full run has no positions to start from: no file yet, the DCP
    // source writes it (here, as it would have by the cut, with each vbucket's uuid).
    let p1_positions = p1.positions.clone().unwrap();
    assert!(!p1_positions.exists());
    let mut known = run::Positions::default();
    for vb in 10..20 {
        known.set(vb, with_uuid(0x5eed));
    }
    run::write_json_synced(&p1_positions, &known).unwrap();
    assert!(!run_part(cfg.clone(), p1, vec![of(10)], true).await);
    let PartPlan::Write(p2) = part_plan(&node, 2, &vbs(20)) else {
        panic!("part 2 is not done yet")
    };
    assert!(run_part(cfg.clone(), p2, vec![of(20)], false).await);
    // Two parts done, one cut: incomplete, and a restore would refuse it.
    assert!(matches!(
        RunState::of(&node).unwrap(),
        RunState::Incomplete { .. }
    ));
    assert!(node.join(run::part_record_name(0)).exists());
    assert!(node.join(run::part_record_name(2)).exists());
    assert!(!node.join(run::part_record_name(1)).exists());
    assert!(names(&node).contains(&"data-10000.cbb.partial".to_string()));
    assert!(!complete_parts(&node).unwrap());
    // A pump transfer into the directory does not take the run of jobs up.
    let mut again = request(dir.path(), "my bucket", None, true);
    again.node = "127.0.0.1:8091";
    let e = plan(&again).unwrap_err();
    assert!(e.contains("written by 3 jobs of a queue run"), "{e}");
    // Part 1 again: it goes on in its next file, counting what the cut attempt committed.
    let PartPlan::Write(p1) = part_plan(&node, 1, &vbs(10)) else {
        panic!("part 1 is not done yet")
    };
    assert!(p1.resumed);
    assert_eq!((p1.first_file, p1.prior.mutations), (10_001, 10));
    let pos = run::Positions::load(p1.positions.as_ref().unwrap()).unwrap();
    assert!(pos.iter().all(|(vb, _)| (10..20).contains(&vb)));
    assert_eq!(
        pos.iter().count(),
        10,
        "each vbucket moved up to its last committed row"
    );
    assert!(run_part(cfg.clone(), p1, vec![], false).await);
    // Now complete: one completion record for the whole run, every data file final.
    let RunState::Complete { completion, .. } = RunState::of(&node).unwrap() else {
        panic!("the run is not complete")
    };
    assert_eq!(completion.mutations, 30);
    assert_eq!(completion.vbuckets.len(), 30);
    let files: Vec<&str> = completion.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        files,
        ["data-0000.cbb", "data-10000.cbb", "data-20000.cbb"],
        "the resumed part had nothing more to write: no empty file"
    );
    let listed = names(&node);
    assert!(
        listed
            .iter()
            .all(|n| !n.ends_with(".cbb.partial") && !n.ends_with("-journal")),
        "{listed:?}"
    );
    for f in ["meta.json", "seqno.json", "pump-complete.json"] {
        assert!(listed.contains(&f.to_string()), "{f} missing: {listed:?}");
    }
    let rows: i64 = ["data-0000.cbb", "data-10000.cbb", "data-20000.cbb"]
        .iter()
        .map(|f| {
            rusqlite::Connection::open(node.join(f))
                .unwrap()
                .query_row("SELECT count(*) FROM cbb_msg", [], |r| r.get::<_, i64>(0))
                .unwrap()
        })
        .sum();
    assert_eq!(rows, 30);
    // A job whose part is done finds it so, and completing again changes nothing.
    assert!(matches!(part_plan(&node, 1, &vbs(10)), PartPlan::Done));
    assert!(complete_parts(&node).unwrap());
    // A job of another run shape is refused by name.
    let e = plan_part(&PartRequest {
        node_dir: &node,
        run: "r",
        part: 0,
        parts: 4,
        vbuckets: &vbs(0),
        resumable: false,
    })
    .unwrap_err();
    assert!(e.contains("written by 3 job(s), not part 0 of 4"), "{e}");
}

#[tokio::test]
async fn a_cut_part_of_a_source_without_positions_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 30);
    let mut req = request(dir.path(), "my bucket", None, false);
    req.node = "127.0.0.1:8091";
    req.parts = Some(2);
    let node = plan(&req).unwrap().node_dir;
    let part = |n| {
        plan_part(&PartRequest {
            node_dir: &node,
            run: "r",
            part: n,
            parts: 2,
            vbuckets: &[0, 1],
            resumable: false,
        })
        .unwrap()
    };
    let PartPlan::Write(p) = part(1) else {
        panic!("part 1 is not done")
    };
    assert!(!run_part(cfg.clone(), p, vec![items(10, 0, 5)], true).await);
    assert!(names(&node).contains(&"data-10000.cbb.partial".to_string()));
    let PartPlan::Write(p) = part(1) else {
        panic!("part 1 is not done")
    };
    assert_eq!(
        (p.first_file, p.prior.mutations, p.resumed),
        (10_000, 0, false)
    );
    assert!(!names(&node).contains(&"data-10000.cbb.partial".to_string()));
    assert!(p.positions.is_none());
}

/// The lock that makes one part complete the run: a part that finds it held waits for it.
#[test]
fn a_part_completing_the_run_waits_while_another_holds_the_parts_lock() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().to_path_buf();
    let held = std::fs::File::create(node.join(super::layout::PARTS_LOCK)).unwrap();
    held.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || tx.send(complete_parts(&node)).unwrap());
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "completed while the lock was held"
    );
    held.unlock().unwrap();
    let done = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("completes once the lock is free");
    waiter.join().unwrap();
    // This directory holds no run: the error says so.
    assert!(done.unwrap_err().contains("pump-run.json"));
}
