//! `pump meta2 sync`: refill every bad copy of a base from the best one.

use pump_meta2::{judge, BaseName, Health, Peer};
use serde::Serialize;

use super::{
    corrupted_suffix, inspect_copies, listed_not_given, Executor, FileExecutor, Step, StreamCopy,
};
use crate::failure::Failure;

/// One peer's answer to a sync, as `openio election sync` gives it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncAnswer {
    pub peer: String,
    pub status: u16,
    pub message: String,
}

/// What a sync did: one answer per peer given, and the services `sys.peers` lists that no
/// peer gave (their copies were left as they are).
pub struct Synced {
    pub answers: Vec<SyncAnswer>,
    pub not_given: Vec<String>,
}

/// Refills every bad copy of `base` from the best one (or `from`), streaming as `stream` says.
pub async fn sync(
    base: &BaseName,
    peers: &[Peer],
    from: Option<&str>,
    stream: StreamCopy,
) -> Result<Synced, Failure> {
    let states = inspect_copies(base, peers, false);
    let not_given = listed_not_given(&states);
    let reports = judge(&states);
    let source = match from {
        Some(f) => {
            let r = reports.iter().find(|r| r.address == f).ok_or_else(|| {
                Failure::Usage(format!("--from {f}: not one of the --peer addresses"))
            })?;
            if !r.health.readable() || r.health == Health::Incomplete {
                return Err(Failure::Failed(format!(
                    "--from {f}: its copy is {}: {}",
                    r.health, r.message
                )));
            }
            f.to_string()
        }
        None => {
            let best = states
                .iter()
                .zip(&reports)
                .filter(|(_, r)| r.health.readable() && r.health != Health::Incomplete)
                .max_by_key(|((_, s), r)| (r.health == Health::Ok, s.version_total()))
                .map(|((a, _), _)| a.clone());
            best.ok_or_else(|| {
                Failure::Failed(format!(
                    "{base}: no copy is complete and sound: nothing to sync from"
                ))
            })?
        }
    };
    let mut exec = FileExecutor::new(base.clone(), peers).with_stream(stream);
    let mut answers = Vec::new();
    for r in &reports {
        if r.address == source {
            answers.push(SyncAnswer {
                peer: r.address.clone(),
                status: 301,
                message: "not SLAVE (the copy used as source)".into(),
            });
            continue;
        }
        if matches!(r.health, Health::Ok | Health::Frozen) {
            answers.push(SyncAnswer {
                peer: r.address.clone(),
                status: 200,
                message: "OK (already good)".into(),
            });
            continue;
        }
        let mut plan = Vec::new();
        if r.health != Health::Missing {
            plan.push(Step::SetAside {
                peer: r.address.clone(),
                suffix: corrupted_suffix(&r.path),
            });
        }
        // No Verify step after the Copy: the meta2 sink already compared every table it
        // built with the digests the source computed over the rows it read (one snapshot),
        // and ran quick_check, before the copy got its name.
        plan.push(Step::Copy {
            from: source.clone(),
            to: r.address.clone(),
        });
        let mut failed = None;
        for step in &plan {
            if let Err(e) = exec.execute(step).await {
                failed = Some(format!("{step}: {e}"));
                break;
            }
        }
        match failed {
            None => {
                exec.forget();
                answers.push(SyncAnswer {
                    peer: r.address.clone(),
                    status: 200,
                    message: format!(
                        "OK (was {}: {}; refilled from {source})",
                        r.health, r.message
                    ),
                });
            }
            Some(e) => {
                let undo = exec.undo().await;
                let mut message = e;
                if !undo.is_empty() {
                    message.push_str(&format!("; undo failed: {}", undo.join("; ")));
                }
                answers.push(SyncAnswer {
                    peer: r.address.clone(),
                    status: 500,
                    message,
                });
            }
        }
    }
    Ok(Synced { answers, not_given })
}
