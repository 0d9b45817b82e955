//! A writer of the SQLite database file format (<https://www.sqlite.org/fileformat2.html>),
//! the counterpart of [`crate::sqlite_file`]: it lays out b-tree pages itself, bottom-up,
//! from rows given in key order, without SQLite's virtual machine. Building a base this way
//! costs a fraction of what `INSERT` and `CREATE INDEX` spend on it (each row is encoded
//! once and every page written once, in order).
//!
//! ```text
//! file       page 1: the 100-byte header, then the root of sqlite_schema; every other page
//!            is written once, in page order, as the trees are built (no free page, no
//!            journal, no WAL: file format versions 1/1, schema format 4, UTF-8)
//! table tree rows pushed in rowid order: leaves filled as they come; each interior cell
//!            holds a child and the child's largest rowid, the last child is the right-most
//!            pointer
//! index tree records pushed in sorted order (the caller sorts them with [`compare`]): an
//!            interior cell holds a child and a whole record, the one that sits between that
//!            child and the next, so every record is in the tree exactly once
//! cells      payload over the page's local limit spills into a chain of overflow pages (next
//!            page u32, then usable - 4 bytes); a cell takes at least 4 bytes of the page
//! ```
//!
//! What it does not do: free pages, auto-vacuum, reserved bytes, UTF-16, WITHOUT ROWID
//! tables' row format (an index tree of whole rows: the caller would need to order them),
//! or anything that needs an expression evaluated (partial and expression indexes). A
//! caller asks SQLite for those after [`FileBuilder::finish`].

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;

use crate::sqlite_file::MAGIC;

const INTERIOR_INDEX: u8 = 0x02;
const INTERIOR_TABLE: u8 = 0x05;
const LEAF_INDEX: u8 = 0x0A;
const LEAF_TABLE: u8 = 0x0D;

/// The header that precedes the b-tree page on page 1.
const FILE_HEADER: usize = 100;

/// Appends `v` as an SQLite varint (1 to 9 bytes, big-endian, 7 bits a byte but 8 in the
/// ninth).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    if v > 0x00ff_ffff_ffff_ffff {
        // Nine bytes: 8 x 7 bits, then a whole byte.
        let mut b = [0u8; 9];
        b[8] = v as u8;
        let mut rest = v >> 8;
        for i in (0..8).rev() {
            b[i] = (rest & 0x7f) as u8 | 0x80;
            rest >>= 7;
        }
        out.extend_from_slice(&b);
        return;
    }
    let mut b = [0u8; 9];
    let mut n = 0;
    let mut rest = v;
    while rest > 0 {
        b[n] = (rest & 0x7f) as u8;
        rest >>= 7;
        n += 1;
    }
    for i in (0..n).rev() {
        out.push(b[i] | if i > 0 { 0x80 } else { 0 });
    }
}

