//! `pump worker`: reserve jobs, run them, touch them while they run, and delete, release or
//! bury each as it ends (the flow is in `pump_queue`'s crate doc).
//!
//! ```text
//! run ─ slot 1 ─ connection ─ reserve (1 s at a time, so Ctrl-C and --drain are seen)
//!     ├ slot 2 ─ connection ─ ...                      one job per slot at a time
//!     └ ...
//! a job:  stats-job (its priority) -> body -> newest record -> record "running" (attempt n)
//!         -> execute::run in a task; every tick: touch, then a record if it moved
//!         -> done: record, delete | stopped: record, release now | failed: record, release
//!            with a delay or bury
//! ```
//!
//! A slot whose connection breaks stops the job it holds (the server has put it back, or will
//! once it is reachable again: it released the jobs of that connection) and connects again,
//! with a backoff from 0.2 s to 5 s, saying once that the queue is down and once that it is
//! back. A job is never run by a slot that no longer holds it: a touch that answers NOT_FOUND
//! stops the job at once, and nothing more is written for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pump_queue::{
    run, Client, Error as QueueError, Job, QueueUrl, Record, RecordState, Refusal, Reservation,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::execute::{self, Ended, Live, WorkerCredentials};
use super::{worker_name, QUEUE_TIMEOUT};
use crate::failure::Failure;

/// How long one reserve waits before the slot looks at Ctrl-C and --drain again.
const RESERVE_WAIT: Duration = Duration::from_secs(1);
/// How often a draining worker looks at a tube whose last jobs other workers hold.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// A job of another pump version goes back for this long, for a worker of its version.
const REFUSED_DELAY: u32 = 30;
/// The priority a job gets back when its own cannot be read.
const DEFAULT_PRI: u32 = 1024;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub url: QueueUrl,
    pub concurrency: usize,
    pub credentials: WorkerCredentials,
    /// A job failing this many times in a row for a temporary reason is buried.
    pub max_failures: u32,
    /// Exit once the tube holds no ready, reserved or delayed job.
    pub drain: bool,
    pub quiet: bool,
    pub verbose: u8,
}

/// What a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub done: u64,
    pub released: u64,
    pub buried: u64,
    pub refused: u64,
    pub lost: u64,
    pub items: u64,
}

struct Shared {
    config: WorkerConfig,
    name: String,
    stop: CancellationToken,
    totals: Mutex<Totals>,
}

impl Shared {
    fn say(&self, line: &str) {
        if !self.config.quiet {
            eprintln!("pump worker: {line}");
        }
    }

    fn warn(&self, line: &str) {
        eprintln!("pump worker: {line}");
    }

    /// Slot `n`'s connection broke: the server gives back the job it held.
    fn connection_lost(&self, n: usize, e: &QueueError) {
        self.warn(&format!(
            "slot {n}: {e}; connecting again (a job this slot held is back in the queue)"
        ));
    }

    fn count(&self, f: impl FnOnce(&mut Totals)) {
        if let Ok(mut t) = self.totals.lock() {
            f(&mut t);
        }
    }
}

/// Runs until `stop` is cancelled (then every running job is stopped, recorded and released),
/// or with `drain` until the tube is empty.
pub async fn run(config: WorkerConfig, stop: CancellationToken) -> Result<Totals, Failure> {
    if config.concurrency == 0 {
        return Err(Failure::Usage("--concurrency must be at least 1".into()));
    }
    let shared = Arc::new(Shared {
        name: worker_name(),
        config,
        stop,
        totals: Mutex::new(Totals::default()),
    });
    shared.say(&format!(
        "{} watching {} with {} slot(s)",
        shared.name, shared.config.url, shared.config.concurrency
    ));
    let mut slots = tokio::task::JoinSet::new();
    for n in 0..shared.config.concurrency {
        let s = shared.clone();
        slots.spawn(async move { slot(n, s).await });
    }
    while slots.join_next().await.is_some() {}
    let totals = shared.totals.lock().map(|t| *t).unwrap_or_default();
    Ok(totals)
}

async fn connect(shared: &Shared) -> Result<Client, QueueError> {
    let url = &shared.config.url;
    let mut c = Client::connect(&url.addr(), QUEUE_TIMEOUT).await?;
    c.watch(&url.tube).await?;
    if url.tube.as_str() != "default" {
        c.ignore(&pump_queue::Tube::new("default").map_err(QueueError::Usage)?)
            .await?;
    }
    Ok(c)
}

