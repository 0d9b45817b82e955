//! The SQLite side of the backup source: opens every data file first (so a corrupt file or an
//! unknown user_version fails the run before anything moves, and the total is known), then
//! reads the rows of each file into batches sliced out of one buffer per batch.
//!
//! The rows come straight from the file's pages ([`SqliteFile`], a fraction of the CPU of a
//! `SELECT`) when nothing but the file holds them; a file with a `-wal` or journal beside it,
//! or a table not laid out as cbbackup makes it, is read through SQLite. Both paths hand the
//! same column values to one [`Batcher`].

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use pump::{BatchLimits, Message, Op, Stats};
use pump_formats::bfd::{self, col, Version};
use pump_formats::sqlite_file::{self, SqliteFile};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::layout::DataFile;

/// Reads `files` in order and sends their rows in batches. Stops quietly when the receiver is
/// gone or the run is cancelled; fails with the file (and row) that could not be read.
pub fn read_all(
    files: &[DataFile],
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    stats: &Stats,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut opened = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for file in files {
        let f = &file.path;
        let (db, version) = open(f)?;
        let rows = match raw_root(f, &db, version)? {
            Some(root) => {
                // Counted on the pages the rows are then read from: the file is faulted in
                // once, and a broken tree fails here, before anything moves.
                let file = SqliteFile::open(f)?;
                total += file.table(root).count()?;
                Rows::Raw(file, root)
            }
            None => {
                let n: i64 = db
                    .query_row("SELECT count(*) FROM cbb_msg", [], |r| r.get(0))
                    .map_err(|e| format!("{}: {e}", f.display()))?;
                total += n.max(0) as u64;
                Rows::Sql(db)
            }
        };
        opened.push((file, rows, version));
    }
    stats.set_expected(total);
    for (file, rows, version) in opened {
        let stale = file.stale_above.as_deref();
        if !read_file_leaving_out(&file.path, rows, version, limits, tx, cancel, stale)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Opens a data file read-only and checks its user_version.
pub fn open(path: &Path) -> Result<(Connection, Version), String> {
    let err =
        |e: rusqlite::Error| format!("{}: not a readable backup data file: {e}", path.display());
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    // Read through a memory map: no copy of each page into SQLite's cache.
    db.pragma_update(None, "mmap_size", 1i64 << 34)
        .map_err(err)?;
    let v: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let version = Version::from_user_version(v).ok_or_else(|| {
        format!(
            "{}: user_version {v} is not a backup data file version (2004, 2014 or 2015)",
            path.display()
        )
    })?;
    Ok((db, version))
}

/// How a file's rows are read: straight from its pages, or through SQLite.
pub(super) enum Rows {
    /// The file itself, and the root page of `cbb_msg`.
    Raw(SqliteFile, u32),
    /// A `SELECT` (a file the raw reader must not read alone, see [`raw_root`]).
    Sql(Connection),
}

/// The root page of `cbb_msg` when its rows can be read from the file's pages alone: no
/// `-wal` file or rollback journal holding pages the file does not have yet, UTF-8 text, and
/// the table exactly as cbbackup makes it (a rowid table whose columns come in [`bfd::COLUMNS`]
/// order, no key column, no default values). `None` sends the file through SQLite.
pub(super) fn raw_root(
    path: &Path,
    db: &Connection,
    version: Version,
) -> Result<Option<u32>, String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    if sqlite_file::has_side_files(path) {
        return Ok(None);
    }
    let (root, sql): (i64, String) = db
        .query_row(
            "SELECT rootpage, sql FROM sqlite_master WHERE type = 'table' AND name = 'cbb_msg'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(err)?;
    let sql = sql.to_ascii_lowercase();
    if sql.contains("without rowid") || sql.contains("default") {
        return Ok(None);
    }
    let mut stmt = db
        .prepare("SELECT name, pk, hidden FROM pragma_table_xinfo('cbb_msg')")
        .map_err(err)?;
    let columns = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let plain = columns.len() >= version.columns()
        && columns
            .iter()
            .all(|(_, pk, hidden)| *pk == 0 && *hidden == 0)
        && columns
            .iter()
            .zip(&bfd::COLUMNS[..version.columns()])
            .all(|((name, _, _), want)| name.eq_ignore_ascii_case(want));
    let encoding: String = db
        .query_row("PRAGMA encoding", [], |r| r.get(0))
        .map_err(err)?;
    Ok((plain && encoding == "UTF-8")
        .then(|| u32::try_from(root).ok())
        .flatten())
}

/// Reads one file; false when the run should stop (receiver gone or cancelled).
#[cfg(test)]
pub(super) fn read_file(
    path: &Path,
    rows: Rows,
    version: Version,
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    cancel: &CancellationToken,
) -> Result<bool, String> {
    read_file_leaving_out(path, rows, version, limits, tx, cancel, None)
}

/// [`read_file`], leaving out the rows of a vbucket whose seqno is above `stale[vbucket]`
/// (a later run saw that vbucket roll back).
pub(super) fn read_file_leaving_out(
    path: &Path,
    rows: Rows,
    version: Version,
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    cancel: &CancellationToken,
    stale: Option<&HashMap<u16, u64>>,
) -> Result<bool, String> {
    let file = path.display();
    let mut n = 0u64;
    match rows {
        Rows::Raw(db, root) => {
            let mut out = Batcher::new(limits, tx, cancel, Some(db.bytes()));
            out.stale = stale;
            let mut rows = db.table(root);
            while let Some(row) = rows.next_row()? {
                n += 1;
                let mut cols = [ValueRef::Null; 12];
                let cols = &mut cols[..version.columns()];
                row.columns(cols)?;
                if !out.push(cols, version, &|what| format!("{file}: row {n}: {what}"))? {
                    return Ok(false);
                }
            }
            Ok(out.finish())
        }
        Rows::Sql(db) => {
            let mut out = Batcher::new(limits, tx, cancel, None);
            out.stale = stale;
            let mut stmt = db
                .prepare(bfd::select(version))
                .map_err(|e| format!("{file}: {e}"))?;
            let mut rows = stmt.query([]).map_err(|e| format!("{file}: {e}"))?;
            loop {
                let row = rows
                    .next()
                    .map_err(|e| format!("{file}: row {}: {e}", n + 1))?;
                let Some(row) = row else { break };
                n += 1;
                let bad = |what: &str| format!("{file}: row {n}: {what}");
                let mut cols = [ValueRef::Null; 12];
                let cols = &mut cols[..version.columns()];
                for (i, c) in cols.iter_mut().enumerate() {
                    *c = row.get_ref(i).map_err(|e| bad(&e.to_string()))?;
                }
                if !out.push(cols, version, &bad)? {
                    return Ok(false);
                }
            }
            Ok(out.finish())
        }
    }
}

/// Builds the messages of one file's rows into batches and sends each batch when it is full.
/// A value that lies in the mapped file is shared with it, not copied (`shared`): each batch
/// takes its own owner of the map, so that its messages count references on a counter of
/// their own. Other values (read through SQLite, or put together from overflow pages) are
/// copied into one buffer per batch.
struct Batcher<'a> {
    buf: BytesMut,
    batch: Vec<Message>,
    /// The fields copied into `buf`: message index, field, bytes; set when the batch is sent.
    copied: Vec<(usize, Field, Range<usize>)>,
    /// The bytes of the batch so far (copied or shared).
    bytes: usize,
    shared: Option<&'a Bytes>,
    view: Option<Bytes>,
    limits: BatchLimits,
    tx: &'a mpsc::Sender<Vec<Message>>,
    cancel: &'a CancellationToken,
    /// Per vbucket, the seqno above which rows are left out.
    stale: Option<&'a HashMap<u16, u64>>,
}

/// A byte field of a message.
#[derive(Clone, Copy)]
enum Field {
    Key,
    Value,
    Meta,
}

impl<'a> Batcher<'a> {
    fn new(
        limits: BatchLimits,
        tx: &'a mpsc::Sender<Vec<Message>>,
        cancel: &'a CancellationToken,
        shared: Option<&'a Bytes>,
    ) -> Self {
        Batcher {
            buf: BytesMut::new(),
            batch: Vec::with_capacity(limits.max_items.min(4096)),
            copied: Vec::new(),
            bytes: 0,
            shared,
            view: None,
            limits,
            tx,
            cancel,
            stale: None,
        }
    }

    /// Adds the row whose columns (in [`bfd::col`] order) are `row`; `bad` names the row in
    /// an error. False when the run should stop.
    fn push(
        &mut self,
        row: &[ValueRef<'_>],
        version: Version,
        bad: &dyn Fn(&str) -> String,
    ) -> Result<bool, String> {
        if self.view.is_none() {
            self.view = self.shared.map(|file| Bytes::from_owner(file.clone()));
        }
        let (buf, view) = (&mut self.buf, self.view.as_ref());
        let int = |i: usize| -> Result<i64, String> {
            match row[i] {
                ValueRef::Integer(v) => Ok(v),
                ValueRef::Null => Ok(0),
                ValueRef::Text(t) => std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| bad(&format!("column {i} is not a number"))),
                _ => Err(bad(&format!("column {i} is not a number"))),
            }
        };
        let bytes_of = |i: usize| -> Result<&[u8], String> {
            match row[i] {
                ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b),
                ValueRef::Null => Ok(&[]),
                _ => Err(bad(&format!("column {i} is not bytes"))),
            }
        };
        let (at, copied) = (self.batch.len(), &mut self.copied);
        let mut put = |field: Field, b: &[u8]| -> Bytes {
            if let Some(view) = view.filter(|v| within(v, b)) {
                return view.slice_ref(b);
            }
            if !b.is_empty() {
                let start = buf.len();
                buf.extend_from_slice(b);
                copied.push((at, field, start..buf.len()));
            }
            Bytes::new()
        };
        let op = match int(col::CMD)? {
            bfd::cmd::TAP_MUTATION | bfd::cmd::DCP_MUTATION => Op::Mutation,
            bfd::cmd::TAP_DELETE | bfd::cmd::DCP_DELETE => Op::Deletion,
            bfd::cmd::DCP_EXPIRATION => Op::Expiration,
            other => return Err(bad(&format!("unknown cmd {other:#x}"))),
        };
        let cas = match row[col::CAS] {
            ValueRef::Text(t) | ValueRef::Blob(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("cas is not a 64-bit number"))?,
            ValueRef::Integer(v) => v as u64,
            ValueRef::Null => 0,
            ValueRef::Real(_) => return Err(bad("cas is not a 64-bit number")),
        };
        let (key, value, meta) = (
            bytes_of(col::KEY)?,
            bytes_of(col::VAL)?,
            bytes_of(col::META)?,
        );
        let (rev_seqno, meta) = bfd::parse_meta_column(meta);
        let meta = meta.unwrap_or_default();
        self.bytes += key.len() + value.len() + meta.len();
        let (key, value, meta) = (
            put(Field::Key, key),
            put(Field::Value, value),
            put(Field::Meta, meta),
        );
        let (seqno, datatype, conflict_res) = if version.columns() > col::SEQNO {
            let conf = if version.columns() > col::CONF_RES {
                int(col::CONF_RES)?
            } else {
                0
            };
            (int(col::SEQNO)?, int(col::DTYPE)?, conf)
        } else {
            (0, 0, 0)
        };
        let vbucket =
            u16::try_from(int(col::VBUCKET_ID)?).map_err(|_| bad("vbucket_id is not 0-65535"))?;
        self.batch.push(Message {
            op,
            vbucket,
            key,
            value,
            flags: int(col::FLG)? as u32,
            expiry: int(col::EXP)? as u32,
            cas,
            seqno: seqno.max(0) as u64,
            rev_seqno,
            datatype: datatype as u8,
            meta,
            conflict_res: conflict_res as u8,
        });
        let full = self.batch.len() >= self.limits.max_items || self.bytes >= self.limits.max_bytes;
        Ok(!full || self.flush())
    }

    /// The most a batch's buffer starts with (it grows if a batch needs more).
    fn first_capacity(&self) -> usize {
        self.limits.max_bytes.min(1 << 20) + 4096
    }

    /// Sends what is left; false when the run should stop.
    fn finish(mut self) -> bool {
        self.batch.is_empty() || self.flush()
    }

    /// Slices the batch's messages out of its buffer and sends them; false to stop.
    fn flush(&mut self) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        // A new buffer (and owner of the map) for every batch, the next buffer sized on this
        // one: a batch split off a shared buffer would share its reference count with the
        // batches before it, which the sink drops on another core while this thread counts
        // the next one up (a contended cache line for every key and value).
        let next = (self.buf.len() + self.buf.len() / 4 + 4096).min(self.first_capacity());
        let bytes = std::mem::replace(&mut self.buf, BytesMut::with_capacity(next)).freeze();
        self.view = None;
        self.bytes = 0;
        for (at, field, range) in self.copied.drain(..) {
            let m = &mut self.batch[at];
            let b = bytes.slice(range);
            match field {
                Field::Key => m.key = b,
                Field::Value => m.value = b,
                Field::Meta => m.meta = b,
            }
        }
        let cap = self.limits.max_items.min(4096);
        let mut messages = std::mem::replace(&mut self.batch, Vec::with_capacity(cap));
        if let Some(stale) = self.stale {
            messages.retain(|m| stale.get(&m.vbucket).is_none_or(|s| m.seqno <= *s));
            if messages.is_empty() {
                return true;
            }
        }
        self.tx.blocking_send(messages).is_ok()
    }
}

/// True when `part` lies in `whole`'s bytes.
fn within(whole: &Bytes, part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}
