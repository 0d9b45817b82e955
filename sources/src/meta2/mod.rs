//! `meta2:PATH`: every table of a meta2 base (the known ones and any other), as messages.
//!
//! The encoding (schema message first per table, then one message per row in key order,
//! table id = vbucket, key = primary key cells, value = every column's cells, then an end
//! message with the table's row count and digest) is documented in [`pump_meta2::codec`].
//! The base is read on its own thread, in one read transaction (a consistent snapshot),
//! through a memory map; the file is never written. A rowid table whose primary key has an
//! index of its own (contents, chunks, aliases, properties, admin) is read in rowid
//! order, its pages in sequence, into one buffer, then sent in the order of the rowids read
//! from the key index alone (`read_reordered`): no table lookup per row, which reading in
//! key order through the index costs. That first pass reads the table's pages itself
//! ([`SqliteFile`]) when nothing but the file holds its rows and its records are its rows as
//! SQLite returns them ([`raw_file`], [`raw_root`]), else through SQLite. A table bigger than
//! `REORDER_MAX_BYTES` (512 MiB), a WITHOUT ROWID table and one keyed by its rowid are read
//! in key order by one query. The digest of each table is computed over the rows as they are
//! sent ([`TableDigest`]), so the sink checks the base it built against the source itself,
//! with no second read of the source.

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use pump::pipeline::Context;
use pump::{BatchSender, Error, Message, Options, Payload, Source, SourceKind, Spec};
use pump_formats::sqlite_file::{self, SqliteFile};
use pump_meta2::check::TableDigest;
use pump_meta2::codec::{
    control, encode_base, encode_schema, encode_table_end, put_cell, BaseHeader, PAYLOAD,
};
use pump_meta2::schema::{self, Table};
use rusqlite::types::ValueRef;

/// The `meta2:` source kind.
pub struct Meta2Kind;

impl SourceKind for Meta2Kind {
    fn name(&self) -> &'static str {
        "meta2"
    }
    fn syntax(&self) -> &'static str {
        "meta2:PATH (a meta2 base file)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("meta2")
    }
    fn payload(&self) -> Payload {
        Payload::Format(PAYLOAD)
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let path = config(spec)?;
        // A base moves whole: a filtered one would be a partial base, which the sink's
        // digests refuse only after the work (or, with every row filtered, never see).
        // Its rows carry their table id where items carry a vbucket: rehash would rewrite it.
        if options.key.is_some() || options.vbuckets.is_some() || options.extra.rehash {
            return Err(Error::usage(format!(
                "{spec}: a meta2 base is copied whole; -k/--key, -l/--vbucket-list and -x rehash do not apply"
            )));
        }
        Ok(Box::new(Meta2Source {
            path,
            spec: spec.to_string(),
            batch: options.extra.batch_max_size.max(1),
        }))
    }
}

/// The path of a `meta2:PATH` spec.
pub fn config(spec: &Spec) -> Result<PathBuf, Error> {
    if spec.body().is_empty() {
        return Err(Error::usage(format!("{spec}: expected meta2:PATH")));
    }
    Ok(PathBuf::from(spec.body()))
}

/// Batches the reading thread may queue ahead of the pump: enough for a big table's rows
/// (the messages of a table sent in key order share its one buffer), so that the thread
/// reads the next table while the sink is still inserting this one.
const READ_AHEAD_BATCHES: usize = 256;

/// Reads one base.
pub struct Meta2Source {
    path: PathBuf,
    spec: String,
    batch: usize,
}

impl Meta2Source {
    /// A source reading `path`, `batch` rows per batch.
    pub fn new(path: PathBuf, batch: usize) -> Meta2Source {
        Meta2Source {
            spec: format!("meta2:{}", path.display()),
            path,
            batch: batch.max(1),
        }
    }
}

