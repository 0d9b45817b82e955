//! A run in the queue: putting its jobs, reading and writing each job's record, its status,
//! and kicking its buried jobs back.
//!
//! ```text
//! put_run      use TUBE.RUN, put the manifest; then per job: use TUBE, put the job;
//!              use TUBE.RUN.K, put its first record (state planned, the job's id)
//! latest       use TUBE.RUN.K, peek-ready                   -> the newest record and its id
//! write        use TUBE.RUN.K, put (priority 2^32-1-gen), delete the record it replaces
//! status       the manifest; per job its newest record, then stats-job of the job's id
//!              (two pipelines, whatever the number of jobs)
//! retry        per buried job: a record "retried" (failures back to 0), kick-job
//! ```

use serde::Serialize;

use crate::client::{Client, JobState, JobStats};
use crate::error::Error;
use crate::frame::{Command, Reply, Tube};
use crate::job::Job;
use crate::record::{
    now_secs, record_priority, record_tube, run_tube, Manifest, Record, RecordState,
};

/// A record's time to run: never reserved, so it does not matter; 1 hour.
const RECORD_TTR: u32 = 3600;

/// Puts a run: the manifest, then each job and its first record. Returns the jobs' ids. A
/// failure midway deletes the jobs already put (what can be deleted) and says how many.
pub async fn put_run(
    client: &mut Client,
    tube: &Tube,
    manifest: &Manifest,
    jobs: &[Job],
    pri: u32,
) -> Result<Vec<u64>, Error> {
    let mtube = run_tube(tube, &manifest.run)?;
    let body = serde_json::to_vec(manifest)
        .map_err(|e| Error::Body(format!("encoding the manifest: {e}")))?;
    client.use_tube(&mtube).await?;
    let manifest_id = client.put(0, 0, RECORD_TTR, body).await?;
    let mut ids = Vec::with_capacity(jobs.len());
    let put: Result<(), Error> = async {
        for job in jobs {
            let rtube = record_tube(tube, &manifest.run, job.index)?;
            let body = job.to_body()?;
            let replies = client
                .pipeline(vec![
                    Command::Use(tube.clone()),
                    Command::Put {
                        pri,
                        delay: 0,
                        ttr: job.ttr,
                        body: body.into(),
                    },
                ])
                .await?;
            let id = match replies.get(1) {
                Some(Reply::Inserted(id)) => *id,
                other => {
                    return Err(Error::Refused {
                        addr: client.addr().to_string(),
                        command: format!("put job {} of run {}", job.index + 1, manifest.run),
                        reply: other.map(|r| r.to_string()).unwrap_or_default(),
                    })
                }
            };
            ids.push(id);
            let record = Record::planned(&manifest.run, job.index, id, now_secs());
            client.use_tube(&rtube).await?;
            client
                .put(record_priority(0), 0, RECORD_TTR, record.to_body()?)
                .await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = put {
        let mut undone = 0;
        for id in &ids {
            if client.delete(*id).await.is_ok() {
                undone += 1;
            }
        }
        let _ = client.delete(manifest_id).await;
        return Err(Error::Body(format!(
            "planning run {} stopped after {} of {} jobs ({undone} of them taken back out of the queue): {e}",
            manifest.run,
            ids.len(),
            jobs.len()
        )));
    }
    Ok(ids)
}

/// The newest record of job `index` and its id in the queue; `None` when it has none. One
/// round trip (`use` and `peek-ready` pipelined).
pub async fn latest(
    client: &mut Client,
    tube: &Tube,
    run: &str,
    index: u32,
) -> Result<Option<(u64, Record)>, Error> {
    let rtube = record_tube(tube, run, index)?;
    let replies = client
        .pipeline(vec![Command::Use(rtube.clone()), Command::PeekReady])
        .await?;
    expect_using(client, &rtube, replies.first())?;
    match replies.get(1) {
        Some(Reply::Found(job)) => Ok(Some((job.id, Record::parse(&job.body)?))),
        Some(Reply::NotFound) => Ok(None),
        other => Err(refused(client, "peek-ready", other)),
    }
}

fn refused(client: &Client, command: &str, reply: Option<&Reply>) -> Error {
    Error::Refused {
        addr: client.addr().to_string(),
        command: command.to_string(),
        reply: reply.map(|r| r.to_string()).unwrap_or_default(),
    }
}

fn expect_using(client: &Client, tube: &Tube, reply: Option<&Reply>) -> Result<(), Error> {
    match reply {
        Some(Reply::Using(t)) if t == tube.as_str() => Ok(()),
        other => Err(refused(client, &format!("use {tube}"), other)),
    }
}

/// Puts `record` as job `record.index`'s newest, then deletes `replaces` (the record it
/// follows). Returns the new record's id. One round trip (`use`, `put`, `delete` pipelined:
/// the delete is sent after the put, so a record is never without a successor).
pub async fn write(
    client: &mut Client,
    tube: &Tube,
    record: &Record,
    replaces: Option<u64>,
) -> Result<u64, Error> {
    let rtube = record_tube(tube, &record.run, record.index)?;
    let mut cmds = vec![
        Command::Use(rtube.clone()),
        Command::Put {
            pri: record_priority(record.gen),
            delay: 0,
            ttr: RECORD_TTR,
            body: record.to_body()?.into(),
        },
    ];
    if let Some(old) = replaces {
        cmds.push(Command::Delete(old));
    }
    let replies = client.pipeline(cmds).await?;
    expect_using(client, &rtube, replies.first())?;
    let id = match replies.get(1) {
        Some(Reply::Inserted(id)) => *id,
        other => return Err(refused(client, "put (a job record)", other)),
    };
    // NOT_FOUND: gone already (another writer replaced it), nothing to do.
    match replies.get(2) {
        None | Some(Reply::Deleted | Reply::NotFound) => Ok(id),
        other => Err(refused(client, "delete (the record replaced)", other)),
    }
}

/// A run's manifest; `None` when the queue holds no such run.
pub async fn manifest(
    client: &mut Client,
    tube: &Tube,
    run: &str,
) -> Result<Option<Manifest>, Error> {
    client.use_tube(&run_tube(tube, run)?).await?;
    match client.peek_ready().await? {
        Some(job) => Manifest::parse(&job.body).map(Some),
        None => Ok(None),
    }
}

/// Every run whose manifest is in the queue for this work tube, oldest first.
pub async fn runs(client: &mut Client, tube: &Tube) -> Result<Vec<Manifest>, Error> {
    let prefix = format!("{tube}.");
    let mut out = Vec::new();
    for name in client.list_tubes().await? {
        let Some(run) = name.strip_prefix(&prefix) else {
            continue;
        };
        if run.contains('.') {
            continue;
        }
        if let Ok(Some(m)) = manifest(client, tube, run).await {
            out.push(m);
        }
    }
    out.sort_by(|a, b| (a.created, &a.run).cmp(&(b.created, &b.run)));
    Ok(out)
}

/// Where a job stands, from its record and the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Finished and deleted.
    Done,
    /// Reserved by a worker.
    Running,
    /// Waiting for a worker.
    Ready,
    /// Released with a delay (a temporary failure, a refusal).
    Delayed,
    /// Set aside after a permanent failure: `plan retry` kicks it back.
    Buried,
    /// Gone from the queue without a record saying it finished.
    Lost,
    /// Never put: the planner stopped before it.
    Missing,
}

impl Standing {
    /// The word `plan status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Done => "done",
            Standing::Running => "running",
            Standing::Ready => "ready",
            Standing::Delayed => "delayed",
            Standing::Buried => "buried",
            Standing::Lost => "lost",
            Standing::Missing => "missing",
        }
    }
}

