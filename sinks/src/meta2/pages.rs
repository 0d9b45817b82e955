//! A table built as pages ([`pump_formats::sqlite_build`]) instead of through `INSERT`: its
//! rows are written to the table's b-tree as they come, and each index's keys are kept,
//! sorted in SQLite's order at the end and written as the index's b-tree. Keys that outgrow
//! the memory given to the table's indexes are sorted in runs kept on disk, merged at the end
//! (`runs.rs`).
//!
//! What a table needs for that is read from SQLite itself: its statements are run on an
//! in-memory database ([`plan`]), whose sqlite_schema gives the rows to write (with the
//! constraint indexes SQLite adds) and whose `pragma_index_xinfo` gives each index's columns,
//! collations and directions. A table whose layout this builder does not know (WITHOUT
//! ROWID, generated columns, AUTOINCREMENT, a virtual table) is inserted by SQLite instead,
//! after the file is written; so is an index on an expression, a partial index, or one with a
//! collation SQLite does not have built in: those are written empty, in their place in
//! sqlite_schema, and filled by `REINDEX`.

use std::cmp::Ordering;
use std::path::PathBuf;

use pump_formats::sqlite_build::{
    encode_record, Collation, FileBuilder, KeyOrder, SchemaRow, TreeBuilder,
};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::runs::{unique_violation, Merge, Runs};

/// A row of sqlite_schema as the in-memory database gave it, its root page still to come.
#[derive(Debug, Clone)]
struct Entry {
    kind: String,
    name: String,
    sql: Option<String>,
}

fn sql_err(table: &str) -> impl Fn(rusqlite::Error) -> String + '_ {
    move |e| format!("table {table}: {e}")
}

/// The memory a table's index keys may take before they are sorted in runs on disk, and the
/// directory of those runs' files.
#[derive(Debug, Clone)]
pub(super) struct SortMemory {
    pub bytes: usize,
    pub dir: PathBuf,
}

/// Reads how `table` (just created on the in-memory `conn`) is laid out; `None` when SQLite
/// builds the whole table.
pub(super) fn plan(
    conn: &Connection,
    table: &str,
    sort: &SortMemory,
) -> Result<Option<PagedTable>, String> {
    let e = sql_err(table);
    let entries: Vec<Entry> = conn
        .prepare("SELECT type, name, sql FROM sqlite_schema WHERE tbl_name = ?1 ORDER BY rowid")
        .map_err(&e)?
        .query_map([table], |r| {
            Ok(Entry {
                kind: r.get(0)?,
                name: r.get(1)?,
                sql: r.get(2)?,
            })
        })
        .map_err(&e)?
        .collect::<Result<_, _>>()
        .map_err(&e)?;
    let create = entries
        .iter()
        .find(|x| x.kind == "table")
        .and_then(|x| x.sql.clone())
        .unwrap_or_default()
        .to_ascii_uppercase();
    let hidden: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_xinfo(?1) WHERE hidden != 0",
            [table],
            |r| r.get(0),
        )
        .map_err(&e)?;
    let whole_by_sqlite = create.starts_with("CREATE VIRTUAL")
        || create.contains("AUTOINCREMENT")
        || hidden != 0
        || pump_meta2::schema::without_rowid(conn, table).map_err(&e)?;
    if whole_by_sqlite {
        return Ok(None);
    }
    let pk: Vec<usize> = conn
        .prepare("SELECT cid FROM pragma_table_info(?1) WHERE pk > 0")
        .map_err(&e)?
        .query_map([table], |r| r.get(0))
        .map_err(&e)?
        .collect::<Result<_, _>>()
        .map_err(&e)?;
    let list: Vec<(String, bool, String, bool)> = conn
        .prepare("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1)")
        .map_err(&e)?
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(&e)?
        .collect::<Result<_, _>>()
        .map_err(&e)?;
    // An INTEGER PRIMARY KEY is the rowid (no index of origin "pk" then): its column is
    // stored NULL in the record.
    let alias = match pk.as_slice() {
        [c] if !list.iter().any(|(_, _, origin, _)| origin == "pk") => Some(*c),
        _ => None,
    };
    let mut indexes = Vec::new();
    let mut by_sqlite = Vec::new();
    for (name, unique, origin, partial) in list {
        let key = if partial {
            None
        } else {
            index_key(conn, &name).map_err(&e)?
        };
        match key {
            Some((columns, orders)) => indexes.push(IndexBuild {
                name,
                unique,
                columns,
                orders,
                keys: Vec::new(),
                rowids: Vec::new(),
                arena: Vec::new(),
                dir: sort.dir.clone(),
                runs: None,
            }),
            // A constraint's index has no statement of its own to run later: the whole
            // table goes to SQLite.
            None if origin != "c" => return Ok(None),
            None => by_sqlite.push(name),
        }
    }
    Ok(Some(PagedTable {
        name: table.to_string(),
        entries,
        tree: Some(TreeBuilder::table()),
        alias,
        next_rowid: 1,
        indexes,
        sort_memory: sort.bytes,
        record: Vec::new(),
        by_sqlite,
        sorting: None,
        roots: Vec::new(),
    }))
}

