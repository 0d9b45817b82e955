//! The SQLite side of the backup sink: one thread, one prepared insert, large transactions.
//!
//! A transaction commits when it holds [`COMMIT_BYTES`] of payload or [`COMMIT_BATCHES`]
//! batches, or as soon as no further batch is waiting (so a slow source never waits on an
//! unconfirmed batch); each batch's ack is confirmed right after the commit that holds it. A
//! transaction is atomic even when the process is killed (SQLite's rollback journal; the next
//! opener rolls an interrupted one back). Before a batch is written, a data file whose values
//! have passed `cbb_max_bytes` is closed and the next one opened (as cbbackup checks between
//! batches).
//!
//! When the source completed: every data file of the run is synced and renamed to its final
//! name, the JSON files cbrestore reads are written beside them (seqno, failover logs and
//! snapshot markers from the source's positions when it keeps them), and the completion record
//! (`pump-complete.json`) last: from that instant the run is complete.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use pump::{Ack, Delivery, Message, Op, RunCollections, SourceEnd};
use pump_formats::bfd;
use pump_formats::run::{self, FileCount, Positions, Rollback, VbSummary};
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::layout::{self, RunPlan};
use super::BackupConfig;

/// Commit once this much payload is uncommitted.
pub const COMMIT_BYTES: usize = 12 << 20;
/// Commit once this many batches are uncommitted.
pub const COMMIT_BATCHES: usize = 256;

/// What the async side sends the writer.
pub enum Job {
    /// Rows to write, and the ack to confirm once they are committed.
    Batch(Vec<Message>, Ack),
    /// The channel is drained; commit (rename) only when the source completed.
    Finish(SourceEnd),
}

/// The writer's state.
pub struct Writer {
    config: BackupConfig,
    plan: RunPlan,
    /// Data files this attempt wrote, in order: (temporary path, final path, rows).
    files: Vec<(PathBuf, PathBuf, u64)>,
    db: Option<Connection>,
    in_tx: bool,
    /// Value bytes in the current data file.
    file_bytes: u64,
    /// Acks of the batches in the open transaction, with what each delivers once committed.
    pending: Vec<(Ack, Delivery)>,
    pending_bytes: usize,
    /// Per vbucket id: rows and seqno range.
    vbuckets: Vec<VbSummary>,
    /// Mutations, deletions, expirations and bytes (key + value) written.
    counts: (u64, u64, u64, u64),
    cas_text: String,
    /// The source's collections: rows of another collection than the default go into
    /// `cbb_collection_msg`, and the run's manifest into `collections.json`.
    collections: Arc<RunCollections>,
    /// The current data file has `cbb_collection_msg`.
    collection_table: bool,
}

impl Writer {
    /// Runs until `Finish` or until the channel closes; the error names the file.
    pub fn run(
        config: BackupConfig,
        plan: RunPlan,
        collections: Arc<RunCollections>,
        mut rx: mpsc::Receiver<Job>,
    ) -> Result<(), String> {
        let mut w = Writer {
            config,
            plan,
            files: Vec::new(),
            db: None,
            in_tx: false,
            file_bytes: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            vbuckets: vec![VbSummary::default(); 1024],
            counts: (0, 0, 0, 0),
            cas_text: String::with_capacity(24),
            collections,
            collection_table: false,
        };
        loop {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    w.commit()?;
                    match rx.blocking_recv() {
                        Some(job) => job,
                        None => return w.finish(SourceEnd::Failed),
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return w.finish(SourceEnd::Failed),
            };
            match job {
                Job::Batch(messages, ack) => {
                    w.write(&messages)?;
                    w.pending_bytes += messages.iter().map(Message::size).sum::<usize>();
                    // Control messages (not items) are not written: skipped.
                    let skipped = messages.iter().filter(|m| m.is_control()).count();
                    let d = Delivery {
                        written: messages.len() - skipped,
                        skipped,
                        ..Delivery::default()
                    };
                    w.pending.push((ack, d));
                    if w.pending_bytes >= COMMIT_BYTES || w.pending.len() >= COMMIT_BATCHES {
                        w.commit()?;
                    }
                }
                Job::Finish(end) => return w.finish(end),
            }
        }
    }

