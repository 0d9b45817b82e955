use super::*;
use pump::{BatchSender, Message};
use pump_formats::bfd;

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

#[test]
fn the_first_run_is_full_and_later_runs_are_diffs_under_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let a = plan_run_dir(dir.path(), "b", "n", now).unwrap();
    assert!(
        a.to_str().unwrap().contains("-full/bucket-b/node-n"),
        "{a:?}"
    );
    // No complete data file yet: the same full run is written again.
    assert_eq!(plan_run_dir(dir.path(), "b", "n", now).unwrap(), a);
    std::fs::write(a.join("data-0000.cbb"), b"").unwrap();
    let d1 = plan_run_dir(dir.path(), "b", "n", now).unwrap();
    std::fs::write(d1.join("data-0000.cbb"), b"").unwrap();
    let d2 = plan_run_dir(dir.path(), "b", "n", now).unwrap();
    assert!(d1.to_str().unwrap().contains("-diff/"), "{d1:?}");
    assert_ne!(d1, d2, "two runs in one second get distinct diff runs");
    let root = |p: &std::path::Path| p.ancestors().nth(3).unwrap().to_path_buf();
    assert_eq!(root(&a), root(&d2));
    // A different bucket goes into the same full run.
    let other = plan_run_dir(dir.path(), "other", "n", now).unwrap();
    assert_eq!(other.ancestors().nth(2), a.ancestors().nth(2));
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
            "seqno.json",
            "snapshot_markers.json"
        ]
    );
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
    assert_eq!(names(&node), ["data-0000.cbb.partial"]);
}
