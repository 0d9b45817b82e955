//! The job body: what a planner puts and a worker reserves. Versioned JSON, no credentials.
//!
//! ```text
//! {"format": "pump-job", "version": 1, "pump": "0.1.0",
//!  "run": "20261205T201502Z-3f9a", "index": 3, "of": 16, "ttr": 60,
//!  "work": {"kind": "transfer",
//!           "source": "couchbase://10.0.0.1:8091", "sink": "/backups/b1",
//!           "vbuckets": "192-255",                      this job's range (-l)
//!           "bucket_source": "default", "bucket_destination": null,
//!           "key": null, "threads": 4, "extra": "batch_max_size=500", "add": false,
//!           "backup_run": "2026-12-05T201502Z/2026-12-05T201502Z-full",
//!                                                        a backup sink's run, planned once
//!           "rate": "50k"}}                              --rate, each job's source held to it
//!
//!  "work": {"kind": "meta2_rebuild", "lost": "10.0.0.2:6120=/v2",
//!           "from": ["10.0.0.1:6120=/v1", "10.0.0.3:6120=/v3"],
//!           "bases": ["<CID>.1", ...], "threads": 4, "stream": false, "sort_memory": null}
//!  "work": {"kind": "meta2_check", "peers": ["ADDRESS=VOLUME", ...],
//!           "bases": ["<CID>.1", ...], "full": false}
//! ```
//!
//! `format` and `version` say how to read the rest: a worker refuses a body of another format
//! or version, and a job planned by another pump version (`pump`), with an error naming both.
//! Specs carry no user or password: a worker takes them from its own `-u/-p/-U/-P` or
//! environment. A body is at most the server's `max-job-size` (64 KiB by default): a planner
//! sizes meta2 batches so that their base names fit.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The `format` of a job body.
pub const JOB_FORMAT: &str = "pump-job";
/// The version of the job, record and manifest formats this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// This pump's version: a worker runs only the jobs a planner of the same version made.
pub const PUMP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A job body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub format: String,
    pub version: u32,
    /// The version of the pump that planned it.
    pub pump: String,
    /// The run it belongs to.
    pub run: String,
    /// Its place in the run, from 0.
    pub index: u32,
    /// How many jobs the run has.
    pub of: u32,
    /// Its time to run, in seconds: the worker touches it well within that.
    pub ttr: u32,
    pub work: Work,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// `pump transfer -l VBUCKETS SOURCE SINK` with these options.
    Transfer(TransferWork),
    /// `pump meta2 rebuild` of these bases.
    Meta2Rebuild(RebuildWork),
    /// `pump meta2 check` of these bases.
    Meta2Check(CheckWork),
}

impl Work {
    /// A few words for logs and status: `transfer of vbuckets 0-63`, `meta2 rebuild of 100
    /// bases`.
    pub fn describe(&self) -> String {
        match self {
            Work::Transfer(t) => format!("transfer of vbuckets {}", t.vbuckets),
            Work::Meta2Rebuild(r) => format!("meta2 rebuild of {} bases", r.bases.len()),
            Work::Meta2Check(c) => format!("meta2 check of {} bases", c.bases.len()),
        }
    }
}

/// A transfer job: `pump transfer`'s arguments, the range given as `-l`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferWork {
    /// The source spec, without user or password.
    pub source: String,
    /// The sink spec, without user or password.
    pub sink: String,
    /// This job's vbuckets, as `-l` takes them: `0-63`, `5,9,100-120`.
    pub vbuckets: String,
    pub bucket_source: String,
    pub bucket_destination: Option<String>,
    /// `-k`.
    pub key: Option<String>,
    /// `-t`.
    pub threads: usize,
    /// `-x`, as given.
    pub extra: String,
    /// `-a`.
    pub add: bool,
    /// A backup directory sink: the run (`<root>/<run>`) every job of this run writes a part
    /// of, planned before the jobs were put. None for other sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_run: Option<String>,
    /// `--rate`, as given: each job's source is held to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
}

/// A meta2 rebuild job: `pump meta2 rebuild` restricted to some bases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildWork {
    /// The service that lost its volume: `ADDRESS=VOLUME`.
    pub lost: String,
    /// The other services: `ADDRESS=VOLUME`.
    pub from: Vec<String>,
    /// `<CID>.<seq>` of each base.
    pub bases: Vec<String>,
    pub threads: usize,
    /// Stream through the pump instead of a page copy.
    pub stream: bool,
    pub sort_memory: Option<u64>,
}

/// A meta2 check job: `pump meta2 check` of some bases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckWork {
    /// Every service holding copies: `ADDRESS=VOLUME`.
    pub peers: Vec<String>,
    pub bases: Vec<String>,
    /// integrity_check instead of quick_check.
    pub full: bool,
}

/// The fields every body version keeps, read before the rest so that a refusal names them.
#[derive(Debug, Deserialize)]
struct Head {
    format: Option<String>,
    version: Option<u32>,
    pump: Option<String>,
    run: Option<String>,
    index: Option<u32>,
    of: Option<u32>,
}

