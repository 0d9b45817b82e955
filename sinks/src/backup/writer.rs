//! The SQLite side of the backup sink: one thread, one prepared insert, large transactions.
//!
//! A transaction commits when it holds [`COMMIT_BYTES`] of payload or [`COMMIT_BATCHES`]
//! batches, or as soon as no further batch is waiting (so a slow source never waits on an
//! unconfirmed batch); each batch's ack is confirmed right after the commit that holds it.
//! Before a batch is written, a data file whose values have passed `cbb_max_bytes` is closed
//! and the next one opened (as cbbackup checks between batches).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pump::{Ack, Delivery, Message, Op, SourceEnd};
use pump_formats::bfd;
use rusqlite::Connection;
use tokio::sync::mpsc;

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
    node_dir: PathBuf,
    /// Data files written so far, in order: (temporary path, final path).
    files: Vec<(PathBuf, PathBuf)>,
    db: Option<Connection>,
    in_tx: bool,
    /// Value bytes in the current data file.
    file_bytes: u64,
    pending: Vec<(Ack, usize)>,
    pending_bytes: usize,
    /// Highest seqno per vbucket, for seqno.json.
    seqnos: Vec<u64>,
    cas_text: String,
}

impl Writer {
    /// Runs until `Finish` or until the channel closes; the error names the file.
    pub fn run(config: BackupConfig, mut rx: mpsc::Receiver<Job>) -> Result<(), String> {
        let node_dir = super::plan_run_dir(
            &config.dir,
            &config.bucket,
            &config.node,
            chrono::Utc::now(),
        )?;
        let mut w = Writer {
            config,
            node_dir,
            files: Vec::new(),
            db: None,
            in_tx: false,
            file_bytes: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            seqnos: vec![0; 1024],
            cas_text: String::with_capacity(24),
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
                    w.pending.push((ack, messages.len()));
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
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_else(|| self.node_dir.display().to_string())
    }

    /// Opens the next data file under its temporary name.
    fn open_next(&mut self) -> Result<(), String> {
        let name = bfd::data_file_name(self.files.len() as u32);
        let done = self.node_dir.join(&name);
        let partial = self.node_dir.join(bfd::partial_name(&name));
        if partial.exists() {
            std::fs::remove_file(&partial)
                .map_err(|e| format!("{}: cannot replace: {e}", partial.display()))?;
        }
        let err = |e: rusqlite::Error| format!("{}: {e}", partial.display());
        let db = Connection::open(&partial).map_err(err)?;
        for (pragma, value) in bfd::WRITER_PRAGMAS {
            db.pragma_update(None, pragma, value).map_err(err)?;
        }
        bfd::create_schema(&db).map_err(err)?;
        self.files.push((partial, done));
        self.db = Some(db);
        self.file_bytes = 0;
        Ok(())
    }

    fn write(&mut self, messages: &[Message]) -> Result<(), String> {
        if self.db.is_some() && self.file_bytes >= self.config.cbb_max_bytes {
            self.commit()?;
            self.db = None;
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
        let mut insert = db.prepare_cached(bfd::INSERT).map_err(err)?;
        for m in messages {
            let cmd = match m.op {
                Op::Mutation => bfd::cmd::DCP_MUTATION,
                Op::Deletion | Op::Expiration => bfd::cmd::DCP_DELETE,
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
            // Bound one by one (no parameter slice per row), in cbb_msg's column order.
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
            if vb >= self.seqnos.len() {
                self.seqnos.resize(vb + 1, 0);
            }
            self.seqnos[vb] = self.seqnos[vb].max(m.seqno);
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
        for (ack, n) in self.pending.drain(..) {
            ack.confirm(Delivery::all(n));
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// Commits what is pending, closes the file, and when the source completed syncs and
    /// renames every data file to its final name and writes the JSON files beside them.
    fn finish(mut self, end: SourceEnd) -> Result<(), String> {
        self.commit()?;
        if end == SourceEnd::Complete && self.files.is_empty() {
            // An empty source still makes a readable (empty) backup, as cbbackup does.
            self.open_next()?;
        }
        if let Some(db) = self.db.take() {
            db.close()
                .map_err(|(_, e)| format!("{}: close failed: {e}", self.current_file()))?;
        }
        if end != SourceEnd::Complete {
            if !self.files.is_empty() {
                eprintln!(
                    "backup {}: the source did not complete; the partial data files are left under temporary names in {}",
                    self.config.spec,
                    self.node_dir.display()
                );
            }
            return Ok(());
        }
        for (partial, done) in &self.files {
            sync_file(partial)?;
            std::fs::rename(partial, done).map_err(|e| {
                format!(
                    "{}: cannot rename to {}: {e}",
                    partial.display(),
                    done.display()
                )
            })?;
        }
        let json = [
            (bfd::META_JSON, bfd::meta_json("seqno", "0.0.0")),
            (bfd::SEQNO_JSON, bfd::seqno_json(&self.seqnos)),
            (bfd::FAILOVER_JSON, "{}".to_string()),
            (bfd::SNAPSHOT_MARKERS_JSON, "{}".to_string()),
        ];
        for (name, text) in json {
            write_atomically(&self.node_dir.join(name), text.as_bytes())?;
        }
        sync_file(&self.node_dir)?;
        Ok(())
    }
}

fn sync_file(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: cannot sync: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(bfd::partial_name(name));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}
