//! What the queue keeps about a run besides its jobs: the run's manifest and each job's
//! newest record (its state, counts and checkpoint), in tubes no worker watches.
//!
//! ```text
//! tube TUBE                 the jobs (workers watch it)
//! tube TUBE.RUN             the manifest: {"format": "pump-run", "version": 1, "pump": "0.1.0",
//!                           "run": RUN, "created": 1765000000, "kind": "transfer",
//!                           "what": "couchbase://h:8091 -> /backups/b1", "jobs": 16, "ttr": 60}
//! tube TUBE.RUN.K           job K's records, the newest first: priority 2^32-1-gen
//!                           {"format": "pump-record", "version": 1, "run": RUN, "index": K,
//!                            "id": 1234,                 the job's beanstalkd id
//!                            "gen": 7, "state": "running", "attempt": 2, "failures": 0,
//!                            "worker": "host pid 4242", "at": 1765000123,
//!                            "items": 51234, "bytes": 5300000,
//!                            "positions": [[vb, uuid, seqno, snap_start, snap_end], ...],   DCP
//!                            "bases_done": "0-57,60", "counts": {"rebuilt": 58}, "findings": [...],  meta2
//!                            "error": null, "note": "resumed: 64 vbucket positions, 40000 items"}
//! ```
//!
//! Every record and the manifest are ready jobs in tubes nobody reserves from, so they stay
//! until deleted; `peek-ready` on a record tube gives the job's newest record (the lowest
//! priority value). A writer puts the new record before it deletes the one it replaces, so a
//! crash between the two leaves two records, the newer read first, never none.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::frame::Tube;
use crate::job::{FORMAT_VERSION, PUMP_VERSION};

/// The `format` of a record.
pub const RECORD_FORMAT: &str = "pump-record";
/// The `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "pump-run";

/// The tube of a run's manifest.
pub fn run_tube(tube: &Tube, run: &str) -> Result<Tube, Error> {
    Tube::new(&format!("{tube}.{run}")).map_err(Error::Usage)
}

/// The tube of job `index`'s records.
pub fn record_tube(tube: &Tube, run: &str, index: u32) -> Result<Tube, Error> {
    Tube::new(&format!("{tube}.{run}.{index}")).map_err(Error::Usage)
}

/// The priority of a record of generation `gen`: newer records come first.
pub fn record_priority(gen: u32) -> u32 {
    u32::MAX - gen
}

/// A run, as its planner describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub pump: String,
    pub run: String,
    /// Unix seconds.
    pub created: u64,
    /// `transfer`, `meta2 rebuild`, `meta2 check`.
    pub kind: String,
    /// What moves where, for people (no credentials).
    pub what: String,
    /// How many jobs.
    pub jobs: u32,
    /// Each job's time to run, seconds.
    pub ttr: u32,
}

impl Manifest {
    /// A manifest of this pump's version.
    pub fn new(run: &str, created: u64, kind: &str, what: &str, jobs: u32, ttr: u32) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: FORMAT_VERSION,
            pump: PUMP_VERSION.into(),
            run: run.into(),
            created,
            kind: kind.into(),
            what: what.into(),
            jobs,
            ttr,
        }
    }

    /// Reads a manifest body.
    pub fn parse(body: &[u8]) -> Result<Manifest, Error> {
        let m: Manifest = serde_json::from_slice(body)
            .map_err(|e| Error::Body(format!("not a pump run manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT || m.version != FORMAT_VERSION {
            return Err(Error::Body(format!(
                "a run manifest of format {:?} version {}; this pump reads {MANIFEST_FORMAT:?} version {FORMAT_VERSION}",
                m.format, m.version
            )));
        }
        Ok(m)
    }
}

/// Where a job stands, as its newest record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Put by the planner, not started yet.
    Planned,
    /// A worker holds it (its checkpoint as of the record's time).
    Running,
    /// Finished: the job is (or is about to be) deleted.
    Done,
    /// The last attempt failed; the job was released (temporary) or buried (permanent).
    Failed,
    /// A worker refused it (another pump version) and released it.
    Refused,
    /// Kicked back from buried by `plan retry`.
    Retried,
    /// Stopped by its worker (Ctrl-C) and given back at once, its checkpoint recorded.
    Released,
}

impl RecordState {
    /// The word shown by `plan status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Planned => "planned",
            RecordState::Running => "running",
            RecordState::Done => "done",
            RecordState::Failed => "failed",
            RecordState::Refused => "refused",
            RecordState::Retried => "retried",
            RecordState::Released => "released",
        }
    }
}

/// Where one vbucket's DCP stream stands: `[vbucket, uuid, seqno, snap_start, snap_end]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position(pub u16, pub u64, pub u64, pub u64, pub u64);

