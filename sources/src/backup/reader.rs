//! The SQLite side of the backup source: opens every data file first (so a corrupt file or an
//! unknown user_version fails the run before anything moves, and the total is known), then
//! reads the rows of each file into batches sliced out of one buffer per batch.

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use pump::{BatchLimits, Message, Op, Stats};
use pump_formats::bfd::{self, col, Version};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Reads `files` in order and sends their rows in batches. Stops quietly when the receiver is
/// gone or the run is cancelled; fails with the file (and row) that could not be read.
pub fn read_all(
    files: &[PathBuf],
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    stats: &Stats,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut opened = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in files {
        let (db, version) = open(f)?;
        let n: i64 = db
            .query_row("SELECT count(*) FROM cbb_msg", [], |r| r.get(0))
            .map_err(|e| format!("{}: {e}", f.display()))?;
        total += n.max(0) as u64;
        opened.push((f, db, version));
    }
    stats.set_expected(total);
    for (f, db, version) in opened {
        if !read_file(f, &db, version, limits, tx, cancel)? {
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

/// Where a row's byte fields sit in the batch buffer.
struct Row {
    msg: Message,
    key: Range<usize>,
    value: Range<usize>,
    meta: Range<usize>,
}

/// Reads one file; false when the run should stop (receiver gone or cancelled).
fn read_file(
    path: &Path,
    db: &Connection,
    version: Version,
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    cancel: &CancellationToken,
) -> Result<bool, String> {
    let file = path.display();
    let mut stmt = db
        .prepare(bfd::select(version))
        .map_err(|e| format!("{file}: {e}"))?;
    let mut rows = stmt.query([]).map_err(|e| format!("{file}: {e}"))?;
    let mut buf = BytesMut::with_capacity(limits.max_bytes.min(8 << 20) + 4096);
    let mut batch: Vec<Row> = Vec::with_capacity(limits.max_items.min(4096));
    let mut n = 0u64;
    loop {
        let row = rows
            .next()
            .map_err(|e| format!("{file}: row {}: {e}", n + 1))?;
        let Some(row) = row else { break };
        n += 1;
        let bad = |what: &str| format!("{file}: row {n}: {what}");
        let int = |i: usize| -> Result<i64, String> {
            match row.get_ref(i).map_err(|e| bad(&e.to_string()))? {
                ValueRef::Integer(v) => Ok(v),
                ValueRef::Null => Ok(0),
                ValueRef::Text(t) => std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| bad(&format!("column {i} is not a number"))),
                _ => Err(bad(&format!("column {i} is not a number"))),
            }
        };
        let put = |i: usize, buf: &mut BytesMut| -> Result<Range<usize>, String> {
            let start = buf.len();
            match row.get_ref(i).map_err(|e| bad(&e.to_string()))? {
                ValueRef::Blob(b) | ValueRef::Text(b) => buf.extend_from_slice(b),
                ValueRef::Null => {}
                _ => return Err(bad(&format!("column {i} is not bytes"))),
            }
            Ok(start..buf.len())
        };
        let op = match int(col::CMD)? {
            bfd::cmd::TAP_MUTATION | bfd::cmd::DCP_MUTATION => Op::Mutation,
            bfd::cmd::TAP_DELETE | bfd::cmd::DCP_DELETE => Op::Deletion,
            bfd::cmd::DCP_EXPIRATION => Op::Expiration,
            other => return Err(bad(&format!("unknown cmd {other:#x}"))),
        };
        let cas = match row.get_ref(col::CAS).map_err(|e| bad(&e.to_string()))? {
            ValueRef::Text(t) | ValueRef::Blob(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("cas is not a 64-bit number"))?,
            ValueRef::Integer(v) => v as u64,
            ValueRef::Null => 0,
            ValueRef::Real(_) => return Err(bad("cas is not a 64-bit number")),
        };
        let key = put(col::KEY, &mut buf)?;
        let value = put(col::VAL, &mut buf)?;
        let meta_start = buf.len();
        let meta_raw = put(col::META, &mut buf)?;
        let (rev_seqno, meta_bytes) = bfd::parse_meta_column(&buf[meta_raw.clone()]);
        let meta = if meta_bytes.is_some() {
            meta_raw
        } else {
            meta_start..meta_start
        };
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
        batch.push(Row {
            msg: Message {
                op,
                vbucket: u16::try_from(int(col::VBUCKET_ID)?)
                    .map_err(|_| bad("vbucket_id is not 0-65535"))?,
                flags: int(col::FLG)? as u32,
                expiry: int(col::EXP)? as u32,
                cas,
                seqno: seqno.max(0) as u64,
                rev_seqno,
                datatype: datatype as u8,
                conflict_res: conflict_res as u8,
                ..Message::default()
            },
            key,
            value,
            meta,
        });
        let full = batch.len() >= limits.max_items || buf.len() >= limits.max_bytes;
        if full && !flush(&mut batch, &mut buf, limits, tx, cancel) {
            return Ok(false);
        }
    }
    Ok(batch.is_empty() || flush(&mut batch, &mut buf, limits, tx, cancel))
}

/// Slices the batch's messages out of its buffer and sends them; false to stop.
fn flush(
    batch: &mut Vec<Row>,
    buf: &mut BytesMut,
    limits: BatchLimits,
    tx: &mpsc::Sender<Vec<Message>>,
    cancel: &CancellationToken,
) -> bool {
    if cancel.is_cancelled() {
        return false;
    }
    let bytes = buf.split().freeze();
    let messages = batch
        .drain(..)
        .map(|r| Message {
            key: bytes.slice(r.key),
            value: bytes.slice(r.value),
            meta: bytes.slice(r.meta),
            ..r.msg
        })
        .collect();
    buf.reserve(limits.max_bytes.min(8 << 20) + 4096);
    tx.blocking_send(messages).is_ok()
}