async fn slot(n: usize, shared: Arc<Shared>) {
    // The job before, finishing its writes on its own connection while the slot reads the
    // next: its task gives the connection back (`None` when it broke).
    let mut finishing: Option<JoinHandle<Option<Client>>> = None;
    let mut spare: Option<Client> = None;
    let mut backoff = Duration::from_millis(200);
    let mut down_since: Option<Instant> = None;
    'connect: while !shared.stop.is_cancelled() {
        let mut c = match spare.take() {
            Some(c) => c,
            None => match connect(&shared).await {
                Ok(c) => {
                    if let Some(t) = down_since.take() {
                        shared.warn(&format!(
                            "slot {n}: the queue {} answers again (after {:.1}s)",
                            shared.config.url,
                            t.elapsed().as_secs_f64()
                        ));
                    }
                    backoff = Duration::from_millis(200);
                    c
                }
                Err(e) => {
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        shared.warn(&format!(
                            "slot {n}: {e}; trying again every few seconds (no job is lost: what the queue holds stays there)"
                        ));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shared.stop.cancelled() => break 'connect,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut patient = false;
        loop {
            if shared.stop.is_cancelled() {
                break 'connect;
            }
            // Draining: reserves that do not wait, and a look at the tube every 100 ms, so
            // that the worker ends as soon as the last job of the tube is done.
            let wait = if shared.config.drain {
                if patient {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                Duration::ZERO
            } else {
                RESERVE_WAIT
            };
            patient = false;
            let r = match c.reserve(wait).await {
                Ok(Reservation::Job(job)) if shared.stop.is_cancelled() => {
                    // Stopping: given back untouched.
                    c.release(job.id, DEFAULT_PRI, 0).await
                }
                Ok(Reservation::Job(job)) => {
                    // The job runs in a task of its own, on this connection (a job is
                    // touched, deleted or released by the connection that reserved it). Once
                    // its reading is over, the slot reserves the next on another connection
                    // while this one finishes (syncs and renames its files, is deleted): the
                    // waits of one overlap the reading of the next, and a slot holds at most
                    // two jobs, one reading, one finishing.
                    let reading = CancellationToken::new();
                    let mut task =
                        tokio::spawn(own(n, shared.clone(), c, job.id, job.body, reading.clone()));
                    let ended = tokio::select! {
                        r = &mut task => Some(r.ok().flatten()),
                        _ = reading.cancelled() => None,
                    };
                    // The job before is done before this one finishes.
                    if let Some(before) = finishing.take() {
                        spare = before.await.ok().flatten();
                    }
                    // The job's connection broke (its task said so): the queue may be down.
                    let broke = matches!(ended, Some(None));
                    let next = match ended {
                        Some(back) => back.or_else(|| spare.take()),
                        None => {
                            finishing = Some(task);
                            spare.take()
                        }
                    };
                    match next {
                        Some(next) => {
                            c = next;
                            continue;
                        }
                        None => {
                            if broke {
                                down_since.get_or_insert_with(Instant::now);
                            }
                            continue 'connect;
                        }
                    }
                }
                Ok(Reservation::TimedOut | Reservation::DeadlineSoon) => {
                    if let Some(before) = finishing.take() {
                        // Its end can empty the tube: looked at once it is done.
                        spare = before.await.ok().flatten();
                        continue;
                    }
                    if shared.config.drain {
                        match idle(&shared, &mut c).await {
                            Ok(true) => {
                                shared.say(&format!(
                                    "slot {n}: nothing left to do in {}",
                                    shared.config.url
                                ));
                                break 'connect;
                            }
                            Ok(false) => {
                                patient = true;
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                if e.is_connection() {
                    down_since.get_or_insert_with(Instant::now);
                    shared.connection_lost(n, &e);
                    break;
                }
                shared.warn(&format!("slot {n}: {e}"));
            }
        }
    }
    if let Some(before) = finishing.take() {
        let _ = before.await;
    }
}

/// Runs a reserved job on `c`, from its body to its delete, release or bury; gives the
/// connection back unless it broke (the server then gives the job back itself).
async fn own(
    n: usize,
    shared: Arc<Shared>,
    mut c: Client,
    id: u64,
    body: bytes::Bytes,
    reading: CancellationToken,
) -> Option<Client> {
    let r = match handle(&shared, &mut c, id, &body, reading).await {
        Err(e) if !e.is_connection() => {
            // Held by this connection and not runnable: set aside, not left held.
            shared.warn(&format!("job {id}: {e}; buried"));
            shared.count(|t| t.buried += 1);
            c.bury(id, DEFAULT_PRI).await
        }
        r => r,
    };
    match r {
        Ok(()) => Some(c),
        Err(e) if e.is_connection() => {
            shared.connection_lost(n, &e);
            None
        }
        Err(e) => {
            shared.warn(&format!("slot {n}: {e}"));
            Some(c)
        }
    }
}

/// True when the tube holds no job that is ready, reserved or delayed.
async fn idle(shared: &Shared, c: &mut Client) -> Result<bool, QueueError> {
    let st = c
        .stats_tube(&shared.config.url.tube)
        .await?
        .unwrap_or_default();
    Ok(st.ready + st.reserved + st.delayed == 0)
}

/// One reserved job, from its body to its delete, release or bury.
async fn handle(
    shared: &Shared,
    c: &mut Client,
    id: u64,
    body: &[u8],
    reading: CancellationToken,
) -> Result<(), QueueError> {
    let pri = c.stats_job(id).await?.map_or(DEFAULT_PRI, |s| s.pri);
    let job = match Job::parse(body) {
        Ok(job) => job,
        Err(Refusal::Malformed(m)) => {
            shared.warn(&format!(
                "job {id} in {}: {m}; buried: it stays in the queue (delete it, or `kick-job {id}` once it can run)",
                shared.config.url
            ));
            c.bury(id, pri).await?;
            shared.count(|t| t.buried += 1);
            return Ok(());
        }
        Err(Refusal::OtherVersion {
            run,
            index,
            message,
        }) => {
            shared.warn(&format!(
                "job {id}: {message}; released for {REFUSED_DELAY}s: it stays in the queue"
            ));
            if let Ok(Some((rid, rec))) = run::latest(c, &shared.config.url.tube, &run, index).await
            {
                let mut next = rec.next(RecordState::Refused, now());
                next.error = Some(message);
                next.worker = Some(shared.name.clone());
                run::write(c, &shared.config.url.tube, &next, Some(rid)).await?;
            }
            c.release(id, pri, REFUSED_DELAY).await?;
            shared.count(|t| t.refused += 1);
            return Ok(());
        }
    };
    run_job(shared, c, id, pri, job, reading).await
}

fn now() -> u64 {
    pump_queue::record::now_secs()
}

/// How often a job is touched and its record brought up to date.
fn tick_every(ttr: u32) -> Duration {
    (Duration::from_secs(u64::from(ttr.max(1))) / 4)
        .clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// The delay before a job that failed for the `failures`-th time in a row runs again.
fn retry_delay(failures: u32) -> u32 {
    5u32.saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(300)
}

/// Runs a job and settles it; `reading` is cancelled once its reading is over.
async fn run_job(
    shared: &Shared,
    c: &mut Client,
    id: u64,
    pri: u32,
    job: Job,
    reading: CancellationToken,
) -> Result<(), QueueError> {
    let tube = shared.config.url.tube.clone();
    let label = format!(
        "job {}/{} of run {} (id {id})",
        job.index + 1,
        job.of,
        job.run
    );
    let (mut rid, base) = match run::latest(c, &tube, &job.run, job.index).await? {
        Some((rid, rec)) => (Some(rid), rec),
        None => (None, Record::planned(&job.run, job.index, id, now())),
    };
    if base.state == RecordState::Done {
        shared.say(&format!(
            "{label}: its record says done (a worker stopped before deleting it): deleted"
        ));
        match c.delete(id).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
        return Ok(());
    }
    let mut rec = base.next(RecordState::Running, now());
    rec.id = id;
    rec.attempt = base.attempt + 1;
    rec.worker = Some(shared.name.clone());
    let resumed = resumed_note(&base);
    rec.note = resumed.clone();
    rid = Some(run::write(c, &tube, &rec, rid).await?);
    shared.say(&format!(
        "{label}: {} (attempt {}){}",
        job.work.describe(),
        rec.attempt,
        resumed.map(|n| format!("; {n}")).unwrap_or_default()
    ));

    let started = Instant::now();
    let job_stop = shared.stop.child_token();
    let live = Arc::new(Live::reading_until(reading));
    let mut task = {
        let (job, base, creds, verbose, stop, live) = (
            job.clone(),
            base.clone(),
            shared.config.credentials.clone(),
            shared.config.verbose,
            job_stop.clone(),
            live.clone(),
        );
        tokio::spawn(async move { execute::run(&job, &base, &creds, verbose, stop, live).await })
    };
    let mut tick = tokio::time::interval(tick_every(job.ttr));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = live.sample();
    let outcome = loop {
        tokio::select! {
            r = &mut task => break r.unwrap_or_else(|e| Err(execute::JobError {
                message: format!("the job's task failed: {e}"),
                permanent: false,
            })),
            _ = tick.tick() => {
                let step = async {
                    c.touch(id).await?;
                    let s = live.sample();
                    if s != last {
                        let mut next = rec.next(RecordState::Running, now());
                        Live::merge(&base, &s, &mut next);
                        next.note = rec.note.clone();
                        rid = Some(run::write(c, &tube, &next, rid).await?);
                        rec = next;
                        last = s;
                    }
                    Ok::<(), QueueError>(())
                };
                if let Err(e) = step.await {
                    job_stop.cancel();
                    let _ = (&mut task).await;
                    if e.is_not_found() {
                        shared.warn(&format!(
                            "{label}: no longer held by this worker (its time to run passed before a touch): stopped, nothing more recorded"
                        ));
                        shared.count(|t| t.lost += 1);
                        return Ok(());
                    }
                    shared.warn(&format!("{label}: stopped: {e}"));
                    return Err(e);
                }
            }
        }
    };

    let s = live.sample();
    let mut fin = rec.next(RecordState::Running, now());
    Live::merge(&base, &s, &mut fin);
    fin.note = None;
    let secs = started.elapsed().as_secs_f64();
    shared.count(|t| t.items += s.items);
    match outcome {
        Ok(Ended::Done) => {
            fin.state = RecordState::Done;
            fin.failures = 0;
            run::write(c, &tube, &fin, rid).await?;
            match c.delete(id).await {
                Err(e) if e.is_not_found() => shared.warn(&format!(
                    "{label}: done, but its time to run had passed: the next worker to take it will delete it"
                )),
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            shared.count(|t| t.done += 1);
            shared.say(&format!(
                "{label}: done: {} in {:.0} ms ({} in all)",
                s.items,
                secs * 1e3,
                fin.items
            ));
        }
        Ok(Ended::Stopped) => {
            fin.state = RecordState::Released;
            fin.note = Some("stopped by the worker (Ctrl-C), given back at once".into());
            run::write(c, &tube, &fin, rid).await?;
            c.release(id, pri, 0).await?;
            shared.count(|t| t.released += 1);
            shared.warn(&format!(
                "{label}: stopped after {} in {secs:.1}s; released, its checkpoint recorded",
                s.items
            ));
        }
        Err(e) => {
            fin.state = RecordState::Failed;
            fin.failures = rec.failures + 1;
            fin.error = Some(e.message.clone());
            if e.permanent || fin.failures >= shared.config.max_failures {
                fin.note = Some(if e.permanent {
                    "buried: trying again cannot help; fix the cause, then `pump plan retry`".into()
                } else {
                    format!(
                        "buried after {} failures in a row; `pump plan retry` once the cause is fixed",
                        fin.failures
                    )
                });
                run::write(c, &tube, &fin, rid).await?;
                c.bury(id, pri).await?;
                shared.count(|t| t.buried += 1);
                shared.warn(&format!("{label}: failed: {}; buried", e.message));
            } else {
                let delay = retry_delay(fin.failures);
                fin.note = Some(format!(
                    "released for {delay}s (failure {} in a row)",
                    fin.failures
                ));
                run::write(c, &tube, &fin, rid).await?;
                c.release(id, pri, delay).await?;
                shared.count(|t| t.released += 1);
                shared.warn(&format!(
                    "{label}: failed: {}; released for {delay}s",
                    e.message
                ));
            }
        }
    }
    Ok(())
}

/// What a new attempt resumes from, for the log and the record.
fn resumed_note(base: &Record) -> Option<String> {
    let mut parts = Vec::new();
    if !base.positions.is_empty() {
        parts.push(format!(
            "{} vbucket positions",
            base.positions.iter().filter(|p| p.2 > 0).count()
        ));
    }
    if !base.bases_done.is_empty() {
        let done = pump_queue::record::parse_indexes(&base.bases_done, u32::MAX)
            .map(|s| s.len())
            .unwrap_or(0);
        parts.push(format!("{done} bases done"));
    }
    if base.items > 0 {
        parts.push(format!("{} items moved before", base.items));
    }
    (!parts.is_empty() && base.attempt > 0).then(|| format!("resumed from {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_a_quarter_of_the_ttr_within_bounds_and_delays_double_to_five_minutes() {
        assert_eq!(tick_every(60), Duration::from_secs(5));
        assert_eq!(tick_every(4), Duration::from_secs(1));
        assert_eq!(tick_every(0), Duration::from_millis(250));
        assert_eq!(
            (1..=8).map(retry_delay).collect::<Vec<_>>(),
            [5, 10, 20, 40, 80, 160, 300, 300]
        );
    }
}
