//! `pump meta2 move`: take one copy of a base to a new service and rewrite `sys.peers`,
//! journaled so that a killed move is reported by `check` and resumed by a rerun.
//!
//! Each step is reported as it happens (started, done or failed, then each undo) and logged
//! in the journal before and after it runs, so that after a kill or a failed step the
//! operator sees what was done: on the terminal, and in the journal a killed move leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pump_meta2::schema;
use pump_meta2::{inspect, BaseName, Health, Peer};
use serde::{Deserialize, Serialize};

use super::{
    aside_path, check_base, now_secs, volume_writable, Executor, FileExecutor, Step, StreamCopy,
};
use crate::failure::Failure;

/// What a move needs to know, saved in its journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveJournal {
    pub base: String,
    pub plan: Vec<Step>,
    pub done: usize,
    pub statuses: BTreeMap<String, Option<Vec<u8>>>,
    /// What happened, one line per event, as it happened (seconds since the epoch first).
    #[serde(default)]
    pub log: Vec<String>,
}

impl MoveJournal {
    /// Logs `line` in the journal (saved by the next [`write_journal`]).
    fn log(&mut self, line: &str) {
        self.log.push(format!("{} {line}", now_secs()));
    }
}

/// The arguments of a move.
pub struct MoveRequest {
    pub base: BaseName,
    pub peers: Vec<Peer>,
    pub from: String,
    pub to: Peer,
    pub delete_source: bool,
    pub dry_run: bool,
    /// How the copy streams.
    pub stream: StreamCopy,
}

fn journal_path(target: &Path) -> PathBuf {
    aside_path(target, "move-journal")
}

fn write_journal(path: &Path, j: &MoveJournal) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(j).map_err(|e| e.to_string())?;
    let tmp = aside_path(path, "tmp");
    pump_files::write_replacing(&tmp, path, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Plans a move after checking everything; writes nothing.
fn plan_move(req: &MoveRequest) -> Result<(Vec<Step>, Vec<Peer>), Failure> {
    if !req.peers.iter().any(|p| p.address == req.from) {
        return Err(Failure::Usage(format!(
            "--from {}: not one of the --peer addresses",
            req.from
        )));
    }
    if req.peers.iter().any(|p| p.address == req.to.address) {
        return Err(Failure::Usage(format!(
            "--to {}: already a peer of {}",
            req.to.address, req.base
        )));
    }
    volume_writable(&req.to.volume)
        .map_err(|e| Failure::Usage(format!("--to {}: {e}", req.to.address)))?;
    let reports = check_base(&req.base, &req.peers, false);
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.health != Health::Ok)
        .map(|r| format!("{}: {}: {}", r.address, r.health, r.message))
        .collect();
    if !bad.is_empty() {
        return Err(Failure::Failed(format!(
            "{}: every copy must pass check before a move (run `pump meta2 sync` first): {}",
            req.base,
            bad.join("; ")
        )));
    }
    let listed = inspect(&req.peers[0].path(&req.base), false).peers;
    let mut given: Vec<String> = req.peers.iter().map(|p| p.address.clone()).collect();
    given.sort();
    if listed != given {
        return Err(Failure::Usage(format!(
            "{}: sys.peers is {} but --peer gives {}",
            req.base,
            listed.join(","),
            given.join(",")
        )));
    }
    let target = req.to.path(&req.base);
    if target.exists() {
        return Err(Failure::Usage(format!(
            "--to {}: {} exists",
            req.to.address,
            target.display()
        )));
    }
    let admin_n = req
        .peers
        .iter()
        .filter_map(|p| {
            inspect(&p.path(&req.base), false)
                .versions
                .get("admin")
                .copied()
        })
        .max()
        .unwrap_or(0);
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let admin_version = format!("{}:{when}", admin_n + 1);
    let mut new_peers: Vec<String> = given.iter().filter(|a| **a != req.from).cloned().collect();
    new_peers.push(req.to.address.clone());
    new_peers.sort();
    let mut plan = Vec::new();
    for p in &given {
        plan.push(Step::Freeze { peer: p.clone() });
    }
    plan.push(Step::Copy {
        from: req.from.clone(),
        to: req.to.address.clone(),
    });
    for p in &new_peers {
        plan.push(Step::SetPeers {
            peer: p.clone(),
            peers: new_peers.clone(),
            admin_version: admin_version.clone(),
        });
    }
    for p in &given {
        if *p != req.from {
            plan.push(Step::Unfreeze { peer: p.clone() });
        }
    }
    plan.push(Step::Unfreeze {
        peer: req.to.address.clone(),
    });
    plan.push(Step::Verify {
        peer: req.to.address.clone(),
        against: req.from.clone(),
        data_only: true,
    });
    plan.push(Step::Unfreeze {
        peer: req.from.clone(),
    });
    if req.delete_source {
        plan.push(Step::Remove {
            peer: req.from.clone(),
        });
    } else {
        plan.push(Step::SetAside {
            peer: req.from.clone(),
            suffix: format!("moved-{}", now_secs()),
        });
    }
    let mut all = req.peers.clone();
    all.push(req.to.clone());
    Ok((plan, all))
}