#[async_trait]
impl Source for Meta2Source {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        if !self.path.is_file() {
            return Err(Error::source(&self.spec, "no such base file"));
        }
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<Vec<Message>, String>>(READ_AHEAD_BATCHES);
        let stats = out.stats().clone();
        let path = self.path.clone();
        let batch = self.batch;
        let reader = tokio::task::spawn_blocking(move || {
            if let Err(e) = read_base(&path, batch, &tx, &stats) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut result = Ok(());
        while let Some(msgs) = rx.recv().await {
            match msgs {
                Ok(m) => {
                    if let Err(e) = out.send_messages(m).await {
                        result = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(Error::source(&self.spec, e));
                    break;
                }
            }
        }
        drop(rx);
        let _ = reader.await;
        result
    }
}

fn read_base(
    path: &std::path::Path,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<Message>, String>>,
    stats: &pump::Stats,
) -> Result<(), String> {
    let conn = schema::open_read(path).map_err(|e| e.to_string())?;
    // The whole read is one transaction: its shared lock keeps every SQLite writer off the
    // file, so reading it through a memory map is safe (and spares a copy per page).
    conn.execute_batch("PRAGMA cache_size=-262144; PRAGMA mmap_size=4294967296; BEGIN")
        .map_err(|e| e.to_string())?;
    let tables = schema::tables(&conn).map_err(|e| e.to_string())?;
    // Mapped once the transaction holds its shared lock (taken by the read above): no
    // writer changes the file while its pages are read.
    let raw = raw_file(path, &conn).map_err(|e| e.to_string())?;
    // Every table's count in one statement, for the progress bar.
    let counts: Vec<String> = tables
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {})", schema::quote(&t.name)))
        .collect();
    let rows: i64 = if counts.is_empty() {
        0
    } else {
        conn.query_row(&format!("SELECT {}", counts.join(" + ")), [], |r| r.get(0))
            .map_err(|e| e.to_string())?
    };
    let mut msgs = Vec::with_capacity(batch);
    let flush = |msgs: &mut Vec<Message>| -> Result<(), String> {
        if msgs.is_empty() {
            return Ok(());
        }
        let m = std::mem::replace(msgs, Vec::with_capacity(batch));
        tx.blocking_send(Ok(m))
            .map_err(|_| "the pump stopped reading".to_string())
    };
    let expected = 1 + tables.len() as u64 * 2 + rows as u64;
    stats.set_expected(expected);
    let base_msg = Message::control(
        control::BASE,
        Bytes::new(),
        Bytes::from(encode_base(&header(&conn).map_err(|e| e.to_string())?)),
    );
    msgs.push(base_msg);
    for t in &tables {
        let mut schema_msg = Message::control(
            control::SCHEMA,
            Bytes::from(t.name.clone().into_bytes()),
            Bytes::from(encode_schema(&t.statements)),
        );
        schema_msg.vbucket = t.id;
        msgs.push(schema_msg);
        let mut digest = TableDigest::new(&t.statements);
        let mut rows = 0u64;
        let mut send = |m: Message| -> Result<(), String> {
            if t.pk.is_empty() {
                // The key is the rowid: part of the row's content.
                digest.update(&m.key[2..]);
            }
            digest.update(&m.value[2..]);
            rows += 1;
            msgs.push(m);
            if msgs.len() >= batch {
                flush(&mut msgs)?;
            }
            Ok(())
        };
        let err = |e: rusqlite::Error| format!("table {}: {e}", t.name);
        let sent = uses_pk_index(&conn, t).map_err(err)?
            && read_reordered(raw.as_ref(), &conn, t, &mut send)?;
        if !sent {
            read_in_key_order(&conn, t, &mut send)?;
        }
        let mut end = Message::control(
            control::TABLE_END,
            Bytes::from(t.name.clone().into_bytes()),
            Bytes::from(encode_table_end(rows, &digest.finish())),
        );
        end.vbucket = t.id;
        msgs.push(end);
    }
    flush(&mut msgs)
}

/// What a copy keeps of the file's header: its page size and ids.
fn header(conn: &rusqlite::Connection) -> rusqlite::Result<BaseHeader> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    Ok(BaseHeader {
        page_size: pragma("page_size")? as u32,
        // Both are signed 32-bit numbers in SQLite; their bits travel.
        user_version: pragma("user_version")? as i32 as u32,
        application_id: pragma("application_id")? as i32 as u32,
    })
}

