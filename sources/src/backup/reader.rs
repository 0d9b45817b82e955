//! The SQLite side of the backup source: opens every data file first (so a corrupt file or an
//! unknown user_version fails the run before anything moves, and the total is known), then
//! reads the rows of each file into batches sliced out of one buffer per batch.
//!
//! The rows come straight from the file's pages ([`SqliteFile`], a fraction of the CPU of a
//! `SELECT`) when nothing but the file holds them; a file with a `-wal` or journal beside it,
//! or a table not laid out as cbbackup makes it, is read through SQLite. Both paths hand the
//! same column values to one [`Batcher`], which refuses a value out of its column's range
//! (flg and exp above 32 bits, dtype and conf_res above 8, a negative seqno) naming the file,
//! page and row rather than cutting it to fit.
//!
//! `-x verify` (see [`Verify`]): `quick` (the default) proves each page's structure as the
//! rows are counted and read, and runs SQLite's `quick_check` first on a file SQLite reads;
//! `full` runs `integrity_check` on every file first as well; `none` only keeps every read
//! inside its page. With checks on, a file that yields another number of rows than were
//! counted before the run is an error. No file is ever written beside the backup's
//! ([`sqlite_open`]).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use pump::{BatchLimits, Message, Op, RunCollections, Stats};
use pump_formats::bfd::{self, col, Version};
use pump_formats::sqlite_file::{self, SqliteFile, Verify};
use pump_formats::sqlite_open::{self, ReadOnly};
use rusqlite::types::ValueRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::layout::DataFile;

