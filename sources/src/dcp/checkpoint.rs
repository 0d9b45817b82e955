//! The DCP source's checkpoint file (`-x checkpoint=PATH`): per vbucket, where a rerun
//! resumes.
//!
//! ```text
//! {"vbuckets": {"0": {"uuid": 1234, "seqno": 812, "snap_start": 800, "snap_end": 812}, ...},
//!  "failover": {"0": [[1234, 700], [987, 0]], ...}, "rollbacks": {"5": 130}}
//! ```
//! (the format is `pump_formats::run::Positions`: a backup run keeps one beside its files).
//! `seqno` is the highest seqno of that vbucket the sink has confirmed, never past a gap;
//! `uuid` the vbucket uuid it was read under; `snap_start..snap_end` the snapshot that holds
//! it (both equal to `seqno` once that snapshot is complete). A rerun asks each stream from
//! there. The file is rewritten atomically (a temporary file, then rename), at the first
//! confirmation, then every [`SAVE_EVERY`] while positions move, and at the end. A new uuid,
//! failover log or rollback is written before the next batch leaves: a backup run resumes from
//! the rows its files committed, under the uuid this file gives them, so no such row may be
//! committed under a uuid the file does not hold (and a resume never moves a position without
//! a uuid past the file's seqno, `pump_sinks::backup`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pump::Error;
use pump_formats::run::Positions;
pub use pump_formats::run::VbPosition;

/// The checkpoint file, in memory, saved now and then and at the end.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    positions: Positions,
    saved_at: Option<Instant>,
    dirty: bool,
    /// A new uuid, failover log or rollback: saved before the next batch leaves, so that no
    /// row read under a uuid can be committed before the file holds that uuid.
    urgent: bool,
}

/// How often the file is rewritten while positions move.
pub const SAVE_EVERY: Duration = Duration::from_millis(500);

impl CheckpointFile {
    /// Loads `path`, or starts empty when it does not exist.
    pub fn load(path: &Path) -> Result<CheckpointFile, Error> {
        let positions = Positions::load(path)
            .map_err(|e| Error::usage(format!("{e} (not a pump DCP checkpoint file)")))?;
        for k in positions.vbuckets.keys() {
            if k.parse::<u16>().is_err() {
                return Err(Error::usage(format!(
                    "{}: vbucket id {k:?} is not a number",
                    path.display()
                )));
            }
        }
        Ok(CheckpointFile {
            path: path.to_path_buf(),
            positions,
            saved_at: None,
            dirty: false,
            urgent: false,
        })
    }

    /// Where `vb` stands (all zero when never seen).
    pub fn position(&self, vb: u16) -> VbPosition {
        self.positions.position(vb)
    }

    /// Records where `vb` stands.
    pub fn set(&mut self, vb: u16, mut p: VbPosition) {
        if p.seqno == p.snap_end {
            p.snap_start = p.seqno;
        }
        if p.uuid != self.positions.position(vb).uuid {
            self.urgent = true;
        }
        self.positions.set(vb, p);
        self.dirty = true;
    }

    /// Records the failover log the node sent for `vb` (newest first).
    pub fn set_failover(&mut self, vb: u16, log: Vec<[u64; 2]>) {
        let key = vb.to_string();
        if self.positions.failover.get(&key) != Some(&log) {
            self.positions.failover.insert(key, log);
            self.dirty = true;
            self.urgent = true;
        }
    }

    /// Records that the node asked `vb` to restart from `seqno` (its history diverged).
    pub fn record_rollback(&mut self, vb: u16, seqno: u64) {
        let key = vb.to_string();
        let lowest = self
            .positions
            .rollbacks
            .get(&key)
            .map_or(seqno, |s| (*s).min(seqno));
        self.positions.rollbacks.insert(key, lowest);
        self.dirty = true;
        self.urgent = true;
    }

    /// Saves when something changed and the last save is old enough.
    pub fn save_soon(&mut self) -> Result<(), Error> {
        if self.saved_at.is_none_or(|t| t.elapsed() >= SAVE_EVERY) {
            self.save()?;
        }
        Ok(())
    }

    /// Whether a uuid, failover log or rollback is not saved yet.
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// Saves now when a uuid, failover log or rollback is not saved yet.
    pub fn save_if_urgent(&mut self) -> Result<(), Error> {
        if self.urgent {
            self.save()?;
        }
        Ok(())
    }

    /// Saves now (when something changed): temporary file, then rename.
    pub fn save(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&self.positions)
            .map_err(|e| Error::source(self.path.display(), format!("encoding: {e}")))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        pump_files::write_replacing(&tmp, &self.path, &json)
            .map_err(|e| Error::io(&self.path, e))?;
        self.saved_at = Some(Instant::now());
        self.dirty = false;
        self.urgent = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_save_and_a_load_and_complete_snapshots_collapse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.json");
        let mut c = CheckpointFile::load(&path).unwrap();
        assert_eq!(c.position(3), VbPosition::default());
        c.set(
            3,
            VbPosition {
                uuid: 7,
                seqno: 12,
                snap_start: 10,
                snap_end: 12,
            },
        );
        c.set(
            4,
            VbPosition {
                uuid: 8,
                seqno: 11,
                snap_start: 10,
                snap_end: 15,
            },
        );
        c.save().unwrap();
        assert!(!dir.path().join("ckpt.json.tmp").exists());
        let c = CheckpointFile::load(&path).unwrap();
        assert_eq!(
            c.position(3),
            VbPosition {
                uuid: 7,
                seqno: 12,
                snap_start: 12,
                snap_end: 12
            }
        );
        assert_eq!(
            c.position(4),
            VbPosition {
                uuid: 8,
                seqno: 11,
                snap_start: 10,
                snap_end: 15
            }
        );
    }

    fn at(uuid: u64, seqno: u64) -> VbPosition {
        VbPosition {
            uuid,
            seqno,
            snap_start: seqno,
            snap_end: seqno,
        }
    }

    #[test]
    fn a_new_uuid_log_or_rollback_is_saved_before_the_next_batch_and_the_same_log_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.json");
        let mut c = CheckpointFile::load(&path).unwrap();
        c.set_failover(3, vec![[7, 0]]);
        c.set(3, at(7, 0));
        c.save_if_urgent().unwrap();
        assert_eq!(CheckpointFile::load(&path).unwrap().position(3), at(7, 0));
        // Another uuid (a failover), another log, a rollback: each saved at once.
        c.set(3, at(9, 0));
        c.save_if_urgent().unwrap();
        assert_eq!(CheckpointFile::load(&path).unwrap().position(3).uuid, 9);
        c.set_failover(3, vec![[9, 0], [7, 0]]);
        c.save_if_urgent().unwrap();
        assert_eq!(
            Positions::load(&path).unwrap().failover["3"],
            vec![[9, 0], [7, 0]]
        );
        c.record_rollback(3, 0);
        c.save_if_urgent().unwrap();
        assert_eq!(Positions::load(&path).unwrap().rollbacks["3"], 0);
        // The same log again changes nothing.
        c.set_failover(3, vec![[9, 0], [7, 0]]);
        assert!(!c.urgent && !c.dirty);
    }

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "nope").unwrap();
        let e = CheckpointFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("x.json"), "{e}");
    }
}