/// The bytes [`put_varint`] writes for `v`.
fn varint_len(v: u64) -> usize {
    if v > 0x00ff_ffff_ffff_ffff {
        9
    } else {
        (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
    }
}

/// The serial type of `v` and the bytes of its body.
fn serial(v: &ValueRef<'_>) -> (u64, usize) {
    match *v {
        ValueRef::Null => (0, 0),
        ValueRef::Integer(0) => (8, 0),
        ValueRef::Integer(1) => (9, 0),
        ValueRef::Integer(i) => match i {
            -0x80..=0x7f => (1, 1),
            -0x8000..=0x7fff => (2, 2),
            -0x80_0000..=0x7f_ffff => (3, 3),
            -0x8000_0000..=0x7fff_ffff => (4, 4),
            -0x8000_0000_0000..=0x7fff_ffff_ffff => (5, 6),
            _ => (6, 8),
        },
        ValueRef::Real(_) => (7, 8),
        ValueRef::Text(t) => (13 + 2 * t.len() as u64, t.len()),
        ValueRef::Blob(b) => (12 + 2 * b.len() as u64, b.len()),
    }
}

/// Appends the record of `values` (header size varint counting itself, a serial type per
/// value, then the bodies) to `out`. Text is written as given: UTF-8 for this file.
pub fn encode_record(values: &[ValueRef<'_>], out: &mut Vec<u8>) {
    let header: usize = values.iter().map(|v| varint_len(serial(v).0)).sum();
    // The header size counts its own varint.
    let mut own = 1;
    while varint_len((header + own) as u64) > own {
        own += 1;
    }
    put_varint(out, (header + own) as u64);
    for v in values {
        put_varint(out, serial(v).0);
    }
    for v in values {
        match *v {
            ValueRef::Null | ValueRef::Integer(0) | ValueRef::Integer(1) => {}
            ValueRef::Integer(i) => {
                let (_, n) = serial(v);
                out.extend_from_slice(&i.to_be_bytes()[8 - n..]);
            }
            ValueRef::Real(f) => out.extend_from_slice(&f.to_bits().to_be_bytes()),
            ValueRef::Text(b) | ValueRef::Blob(b) => out.extend_from_slice(b),
        }
    }
}

/// A text collation SQLite has built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collation {
    /// memcmp, then the shorter first.
    Binary,
    /// ASCII letters folded to lower case, then as BINARY.
    NoCase,
    /// Trailing spaces ignored, then as BINARY.
    RTrim,
}

impl Collation {
    /// The collation SQLite names `name` (case-insensitive), when built in.
    pub fn named(name: &str) -> Option<Collation> {
        match name.to_ascii_uppercase().as_str() {
            "BINARY" => Some(Collation::Binary),
            "NOCASE" => Some(Collation::NoCase),
            "RTRIM" => Some(Collation::RTrim),
            _ => None,
        }
    }

    fn compare(self, a: &[u8], b: &[u8]) -> Ordering {
        match self {
            Collation::Binary => a.cmp(b),
            Collation::NoCase => {
                let fold = |c: &u8| c.to_ascii_lowercase();
                a.iter().map(fold).cmp(b.iter().map(fold))
            }
            Collation::RTrim => {
                let trim = |s: &[u8]| s.len() - s.iter().rev().take_while(|&&c| c == b' ').count();
                a[..trim(a)].cmp(&b[..trim(b)])
            }
        }
    }
}

/// How an index orders one of its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOrder {
    pub collation: Collation,
    pub descending: bool,
}

impl KeyOrder {
    /// BINARY, ascending: the order of a rowid appended to an index record.
    pub const ROWID: KeyOrder = KeyOrder {
        collation: Collation::Binary,
        descending: false,
    };

    /// The order of two values of a column ordered this way.
    pub fn compare(&self, a: &ValueRef<'_>, b: &ValueRef<'_>) -> Ordering {
        let c = compare(a, b, self.collation);
        if self.descending {
            c.reverse()
        } else {
            c
        }
    }
}