/// An index's key columns (table column numbers) and their orders, when this builder can
/// order them: plain columns, built-in collations, the rowid last.
fn index_key(
    conn: &Connection,
    index: &str,
) -> rusqlite::Result<Option<(Vec<usize>, Vec<KeyOrder>)>> {
    let cols: Vec<(i64, bool, Option<String>, bool)> = conn
        .prepare("SELECT cid, \"desc\", coll, key FROM pragma_index_xinfo(?1) ORDER BY seqno")?
        .query_map([index], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut columns = Vec::new();
    let mut orders = Vec::new();
    let mut rowid_last = false;
    for (cid, desc, coll, key) in cols {
        if !key {
            // Of a rowid table, only the rowid follows the key.
            rowid_last = cid == -1 && !rowid_last;
            continue;
        }
        let collation = coll
            .as_deref()
            .map_or(Some(Collation::Binary), Collation::named);
        match (usize::try_from(cid), collation) {
            (Ok(c), Some(collation)) => {
                columns.push(c);
                orders.push(KeyOrder {
                    collation,
                    descending: desc,
                });
            }
            _ => return Ok(None),
        }
    }
    Ok((rowid_last && !columns.is_empty()).then_some((columns, orders)))
}

/// A value of an index key, its text or blob kept in the index's arena.
#[derive(Clone, Copy)]
enum KeyVal {
    Null,
    Int(i64),
    Real(f64),
    Text(u32, u32),
    Blob(u32, u32),
}

/// The keys of one index, gathered row by row.
struct IndexBuild {
    name: String,
    unique: bool,
    columns: Vec<usize>,
    orders: Vec<KeyOrder>,
    /// `columns.len()` values per row.
    keys: Vec<KeyVal>,
    rowids: Vec<i64>,
    arena: Vec<u8>,
    /// Where the runs' file is made.
    dir: PathBuf,
    /// The runs sorted so far, once the table's keys outgrew its sort memory.
    runs: Option<Runs>,
}

impl IndexBuild {
    fn add(
        &mut self,
        rowid: i64,
        cells: &[ValueRef<'_>],
        alias: Option<usize>,
    ) -> Result<(), String> {
        for i in 0..self.columns.len() {
            let c = self.columns[i];
            let v = if Some(c) == alias {
                KeyVal::Int(rowid)
            } else {
                match cells[c] {
                    ValueRef::Null => KeyVal::Null,
                    ValueRef::Integer(i) => KeyVal::Int(i),
                    ValueRef::Real(f) => KeyVal::Real(f),
                    ValueRef::Text(t) => {
                        let (at, len) = self.keep(t)?;
                        KeyVal::Text(at, len)
                    }
                    ValueRef::Blob(b) => {
                        let (at, len) = self.keep(b)?;
                        KeyVal::Blob(at, len)
                    }
                }
            };
            self.keys.push(v);
        }
        self.rowids.push(rowid);
        Ok(())
    }

    /// The bytes the keys gathered so far hold.
    fn memory(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<KeyVal>()
            + self.rowids.capacity() * 8
            + self.arena.capacity()
    }

    /// Sorts the keys gathered so far into a run on disk, and starts afresh.
    fn spill(&mut self) -> Result<(), String> {
        let (records, ends) = self.sorted_records()?;
        let runs = match &mut self.runs {
            Some(r) => r,
            None => self.runs.insert(Runs::new(&self.name, &self.dir)?),
        };
        runs.push(&records, &ends)?;
        // Given back: the next run grows from nothing, and the memory counted is the memory
        // held.
        self.keys = Vec::new();
        self.rowids = Vec::new();
        self.arena = Vec::new();
        Ok(())
    }

    /// The index's records in order: sorted in memory, or merged from its runs.
    fn finish(mut self) -> Result<SortedIndex, String> {
        let keys = if self.runs.is_none() {
            let (records, ends) = self.sorted_records()?;
            SortedKeys::Memory { records, ends }
        } else {
            if !self.rowids.is_empty() {
                self.spill()?;
            }
            let runs = self.runs.take().expect("checked above");
            SortedKeys::Runs(runs.merge(&self.orders, self.unique)?)
        };
        Ok(SortedIndex {
            name: self.name,
            keys,
        })
    }

    fn keep(&mut self, b: &[u8]) -> Result<(u32, u32), String> {
        let at = u32::try_from(self.arena.len()).ok();
        let len = u32::try_from(b.len()).ok();
        self.arena.extend_from_slice(b);
        match (at, len, u32::try_from(self.arena.len())) {
            (Some(at), Some(len), Ok(_)) => Ok((at, len)),
            _ => Err(format!("index {}: over 4 GiB of keys", self.name)),
        }
    }

    fn value(&self, k: KeyVal) -> ValueRef<'_> {
        let slice = |at: u32, len: u32| &self.arena[at as usize..(at + len) as usize];
        match k {
            KeyVal::Null => ValueRef::Null,
            KeyVal::Int(i) => ValueRef::Integer(i),
            KeyVal::Real(f) => ValueRef::Real(f),
            KeyVal::Text(at, len) => ValueRef::Text(slice(at, len)),
            KeyVal::Blob(at, len) => ValueRef::Blob(slice(at, len)),
        }
    }

    fn key(&self, i: u32) -> &[KeyVal] {
        let n = self.columns.len();
        &self.keys[i as usize * n..(i as usize + 1) * n]
    }

    /// The order of rows `a` and `b`'s keys, without the rowid.
    fn compare_keys(&self, a: u32, b: u32) -> Ordering {
        for ((x, y), o) in self.key(a).iter().zip(self.key(b)).zip(&self.orders) {
            let c = o.compare(&self.value(*x), &self.value(*y));
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    }

    fn compare(&self, a: u32, b: u32) -> Ordering {
        self.compare_keys(a, b)
            .then_with(|| self.rowids[a as usize].cmp(&self.rowids[b as usize]))
    }

    /// A number whose order never contradicts the index's order of the first key column
    /// (equal numbers say nothing): the storage class in the top byte, then for text and
    /// blobs their first 7 bytes (folded for NOCASE; none for RTRIM, where "a" and "a "
    /// are equal), inverted for a DESC column.
    fn prefix(&self, i: u32) -> u64 {
        let order = self.orders[0];
        let head = |class: u64, b: &[u8], fold: bool| {
            let mut p = [0u8; 8];
            p[0] = class as u8;
            for (d, s) in p[1..].iter_mut().zip(b) {
                *d = if fold { s.to_ascii_lowercase() } else { *s };
            }
            u64::from_be_bytes(p)
        };
        let p = match self.value(self.key(i)[0]) {
            ValueRef::Null => 0,
            ValueRef::Integer(_) | ValueRef::Real(_) => 1 << 56,
            ValueRef::Text(t) => match order.collation {
                Collation::Binary => head(2, t, false),
                Collation::NoCase => head(2, t, true),
                Collation::RTrim => 2 << 56,
            },
            ValueRef::Blob(b) => head(3, b, false),
        };
        if order.descending {
            !p
        } else {
            p
        }
    }

    /// The rows in the index's order (usually already so for a primary key, whose rows come
    /// in key order). A unique index with two equal keys (NULLs apart) is an error.
    fn sorted(&self) -> Result<Vec<u32>, String> {
        let n = u32::try_from(self.rowids.len())
            .map_err(|_| format!("index {}: over 4 G rows", self.name))?;
        let mut order: Vec<u32> = (0..n).collect();
        if !order.is_sorted_by(|a, b| self.compare(*a, *b) == Ordering::Less) {
            // Sorted by a prefix of the first column first: most comparisons are of two
            // integers beside each other, not of two keys looked up in the arena.
            let mut keyed: Vec<(u64, u32)> = order.iter().map(|&i| (self.prefix(i), i)).collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| self.compare(a.1, b.1)));
            order = keyed.into_iter().map(|(_, i)| i).collect();
        }
        if self.unique {
            for w in order.windows(2) {
                let null = self.key(w[0]).iter().any(|k| matches!(k, KeyVal::Null));
                if !null && self.compare_keys(w[0], w[1]) == Ordering::Equal {
                    return Err(unique_violation(
                        &self.name,
                        self.rowids[w[0] as usize],
                        self.rowids[w[1] as usize],
                    ));
                }
            }
        }
        Ok(order)
    }

    /// The index's records (key, then rowid) in its order, one after the other, and where
    /// each ends.
    fn sorted_records(&self) -> Result<(Vec<u8>, Vec<usize>), String> {
        let order = self.sorted()?;
        let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(self.columns.len() + 1);
        let mut records = Vec::with_capacity(self.arena.len() + order.len() * 16);
        let mut ends = Vec::with_capacity(order.len());
        for &i in &order {
            values.clear();
            values.extend(self.key(i).iter().map(|k| self.value(*k)));
            values.push(ValueRef::Integer(self.rowids[i as usize]));
            encode_record(&values, &mut records);
            ends.push(records.len());
        }
        Ok((records, ends))
    }
}