/// Whether `t` is read in primary key order through an index of its own: a rowid table
/// whose PRIMARY KEY is not its rowid (SQLite keeps an automatic index for that key).
/// A WITHOUT ROWID table is stored in key order and an INTEGER PRIMARY KEY is the rowid:
/// both are read in key order by a plain scan.
fn uses_pk_index(conn: &rusqlite::Connection, t: &Table) -> rusqlite::Result<bool> {
    if t.pk.is_empty() || t.columns.iter().any(|c| is_rowid_name(c)) {
        return Ok(false);
    }
    if schema::without_rowid(conn, &t.name)? {
        return Ok(false);
    }
    let pk_index: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'pk'",
        [&t.name],
        |r| r.get(0),
    )?;
    Ok(pk_index > 0)
}

/// A column named like the rowid hides it: such tables are read the plain way.
fn is_rowid_name(c: &str) -> bool {
    ["rowid", "_rowid_", "oid"]
        .iter()
        .any(|r| c.eq_ignore_ascii_case(r))
}

/// The most bytes of one table held in memory to send it in key order ([`read_reordered`]);
/// a bigger table is read through its key index instead.
const REORDER_MAX_BYTES: usize = 512 << 20;

/// Appends one row's key cells (the rowid when the table has no primary key) then value
/// cells (every column) to `out`; returns their ranges. `rowid_first`: column 0 of `r` is
/// the rowid.
fn row_message(
    t: &Table,
    r: &rusqlite::Row<'_>,
    rowid_first: bool,
    pk: &[usize],
    out: &mut Vec<u8>,
) -> Result<(Range<usize>, Range<usize>), String> {
    let off = usize::from(rowid_first);
    let get = |i: usize| r.get_ref(i).map_err(|e| format!("table {}: {e}", t.name));
    let rowid = if t.pk.is_empty() { Some(get(0)?) } else { None };
    put_row(t, rowid, |i| get(i + off), pk, out)
}

/// The cells of one row appended to `out` (see [`row_message`]): `rowid` is the key of a
/// table without primary key, `column(i)` the value of column i.
fn put_row<'a>(
    t: &Table,
    rowid: Option<ValueRef<'a>>,
    column: impl Fn(usize) -> Result<ValueRef<'a>, String>,
    pk: &[usize],
    out: &mut Vec<u8>,
) -> Result<(Range<usize>, Range<usize>), String> {
    let k0 = out.len();
    match rowid {
        Some(rowid) => {
            out.extend_from_slice(&1u16.to_be_bytes());
            put_cell(out, rowid);
        }
        None => {
            out.extend_from_slice(&(pk.len() as u16).to_be_bytes());
            for &i in pk {
                put_cell(out, column(i)?);
            }
        }
    }
    let v0 = out.len();
    out.extend_from_slice(&(t.columns.len() as u16).to_be_bytes());
    for i in 0..t.columns.len() {
        put_cell(out, column(i)?);
    }
    Ok((k0..v0, v0..out.len()))
}

/// The base's file mapped for reading its pages ([`SqliteFile`], a fraction of the CPU of a
/// `SELECT`) when the file alone holds its rows: no `-wal` file or journal beside it, UTF-8
/// text, a header the reader takes. `None` reads every table through SQLite.
fn raw_file(path: &Path, conn: &rusqlite::Connection) -> rusqlite::Result<Option<SqliteFile>> {
    if sqlite_file::has_side_files(path) {
        return Ok(None);
    }
    let encoding: String = conn.query_row("PRAGMA encoding", [], |r| r.get(0))?;
    Ok((encoding == "UTF-8")
        .then(|| SqliteFile::open(path).ok())
        .flatten())
}