/// Reads `files` in order and sends their rows in batches, each file checked as `verify`
/// says. Stops quietly when the receiver is gone or the run is cancelled; fails with the file
/// (and page, row) that could not be read.
pub fn read_all(
    files: &[DataFile],
    limits: BatchLimits,
    verify: Verify,
    tx: &mpsc::Sender<Vec<Message>>,
    stats: &Stats,
    cancel: &CancellationToken,
    collections: &RunCollections,
) -> Result<(), String> {
    let mut opened = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for file in files {
        let (rows, counted) = prepare(&file.path, verify)?;
        total += counted.1;
        opened.push((file, rows, counted));
    }
    stats.set_expected(total);
    for (file, rows, (version, counted)) in opened {
        let read = Read {
            verify,
            counted: Some(counted),
            stale: file.stale_above.as_deref(),
        };
        let stale = read.stale;
        if !read_file(&file.path, rows, version, read, limits, tx, cancel)? {
            return Ok(());
        }
        if !read_collection_rows(&file.path, limits, tx, cancel, stale, collections)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads the file's `cbb_collection_msg` rows, when it has that table: each message gets its
/// collection id, which `collections` (the backup's collections.json) must name. Rows of a
/// collection the backup's manifest no longer holds (dropped during or since the run) are
/// left out. False when the run should stop.
pub(super) fn read_collection_rows(
    path: &Path,
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    cancel: &CancellationToken,
    stale: Option<&HashMap<u16, u64>>,
    collections: &RunCollections,
) -> Result<bool, String> {
    let file = path.display();
    let (db, _) = open(path)?;
    let has: i64 = db
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [bfd::COLLECTION_TABLE],
            |r| r.get(0),
        )
        .map_err(|e| format!("{file}: {e}"))?;
    if has == 0 {
        return Ok(true);
    }
    let mut out = Batcher::new(limits, tx, cancel);
    out.stale = stale;
    let mut stmt = db
        .conn
        .prepare(bfd::SELECT_COLLECTION)
        .map_err(|e| format!("{file}: {e}"))?;
    let mut rows = stmt.query([]).map_err(|e| format!("{file}: {e}"))?;
    let mut n = 0u64;
    let mut dropped = 0u64;
    loop {
        let row = rows
            .next()
            .map_err(|e| format!("{file}: {}: row {}: {e}", bfd::COLLECTION_TABLE, n + 1))?;
        let Some(row) = row else { break };
        n += 1;
        let bad = |what: &str| format!("{file}: {}: row {n}: {what}", bfd::COLLECTION_TABLE);
        let mut cols = [ValueRef::Null; 13];
        for (i, c) in cols.iter_mut().enumerate() {
            *c = row.get_ref(i).map_err(|e| bad(&e.to_string()))?;
        }
        let id = match cols[12] {
            ValueRef::Integer(v) => u32::try_from(v).ok(),
            _ => None,
        }
        .ok_or_else(|| bad("collection_id is not a collection id"))?;
        if !collections.knows(id) {
            return Err(bad(&format!(
                "collection id {id:#x} is not named in the run's {}",
                bfd::COLLECTIONS_JSON
            )));
        }
        if !collections.is_live(id) {
            dropped += 1;
            continue;
        }
        out.collection = id;
        if !out.push(&cols[..12], None, Version::V2015, &bad)? {
            return Ok(false);
        }
    }
    if dropped > 0 {
        tracing::warn!(
            "{file}: {dropped} rows of collections dropped since (not in the backup's manifest) left out"
        );
    }
    Ok(out.finish())
}

/// Opens one file, checks it as `verify` says and counts its rows, before anything moves.
pub(super) fn prepare(f: &Path, verify: Verify) -> Result<(Rows, (Version, u64)), String> {
    let (db, version) = open(f)?;
    match raw_root(f, &db, version)? {
        Some(root) => {
            if verify == Verify::Full {
                integrity_check(f, &db, "integrity_check")?;
            }
            // Counted on the pages the rows are then read from: a broken tree fails here,
            // before anything moves.
            let file = SqliteFile::open(f)?;
            let n = file.table_with(root, verify).count()?;
            if verify == Verify::Full {
                let sql = count_rows(f, &db)?;
                if sql != n {
                    return Err(format!(
                        "{}: table cbb_msg: SQLite counts {sql} rows, its pages hold {n}",
                        f.display()
                    ));
                }
            }
            Ok((Rows::Raw(file, root), (version, n)))
        }
        None => {
            // SQLite reads these rows: its own checks as it reads are not the page checks
            // above, so its quick_check (or integrity_check) runs first.
            match verify {
                Verify::None => {}
                Verify::Quick => integrity_check(f, &db, "quick_check")?,
                Verify::Full => integrity_check(f, &db, "integrity_check")?,
            }
            let n = count_rows(f, &db)?;
            Ok((Rows::Sql(db), (version, n)))
        }
    }
}

/// `SELECT count(*) FROM cbb_msg`.
fn count_rows(f: &Path, db: &ReadOnly) -> Result<u64, String> {
    let n: i64 = db
        .conn
        .query_row("SELECT count(*) FROM cbb_msg", [], |r| r.get(0))
        .map_err(|e| format!("{}: table cbb_msg: {e}", f.display()))?;
    Ok(n.max(0) as u64)
}

/// Runs `PRAGMA quick_check` or `integrity_check`; an error quotes SQLite's first findings.
fn integrity_check(f: &Path, db: &ReadOnly, pragma: &str) -> Result<(), String> {
    let err = |e: rusqlite::Error| format!("{}: {pragma}: {e}", f.display());
    let mut stmt = db
        .conn
        .prepare(&format!("PRAGMA {pragma}(10)"))
        .map_err(err)?;
    let found: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(format!(
        "{}: {pragma} finds the file damaged: {}",
        f.display(),
        found.join("; ")
    ))
}

/// Opens a data file read-only (nothing is written beside it: [`sqlite_open`]) and checks
/// its user_version.
pub fn open(path: &Path) -> Result<(ReadOnly, Version), String> {
    let db = sqlite_open::open_read_only(path)?;
    let v: i64 = db
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("{}: not a readable backup data file: {e}", path.display()))?;
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
    Sql(ReadOnly),
}