/// An index's records in order, made on a sorting thread, to be written as its b-tree.
struct SortedIndex {
    name: String,
    keys: SortedKeys,
}

enum SortedKeys {
    /// One record after the other, each ending at its `ends`.
    Memory { records: Vec<u8>, ends: Vec<usize> },
    /// Runs on disk, merged as they are read.
    Runs(Merge),
}

/// A table whose pages this builder writes.
pub(super) struct PagedTable {
    name: String,
    /// Its rows of sqlite_schema, in SQLite's order: the table, its constraint indexes, then
    /// its indexes and triggers; their root pages come as they are written.
    entries: Vec<Entry>,
    /// The table's b-tree, until its last row.
    tree: Option<TreeBuilder>,
    /// The column that is the rowid (INTEGER PRIMARY KEY).
    alias: Option<usize>,
    /// The next rowid given to a row of a table with a primary key (rows come in key order).
    next_rowid: i64,
    indexes: Vec<IndexBuild>,
    /// The bytes the indexes' keys may take together before one is sorted into a run.
    sort_memory: usize,
    record: Vec<u8>,
    /// Indexes SQLite fills (`REINDEX`) once the file is written: they are written empty,
    /// in their place in sqlite_schema.
    by_sqlite: Vec<String>,
    /// The threads sorting the indexes (one each) once the table has all its rows.
    sorting: Option<Vec<std::thread::JoinHandle<Result<SortedIndex, String>>>>,
    /// The root page of the table and of each index written, by name.
    roots: Vec<(String, u32)>,
}