/// The root page of `t` when its rows can be read from its pages: a plain rowid table whose
/// records hold exactly its columns as SQLite returns them (no hidden or generated column,
/// no default other than NULL for a row older than its column, no REAL column, which SQLite
/// may store as an integer and turns back into a real as it reads it). `None` reads it
/// through SQLite.
fn raw_root(conn: &rusqlite::Connection, t: &Table) -> rusqlite::Result<Option<u32>> {
    let columns: Vec<(String, Option<String>, i64)> = conn
        .prepare("SELECT type, dflt_value, hidden FROM pragma_table_xinfo(?1)")?
        .query_map([&t.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let plain = columns.len() == t.columns.len()
        && columns.iter().all(|(ty, default, hidden)| {
            let ty = ty.to_ascii_uppercase();
            let real =
                !ty.contains("INT") && ["REAL", "FLOA", "DOUB"].iter().any(|r| ty.contains(r));
            *hidden == 0
                && !real
                && default
                    .as_deref()
                    .is_none_or(|d| d.eq_ignore_ascii_case("NULL"))
        });
    if !plain {
        return Ok(None);
    }
    let root: i64 = conn.query_row(
        "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [&t.name],
        |r| r.get(0),
    )?;
    Ok(u32::try_from(root).ok().filter(|&r| r > 0))
}

/// Sends the rows of `t` in key order the plain way: `SELECT ... ORDER BY key`, which for
/// a rowid table with a separate key index costs one table lookup per row.
fn read_in_key_order(
    conn: &rusqlite::Connection,
    t: &Table,
    send: &mut dyn FnMut(Message) -> Result<(), String>,
) -> Result<(), String> {
    let err = |e: rusqlite::Error| format!("table {}: {e}", t.name);
    let mut stmt = conn.prepare(&t.select_sql()).map_err(err)?;
    let pk = t.pk_positions();
    let mut rows = stmt.query([]).map_err(err)?;
    let mut buf = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        buf.clear();
        let (k, v) = row_message(t, r, t.pk.is_empty(), &pk, &mut buf)?;
        let mut m = Message::mutation(
            Bytes::copy_from_slice(&buf[k]),
            Bytes::copy_from_slice(&buf[v]),
        );
        m.vbucket = t.id;
        send(m)?;
    }
    Ok(())
}

/// Sends the rows of a rowid table with a key index ([`uses_pk_index`]) in key order
/// without a lookup per row: the table is read in rowid order (its pages in sequence) into
/// one buffer, then its rows are sent in the order of the rowids read from the key index
/// alone (a covering scan, in SQLite's own order of that key, collations included).
/// Returns false, having sent nothing, when the table holds more than
/// [`REORDER_MAX_BYTES`]; fails when the index and the table do not hold the same rowids.
fn read_reordered(
    file: Option<&SqliteFile>,
    conn: &rusqlite::Connection,
    t: &Table,
    send: &mut dyn FnMut(Message) -> Result<(), String>,
) -> Result<bool, String> {
    let err = |e: rusqlite::Error| format!("table {}: {e}", t.name);
    let cols: Vec<String> = t.columns.iter().map(|c| schema::quote(c)).collect();
    let name = schema::quote(&t.name);
    let pk = t.pk_positions();
    // The rows in rowid order: their rowids, and their key and value ranges in `buf`.
    let mut rowids: Vec<i64> = Vec::new();
    let mut ranges: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    let mut buf = Vec::new();
    let raw = match file {
        Some(file) => raw_root(conn, t).map_err(err)?.map(|root| (file, root)),
        None => None,
    };
    if let Some((file, root)) = raw {
        let mut rows = file.table(root);
        let n = t.columns.len();
        while let Some(row) = rows.next_row()? {
            // The values borrow the row: a buffer per row, on the stack for up to 16.
            let mut small = [ValueRef::Null; 16];
            let mut big;
            let vals: &mut [ValueRef<'_>] = if n <= small.len() {
                &mut small[..n]
            } else {
                big = vec![ValueRef::Null; n];
                &mut big
            };
            row.columns(vals)?;
            rowids.push(row.rowid);
            ranges.push(put_row(t, None, |i| Ok(vals[i]), &pk, &mut buf)?);
            if buf.len() > REORDER_MAX_BYTES {
                return Ok(false);
            }
        }
    } else {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT rowid, {} FROM {name} ORDER BY rowid",
                cols.join(", ")
            ))
            .map_err(err)?;
        let mut q = stmt.query([]).map_err(err)?;
        while let Some(r) = q.next().map_err(err)? {
            rowids.push(r.get(0).map_err(err)?);
            ranges.push(row_message(t, r, true, &pk, &mut buf)?);
            if buf.len() > REORDER_MAX_BYTES {
                return Ok(false);
            }
        }
    }
    let find = RowidIndex::new(&rowids);
    let buf = Bytes::from(buf);
    let keys: Vec<String> = t.pk.iter().map(|c| schema::quote(c)).collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT rowid FROM {name} ORDER BY {}",
            keys.join(", ")
        ))
        .map_err(err)?;
    let mut q = stmt.query([]).map_err(err)?;
    let mut sent = 0usize;
    while let Some(r) = q.next().map_err(err)? {
        let rowid: i64 = r.get(0).map_err(err)?;
        let i = find.position(&rowids, rowid).ok_or_else(|| {
            format!(
                "table {}: rowid {rowid} is in the primary key index, not in the table",
                t.name
            )
        })?;
        let (k, v) = &ranges[i];
        let mut m = Message::mutation(buf.slice(k.clone()), buf.slice(v.clone()));
        m.vbucket = t.id;
        send(m)?;
        sent += 1;
    }
    if sent != rowids.len() {
        return Err(format!(
            "table {}: {} rows in the table, {sent} in its primary key index",
            t.name,
            rowids.len()
        ));
    }
    Ok(true)
}