/// A job's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: String,
    pub version: u32,
    pub run: String,
    pub index: u32,
    /// The job's beanstalkd id.
    pub id: u64,
    /// Higher is newer.
    pub gen: u32,
    pub state: RecordState,
    /// How many times a worker started it.
    pub attempt: u32,
    /// Temporary failures in a row (a job is buried after a worker's `--max-failures`).
    #[serde(default)]
    pub failures: u32,
    /// `host pid N` of the worker that wrote it.
    #[serde(default)]
    pub worker: Option<String>,
    /// Unix seconds.
    pub at: u64,
    /// Items (bases for meta2) moved by every attempt so far.
    #[serde(default)]
    pub items: u64,
    #[serde(default)]
    pub bytes: u64,
    /// DCP: where each vbucket's stream stands (confirmed by the sink).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<Position>,
    /// meta2: the indexes (into the job's bases) done, as ranges.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bases_done: String,
    /// meta2: counts by outcome (rebuilt, present, elsewhere, checked, bad, failed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// meta2: what a check found bad or a rebuild could not do, one line each (the first 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Record {
    /// The record the planner writes with job `index` (id `id`).
    pub fn planned(run: &str, index: u32, id: u64, at: u64) -> Record {
        Record {
            format: RECORD_FORMAT.into(),
            version: FORMAT_VERSION,
            run: run.into(),
            index,
            id,
            gen: 0,
            state: RecordState::Planned,
            attempt: 0,
            failures: 0,
            worker: None,
            at,
            items: 0,
            bytes: 0,
            positions: Vec::new(),
            bases_done: String::new(),
            counts: BTreeMap::new(),
            findings: Vec::new(),
            error: None,
            note: None,
        }
    }

    /// The next record: the same job and progress, one generation newer, in `state`.
    pub fn next(&self, state: RecordState, at: u64) -> Record {
        Record {
            gen: self.gen.saturating_add(1),
            state,
            at,
            error: None,
            note: None,
            ..self.clone()
        }
    }

    /// The body to put.
    pub fn to_body(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Body(format!("encoding a record: {e}")))
    }

    /// Reads a record body.
    pub fn parse(body: &[u8]) -> Result<Record, Error> {
        let r: Record = serde_json::from_slice(body)
            .map_err(|e| Error::Body(format!("not a pump job record: {e}")))?;
        if r.format != RECORD_FORMAT || r.version != FORMAT_VERSION {
            return Err(Error::Body(format!(
                "a job record of format {:?} version {}; this pump reads {RECORD_FORMAT:?} version {FORMAT_VERSION}",
                r.format, r.version
            )));
        }
        Ok(r)
    }
}

/// A set of indexes written as ranges: `0-57,60,62-63`.
pub fn format_indexes(set: &BTreeSet<u32>) -> String {
    let mut out = String::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

/// Reads what [`format_indexes`] wrote; at most `limit` indexes (a record cannot name more
/// bases than its job has).
pub fn parse_indexes(s: &str, limit: u32) -> Result<BTreeSet<u32>, Error> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || {
            Error::Body(format!(
                "bases_done {s:?}: {part:?} is not an index or a range"
            ))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse::<u32>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if a > b || b >= limit {
            return Err(Error::Body(format!(
                "bases_done {s:?}: {part:?} is outside the job's {limit} bases"
            )));
        }
        set.extend(a..=b);
    }
    Ok(set)
}

/// A new run id: the UTC time and 4 random hex digits, `20261205T201502Z-3f9a`.
pub fn new_run_id(unix_secs: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_secs);
    h.write_u32(std::process::id());
    let (y, mo, d) = civil_from_days((unix_secs / 86_400) as i64);
    let s = unix_secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z-{:04x}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        h.finish() & 0xffff
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sets_round_trip_as_ranges() {
        let set: BTreeSet<u32> = [0, 1, 2, 3, 5, 7, 8, 9, 100].into_iter().collect();
        let s = format_indexes(&set);
        assert_eq!(s, "0-3,5,7-9,100");
        assert_eq!(parse_indexes(&s, 101).unwrap(), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("", 0).unwrap().is_empty());
    }

    #[test]
    fn bad_index_sets_are_errors_naming_the_part() {
        for (s, part) in [
            ("1,x", "\"x\""),
            ("5-2", "\"5-2\""),
            ("0-100", "\"0-100\""),
            ("-", "\"-\""),
        ] {
            let e = parse_indexes(s, 100).unwrap_err().to_string();
            assert!(e.contains(part), "{s}: {e}");
        }
    }

    #[test]
    fn run_ids_carry_the_utc_time_and_differ() {
        // 2026-12-05 20:15:02 UTC
        let t = 1_796_501_702;
        let a = new_run_id(t);
        assert!(a.starts_with("20261205T201502Z-"), "{a}");
        assert_eq!(a.len(), "20261205T201502Z-3f9a".len());
        assert!(Tube::new(&a).is_ok());
        let b = (0..8).map(|_| new_run_id(t)).collect::<BTreeSet<_>>();
        assert!(b.len() > 1, "random part never changed: {b:?}");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_record_and_a_manifest_survive_their_bodies_and_positions_are_arrays() {
        let mut r = Record::planned("R", 3, 77, 1000).next(RecordState::Running, 1001);
        r.positions = vec![Position(5, 1234, 812, 800, 812)];
        r.bases_done = "0-4".into();
        let body = r.to_body().unwrap();
        assert!(String::from_utf8_lossy(&body).contains("[[5,1234,812,800,812]]"));
        assert_eq!(Record::parse(&body).unwrap(), r);
        assert_eq!(r.gen, 1);
        let m = Manifest::new("R", 1000, "transfer", "a -> b", 16, 60);
        assert_eq!(
            Manifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap(),
            m
        );
        assert!(Record::parse(b"{}").is_err());
        assert!(record_priority(2) < record_priority(1));
    }
}