/// Moves one copy of a base to a new service; resumes an interrupted move of the same base
/// to the same target from its journal. Each line of what it does goes to `say` as it
/// happens (the plan alone for a dry run).
pub async fn move_base(
    req: &MoveRequest,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<(), Failure> {
    let target = req.to.path(&req.base);
    let journal_file = journal_path(&target);
    let mut all = req.peers.clone();
    all.push(req.to.clone());
    let (mut journal, resumed) = if journal_file.exists() {
        let text = std::fs::read(&journal_file)
            .map_err(|e| Failure::Failed(format!("{}: {e}", journal_file.display())))?;
        let j: MoveJournal = serde_json::from_slice(&text).map_err(|e| {
            Failure::Failed(format!(
                "{}: not a move journal: {e}",
                journal_file.display()
            ))
        })?;
        if j.base != req.base.to_string() {
            return Err(Failure::Usage(format!(
                "{}: the journal is for {}",
                journal_file.display(),
                j.base
            )));
        }
        (j, true)
    } else {
        let (plan, _) = plan_move(req)?;
        (
            MoveJournal {
                base: req.base.to_string(),
                plan,
                done: 0,
                statuses: BTreeMap::new(),
                log: Vec::new(),
            },
            false,
        )
    };
    if req.dry_run {
        for (i, s) in journal.plan.iter().enumerate() {
            let mark = if i < journal.done { " (done)" } else { "" };
            say(&format!("{:>2}. {s}{mark}", i + 1));
        }
        return Ok(());
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Failed(format!("{}: {e}", dir.display())))?;
    }
    if resumed {
        let line = format!(
            "resuming the move journaled in {} after step {}",
            journal_file.display(),
            journal.done
        );
        say(&line);
        journal.log(&line);
    } else {
        // Save every copy's status before anything is written: Unfreeze puts it back.
        for p in &req.peers {
            let c = rusqlite::Connection::open_with_flags(
                p.path(&req.base),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| Failure::Failed(format!("{}: {e}", p.address)))?;
            let v = schema::admin_get(&c, "sys.status")
                .map_err(|e| Failure::Failed(format!("{}: {e}", p.address)))?;
            journal.statuses.insert(p.address.clone(), v);
        }
        let from_status = journal.statuses.get(&req.from).cloned().flatten();
        journal.statuses.insert(req.to.address.clone(), from_status);
        let line = format!(
            "moving {} from {} to {}: {} steps, journaled in {}",
            req.base,
            req.from,
            req.to.address,
            journal.plan.len(),
            journal_file.display()
        );
        say(&line);
        journal.log(&line);
    }
    let mut exec = FileExecutor::new(req.base.clone(), &all).with_stream(req.stream);
    exec.statuses = journal.statuses.clone();
    let start = journal.done;
    for i in start..journal.plan.len() {
        let step = journal.plan[i].clone();
        // A step cut short by a kill may have left a partial result: redo it from scratch.
        if resumed && i == start {
            if let Step::Copy { to, .. } = &step {
                let t = exec.path(to).map_err(Failure::Failed)?;
                let _ = std::fs::remove_file(&t);
                let _ = std::fs::remove_file(pump_meta2::files::tmp_path(&t));
            }
        }
        let line = format!("{:>2}. {step}", i + 1);
        journal.log(&format!("{line}: started"));
        write_journal(&journal_file, &journal).map_err(Failure::Failed)?;
        say(&format!("{line}: started"));
        #[cfg(test)]
        let result = if hooks::ERROR_AT.get() == Some(i + 1) {
            Err("an error injected at this step (test hook)".to_string())
        } else {
            exec.execute(&step).await
        };
        #[cfg(not(test))]
        let result = exec.execute(&step).await;
        if let Err(e) = result {
            say(&format!("{line}: failed: {e}"));
            journal.log(&format!("{line}: failed: {e}"));
            let _ = write_journal(&journal_file, &journal);
            let undo = exec.undo().await;
            let undone = if undo.is_empty() {
                "undone: every step done since the start of this run".to_string()
            } else {
                format!("undo failed: {}", undo.join("; "))
            };
            say(&format!("{line}: {undone}"));
            journal.log(&format!("{line}: {undone}"));
            let _ = write_journal(&journal_file, &journal);
            let mut msg = format!("step {} ({step}) failed: {e}", i + 1);
            if resumed {
                msg.push_str(&format!(
                    "; the journal {} is kept: fix the cause and rerun",
                    journal_file.display()
                ));
            } else if undo.is_empty() {
                let _ = std::fs::remove_file(&journal_file);
                msg.push_str("; every copy is back as it was");
            } else {
                msg.push_str(&format!("; undo failed: {}", undo.join("; ")));
            }
            return Err(Failure::Failed(msg));
        }
        journal.done = i + 1;
        journal.log(&format!("{line}: done"));
        write_journal(&journal_file, &journal).map_err(Failure::Failed)?;
        say(&format!("{line}: done"));
        #[cfg(test)]
        if hooks::STOP_AFTER.get() == Some(i + 1) {
            // As a kill would: no undo, the journal kept.
            return Err(Failure::Failed(format!(
                "stopped after step {} (test hook)",
                i + 1
            )));
        }
    }
    exec.forget();
    std::fs::remove_file(&journal_file)
        .map_err(|e| Failure::Failed(format!("{}: {e}", journal_file.display())))?;
    Ok(())
}

