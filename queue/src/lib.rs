//! pump's work queue: a beanstalkd client over tokio, and what pump keeps in beanstalkd to
//! spread one transfer or one meta2 repair over many workers on many machines, as OpenIO's
//! rebuilders do, with no coordinator of its own.
//!
//! ```text
//! frame.rs    the wire format: Command lines out, Reply lines and bodies in (tokio-util codec,
//!             body lengths checked before memory is reserved), Tube names
//! client.rs   Client: one connection, every wait bounded; put, reserve, touch, release, bury,
//!             delete, kick-job, peek*, stats*, use/watch, and pipelines of them
//! url.rs      QueueUrl: beanstalk://HOST[:PORT][/TUBE]
//! job.rs      Job: the versioned JSON body a planner puts and a worker runs (no credentials)
//! record.rs   Record (a job's state, counts and checkpoint) and Manifest (a run), their tubes
//! run.rs      a run in the queue: put_run, latest/write a record, status, retry
//! testing.rs  Debian's beanstalkd on a free port, for tests
//! error.rs    Error
//! ```
//!
//! No client crate fitted: the Rust beanstalkd clients on crates.io are either blocking
//! (`beanstalkc`, `beanstalkd`) or written for tokio 0.1 and futures 0.1 (`tokio-beanstalkd`,
//! last released in 2018); none bounds its reads with a timeout. This one speaks the commands
//! pump needs and is tested against Debian's beanstalkd 1.12 (`tests/beanstalkd.rs`).
//!
//! # How a run flows
//!
//! ```text
//! pump plan transfer SOURCE SINK --queue beanstalk://Q/TUBE --jobs 16
//!   splits the vbuckets (-l, the source's map, a backup's vbuckets) into 16 ranges
//!   run id R (UTC time + 4 random hex digits)
//!   TUBE.R      <- the manifest                              (tubes no worker watches:
//!   TUBE        <- job k: {run R, index k, ttr, work}         their ready jobs stay
//!   TUBE.R.k    <- job k's first record {planned, id}          until deleted)
//!   prints R
//!
//! pump worker beanstalk://Q/TUBE --concurrency C             (any number, on any machine)
//!   C slots, one connection each (a job belongs to the connection that reserved it)
//!   reserve-with-timeout
//!     not a pump job ................ bury it (it stays; the log names its id and why)
//!     another pump version .......... record "refused", release with a delay: a worker of
//!                                     that version takes it
//!     its newest record says done ... delete it (a worker died between record and delete)
//!     run it from the record's checkpoint:
//!        transfer: pump transfer -l RANGE with the job's options and the worker's own
//!                  credentials, through pump::Registry and pump::run; a DCP source
//!                  (dcp://, couchbase://) resumes each vbucket from the record's positions
//!        meta2:    rebuild / check of the job's bases not already done
//!     every tick (ttr/4, at most 5 s): touch; then, if the checkpoint moved, a new record
//!     success ................ record "done" (items, positions), delete
//!     temporary failure ...... record "failed", release with a delay (5 s, doubling, 5 min
//!                              at most); the worker's --max-failures-th in a row: bury
//!     permanent failure ...... record "failed" with the error, bury (a usage error, a refused
//!                              password, keys the sink would not take)
//!     touch answers NOT_FOUND  the job timed out and is someone else's: stop at once, write
//!                              nothing more
//!     beanstalkd goes away ... stop the attempt (its connection is gone, so the server has
//!                              put the job back, or will when it comes back from its
//!                              binlog); reconnect with a backoff and go on
//!     Ctrl-C ................. stop reserving; each running job stops reading, drains what is
//!                              in flight, records its checkpoint and is released at once
//!
//! pump plan status R      the manifest, each job's newest record and stats-job: done, running,
//!                         ready, delayed, buried (with its error), items moved
//! pump plan retry R       each buried job: a record "retried", kick-job
//! ```
//!
//! Sinks: a network sink (a cluster, a node, memcached, TAP) takes any number of jobs at once.
//! A file or stream (`csv:`, `stdout:`) takes one job: a planner refuses more. A backup
//! directory takes any number: the planner plans its run once as a run of N parts (its
//! `pump-run.json` says so) and each job names it (`TransferWork::backup_run`); job k writes
//! part k (its own data files and positions file in the run, `pump-part-k.json` when done),
//! and the job that completes the last part completes the run (`pump_sinks::backup`).
//!
//! # Where a job's progress lives, and why
//!
//! A beanstalkd job body cannot change, so a job's checkpoint lives in its **record tube**
//! (`TUBE.R.k`) on the same server: the worker holding the job puts a new record (one
//! generation newer, so it sorts first) and then deletes the one it replaces. The queue is
//! the one place every worker, on every machine, reaches whatever the sink is: a cluster or a
//! memcached has no room for our checkpoints, and a backup directory or a meta2 volume may be
//! mounted on some machines only. The record holds what the sink **confirmed**: per vbucket the
//! DCP position (uuid, seqno, snapshot) the source's checkpoint reached, which advances only
//! over confirmed seqnos; for meta2, the bases done. A worker that reserves a job reads its
//! newest record first and starts from there, so a finished range never starts again.
//!
//! A job writing part of a backup run is the exception: the backup directory is one every
//! worker reaches (the planner made the run in it), and the part's own files say exactly what
//! it committed, so the part resumes from its positions file in the run, moved up to the last
//! row its data files hold (`pump_sinks::backup::plan_part`), and its record counts those rows:
//! no row is written twice even when the killed attempt committed past its last record.
//!
//! Failure cases:
//! - A worker killed after its sink confirmed a batch but before the next record: the next
//!   attempt sends that tick's items again (at most a tick's worth). The run stays
//!   at-least-once: duplicates, in source order, never a loss.
//! - Killed between putting a record and deleting the old one: two records, the newer read
//!   first; the next write deletes the older.
//! - Killed after the record "done" and before the delete: the next worker deletes the job
//!   without running it.
//! - A worker stalled past its TTR: the job goes to another; the stalled one's next touch
//!   answers NOT_FOUND and it stops without writing again. A record it wrote in between holds
//!   positions some sink confirmed: at worst the new holder resends, never skips.
//! - A source without positions (gen:, a backup directory, csv:, memcached://): its job starts
//!   again from the beginning of its range; the sink sees each item at least once.
//! - A worker whose machine dies without closing its connection: the job should come back
//!   after its TTR, but beanstalkd (1.12, and its HEAD as of this writing) may never time it
//!   out: its epoll wait rounds the deadline down to the millisecond, wakes up just before it,
//!   finds nothing expired and no longer schedules that connection (beanstalkd issue #380).
//!   The job then comes back when the server notices the connection is dead (TCP keepalive)
//!   or restarts. `pump plan status` shows such a job as running with no time left. A worker
//!   killed on a live machine (kill -9, OOM) closes its connection: its job is ready at once.
//! - beanstalkd restarted without a binlog loses jobs and records together: run it with `-b`.
//! - A record must fit in one job body (beanstalkd's max-job-size, 64 KiB by default): a
//!   position takes about 40 to 100 bytes, so a planner gives a DCP job at most
//!   `(max-job-size - 4 KiB) / 110` vbuckets.

pub mod client;
pub mod error;
pub mod frame;
pub mod job;
pub mod record;
pub mod run;
pub mod testing;
pub mod url;

pub use client::{Client, JobState, JobStats, Reservation, ServerStats, TubeStats};
pub use error::Error;
pub use frame::{Command, Reply, Tube};
pub use job::{CheckWork, Job, RebuildWork, Refusal, TransferWork, Work, PUMP_VERSION};
pub use record::{Manifest, Position, Record, RecordState};
pub use run::{JobStatus, RunStatus, Standing};
pub use url::QueueUrl;
