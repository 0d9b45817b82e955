//! meta2 repairs as plans of typed [`Step`]s run by an [`Executor`].
//!
//! `check` inspects every copy; `sync` plans, per bad copy, SetAside + Copy from the best
//! copy (the Copy is verified by the meta2 sink against the source's per-table digests
//! before it is renamed into place, so no second read of both copies follows); `move`
//! plans Freeze (every copy), Copy (to the new service), SetPeers (every copy of the new
//! set, identical value and identical `version:main.admin` bump), Unfreeze, Verify, then
//! SetAside (or Remove with `--delete-source`) of the old copy. `rebuild` runs a Copy for
//! every base a lost service should hold.
//!
//! [`FileExecutor`] does each step on local volumes and keeps an undo journal: on a failure
//! every step done is undone in reverse (statuses restored, created files removed, copies
//! set aside put back). A later proxy executor (an SDS proxy's freeze/copy/set_properties)
//! can implement the same [`Executor`] trait.
//!
//! A move also writes a journal file next to its target (`<target>.move-journal`, JSON: the
//! plan, the steps done, the saved statuses) after every step, so that a move killed midway
//! leaves frozen copies that `check` reports, and a rerun of the same command resumes the
//! plan after the last step done. Its tests stop a move after a step (as a kill would) and
//! fail a chosen step through hooks that exist only in test builds (`move_base.rs`).
//!
//! ```text
//! exec.rs       Step, the Executor trait, FileExecutor (steps on local volumes, undo journal),
//!               StreamCopy (a base streamed through the pump into a new copy)
//! sync.rs       sync: per bad copy, SetAside + Copy from the best one
//! move_base.rs  move: plan, journal, run, resume
//! rebuild.rs    rebuild: every base a lost service should hold, page copies or streamed
//! ```

use pump_meta2::{inspect, judge, BaseName, CopyReport, CopyState, Peer};

mod exec;
mod move_base;
mod rebuild;
mod sync;

pub use exec::{Executor, FileExecutor, Step, StreamCopy};
pub use move_base::{move_base, MoveRequest};
pub(crate) use pump_meta2::files::{aside_path, corrupted_suffix, now_secs, volume_writable};
pub use rebuild::{rebuild, rebuild_bases, BaseOutcome, RebuildMode};
pub use sync::sync;

/// Every peer's copy of `base`, inspected (`full`: integrity_check), by address.
pub fn inspect_copies(base: &BaseName, peers: &[Peer], full: bool) -> Vec<(String, CopyState)> {
    peers
        .iter()
        .map(|p| (p.address.clone(), inspect(&p.path(base), full)))
        .collect()
}

/// Inspects and judges every peer's copy of `base`.
pub fn check_base(base: &BaseName, peers: &[Peer], full: bool) -> Vec<CopyReport> {
    judge(&inspect_copies(base, peers, full))
}

/// The addresses the `sys.peers` of these copies list that are not among them: copies nobody
/// looked at. In `sys.peers` order, each once.
pub fn listed_not_given(states: &[(String, CopyState)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for listed in states.iter().flat_map(|(_, s)| &s.peers) {
        if !states.iter().any(|(a, _)| a == listed) && !out.contains(listed) {
            out.push(listed.clone());
        }
    }
    out
}