/// Test hooks: they exist only in test builds. Each is per thread, so tests running side by
/// side do not see each other's (a `#[tokio::test]` runs the move on its own thread).
#[cfg(test)]
mod hooks {
    use std::cell::Cell;

    thread_local! {
        /// Step N (1-based) fails as a step does: the undo journal runs.
        pub static ERROR_AT: Cell<Option<usize>> = const { Cell::new(None) };
        /// The move stops right after step N is done and journaled, without undoing
        /// anything: what a killed process leaves.
        pub static STOP_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }
}

/// The move's journal and undo, driven through the test hooks (a killed move, a step that
/// fails), on generated bases in temporary volumes.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pump_meta2::generate::{write_base, BaseSpec};
    use pump_meta2::{digest, BaseName, Peer};

    use super::*;

    const A: &str = "127.0.0.1:6120";
    const B: &str = "127.0.0.2:6120";
    const C: &str = "127.0.0.3:6120";
    const D: &str = "127.0.0.4:6120";

    /// The same base written on one volume per peer, and an empty volume for D.
    fn copies(root: &Path, container: &str, aliases: usize) -> (BaseName, Vec<Peer>, Peer) {
        let spec = BaseSpec {
            ns: "OPENIO".into(),
            account: "acct".into(),
            container: container.into(),
            peers: [A, B, C].iter().map(|s| s.to_string()).collect(),
            aliases,
        };
        let peers = [A, B, C]
            .iter()
            .map(|a| {
                let volume = root.join(a.replace([':', '.'], "_"));
                write_base(&volume, &spec).unwrap();
                Peer {
                    address: a.to_string(),
                    volume,
                }
            })
            .collect();
        let target = root.join("new");
        std::fs::create_dir(&target).unwrap();
        let to = Peer {
            address: D.into(),
            volume: target,
        };
        (spec.name(), peers, to)
    }

    fn request(base: &BaseName, peers: &[Peer], to: &Peer) -> MoveRequest {
        MoveRequest {
            base: base.clone(),
            peers: peers.to_vec(),
            from: B.into(),
            to: to.clone(),
            delete_source: false,
            dry_run: false,
            stream: StreamCopy::default(),
        }
    }

    fn health(base: &BaseName, peers: &[Peer]) -> BTreeMap<String, &'static str> {
        check_base(base, peers, false)
            .into_iter()
            .map(|r| (r.address, r.health.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn a_move_killed_midway_is_reported_by_check_and_a_rerun_completes() {
        let root = tempfile::tempdir().unwrap();
        let (base, peers, to) = copies(root.path(), "c3", 50);
        let data_before = digest(&base.path_in(&peers[1].volume), &["admin"]).unwrap();
        let req = request(&base, &peers, &to);
        hooks::STOP_AFTER.set(Some(5));
        let killed = move_base(&req, &mut |_| {}).await;
        hooks::STOP_AFTER.set(None);
        match killed {
            Err(Failure::Failed(m)) => assert!(m.contains("stopped after step 5"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Stopped in the middle of the sys.peers rewrite: one copy has the new list and a
        // bumped admin version, the others are frozen with the old one.
        let h = health(&base, &peers);
        assert_eq!(h[A], "peers-disagree", "{h:?}");
        assert_eq!(h[B], "behind", "{h:?}");
        assert_eq!(h[C], "behind", "{h:?}");

        let mut lines = Vec::new();
        move_base(&req, &mut |l| lines.push(l.to_string()))
            .await
            .unwrap();
        assert!(lines[0].contains("resuming"), "{lines:?}");
        let new_set = vec![peers[0].clone(), peers[2].clone(), to.clone()];
        assert!(health(&base, &new_set).values().all(|h| *h == "ok"));
        let moved = base.path_in(&to.volume);
        assert_eq!(digest(&moved, &["admin"]).unwrap(), data_before);
        assert!(
            !base.path_in(&peers[1].volume).exists(),
            "the old copy is set aside"
        );
        let st = inspect(&moved, false);
        assert_eq!(st.peers, [A, C, D]);
        assert_eq!(st.status(), 0);
    }

    #[tokio::test]
    async fn a_move_failing_at_any_step_leaves_every_copy_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        let (base, peers, to) = copies(root.path(), "c6", 20);
        let before: Vec<_> = peers
            .iter()
            .map(|p| digest(&base.path_in(&p.volume), &[]).unwrap())
            .collect();
        let req = request(&base, &peers, &to);
        // 13 steps: 3 freezes, copy, 3 sys.peers, 3 unfreezes, verify, unfreeze of the
        // source, set aside.
        for step in [2, 4, 6, 9, 11] {
            hooks::ERROR_AT.set(Some(step));
            let r = move_base(&req, &mut |_| {}).await;
            hooks::ERROR_AT.set(None);
            match r {
                Err(Failure::Failed(m)) => {
                    assert!(m.contains("(test hook)"), "step {step}: {m}");
                    assert!(m.contains("back as it was"), "step {step}: {m}");
                }
                other => panic!("step {step}: {other:?}"),
            }
            let after: Vec<_> = peers
                .iter()
                .map(|p| digest(&base.path_in(&p.volume), &[]).unwrap())
                .collect();
            assert_eq!(after, before, "step {step}: every copy as it was, unfrozen");
            assert!(
                BaseName::list(&to.volume).unwrap().is_empty(),
                "step {step}: no copy left on the target"
            );
            assert!(health(&base, &peers).values().all(|h| *h == "ok"));
        }
    }

    #[tokio::test]
    async fn each_step_is_reported_and_journaled_as_it_happens() {
        let root = tempfile::tempdir().unwrap();
        let (base, peers, to) = copies(root.path(), "c7", 20);
        let req = request(&base, &peers, &to);
        let journal = journal_path(&req.to.path(&base));
        let read = |p: &Path| -> MoveJournal {
            serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
        };
        // Stopped after step 3 as a kill would: each line came while the move ran, the
        // journal on disk already holding what the line says.
        let mut lines = Vec::new();
        hooks::STOP_AFTER.set(Some(3));
        let stopped = move_base(&req, &mut |l| {
            lines.push(l.to_string());
            if !(l.ends_with(": done") || l.ends_with(": started")) {
                return;
            }
            let j = read(&journal);
            let n: usize = l.trim_start()[..l.trim_start().find('.').unwrap_or(0)]
                .parse()
                .unwrap_or(0);
            if l.ends_with(": done") {
                assert_eq!(j.done, n, "{l}");
            } else if l.ends_with(": started") {
                assert_eq!(j.done, n - 1, "{l}");
                assert!(j.log.last().unwrap().ends_with(l), "{l}");
            }
        })
        .await;
        hooks::STOP_AFTER.set(None);
        assert!(stopped.is_err());
        assert!(lines[0].starts_with(&format!("moving {base} from {B} to {D}: 13 steps")));
        for n in 1..=3 {
            assert!(lines
                .iter()
                .any(|l| l.starts_with(&format!("{n:>2}. freeze")) && l.ends_with(": done")));
        }
        assert_eq!(lines.len(), 1 + 3 * 2, "{lines:?}");
        let j = read(&journal);
        assert_eq!(j.done, 3);
        assert_eq!(j.log.iter().filter(|l| l.ends_with(": done")).count(), 3);
        // Resumed, step 5 fails: it and its undo are reported before the move returns.
        let mut lines = Vec::new();
        hooks::ERROR_AT.set(Some(5));
        let failed = move_base(&req, &mut |l| lines.push(l.to_string())).await;
        hooks::ERROR_AT.set(None);
        assert!(failed.is_err());
        assert!(lines[0].contains("resuming"), "{lines:?}");
        assert!(lines
            .iter()
            .any(|l| l.starts_with(" 4. copy") && l.ends_with(": done")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with(" 5. ") && l.contains(": failed: an error injected")));
        assert!(lines.last().unwrap().contains("undone"), "{lines:?}");
        let j = read(&journal);
        assert!(j.log.iter().any(|l| l.contains(": failed: ")));
    }
}