/// Finds a row by its rowid among rowids read in increasing order: a direct table when the
/// rowids are dense (the usual case: few deletions), a binary search otherwise.
struct RowidIndex {
    first: i64,
    /// Position + 1 of each rowid from `first` on (0: no such row); empty when sparse.
    dense: Vec<u32>,
}

impl RowidIndex {
    fn new(rowids: &[i64]) -> RowidIndex {
        let (Some(&first), Some(&last)) = (rowids.first(), rowids.last()) else {
            return RowidIndex {
                first: 0,
                dense: Vec::new(),
            };
        };
        let span = last.abs_diff(first);
        let mut dense = Vec::new();
        if span < rowids.len() as u64 * 4 + 1024 && rowids.len() < u32::MAX as usize {
            dense = vec![0u32; span as usize + 1];
            for (i, id) in rowids.iter().enumerate() {
                dense[id.abs_diff(first) as usize] = i as u32 + 1;
            }
        }
        RowidIndex { first, dense }
    }

    fn position(&self, rowids: &[i64], rowid: i64) -> Option<usize> {
        if self.dense.is_empty() {
            return rowids.binary_search(&rowid).ok();
        }
        if rowid < self.first {
            return None;
        }
        let slot = *self.dense.get(rowid.abs_diff(self.first) as usize)?;
        (slot > 0).then(|| slot as usize - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(conn: &rusqlite::Connection, name: &str) -> Table {
        schema::tables(conn)
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
    }

    /// The tables of a reference base are read from the pages; one whose records may not
    /// hold what SQLite returns goes through SQLite.
    #[test]
    fn raw_reading_is_kept_to_tables_whose_records_are_their_rows() {
        let d = tempfile::tempdir().unwrap();
        let spec = pump_meta2::generate::BaseSpec {
            ns: "OPENIO".into(),
            account: "a".into(),
            container: "c".into(),
            peers: vec!["127.0.0.1:6000".into()],
            aliases: 3,
        };
        let path = pump_meta2::generate::write_base(d.path(), &spec).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE reals (k TEXT PRIMARY KEY, r DOUBLE PRECISION);
             CREATE TABLE added (k TEXT PRIMARY KEY);
             INSERT INTO added VALUES ('old');
             ALTER TABLE added ADD COLUMN d DEFAULT 7;
             CREATE TABLE nulls (k TEXT PRIMARY KEY, v BLOB DEFAULT NULL, n INT DEFAULT null);",
        )
        .unwrap();
        assert!(raw_file(&path, &conn).unwrap().is_some());
        for name in [
            "contents",
            "chunks",
            "aliases",
            "properties",
            "admin",
            "nulls",
        ] {
            let t = table(&conn, name);
            assert!(raw_root(&conn, &t).unwrap().is_some(), "{name}");
        }
        for name in ["reals", "added"] {
            let t = table(&conn, name);
            assert_eq!(raw_root(&conn, &t).unwrap(), None, "{name}");
        }
        // A -wal file beside the base may hold pages the file does not have yet.
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::write(&wal, b"frames").unwrap();
        assert!(raw_file(&path, &conn).unwrap().is_none());
    }
}