    fn current_file(&self) -> String {
        self.files
            .last()
            .map(|(p, _, _)| p.display().to_string())
            .unwrap_or_else(|| self.plan.node_dir.display().to_string())
    }

    /// Closes the open data file (its transaction committed) and removes the empty journal it
    /// leaves.
    fn close_file(&mut self) -> Result<(), String> {
        let Some(db) = self.db.take() else {
            return Ok(());
        };
        let file = self.current_file();
        db.close()
            .map_err(|(_, e)| format!("{file}: close failed: {e}"))?;
        if let Some((partial, _, _)) = self.files.last() {
            bfd::remove_empty_journal(partial)
                .map_err(|e| format!("{file}: cannot remove its empty journal: {e}"))?;
        }
        Ok(())
    }

    /// Opens the next data file under its temporary name.
    fn open_next(&mut self) -> Result<(), String> {
        let number = self.plan.first_file + self.files.len() as u32;
        if let Some(part) = &self.plan.part {
            if !part.files().contains(&number) {
                return Err(format!(
                    "{}: part {} has used all of its {} data file numbers (raise -x cbb_max_mb)",
                    self.plan.node_dir.display(),
                    part.index,
                    run::PART_FILES
                ));
            }
        }
        let name = bfd::data_file_name(number);
        let done = self.plan.node_dir.join(&name);
        let partial = self.plan.node_dir.join(bfd::partial_name(&name));
        // Made new and private (0600, never through a planted file or symlink; a partial file
        // an earlier attempt left is replaced), then opened by SQLite without following a
        // symlink; the final mode comes at the rename.
        pump_files::replace_private(&partial)
            .map_err(|e| format!("{}: cannot create: {e}", partial.display()))?;
        let err = |e: rusqlite::Error| format!("{}: {e}", partial.display());
        let db = Connection::open_with_flags(
            &partial,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(err)?;
        for (pragma, value) in bfd::WRITER_PRAGMAS {
            db.pragma_update(None, pragma, value).map_err(err)?;
        }
        bfd::create_schema(&db).map_err(err)?;
        self.files.push((partial, done, 0));
        self.db = Some(db);
        self.file_bytes = 0;
        self.collection_table = false;
        Ok(())
    }

    fn write(&mut self, messages: &[Message]) -> Result<(), String> {
        if self.db.is_some() && self.file_bytes >= self.config.cbb_max_bytes {
            self.commit()?;
            self.close_file()?;
        }
        if self.db.is_none() {
            self.open_next()?;
        }
        let file = self.current_file();
        let err = |e: rusqlite::Error| format!("{file}: {e}");
        let Some(db) = self.db.as_ref() else {
            return Err(format!("{file}: no open data file"));
        };
        if !self.in_tx {
            db.execute_batch("BEGIN").map_err(err)?;
            self.in_tx = true;
        }
        if !self.collection_table && messages.iter().any(|m| m.collection != 0) {
            db.execute_batch(bfd::CREATE_COLLECTION_TABLE)
                .map_err(err)?;
            self.collection_table = true;
        }
        let mut default_insert = db.prepare_cached(bfd::INSERT).map_err(err)?;
        let mut collection_insert = match self.collection_table {
            true => Some(db.prepare_cached(bfd::INSERT_COLLECTION).map_err(err)?),
            false => None,
        };
        if let Some(f) = self.files.last_mut() {
            f.2 += messages.len() as u64;
        }
        for m in messages {
            let cmd = match m.op {
                Op::Mutation => bfd::cmd::DCP_MUTATION,
                Op::Deletion | Op::Expiration => bfd::cmd::DCP_DELETE,
                // Not an item: the registry never pairs a backup with such a source.
                Op::Control(_) => continue,
            };
            self.cas_text.clear();
            let _ = write!(self.cas_text, "{}", m.cas);
            let meta = bfd::meta_column(m.rev_seqno, &m.meta);
            let fail = |e: rusqlite::Error| {
                format!(
                    "{file}: cannot write key {:?} (vbucket {}): {e}",
                    m.key_display(),
                    m.vbucket
                )
            };
            // Bound one by one (no parameter slice per row), in cbb_msg's column order; a row
            // of another collection goes into cbb_collection_msg, its id last.
            let insert = match (&mut collection_insert, m.collection) {
                (Some(c), id) if id != 0 => {
                    c.raw_bind_parameter(13, id).map_err(fail)?;
                    c
                }
                _ => &mut default_insert,
            };
            insert.raw_bind_parameter(1, cmd).map_err(fail)?;
            insert.raw_bind_parameter(2, m.vbucket).map_err(fail)?;
            insert.raw_bind_parameter(3, &m.key[..]).map_err(fail)?;
            insert.raw_bind_parameter(4, m.flags).map_err(fail)?;
            insert.raw_bind_parameter(5, m.expiry).map_err(fail)?;
            insert
                .raw_bind_parameter(6, self.cas_text.as_str())
                .map_err(fail)?;
            insert.raw_bind_parameter(7, &meta[..]).map_err(fail)?;
            insert.raw_bind_parameter(8, &m.value[..]).map_err(fail)?;
            insert
                .raw_bind_parameter(9, i64::try_from(m.seqno).unwrap_or(i64::MAX))
                .map_err(fail)?;
            insert.raw_bind_parameter(10, m.datatype).map_err(fail)?;
            insert
                .raw_bind_parameter(11, m.meta.len() as i64)
                .map_err(fail)?;
            insert
                .raw_bind_parameter(12, m.conflict_res)
                .map_err(fail)?;
            insert.raw_execute().map_err(fail)?;
            self.file_bytes += m.value.len() as u64;
            let vb = m.vbucket as usize;
            if vb >= self.vbuckets.len() {
                self.vbuckets.resize(vb + 1, VbSummary::default());
            }
            self.vbuckets[vb].add(m.is_removal(), m.seqno);
            match m.op {
                Op::Mutation => self.counts.0 += 1,
                Op::Deletion => self.counts.1 += 1,
                Op::Expiration => self.counts.2 += 1,
                // Left out above: control messages are not written.
                Op::Control(_) => {}
            }
            self.counts.3 += (m.key.len() + m.value.len()) as u64;
        }
        Ok(())
    }

    /// Commits the open transaction and confirms every batch it held.
    fn commit(&mut self) -> Result<(), String> {
        if self.in_tx {
            let file = self.current_file();
            if let Some(db) = &self.db {
                db.execute_batch("COMMIT")
                    .map_err(|e| format!("{file}: commit failed: {e}"))?;
            }
            self.in_tx = false;
        }
        for (ack, d) in self.pending.drain(..) {
            ack.confirm(d);
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// Commits what is pending, closes the file, and when the source completed completes the
    /// run (see the module doc).
    fn finish(mut self, end: SourceEnd) -> Result<(), String> {
        self.commit()?;
        if end == SourceEnd::Complete && self.files.is_empty() && self.plan.prior.files.is_empty() {
            // An empty source still makes a readable (empty) backup, as cbbackup does.
            self.open_next()?;
        }
        self.close_file()?;
        let node_dir = self.plan.node_dir.clone();
        if end != SourceEnd::Complete {
            if let Some(part) = &self.plan.part {
                eprintln!(
                    "backup {}: the source did not complete; part {} of the run {} is incomplete: its job, run again, {} it",
                    self.config.spec,
                    part.index,
                    node_dir.display(),
                    if self.plan.positions.is_some() {
                        "resumes"
                    } else {
                        "writes again"
                    }
                );
                return Ok(());
            }
            eprintln!(
                "backup {}: the source did not complete; the run {} is incomplete (a restore refuses it): rerun the same command to {}",
                self.config.spec,
                node_dir.display(),
                if self.plan.positions.is_some() {
                    "resume it from what was confirmed"
                } else {
                    "write it again"
                }
            );
            return Ok(());
        }
        // Every data file of the run (of its part), earlier attempts' included, under its
        // final name.
        let mine = self.plan.part.as_ref().map(layout::Part::files);
        for (_, path) in run::run_data_files(&node_dir)?
            .into_iter()
            .filter(|(n, _)| mine.as_ref().is_none_or(|r| r.contains(n)))
        {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            bfd::remove_empty_journal(&path)
                .map_err(|e| format!("{}: cannot remove its empty journal: {e}", path.display()))?;
            sync_file(&path)?;
            if let Some(done) = name.strip_suffix(".partial") {
                let done = node_dir.join(done);
                pump_files::Perms::for_name(&done)
                    .apply_to(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                std::fs::rename(&path, &done).map_err(|e| {
                    format!(
                        "{}: cannot rename to {}: {e}",
                        path.display(),
                        done.display()
                    )
                })?;
            }
        }
        let positions = match &self.plan.positions {
            Some(p) => Some(Positions::load(p)?),
            None => None,
        };
        let mut vbuckets = std::collections::BTreeMap::new();
        for (vb, s) in self.vbuckets.iter().enumerate() {
            if s.mutations + s.deletions > 0 {
                vbuckets.insert(vb as u16, *s);
            }
        }
        let files: Vec<FileCount> = self
            .files
            .iter()
            .map(|(_, done, rows)| FileCount {
                name: done
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string(),
                rows: *rows,
            })
            .collect();
        let mut end_positions = positions.clone();
        let rollbacks: Vec<Rollback> = match end_positions.as_mut() {
            Some(p) => std::mem::take(&mut p.rollbacks)
                .into_iter()
                .filter_map(|(vb, seqno)| {
                    vb.parse().ok().map(|vbucket| Rollback {
                        vbucket,
                        seqno,
                        before_file: self.plan.first_file,
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        let completion = layout::completion(
            &self.plan.prior,
            files,
            &vbuckets,
            self.counts,
            end_positions,
            rollbacks,
        );
        // The run's manifest before its end: a run is complete only with it. Every part of a
        // run of several jobs writes the same bucket's manifest (the last one written stays).
        if self.collections.has_collections() {
            let text = collections_json(&self.collections).to_string();
            let path = node_dir.join(bfd::COLLECTIONS_JSON);
            // The parts of a run mostly see the same manifest: a file already holding it
            // (written whole and synced, then renamed) is not written again.
            if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
                run::write_synced(&path, text.as_bytes())?;
            }
        }
        match &self.plan.part {
            None => layout::write_run_end(&node_dir, positions.as_ref(), &completion),
            Some(part) => {
                // One part of a run several jobs write: its record, then the run's end once
                // every part has one.
                let mut completion = completion;
                if let Some(p) = completion.positions.as_mut() {
                    layout::keep_vbuckets(p, &part.vbuckets);
                }
                let record = run::PartRecord {
                    part: part.index,
                    parts: part.of,
                    vbuckets: pump::VbucketSet::from_ids(part.vbuckets.iter().copied())
                        .to_list_string(),
                    completion,
                };
                run::write_json_synced(&node_dir.join(run::part_record_name(part.index)), &record)?;
                layout::complete_parts(&node_dir).map(|_| ())
            }
        }
    }
}

/// `collections.json` (see `pump_formats::bfd::COLLECTIONS_JSON`).
pub fn collections_json(c: &RunCollections) -> serde_json::Value {
    let manifest = c.manifest().unwrap_or_default();
    let mut ids = serde_json::Map::new();
    for id in c.ids() {
        if let Some(p) = c.path(id) {
            ids.insert(id.to_string(), serde_json::json!([p.scope, p.collection]));
        }
    }
    let changes: Vec<serde_json::Value> = c
        .changes()
        .iter()
        .map(|ch| {
            serde_json::json!({
                "vbucket": ch.vbucket,
                "seqno": ch.seqno,
                "event": ch.event.kind.describe(),
                "manifest_uid": format!("{:x}", ch.event.manifest_uid),
                "scope": format!("{:x}", ch.event.scope),
                "collection": ch.event.collection.map(|c| format!("{c:x}")),
                "name": ch.event.name,
            })
        })
        .collect();
    let dropped: Vec<u32> = c
        .ids()
        .into_iter()
        .filter(|id| manifest.collection(*id).is_none())
        .collect();
    serde_json::json!({
        "manifest": manifest.to_json(),
        "ids": ids,
        "dropped": dropped,
        "changes": changes,
    })
}

fn sync_file(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: cannot sync: {e}", path.display()))
}