/// One job of a run.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub index: u32,
    pub standing: Standing,
    /// Its newest record.
    pub record: Option<Record>,
    /// Its beanstalkd state while it is in the queue.
    #[serde(skip)]
    pub stats: Option<JobStats>,
}

/// A run: its manifest and every job.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub manifest: Manifest,
    pub jobs: Vec<JobStatus>,
}

impl RunStatus {
    /// How many jobs stand so.
    pub fn count(&self, s: Standing) -> usize {
        self.jobs.iter().filter(|j| j.standing == s).count()
    }

    /// Items moved by every job so far.
    pub fn items(&self) -> u64 {
        self.jobs
            .iter()
            .filter_map(|j| j.record.as_ref())
            .map(|r| r.items)
            .sum()
    }
}

/// The status of `run`; an error when the queue holds no such run.
pub async fn status(client: &mut Client, tube: &Tube, run: &str) -> Result<RunStatus, Error> {
    let Some(manifest) = manifest(client, tube, run).await? else {
        return Err(Error::Usage(format!(
            "no run {run:?} in the queue at {} (tube {tube}): `pump plan status` lists the runs",
            client.addr()
        )));
    };
    let mut cmds = Vec::with_capacity(manifest.jobs as usize * 2);
    for k in 0..manifest.jobs {
        cmds.push(Command::Use(record_tube(tube, run, k)?));
        cmds.push(Command::PeekReady);
    }
    let replies = client.pipeline(cmds).await?;
    let mut records = Vec::with_capacity(manifest.jobs as usize);
    for pair in replies.chunks(2) {
        records.push(match pair.get(1) {
            Some(Reply::Found(job)) => Some(Record::parse(&job.body)?),
            _ => None,
        });
    }
    let ids: Vec<u64> = records.iter().flatten().map(|r| r.id).collect();
    let replies = client
        .pipeline(ids.iter().map(|id| Command::StatsJob(*id)).collect())
        .await?;
    let mut stats = replies.into_iter();
    let mut jobs = Vec::with_capacity(records.len());
    for (index, record) in (0u32..).zip(records) {
        let st = match &record {
            Some(_) => match stats.next() {
                Some(Reply::Ok(body)) => {
                    Some(crate::client::parse_job_stats(&body).map_err(Error::Body)?)
                }
                _ => None,
            },
            None => None,
        };
        let standing = match (&record, &st) {
            (None, _) => Standing::Missing,
            (Some(_), Some(s)) => match s.state {
                JobState::Ready => Standing::Ready,
                JobState::Reserved => Standing::Running,
                JobState::Delayed => Standing::Delayed,
                JobState::Buried => Standing::Buried,
            },
            (Some(r), None) if r.state == RecordState::Done => Standing::Done,
            (Some(_), None) => Standing::Lost,
        };
        jobs.push(JobStatus {
            index,
            standing,
            record,
            stats: st,
        });
    }
    Ok(RunStatus { manifest, jobs })
}

/// Kicks every buried job of `run` back to ready, each with a record saying so (failures back
/// to 0). Returns the indexes kicked.
pub async fn retry(client: &mut Client, tube: &Tube, run: &str) -> Result<Vec<u32>, Error> {
    let st = status(client, tube, run).await?;
    let mut kicked = Vec::new();
    for j in st.jobs.iter().filter(|j| j.standing == Standing::Buried) {
        let Some(record) = &j.record else { continue };
        let (prev, newest) = match latest(client, tube, run, j.index).await? {
            Some((id, r)) => (Some(id), r),
            None => (None, record.clone()),
        };
        let mut next = newest.next(RecordState::Retried, now_secs());
        next.failures = 0;
        next.error = newest.error.clone();
        next.note = Some("kicked back by plan retry".into());
        write(client, tube, &next, prev).await?;
        if client.kick_job(record.id).await? {
            kicked.push(j.index);
        }
    }
    Ok(kicked)
}