/// Why a body cannot be run by this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a pump job at all (not JSON, another format, a field missing or wrong): no worker
    /// can run it.
    Malformed(String),
    /// A pump job of another format version or pump version: a worker of that version can.
    OtherVersion {
        run: String,
        index: u32,
        message: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(m) => f.write_str(m),
            Refusal::OtherVersion { message, .. } => f.write_str(message),
        }
    }
}

impl Job {
    /// A new job of this pump's version and format.
    pub fn new(run: &str, index: u32, of: u32, ttr: u32, work: Work) -> Job {
        Job {
            format: JOB_FORMAT.into(),
            version: FORMAT_VERSION,
            pump: PUMP_VERSION.into(),
            run: run.into(),
            index,
            of,
            ttr,
            work,
        }
    }

    /// The body to put.
    pub fn to_body(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Body(format!("encoding a job: {e}")))
    }

    /// Reads a body, refusing what this worker must not run: not a pump job, another format
    /// version, another pump version.
    pub fn parse(body: &[u8]) -> Result<Job, Refusal> {
        let shown = || {
            let s = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            if body.len() > 80 {
                format!("{s:?}...")
            } else {
                format!("{s:?}")
            }
        };
        let head: Head = serde_json::from_slice(body).map_err(|e| {
            Refusal::Malformed(format!(
                "not a pump job: the body ({} bytes, {}) is not a JSON object: {e}",
                body.len(),
                shown()
            ))
        })?;
        if head.format.as_deref() != Some(JOB_FORMAT) {
            return Err(Refusal::Malformed(format!(
                "not a pump job: its \"format\" is {:?}, not {JOB_FORMAT:?} (body {})",
                head.format,
                shown()
            )));
        }
        let (Some(run), Some(index), Some(version), Some(pump)) =
            (head.run, head.index, head.version, head.pump)
        else {
            return Err(Refusal::Malformed(format!(
                "a pump job without its run, index, version or pump fields (body {})",
                shown()
            )));
        };
        let of = head.of.unwrap_or(0);
        if version != FORMAT_VERSION || pump != PUMP_VERSION {
            return Err(Refusal::OtherVersion {
                message: format!(
                    "job {} of {of} of run {run} was planned by pump {pump} (job format {version}); this worker is pump {PUMP_VERSION} (job format {FORMAT_VERSION}): run a worker of the planner's version, or plan the run again",
                    index + 1
                ),
                run,
                index,
            });
        }
        serde_json::from_slice(body).map_err(|e| {
            Refusal::Malformed(format!(
                "job {} of {of} of run {run}: not a valid pump {PUMP_VERSION} job: {e}",
                index + 1
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer() -> Job {
        Job::new(
            "20261205T201502Z-3f9a",
            3,
            16,
            60,
            Work::Transfer(TransferWork {
                source: "couchbase://10.0.0.1:8091".into(),
                sink: "/backups/b1".into(),
                vbuckets: "192-255".into(),
                bucket_source: "default".into(),
                bucket_destination: None,
                key: None,
                threads: 4,
                extra: String::new(),
                add: false,
                backup_run: Some("2026-12-05T201502Z/2026-12-05T201502Z-full".into()),
                rate: None,
            }),
        )
    }

    #[test]
    fn a_job_survives_its_body() {
        let j = transfer();
        let body = j.to_body().unwrap();
        assert_eq!(Job::parse(&body).unwrap(), j);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(r#""kind":"transfer""#), "{text}");
        assert!(text.contains(r#""format":"pump-job""#), "{text}");
    }

    #[test]
    fn bodies_that_are_not_pump_jobs_are_malformed_and_say_why() {
        for (body, why) in [
            (&b"hello"[..], "not a JSON object"),
            (b"[1,2]", "not a JSON object"),
            (br#"{"format":"other"}"#, "\"other\""),
            (br#"{"format":"pump-job","run":"r"}"#, "without its run"),
            (
                br#"{"format":"pump-job","version":1,"pump":"PUMP","run":"r","index":0,"of":1,"ttr":5,"work":{"kind":"teleport"}}"#,
                "not a valid pump",
            ),
        ] {
            let body = String::from_utf8_lossy(body).replace("PUMP", PUMP_VERSION);
            match Job::parse(body.as_bytes()) {
                Err(Refusal::Malformed(m)) => assert!(m.contains(why), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_job_of_another_pump_or_format_version_is_refused_naming_both() {
        let mut j = transfer();
        j.pump = "0.0.9".into();
        match Job::parse(&j.to_body().unwrap()) {
            Err(Refusal::OtherVersion {
                run,
                index,
                message,
            }) => {
                assert_eq!((run.as_str(), index), ("20261205T201502Z-3f9a", 3));
                assert!(message.contains("pump 0.0.9"), "{message}");
                assert!(message.contains(PUMP_VERSION), "{message}");
                assert!(message.contains("job 4 of 16"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let mut j = transfer();
        j.version = 2;
        assert!(matches!(
            Job::parse(&j.to_body().unwrap()),
            Err(Refusal::OtherVersion { .. })
        ));
    }
}
