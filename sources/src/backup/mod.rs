//! A backup directory (a bare path): reads what cbbackup (or pump) wrote, in cbrestore's order.
//!
//! ```text
//! mod.rs     BackupKind (the spec), BackupSource (the async side)
//! layout.rs  which data files a restore reads, in order
//! reader.rs  the SQLite thread: reads files of user_version 2004, 2014 and 2015
//! ```
//!
//! `-b` picks the bucket (`default` unless given); a bucket the backup does not hold is an
//! error that lists the buckets it does hold. A backup holding an incomplete run is refused by
//! the run's name unless `-x allow_partial=1` (the CLI's `--allow-partial`); a backup holding no
//! row at all fails rather than restore nothing.
//!
//! | `-x` key | meaning |
//! |---|---|
//! | verify | `quick` (default): each page's structure proven as it is read, SQLite's quick_check on a file SQLite reads; `full`: integrity_check on every file first too; `none`: reads only |
//! | allow_partial | `1`: read an incomplete run too (the CLI's `--allow-partial`) |
//!
//! Collections: each run's `collections.json` (when its source had collections) gives the
//! manifest, published to the run (the newest run's wins) with every id it names, and each
//! data file's `cbb_collection_msg` rows come after its `cbb_msg` rows with their collection
//! id. A run without the file is of the default collection alone, as cbbackup's are.

mod layout;
pub(crate) mod reader;

use std::path::{Path, PathBuf};

use crate::file::forward_from_thread;
use async_trait::async_trait;
use pump::pipeline::Context;
use pump::{BatchSender, Error, Message, Options, Source, SourceKind, Spec};
use pump_formats::sqlite_file::Verify;

pub use layout::{data_files, restore_plan, DataFile};

/// The backup directory kind: any spec without a scheme.
pub struct BackupKind;

impl SourceKind for BackupKind {
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
        &["allow_partial", "verify"]
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let dir = PathBuf::from(spec.body());
        if !dir.is_dir() {
            return Err(Error::usage(format!(
                "{spec}: {}",
                if dir.exists() {
                    "not a directory; a backup source is a backup directory"
                } else {
                    "no such backup directory"
                }
            )));
        }
        Ok(Box::new(BackupSource {
            dir,
            bucket: options.source_bucket.clone(),
            spec: spec.to_string(),
            allow_partial: options.extra.flag("allow_partial")?,
            verify: verify_option(options)?,
        }))
    }
}

/// Reads every data file of one bucket, in restore order.
pub struct BackupSource {
    dir: PathBuf,
    bucket: String,
    spec: String,
    allow_partial: bool,
    verify: Verify,
}

impl BackupSource {
    /// A source reading `bucket` from `dir`, checking it as `-x verify=quick` does.
    pub fn new(dir: PathBuf, bucket: String) -> Self {
        let spec = dir.display().to_string();
        BackupSource {
            dir,
            bucket,
            spec,
            allow_partial: false,
            verify: Verify::default(),
        }
    }

    /// The source checking its files as `verify` says.
    pub fn with_verify(self, verify: Verify) -> Self {
        BackupSource { verify, ..self }
    }
}

/// Reads one data file whole, checked as `verify` says, as a restore reads it: its messages
/// in order, or the error naming the file (and page, row). For tools and tests (the fuzz
/// suite); a restore streams the rows instead of holding them.
pub fn read_data_file(path: &Path, verify: Verify) -> Result<Vec<Message>, String> {
    let (rows, (version, counted)) = reader::prepare(path, verify)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Message>>(16);
    let cancel = tokio_util::sync::CancellationToken::new();
    std::thread::scope(|s| {
        let drain = s.spawn(move || {
            let mut out = Vec::new();
            while let Some(batch) = rx.blocking_recv() {
                out.extend(batch);
            }
            out
        });
        let read = reader::Read {
            verify,
            counted: Some(counted),
            stale: None,
        };
        let read = reader::read_file(
            path,
            rows,
            version,
            read,
            pump::BatchLimits::default(),
            &tx,
            &cancel,
        );
        drop(tx);
        let out = drain
            .join()
            .map_err(|_| "the thread collecting the rows panicked".to_string())?;
        read.map(|_| out)
    })
}

/// `-x verify=none|quick|full` (quick when not given).
pub fn verify_option(options: &Options) -> Result<Verify, Error> {
    match options.extra.get("verify") {
        None => Ok(Verify::default()),
        Some(v) => Verify::parse(v)
            .ok_or_else(|| Error::usage(format!("-x verify={v}: expected none, quick or full"))),
    }
}

#[async_trait]
impl Source for BackupSource {
    async fn run(self: Box<Self>, out: BatchSender, ctx: Context) -> Result<(), Error> {
        let spec = self.spec.clone();
        let files = layout::restore_plan(&self.dir, &self.bucket, self.allow_partial)
            .map_err(|e| Error::source(&spec, e))?;
        layout::publish_collections(&files, &ctx.collections)
            .map_err(|e| Error::source(&spec, e))?;
        let limits = ctx.options.batch_limits();
        let stats = out.stats().clone();
        let cancel = out.cancellation().clone();
        let n = files.len();
        let verify = self.verify;
        let collections = ctx.collections.clone();
        forward_from_thread(&spec, &out, move |tx| {
            reader::read_all(&files, limits, verify, &tx, &stats, &cancel, &collections)
        })
        .await?;
        let s = out.stats().snapshot();
        if s.items_read + s.filtered == 0 && !out.is_cancelled() {
            return Err(Error::source(
                &spec,
                format!(
                    "the backup holds no items of bucket {} ({n} data files, every one empty): nothing to restore",
                    self.bucket
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