/// The root page of `cbb_msg` when its rows can be read from the file's pages alone: no
/// `-wal` file or rollback journal holding pages the file does not have yet, UTF-8 text, and
/// the table exactly as cbbackup makes it (a rowid table whose columns come in [`bfd::COLUMNS`]
/// order, no key column, no default values). `None` sends the file through SQLite. A file
/// with no table `cbb_msg` (none, or a view of that name) is an error saying so.
pub(super) fn raw_root(
    path: &Path,
    db: &ReadOnly,
    version: Version,
) -> Result<Option<u32>, String> {
    let file = path.display();
    let err = |e: rusqlite::Error| format!("{file}: {e}");
    let db_conn = &db.conn;
    // Text as it is stored (a damaged schema may hold bytes that are not UTF-8).
    let text = |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<String> {
        Ok(match r.get_ref(i)? {
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                String::from_utf8_lossy(t).into_owned()
            }
            rusqlite::types::ValueRef::Null => String::new(),
            other => format!("{other:?}"),
        })
    };
    let schema: Vec<(String, String, i64, Option<String>)> = db_conn
        .prepare("SELECT type, name, rootpage, sql FROM sqlite_master")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    text(r, 0)?,
                    text(r, 1)?,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    Some(text(r, 3)?),
                ))
            })?
            .collect()
        })
        .map_err(err)?;
    let Some((kind, _, root, sql)) = schema
        .iter()
        .find(|(_, name, _, _)| name.eq_ignore_ascii_case("cbb_msg"))
    else {
        let held: Vec<String> = schema
            .iter()
            .map(|(kind, name, _, _)| format!("{kind} {name}"))
            .collect();
        return Err(format!(
            "{file}: no table cbb_msg, where a backup data file holds its rows (the file holds {})",
            if held.is_empty() {
                "nothing".to_string()
            } else {
                held.join(", ")
            }
        ));
    };
    if kind != "table" {
        return Err(format!(
            "{file}: cbb_msg is a {kind}, not a table: a backup data file holds its rows in a table cbb_msg"
        ));
    }
    let sql = sql.as_deref().unwrap_or("").to_ascii_lowercase();
    let mut stmt = db_conn
        .prepare("SELECT name, pk, hidden FROM pragma_table_xinfo('cbb_msg')")
        .map_err(err)?;
    let columns = stmt
        .query_map([], |r| {
            Ok((text(r, 0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if let Some(missing) = bfd::COLUMNS[..version.columns()].iter().find(|want| {
        !columns
            .iter()
            .any(|(name, _, _)| name.eq_ignore_ascii_case(want))
    }) {
        let have: Vec<&str> = columns.iter().map(|(name, _, _)| name.as_str()).collect();
        return Err(format!(
            "{file}: table cbb_msg has no column {missing} (its columns: {}), which a backup data file of user_version {} has",
            have.join(", "),
            version.user_version()
        ));
    }
    if db.is_copy()
        || sqlite_file::has_side_files(path)
        || sql.contains("without rowid")
        || sql.contains("default")
    {
        return Ok(None);
    }
    let plain = columns.len() >= version.columns()
        && columns
            .iter()
            .all(|(_, pk, hidden)| *pk == 0 && *hidden == 0)
        && columns
            .iter()
            .zip(&bfd::COLUMNS[..version.columns()])
            .all(|((name, _, _), want)| name.eq_ignore_ascii_case(want));
    let encoding: String = db_conn
        .query_row("PRAGMA encoding", [], |r| r.get(0))
        .map_err(err)?;
    Ok((plain && encoding == "UTF-8")
        .then(|| u32::try_from(*root).ok())
        .flatten())
}

/// How one file is read: the checks, the rows [`prepare`] counted, and per vbucket the seqno
/// above which rows are left out (a later run saw that vbucket roll back).
#[derive(Clone, Copy, Default)]
pub(super) struct Read<'a> {
    pub verify: Verify,
    pub counted: Option<u64>,
    pub stale: Option<&'a HashMap<u16, u64>>,
}

/// Reads one file; false when the run should stop (receiver gone or cancelled). With
/// `read.counted` and checks on, a file that yields another number of rows is an error: it
/// changed while it was read.
pub(super) fn read_file(
    path: &Path,
    rows: Rows,
    version: Version,
    read: Read<'_>,
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    cancel: &CancellationToken,
) -> Result<bool, String> {
    let Read {
        verify,
        counted,
        stale,
    } = read;
    let file = path.display();
    let mut n = 0u64;
    let mut out = Batcher::new(limits, tx, cancel);
    out.stale = stale;
    match rows {
        Rows::Raw(db, root) => {
            // Every page was proven as the rows were counted ([`prepare`]): the read checks
            // each row's order and each overflow chain, and the count at the end.
            let mut rows = match (verify.checks_pages(), counted) {
                (true, Some(_)) => db.table_counted(root),
                _ => db.table_with(root, verify),
            };
            while let Some(row) = rows.next_row()? {
                n += 1;
                let mut cols = [ValueRef::Null; 12];
                let cols = &mut cols[..version.columns()];
                row.columns(cols)?;
                let (page, rowid) = (row.page, row.rowid);
                let bad =
                    |what: &str| format!("{file}: page {page}: row {n} (rowid {rowid}): {what}");
                if !out.push(cols, row.page_bytes(), version, &bad)? {
                    return Ok(false);
                }
            }
        }
        Rows::Sql(db) => {
            let mut stmt = db
                .conn
                .prepare(bfd::select(version))
                .map_err(|e| format!("{file}: table cbb_msg: {e}"))?;
            let mut rows = stmt
                .query([])
                .map_err(|e| format!("{file}: table cbb_msg: {e}"))?;
            loop {
                let row = rows
                    .next()
                    .map_err(|e| format!("{file}: table cbb_msg: row {}: {e}", n + 1))?;
                let Some(row) = row else { break };
                n += 1;
                let bad = |what: &str| format!("{file}: table cbb_msg: row {n}: {what}");
                let mut cols = [ValueRef::Null; 12];
                let cols = &mut cols[..version.columns()];
                for (i, c) in cols.iter_mut().enumerate() {
                    *c = row.get_ref(i).map_err(|e| bad(&e.to_string()))?;
                }
                if !out.push(cols, None, version, &bad)? {
                    return Ok(false);
                }
            }
        }
    }
    if let Some(counted) = counted.filter(|&c| verify.checks_pages() && c != n) {
        return Err(format!(
            "{file}: table cbb_msg: {n} rows read where {counted} were counted before: the file changed while it was read"
        ));
    }
    Ok(out.finish())
}

/// Builds the messages of one file's rows into batches and sends each batch when it is full.
/// A value that lies in the page it was read from is shared with that page, not copied: each
/// batch takes its own owner of the page (`view`), so that its messages count references on a
/// counter of their own. Other values (read through SQLite, or put together from overflow
/// pages) are copied into one buffer per batch.
struct Batcher<'a> {
    buf: BytesMut,
    batch: Vec<Message>,
    /// The fields copied into `buf`: message index, field, bytes; set when the batch is sent.
    copied: Vec<(usize, Field, Range<usize>)>,
    /// The bytes of the batch so far (copied or shared).
    bytes: usize,
    view: Option<Bytes>,
    limits: BatchLimits,
    tx: &'a mpsc::Sender<Vec<Message>>,
    cancel: &'a CancellationToken,
    /// Per vbucket, the seqno above which rows are left out.
    stale: Option<&'a HashMap<u16, u64>>,
    /// The collection of the rows pushed next.
    collection: u32,
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
    ) -> Self {
        Batcher {
            buf: BytesMut::new(),
            batch: Vec::with_capacity(limits.max_items.min(4096)),
            copied: Vec::new(),
            bytes: 0,
            view: None,
            limits,
            tx,
            cancel,
            stale: None,
            collection: 0,
        }
    }

    /// Adds the row whose columns (in [`bfd::col`] order) are `row`, read from `page` when it
    /// was read in place; `bad` names the row in an error. False when the run should stop.
    fn push(
        &mut self,
        row: &[ValueRef<'_>],
        page: Option<&Bytes>,
        version: Version,
        bad: &dyn Fn(&str) -> String,
    ) -> Result<bool, String> {
        if let Some(page) = page {
            if !self.view.as_ref().is_some_and(|v| same(v, page)) {
                self.view = Some(Bytes::from_owner(page.clone()));
            }
        }
        let (buf, view) = (&mut self.buf, self.view.as_ref());
        let int = |i: usize| -> Result<i64, String> {
            int_of(row[i]).ok_or_else(|| bad(&format!("column {i} is not a number")))
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
        let ranged = |i: usize, name: &str, max: i64| ranged(row, i, name, max, bad);
        let op = match int(col::CMD)? {
            bfd::cmd::TAP_MUTATION | bfd::cmd::DCP_MUTATION => Op::Mutation,
            bfd::cmd::TAP_DELETE | bfd::cmd::DCP_DELETE => Op::Deletion,
            bfd::cmd::DCP_EXPIRATION => Op::Expiration,
            other => {
                return Err(bad(&format!(
                    "unknown cmd {other:#x} (a mutation is 0x41 or 0x57, a deletion 0x42 or 0x58, an expiration 0x59)"
                )))
            }
        };
        let cas = match row[col::CAS] {
            ValueRef::Text(t) | ValueRef::Blob(t) => decimal_u64(t)
                .or_else(|| {
                    std::str::from_utf8(t)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                })
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
                ranged(col::CONF_RES, "conf_res", u8::MAX.into())?
            } else {
                0
            };
            (
                ranged(col::SEQNO, "seqno", i64::MAX)?,
                ranged(col::DTYPE, "dtype", u8::MAX.into())?,
                conf,
            )
        } else {
            (0, 0, 0)
        };
        let vbucket = ranged(col::VBUCKET_ID, "vbucket_id", u16::MAX.into())? as u16;
        let flags = ranged(col::FLG, "flg", u32::MAX.into())? as u32;
        let expiry = ranged(col::EXP, "exp", u32::MAX.into())? as u32;
        self.batch.push(Message {
            op,
            vbucket,
            key,
            value,
            flags,
            expiry,
            cas,
            seqno: seqno as u64,
            rev_seqno,
            datatype: datatype as u8,
            meta,
            conflict_res: conflict_res as u8,
            collection: self.collection,
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

/// A column's value as a number: an integer, NULL as 0, or text holding a number (as SQLite
/// would store it in a column of integer affinity it could not convert); `None` otherwise.
#[inline(always)]
fn int_of(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(v) => Some(v),
        ValueRef::Null => Some(0),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// The number in column `i` (`name`) of `row`, which must fit in 0 to `max` (a u32, a u8):
/// anything else is an error naming the column and the value, never a value cut to fit.
/// Inlined (six columns a row); the error is built apart.
#[inline(always)]
fn ranged(
    row: &[ValueRef<'_>],
    i: usize,
    name: &str,
    max: i64,
    bad: &dyn Fn(&str) -> String,
) -> Result<i64, String> {
    match int_of(row[i]) {
        Some(v) if (0..=max).contains(&v) => Ok(v),
        v => Err(out_of_range(bad, i, name, v, max)),
    }
}

/// The error of column `i` (`name`) holding `v` (`None`: not a number) where 0 to `max` fit.
#[cold]
#[inline(never)]
fn out_of_range(
    bad: &dyn Fn(&str) -> String,
    i: usize,
    name: &str,
    v: Option<i64>,
    max: i64,
) -> String {
    match v {
        Some(v) => bad(&format!("{name} {v} is not 0 to {max}")),
        None => bad(&format!("column {i} is not a number")),
    }
}

/// `t` read as a u64 when it is 1 to 19 ASCII digits and nothing else (how cbbackup writes a
/// cas: as text), which cannot overflow; `None` sends anything else to the general parse.
fn decimal_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(t.iter().fold(0u64, |n, d| n * 10 + (d - b'0') as u64))
}

/// True when `a` and `b` are the same bytes (the same page).
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// True when `part` lies in `whole`'s bytes.
fn within(whole: &Bytes, part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

#[cfg(test)]
mod tests {
    use super::decimal_u64;

    #[test]
    fn a_cas_of_plain_digits_reads_as_the_general_parse_reads_it() {
        let general = |t: &[u8]| {
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        for t in [
            &b"0"[..],
            b"7",
            b"1733456789123456789",
            b"9999999999999999999",
            b"0000000000000000042",
        ] {
            assert_eq!(decimal_u64(t), general(t), "{t:?}");
        }
        // Anything else is left to the general parse: signs, spaces, 20 digits, not digits.
        for t in [
            &b""[..],
            b"+5",
            b" 5",
            b"5 ",
            b"18446744073709551615",
            b"99999999999999999999",
            b"12a",
            b"-1",
        ] {
            assert_eq!(decimal_u64(t), None, "{t:?}");
        }
    }
}
