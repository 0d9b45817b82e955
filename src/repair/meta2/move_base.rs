//! `pump meta2 move`: take one copy of a base to a new service and rewrite `sys.peers`,
//! journaled so that a killed move is reported by `check` and resumed by a rerun.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pump_meta2::schema;
use pump_meta2::{inspect, BaseName, Health, Peer};
use serde::{Deserialize, Serialize};

use super::{
    aside_path, check_base, now_secs, volume_writable, Executor, FileExecutor, Step, StreamCopy,
};
use crate::cli::Failure;

/// What a move needs to know, saved in its journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveJournal {
    pub base: String,
    pub plan: Vec<Step>,
    pub done: usize,
    pub statuses: BTreeMap<String, Option<Vec<u8>>>,
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
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
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
/// to the same target from its journal.
pub async fn move_base(req: &MoveRequest) -> Result<Vec<String>, Failure> {
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
            },
            false,
        )
    };
    let mut lines = Vec::new();
    if req.dry_run {
        for (i, s) in journal.plan.iter().enumerate() {
            let mark = if i < journal.done { " (done)" } else { "" };
            lines.push(format!("{:>2}. {s}{mark}", i + 1));
        }
        return Ok(lines);
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Failed(format!("{}: {e}", dir.display())))?;
    }
    if resumed {
        lines.push(format!(
            "resuming the move journaled in {} after step {}",
            journal_file.display(),
            journal.done
        ));
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
        write_journal(&journal_file, &journal).map_err(Failure::Failed)?;
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
                let _ = std::fs::remove_file(pump_sinks::meta2::tmp_path(&t));
            }
        }
        let injected = std::env::var("PUMP_TEST_ERROR_AT_STEP")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            == Some(i + 1);
        let result = if injected {
            Err("PUMP_TEST_ERROR_AT_STEP (test hook)".to_string())
        } else {
            exec.execute(&step).await
        };
        if let Err(e) = result {
            let undo = exec.undo().await;
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
        write_journal(&journal_file, &journal).map_err(Failure::Failed)?;
        lines.push(format!("{:>2}. {step}: done", i + 1));
        check_test_hook(i + 1);
    }
    exec.forget();
    std::fs::remove_file(&journal_file)
        .map_err(|e| Failure::Failed(format!("{}: {e}", journal_file.display())))?;
    Ok(lines)
}

fn check_test_hook(done: usize) {
    if let Ok(n) = std::env::var("PUMP_TEST_FAIL_AFTER_STEP") {
        if n.trim().parse::<usize>().ok() == Some(done) {
            eprintln!("pump: PUMP_TEST_FAIL_AFTER_STEP={done}: exiting abruptly (test hook)");
            std::process::exit(86);
        }
    }
}