impl PagedTable {
    /// Appends a row: `rowid` when the source sent one (a table without primary key),
    /// `cells` every column (changed: the rowid column's cell is set NULL, as stored).
    pub fn push(
        &mut self,
        f: &mut FileBuilder,
        rowid: Option<i64>,
        cells: &mut [ValueRef<'_>],
    ) -> Result<(), String> {
        let tree = self
            .tree
            .as_mut()
            .ok_or("a row after the end of its table")?;
        let rowid = match (self.alias, rowid) {
            (Some(c), _) => match cells[c] {
                ValueRef::Integer(r) => {
                    cells[c] = ValueRef::Null;
                    r
                }
                _ => return Err("an INTEGER PRIMARY KEY that is not an integer".into()),
            },
            (None, Some(r)) => r,
            (None, None) => {
                let r = self.next_rowid;
                self.next_rowid += 1;
                r
            }
        };
        for ix in &mut self.indexes {
            ix.add(rowid, cells, self.alias)?;
        }
        // Past the table's sort memory, the index holding the most goes to a run on disk.
        let held: usize = self.indexes.iter().map(IndexBuild::memory).sum();
        if held >= self.sort_memory {
            if let Some(ix) = self.indexes.iter_mut().max_by_key(|ix| ix.memory()) {
                ix.spill()?;
            }
        }
        self.record.clear();
        encode_record(cells, &mut self.record);
        tree.push_row(f, rowid, &self.record)
    }

    /// The table has all its rows: writes its last pages, and sorts its indexes, each on a
    /// thread of its own (the rows of the next table keep coming meanwhile).
    pub fn end(&mut self, f: &mut FileBuilder) -> Result<(), String> {
        if let Some(tree) = self.tree.take() {
            self.roots.push((self.name.clone(), tree.finish(f)?));
            // A thread per index; the first that fails gives the error.
            let sorting: Vec<_> = std::mem::take(&mut self.indexes)
                .into_iter()
                .map(|ix| std::thread::spawn(move || ix.finish()))
                .collect();
            self.sorting = Some(sorting);
        }
        Ok(())
    }

    /// Writes the indexes once they are sorted: at once when `wait`, else only when
    /// the sorting thread is done.
    pub fn write_indexes(&mut self, f: &mut FileBuilder, wait: bool) -> Result<(), String> {
        let done =
            |s: &mut Vec<std::thread::JoinHandle<_>>| wait || s.iter().all(|h| h.is_finished());
        let Some(sorting) = self.sorting.take_if(done) else {
            return Ok(());
        };
        for h in sorting {
            let ix = h
                .join()
                .map_err(|_| "a sorting thread panicked".to_string())??;
            let mut tree = TreeBuilder::index();
            match ix.keys {
                SortedKeys::Memory { records, ends } => {
                    let mut start = 0;
                    for end in ends {
                        tree.push_record(f, &records[start..end])?;
                        start = end;
                    }
                }
                SortedKeys::Runs(mut merge) => {
                    while let Some(record) = merge.next_record()? {
                        tree.push_record(f, record)?;
                    }
                }
            }
            self.roots.push((ix.name, tree.finish(f)?));
        }
        for name in &self.by_sqlite {
            self.roots
                .push((name.clone(), TreeBuilder::index().finish(f)?));
        }
        Ok(())
    }

    /// Writes what is left; returns the table's rows of sqlite_schema, with their root pages.
    pub fn finish(&mut self, f: &mut FileBuilder) -> Result<Vec<SchemaRow>, String> {
        self.end(f)?;
        self.write_indexes(f, true)?;
        let roots = std::mem::take(&mut self.roots);
        self.entries
            .iter()
            .map(|x| {
                let root = match x.kind.as_str() {
                    "table" | "index" => roots.iter().find(|(n, _)| *n == x.name).map(|r| r.1),
                    _ => Some(0),
                };
                let root = root.ok_or_else(|| format!("{} {} was not built", x.kind, x.name))?;
                Ok(SchemaRow {
                    kind: x.kind.clone(),
                    name: x.name.clone(),
                    table: self.name.clone(),
                    root,
                    sql: x.sql.clone(),
                })
            })
            .collect()
    }

    /// The statements that fill the indexes SQLite builds, to run once the file is written.
    pub fn later(&self) -> Vec<String> {
        self.by_sqlite
            .iter()
            .map(|n| format!("REINDEX {}", pump_meta2::schema::quote(n)))
            .collect()
    }
}
