//! The DCP source's checkpoint file (`-x checkpoint=PATH`): per vbucket, where a rerun
//! resumes.
//!
//! ```text
//! {"vbuckets": {"0": {"uuid": 1234, "seqno": 812, "snap_start": 800, "snap_end": 812}, ...}}
//! ```
//! `seqno` is the highest seqno of that vbucket the sink has confirmed, never past a gap;
//! `uuid` the vbucket uuid it was read under; `snap_start..snap_end` the snapshot that holds
//! it (both equal to `seqno` once that snapshot is complete). A rerun asks each stream from
//! there. The file is rewritten atomically (a temporary file, then rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pump::Error;
use serde::{Deserialize, Serialize};

/// Where one vbucket's stream stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VbPosition {
    pub uuid: u64,
    pub seqno: u64,
    pub snap_start: u64,
    pub snap_end: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    vbuckets: BTreeMap<String, VbPosition>,
}

/// The checkpoint file, in memory, saved now and then and at the end.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    positions: BTreeMap<u16, VbPosition>,
    saved_at: Option<Instant>,
    dirty: bool,
}

/// How often the file is rewritten while positions move.
const SAVE_EVERY: Duration = Duration::from_millis(500);

impl CheckpointFile {
    /// Loads `path`, or starts empty when it does not exist.
    pub fn load(path: &Path) -> Result<CheckpointFile, Error> {
        let positions = match std::fs::read(path) {
            Ok(bytes) => {
                let f: FileFormat = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::usage(format!(
                        "{}: not a pump DCP checkpoint file: {e}",
                        path.display()
                    ))
                })?;
                let mut m = BTreeMap::new();
                for (k, v) in f.vbuckets {
                    let vb: u16 = k.parse().map_err(|_| {
                        Error::usage(format!(
                            "{}: vbucket id {k:?} is not a number",
                            path.display()
                        ))
                    })?;
                    m.insert(vb, v);
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(CheckpointFile {
            path: path.to_path_buf(),
            positions,
            saved_at: None,
            dirty: false,
        })
    }

    /// Where `vb` stands (all zero when never seen).
    pub fn position(&self, vb: u16) -> VbPosition {
        self.positions.get(&vb).copied().unwrap_or_default()
    }

    /// Records where `vb` stands.
    pub fn set(&mut self, vb: u16, mut p: VbPosition) {
        if p.seqno == p.snap_end {
            p.snap_start = p.seqno;
        }
        self.positions.insert(vb, p);
        self.dirty = true;
    }

    /// Saves when something changed and the last save is old enough.
    pub fn save_soon(&mut self) -> Result<(), Error> {
        if self.saved_at.is_none_or(|t| t.elapsed() >= SAVE_EVERY) {
            self.save()?;
        }
        Ok(())
    }

    /// Saves now (when something changed): temporary file, then rename.
    pub fn save(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        let f = FileFormat {
            vbuckets: self
                .positions
                .iter()
                .map(|(vb, p)| (vb.to_string(), *p))
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&f)
            .map_err(|e| Error::source(self.path.display(), format!("encoding: {e}")))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.saved_at = Some(Instant::now());
        self.dirty = false;
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

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "nope").unwrap();
        let e = CheckpointFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("x.json"), "{e}");
    }
}