/// SQLite's order of two values of an index column: NULL, then numbers (integers and reals
/// compared by value), then text (by `collation`), then blobs (memcmp, then the shorter).
pub fn compare(a: &ValueRef<'_>, b: &ValueRef<'_>, collation: Collation) -> Ordering {
    use ValueRef::*;
    let class = |v: &ValueRef<'_>| match v {
        Null => 0,
        Integer(_) | Real(_) => 1,
        Text(_) => 2,
        Blob(_) => 3,
    };
    match (a, b) {
        (Integer(x), Integer(y)) => x.cmp(y),
        (Real(x), Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Integer(x), Real(y)) => int_float(*x, *y),
        (Real(x), Integer(y)) => int_float(*y, *x).reverse(),
        (Text(x), Text(y)) => collation.compare(x, y),
        (Blob(x), Blob(y)) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// An integer against a real, exactly (no rounding of either through the other's type).
fn int_float(i: i64, r: f64) -> Ordering {
    if r.is_nan() {
        // SQLite stores NaN as NULL; a NaN here would be a caller's value: after numbers.
        return Ordering::Less;
    }
    // 2^63: i64 covers [-2^63, 2^63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if r < -TWO_63 {
        return Ordering::Greater;
    }
    if r >= TWO_63 {
        return Ordering::Less;
    }
    let t = r.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(r - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

/// SQLite's order of two index keys, column by column with each column's order.
pub fn compare_keys(a: &[ValueRef<'_>], b: &[ValueRef<'_>], orders: &[KeyOrder]) -> Ordering {
    for ((x, y), o) in a.iter().zip(b).zip(orders) {
        let c = o.compare(x, y);
        if c != Ordering::Equal {
            return c;
        }
    }
    a.len().cmp(&b.len())
}

/// A row of sqlite_schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRow {
    /// `table`, `index`, `view` or `trigger`.
    pub kind: String,
    pub name: String,
    pub table: String,
    /// The root page of its tree (0 for views and triggers).
    pub root: u32,
    /// Its CREATE statement; `None` for an index SQLite makes for a UNIQUE or PRIMARY KEY
    /// constraint.
    pub sql: Option<String>,
}

/// A database file being written, page after page.
pub struct FileBuilder {
    path: PathBuf,
    out: BufWriter<File>,
    page_size: usize,
    /// The number the next page written gets.
    next: u32,
    scratch: Vec<u8>,
    /// `PRAGMA user_version` and `application_id` of the file (header bytes 60 and 68).
    user_version: u32,
    application_id: u32,
}

/// True for a page size SQLite knows: a power of two from 512 to 65536.
pub fn is_page_size(n: usize) -> bool {
    (512..=65536).contains(&n) && n.is_power_of_two()
}

impl FileBuilder {
    /// Creates `path` (which must not exist, mode 0600) for a database of `page_size`-byte pages (a
    /// power of two from 512 to 65536). Page 1 is written by [`FileBuilder::finish`].
    pub fn create(path: &Path, page_size: usize) -> Result<FileBuilder, String> {
        if !is_page_size(page_size) {
            return Err(format!("{}: page size {page_size}", path.display()));
        }
        // New and private (0600, never through a planted file or symlink): the caller gives
        // it its final mode before it takes its final name.
        let file =
            pump_files::create_private(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut b = FileBuilder {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            page_size,
            next: 1,
            scratch: Vec::new(),
            user_version: 0,
            application_id: 0,
        };
        // Page 1's place; its bytes come last.
        b.write_page(&vec![0u8; page_size])?;
        Ok(b)
    }

    /// The file's `PRAGMA user_version` and `application_id` (0 and 0 otherwise).
    pub fn set_ids(&mut self, user_version: u32, application_id: u32) {
        self.user_version = user_version;
        self.application_id = application_id;
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> String {
        format!("{}: {e}", self.path.display())
    }

    fn write_page(&mut self, page: &[u8]) -> Result<u32, String> {
        debug_assert_eq!(page.len(), self.page_size);
        self.out.write_all(page).map_err(|e| self.error(e))?;
        let n = self.next;
        self.next = self
            .next
            .checked_add(1)
            .ok_or_else(|| self.error("more pages than a database holds"))?;
        Ok(n)
    }

    /// The cell of a `payload` in a tree of `kind` (`prefix` before it: the payload size,
    /// and the rowid in a table leaf), its spill into overflow pages written now.
    fn cell(
        &mut self,
        index: bool,
        rowid: Option<i64>,
        payload: &[u8],
        cell: &mut Vec<u8>,
    ) -> Result<(), String> {
        let u = self.page_size;
        let max_local = if index {
            (u - 12) * 64 / 255 - 23
        } else {
            u - 35
        };
        let min_local = (u - 12) * 32 / 255 - 23;
        let p = payload.len();
        let local = if p <= max_local {
            p
        } else {
            let k = min_local + (p - min_local) % (u - 4);
            if k <= max_local {
                k
            } else {
                min_local
            }
        };
        cell.clear();
        put_varint(cell, p as u64);
        if let Some(r) = rowid {
            put_varint(cell, r as u64);
        }
        cell.extend_from_slice(&payload[..local]);
        if local < p {
            // The chain is written in order: its first page is the next page written.
            let chunks: Vec<&[u8]> = payload[local..].chunks(u - 4).collect();
            cell.extend_from_slice(&self.next.to_be_bytes());
            let mut page = std::mem::take(&mut self.scratch);
            for (i, chunk) in chunks.iter().enumerate() {
                page.clear();
                let next = if i + 1 < chunks.len() {
                    self.next + 1
                } else {
                    0
                };
                page.extend_from_slice(&next.to_be_bytes());
                page.extend_from_slice(chunk);
                page.resize(u, 0);
                self.write_page(&page)?;
            }
            self.scratch = page;
        }
        Ok(())
    }

    /// Writes sqlite_schema (rooted at page 1) and the file header, and flushes the file. The
    /// caller syncs it.
    pub fn finish(mut self, schema: &[SchemaRow]) -> Result<(), String> {
        let mut tree = TreeBuilder::schema();
        let mut record = Vec::new();
        for (i, row) in schema.iter().enumerate() {
            record.clear();
            let sql = row
                .sql
                .as_deref()
                .map_or(ValueRef::Null, |s| ValueRef::Text(s.as_bytes()));
            encode_record(
                &[
                    ValueRef::Text(row.kind.as_bytes()),
                    ValueRef::Text(row.name.as_bytes()),
                    ValueRef::Text(row.table.as_bytes()),
                    ValueRef::Integer(row.root as i64),
                    sql,
                ],
                &mut record,
            );
            tree.push_row(&mut self, i as i64 + 1, &record)?;
        }
        let page1 = tree.finish_at_page1(&mut self)?;
        let pages = self.next - 1;
        let mut first = page1;
        first[..16].copy_from_slice(MAGIC);
        let size = if self.page_size == 65536 {
            1
        } else {
            self.page_size as u16
        };
        first[16..18].copy_from_slice(&size.to_be_bytes());
        first[18] = 1; // write version: legacy (no WAL)
        first[19] = 1; // read version
        first[20] = 0; // reserved bytes per page
        first[21] = 64; // max embedded payload fraction
        first[22] = 32; // min embedded payload fraction
        first[23] = 32; // leaf payload fraction
        first[24..28].copy_from_slice(&1u32.to_be_bytes()); // file change counter
        first[28..32].copy_from_slice(&pages.to_be_bytes());
        first[40..44].copy_from_slice(&1u32.to_be_bytes()); // schema cookie
        first[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
        first[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
        first[60..64].copy_from_slice(&self.user_version.to_be_bytes());
        first[68..72].copy_from_slice(&self.application_id.to_be_bytes());
        first[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for
        first[96..100].copy_from_slice(&(rusqlite::version_number() as u32).to_be_bytes());
        let e = |e: std::io::Error| format!("{}: {e}", self.path.display());
        self.out.flush().map_err(e)?;
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(e)?;
        file.write_all(&first).map_err(e)?;
        file.flush().map_err(e)?;
        Ok(())
    }
}

/// The cells of one page being filled.
struct PageCells {
    body: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes the cells take in the page: each at least 4, and its 2-byte pointer.
    used: usize,
}

impl PageCells {
    fn new() -> PageCells {
        PageCells {
            body: Vec::new(),
            ends: Vec::new(),
            used: 0,
        }
    }

    fn taken(cell: usize) -> usize {
        cell.max(4) + 2
    }

    fn fits(&self, cell: usize, room: usize) -> bool {
        self.used + Self::taken(cell) <= room
    }

    fn push(&mut self, cell: &[u8]) {
        self.body.extend_from_slice(cell);
        self.ends.push(self.body.len());
        self.used += Self::taken(cell.len());
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.body.clear();
        self.ends.clear();
        self.used = 0;
    }

    fn cell(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.body[start..self.ends[i]]
    }

    /// Lays the page out in `page` (its b-tree header at `at`: 100 on page 1): header,
    /// pointers, then the cells from the end of the page down.
    fn render(&self, page: &mut [u8], at: usize, kind: u8, right: Option<u32>) {
        let header = if right.is_some() { 12 } else { 8 };
        let mut content = page.len();
        for i in 0..self.ends.len() {
            let cell = self.cell(i);
            content -= cell.len().max(4);
            page[content..content + cell.len()].copy_from_slice(cell);
            let p = at + header + 2 * i;
            page[p..p + 2].copy_from_slice(&(content as u16).to_be_bytes());
        }
        page[at] = kind;
        page[at + 1..at + 3].copy_from_slice(&[0, 0]);
        page[at + 3..at + 5].copy_from_slice(&(self.ends.len() as u16).to_be_bytes());
        // 65536 is written 0.
        page[at + 5..at + 7].copy_from_slice(&(content as u16).to_be_bytes());
        page[at + 7] = 0;
        if let Some(r) = right {
            page[at + 8..at + 12].copy_from_slice(&r.to_be_bytes());
        }
    }
}

/// One b-tree built bottom-up: a table's rows in rowid order ([`TreeBuilder::table`]) or an
/// index's records in sorted order ([`TreeBuilder::index`]).
pub struct TreeBuilder {
    index: bool,
    /// The tree's pages leave this many bytes of a page unused: 100 for sqlite_schema, whose
    /// root is page 1 (after the file header) and could be any of its pages.
    reserve: usize,
    leaf: PageCells,
    /// Each finished child with the cell body that follows it in its parent: a table's
    /// largest rowid in it, or for an index the record between it and the next child.
    children: Vec<(u32, Vec<u8>)>,
    /// A table: the last rowid pushed. An index: the record held back as the divider after
    /// the current leaf, placed once the next record shows it is not the last.
    last_rowid: Option<i64>,
    held: Option<Vec<u8>>,
    page: Vec<u8>,
    /// The cell being made, reused row after row.
    cell: Vec<u8>,
}

impl TreeBuilder {
    /// A table tree (rowids pushed in increasing order).
    pub fn table() -> TreeBuilder {
        TreeBuilder::new(false, 0)
    }

    /// An index tree (records pushed in the index's order).
    pub fn index() -> TreeBuilder {
        TreeBuilder::new(true, 0)
    }

    fn schema() -> TreeBuilder {
        TreeBuilder::new(false, FILE_HEADER)
    }

    fn new(index: bool, reserve: usize) -> TreeBuilder {
        TreeBuilder {
            index,
            reserve,
            leaf: PageCells::new(),
            children: Vec::new(),
            last_rowid: None,
            held: None,
            page: Vec::new(),
            cell: Vec::new(),
        }
    }

    fn room(&self, f: &FileBuilder, interior: bool) -> usize {
        f.page_size - self.reserve - if interior { 12 } else { 8 }
    }

    fn write(
        &mut self,
        f: &mut FileBuilder,
        cells: &PageCells,
        kind: u8,
        right: Option<u32>,
    ) -> Result<u32, String> {
        self.page.clear();
        self.page.resize(f.page_size, 0);
        cells.render(&mut self.page, 0, kind, right);
        f.write_page(&self.page)
    }

    /// Appends a row to a table tree; `rowid` must be above the last one's.
    pub fn push_row(
        &mut self,
        f: &mut FileBuilder,
        rowid: i64,
        record: &[u8],
    ) -> Result<(), String> {
        debug_assert!(!self.index);
        if self.last_rowid.is_some_and(|last| rowid <= last) {
            return Err(f.error(format!(
                "rowid {rowid} after rowid {}",
                self.last_rowid.unwrap_or(0)
            )));
        }
        let mut cell = std::mem::take(&mut self.cell);
        f.cell(false, Some(rowid), record, &mut cell)?;
        if !self.leaf.fits(cell.len(), self.room(f, false)) {
            let leaf = std::mem::replace(&mut self.leaf, PageCells::new());
            let no = self.write(f, &leaf, LEAF_TABLE, None)?;
            let mut key = Vec::with_capacity(9);
            put_varint(&mut key, self.last_rowid.unwrap_or(0) as u64);
            self.children.push((no, key));
            self.leaf = leaf;
            self.leaf.clear();
        }
        self.leaf.push(&cell);
        self.cell = cell;
        self.last_rowid = Some(rowid);
        Ok(())
    }

    /// Appends a record to an index tree; records come in the index's order (the caller
    /// sorts them: [`compare_keys`]).
    pub fn push_record(&mut self, f: &mut FileBuilder, record: &[u8]) -> Result<(), String> {
        debug_assert!(self.index);
        // The held divider is not the last record: it goes up after the current leaf.
        if let Some(divider) = self.held.take() {
            let leaf = std::mem::replace(&mut self.leaf, PageCells::new());
            let no = self.write(f, &leaf, LEAF_INDEX, None)?;
            self.children.push((no, divider));
            self.leaf = leaf;
            self.leaf.clear();
        }
        let mut cell = std::mem::take(&mut self.cell);
        f.cell(true, None, record, &mut cell)?;
        if self.leaf.fits(cell.len(), self.room(f, false)) {
            self.leaf.push(&cell);
            self.cell = cell;
        } else {
            self.held = Some(cell);
        }
        Ok(())
    }

    /// Writes what is left of the tree; returns its root page.
    pub fn finish(mut self, f: &mut FileBuilder) -> Result<u32, String> {
        let last = self.close_leaves(f)?;
        match last {
            Some(leaf) => {
                let kind = self.leaf_kind();
                self.write(f, &leaf, kind, None)
            }
            None => self.interior_levels(f, None),
        }
    }

    fn leaf_kind(&self) -> u8 {
        if self.index {
            LEAF_INDEX
        } else {
            LEAF_TABLE
        }
    }

    fn interior_kind(&self) -> u8 {
        if self.index {
            INTERIOR_INDEX
        } else {
            INTERIOR_TABLE
        }
    }

    /// Ends the leaf level. Returns the last leaf when it is the whole tree (the root);
    /// otherwise writes it as the last of `children` (its cell body unused: the right-most
    /// pointer has none).
    fn close_leaves(&mut self, f: &mut FileBuilder) -> Result<Option<PageCells>, String> {
        if let Some(held) = self.held.take() {
            // The last record did not fit the leaf, and it cannot go up as a divider with
            // no leaf after it: the leaf's own last record goes up instead, and the held
            // one makes the last leaf.
            let k = self.leaf.ends.len().checked_sub(1).filter(|&k| k > 0);
            let k = k.ok_or_else(|| f.error("an index record too big for a page"))?;
            let divider = self.leaf.cell(k).to_vec();
            let mut kept = PageCells::new();
            for j in 0..k {
                kept.push(self.leaf.cell(j));
            }
            let no = self.write(f, &kept, LEAF_INDEX, None)?;
            self.children.push((no, divider));
            self.leaf.clear();
            self.leaf.push(&held);
        }
        let leaf = std::mem::replace(&mut self.leaf, PageCells::new());
        if self.children.is_empty() {
            return Ok(Some(leaf));
        }
        let kind = self.leaf_kind();
        let no = self.write(f, &leaf, kind, None)?;
        self.children.push((no, Vec::new()));
        Ok(None)
    }

    /// Builds the interior levels over `children` (the last one's cell body is unused: it
    /// is the right-most pointer); writes the root at page 1 when `page1` holds its buffer.
    fn interior_levels(
        &mut self,
        f: &mut FileBuilder,
        mut page1: Option<&mut Vec<u8>>,
    ) -> Result<u32, String> {
        let room = self.room(f, true);
        let kind = self.interior_kind();
        loop {
            let mut level = std::mem::take(&mut self.children);
            let (last, _) = level.pop().ok_or_else(|| f.error("an empty tree level"))?;
            // The whole level in one page: the root.
            let all: usize = level
                .iter()
                .map(|(_, b)| PageCells::taken(4 + b.len()))
                .sum();
            let mut cell = Vec::new();
            if all <= room {
                let mut cells = PageCells::new();
                for (child, body) in &level {
                    interior_cell(*child, body, &mut cell);
                    cells.push(&cell);
                }
                return match page1.as_deref_mut() {
                    Some(p) => {
                        cells.render(p, FILE_HEADER, kind, Some(last));
                        Ok(1)
                    }
                    None => self.write(f, &cells, kind, Some(last)),
                };
            }
            let mut cells = PageCells::new();
            let n = level.len();
            let mut i = 0;
            while i < n {
                let (child, ref body) = level[i];
                interior_cell(child, body, &mut cell);
                if cells.fits(cell.len(), room) {
                    cells.push(&cell);
                    i += 1;
                    continue;
                }
                // The page is full: `child` is its right-most pointer and `body` goes up.
                // Unless nothing would follow (the next page would hold no cell, only the
                // last child): then the page's own last cell goes up instead, and this
                // one starts the next page.
                if i + 1 == n && cells.ends.len() >= 2 {
                    let k = cells.ends.len() - 1;
                    let (up_child, up_body) = split_cell(cells.cell(k));
                    let mut kept = PageCells::new();
                    for j in 0..k {
                        kept.push(cells.cell(j));
                    }
                    let no = self.write(f, &kept, kind, Some(up_child))?;
                    self.children.push((no, up_body));
                    cells.clear();
                    cells.push(&cell);
                    i += 1;
                    continue;
                }
                let no = self.write(f, &cells, kind, Some(child))?;
                self.children.push((no, body.clone()));
                cells.clear();
                i += 1;
            }
            if cells.is_empty() {
                return Err(f.error("an interior page of no cell"));
            }
            let no = self.write(f, &cells, kind, Some(last))?;
            self.children.push((no, Vec::new()));
        }
    }

    /// Writes sqlite_schema's root at page 1 (its other pages where they fall); returns page
    /// 1's bytes, the file header still to be written.
    fn finish_at_page1(mut self, f: &mut FileBuilder) -> Result<Vec<u8>, String> {
        let mut page1 = vec![0u8; f.page_size];
        match self.close_leaves(f)? {
            Some(leaf) => leaf.render(&mut page1, FILE_HEADER, LEAF_TABLE, None),
            None => {
                self.interior_levels(f, Some(&mut page1))?;
            }
        }
        Ok(page1)
    }
}

/// The interior cell of `child` and the body after it, into `cell`.
fn interior_cell(child: u32, body: &[u8], cell: &mut Vec<u8>) {
    cell.clear();
    cell.extend_from_slice(&child.to_be_bytes());
    cell.extend_from_slice(body);
}

/// An interior cell split into its child and the body after it.
fn split_cell(cell: &[u8]) -> (u32, Vec<u8>) {
    (
        u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]),
        cell[4..].to_vec(),
    )
}

#[cfg(test)]
mod tests;
