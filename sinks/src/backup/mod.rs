//! A backup directory (a bare path): the Couchbase backup layout cbbackup writes and cbrestore
//! reads (see `pump_formats::bfd` for the layout and the SQLite format).
//!
//! ```text
//! mod.rs     BackupKind (the spec), BackupConfig, BackupSink (the async side)
//! layout.rs  which run this backup writes (-m full|diff|accu), or which incomplete run it
//!            resumes; the run's records (pump_formats::run); a part of a run several jobs
//!            write (plan_part), and the run's end once every part is complete
//!            (complete_parts)
//! writer.rs  the SQLite thread: prepared inserts, large transactions, rolling data files,
//!            temporary names renamed, and the completion record written, only when the source
//!            completed
//! ```
//!
//! A batch is confirmed only once the transaction holding its rows has committed. The data
//! files keep their temporary names (`data-0000.cbb.partial`) until the source has sent
//! everything; a failed or interrupted run leaves them there, without a completion record, and
//! says so: a restore refuses the run, and the same backup run again resumes it.
//!
//! `-x` keys: `cbb_max_mb` (100000: roll to the next data file past this many MB of values),
//! `backup_node` (the node directory's host name, `localhost` by default).

mod layout;
mod writer;

use std::path::PathBuf;

use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchReceiver, Error, Options, Sink, SinkKind, Spec};
use tokio::sync::mpsc;

pub use layout::{
    complete_parts, keep_vbuckets, plan, plan_part, tool_name, Part, PartPlan, PartRequest,
    PlanRequest, Prior, RunPlan,
};
pub use pump_formats::bfd::RunKind;
use writer::{Job, Writer};

/// The backup directory kind: any spec without a scheme.
pub struct BackupKind;

impl SinkKind for BackupKind {
    fn name(&self) -> &'static str {
        "backup"
    }
    fn syntax(&self) -> &'static str {
        "BACKUP_DIR (a path)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme().is_none()
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["backup_node", "cbb_max_mb"]
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error> {
        Ok(Box::new(BackupSink::new(BackupConfig::from_spec(
            spec, options,
        )?)))
    }
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// The backup directory.
    pub dir: PathBuf,
    /// The bucket directory's name (`-B`, or `-b`).
    pub bucket: String,
    /// The node directory's name.
    pub node: String,
    /// Roll to the next data file once a file's values pass this many bytes.
    pub cbb_max_bytes: u64,
    /// The spec, for messages.
    pub spec: String,
}

impl BackupConfig {
    /// Checks the directory (or its parent) without writing anything.
    pub fn from_spec(spec: &Spec, options: &Options) -> Result<BackupConfig, Error> {
        let dir = PathBuf::from(spec.body());
        if dir.exists() {
            if !dir.is_dir() {
                return Err(Error::usage(format!(
                    "{spec}: exists and is not a directory; a backup sink needs a directory"
                )));
            }
        } else {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !parent.is_dir() {
                return Err(Error::usage(format!(
                    "{spec}: the parent directory {} does not exist",
                    parent.display()
                )));
            }
        }
        let cbb_max_mb = options.extra.number("cbb_max_mb", 100_000)?;
        if cbb_max_mb == 0 {
            return Err(Error::usage(
                "-x cbb_max_mb=0: expected a positive number of MB",
            ));
        }
        Ok(BackupConfig {
            dir,
            bucket: options.dest_bucket().to_string(),
            node: options
                .extra
                .get("backup_node")
                .unwrap_or("localhost")
                .to_string(),
            cbb_max_bytes: cbb_max_mb.saturating_mul(1024 * 1024),
            spec: spec.to_string(),
        })
    }
}

/// Writes batches into a run of the backup directory.
pub struct BackupSink {
    config: BackupConfig,
    plan: Option<RunPlan>,
}

impl BackupSink {
    /// A sink for `config` that plans its run when it starts: a diff-less choice, as for a
    /// source that keeps no positions (a new full run, or the resumption of an incomplete one).
    pub fn new(config: BackupConfig) -> Self {
        BackupSink { config, plan: None }
    }

    /// A sink that writes the run `plan` made (see [`plan`]).
    pub fn with_plan(config: BackupConfig, plan: RunPlan) -> Self {
        BackupSink {
            config,
            plan: Some(plan),
        }
    }
}

#[async_trait]
impl Sink for BackupSink {
    /// The directory takes files, and is not an old single-run backup: what writing the run
    /// would find first, without creating it.
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        let c = &self.config;
        let err = |e: String| Error::sink(&c.spec, e);
        if c.dir.is_dir() {
            crate::writable::dir_takes_files(&c.dir).map_err(err)?;
            if pump_formats::bfd::node_dir(&c.dir, &c.bucket, &c.node).is_dir() {
                return Err(err(format!(
                    "{} holds an old (2.x) single-run backup; write to a new directory",
                    c.dir.display()
                )));
            }
            Ok(())
        } else {
            crate::writable::nearest_takes_files(&c.dir).map_err(err)
        }
    }

    async fn run(self: Box<Self>, input: BatchReceiver, ctx: Context) -> Result<(), Error> {
        let spec = self.config.spec.clone();
        let collections = ctx.collections.clone();
        let (tx, rx) = mpsc::channel::<Job>(4);
        let (config, plan) = (self.config, self.plan);
        let thread = tokio::task::spawn_blocking(move || {
            let plan = match plan {
                Some(p) => p,
                None => layout::plan(&PlanRequest {
                    dir: &config.dir,
                    bucket: &config.bucket,
                    node: &config.node,
                    mode: None,
                    resumable: false,
                    source: "",
                    now: chrono::Utc::now(),
                    parts: None,
                })?,
            };
            Writer::run(config, plan, collections, rx)
        });
        let mut sent_all = true;
        while let Some(batch) = input.recv().await {
            let (messages, ack) = batch.into_parts();
            if tx.send(Job::Batch(messages, ack)).await.is_err() {
                // The writer stopped: its result says why.
                sent_all = false;
                break;
            }
        }
        if sent_all {
            let _ = tx.send(Job::Finish(input.source_end())).await;
        }
        drop(tx);
        match thread.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::sink(&spec, e)),
            Err(e) => Err(Error::sink(
                &spec,
                format!("the SQLite writer panicked: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
