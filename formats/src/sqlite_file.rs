//! A reader of the SQLite database file format itself (<https://www.sqlite.org/fileformat2.html>),
//! for the rows of one rowid table read in rowid order without SQLite's virtual machine: a
//! backup data file's rows cost a fraction of the CPU that a `SELECT` spends decoding them.
//!
//! ```text
//! header     100 bytes: "SQLite format 3\0", page size (u16 BE at 16, 1 = 65536), file
//!            format write/read versions at 18/19 (2 = WAL), reserved bytes per page at 20,
//!            payload fractions 64/32/32 at 21..24, text encoding at 56 (1 = UTF-8)
//! b-tree     page header at 0 (at 100 on page 1): type (0x05 interior table, 0x0D leaf
//!            table), first freeblock u16, cell count u16, content start u16, fragmented u8,
//!            right-most child u32 (interior only); then one u16 offset per cell
//! cells      interior: left child u32, rowid varint
//!            leaf: payload size varint, rowid varint, payload (the first `local` bytes,
//!            then the first overflow page u32 when it spills)
//! overflow   next page u32 (0 ends the chain), then usable - 4 bytes of payload
//! record     header size varint (counting itself), one serial type varint per column,
//!            then the column bodies in order
//! ```
//!
//! What this reader does not see: a `-wal` file's frames and a hot rollback journal. The
//! caller reads such a file through SQLite instead. Every offset is checked against its page:
//! a corrupt file is an error naming the file and the page, never a panic, and a page met
//! twice (a cycle) or a tree deeper than [`MAX_DEPTH`] ends the walk.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::types::ValueRef;

/// The first 16 bytes of every SQLite database file.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The deepest b-tree this reader walks (SQLite itself stops at 20).
pub const MAX_DEPTH: usize = 40;

const INTERIOR_TABLE: u8 = 0x05;
const LEAF_TABLE: u8 = 0x0D;

/// Whether a `-wal` file or a rollback journal beside `path` may hold pages the file does
/// not have yet: then only SQLite reads its rows right.
pub fn has_side_files(path: &Path) -> bool {
    ["-wal", "-journal"].iter().any(|suffix| {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        std::fs::metadata(&side).is_ok_and(|m| m.len() > 0)
    })
}

/// A database file, mapped read-only, with its header checked.
pub struct SqliteFile {
    path: PathBuf,
    data: Bytes,
    page_size: usize,
    usable: usize,
    pages: u32,
}

impl SqliteFile {
    /// Maps `path` and checks its header; fails naming the file when it is not a database
    /// this reader understands.
    pub fn open(path: &Path) -> Result<SqliteFile, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: the map is read-only and private to this process; a file truncated or
        // rewritten under a running reader is outside what a backup restore supports (SQLite's
        // own mmap mode, which the SQL path uses, makes the same assumption).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| format!("{}: cannot map the file: {e}", path.display()))?;
        // Rows are read front to back, page after page: ask for read-ahead, and more pages
        // mapped per fault (a hint; a kernel that ignores it reads the same bytes).
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        SqliteFile::from_bytes(path, Bytes::from_owner(map))
    }

    /// A database held in `data`; `path` names it in errors.
    pub fn from_bytes(path: &Path, data: Bytes) -> Result<SqliteFile, String> {
        let bad = |what: String| format!("{}: not an SQLite database: {what}", path.display());
        if data.len() < 100 {
            return Err(bad(format!(
                "{} bytes, shorter than the 100-byte header",
                data.len()
            )));
        }
        if &data[..16] != MAGIC {
            return Err(bad("no \"SQLite format 3\" magic".into()));
        }
        let page_size = match u16::from_be_bytes([data[16], data[17]]) {
            1 => 65536,
            n if crate::sqlite_build::is_page_size(n as usize) => n as usize,
            n => return Err(bad(format!("page size {n}"))),
        };
        let read_version = data[19];
        if !(1..=2).contains(&read_version) {
            return Err(bad(format!("file format read version {read_version}")));
        }
        let usable = page_size - data[20] as usize;
        if usable < 480 {
            return Err(bad(format!(
                "{} reserved bytes per page of {page_size}",
                data[20]
            )));
        }
        if data[21..24] != [64, 32, 32] {
            return Err(bad(format!("payload fractions {:?}", &data[21..24])));
        }
        let pages = u32::try_from(data.len() / page_size)
            .map_err(|_| bad(format!("{} bytes is too large", data.len())))?;
        Ok(SqliteFile {
            path: path.to_path_buf(),
            data,
            page_size,
            usable,
            pages,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The whole file.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// `part` as a `Bytes` sharing the map, when `part` lies in it (a value read in place);
    /// `None` for a value put together from overflow pages.
    pub fn share(&self, part: &[u8]) -> Option<Bytes> {
        let start = (part.as_ptr() as usize).checked_sub(self.data.as_ptr() as usize)?;
        (start + part.len() <= self.data.len()).then(|| self.data.slice_ref(part))
    }

    /// The rows of the table b-tree rooted at page `root`, in rowid order.
    pub fn table(&self, root: u32) -> TableRows<'_> {
        TableRows {
            file: self,
            root,
            started: false,
            interior: Vec::new(),
            leaf: None,
            visited: vec![0u64; (self.pages as usize).div_ceil(64) + 1],
            overflow: Vec::new(),
        }
    }

    fn error(&self, page: u32, what: impl std::fmt::Display) -> String {
        format!("{}: page {page}: {what}", self.path.display())
    }

    /// Page `n` (1-based), cut to its usable bytes.
    fn page(&self, n: u32) -> Result<&[u8], String> {
        if n == 0 || n > self.pages {
            return Err(self.error(
                n,
                format_args!("page number out of range (the file has {})", self.pages),
            ));
        }
        let start = (n as usize - 1) * self.page_size;
        Ok(&self.data[start..start + self.usable])
    }
}

/// A b-tree page being walked: its bytes, where its header starts, its cell count and the
/// next cell (or, on an interior page, child) to visit.
struct Level<'a> {
    no: u32,
    data: &'a [u8],
    cells: usize,
    pointers: usize,
    next: usize,
}

/// A cursor over a table's rows; [`TableRows::next_row`] lends each row until the next call.
pub struct TableRows<'a> {
    file: &'a SqliteFile,
    root: u32,
    started: bool,
    interior: Vec<Level<'a>>,
    leaf: Option<Level<'a>>,
    visited: Vec<u64>,
    overflow: Vec<u8>,
}

/// One row: its rowid and its record.
pub struct Row<'r> {
    /// The row's rowid.
    pub rowid: i64,
    /// The record, whole (put together from its overflow pages when it spilled).
    pub payload: &'r [u8],
    page: u32,
    file: &'r SqliteFile,
}

impl<'a> TableRows<'a> {
    /// The next row, `None` after the last; an error names the file and the page.
    pub fn next_row(&mut self) -> Result<Option<Row<'_>>, String> {
        loop {
            if let Some(leaf) = &mut self.leaf {
                if leaf.next < leaf.cells {
                    let at = cell_offset(leaf.data, leaf.pointers, leaf.next);
                    leaf.next += 1;
                    let (no, data) = (leaf.no, leaf.data);
                    return self.leaf_cell(no, data, at).map(Some);
                }
                self.leaf = None;
            }
            if !self.next_leaf()? {
                return Ok(None);
            }
        }
    }

    /// The number of rows: the cell counts of the leaves, whose cells are not read (nor
    /// their overflow pages). Consumes the cursor.
    pub fn count(mut self) -> Result<u64, String> {
        let mut n = 0u64;
        while self.next_leaf()? {
            n += self.leaf.take().map_or(0, |l| l.cells as u64);
        }
        Ok(n)
    }

    /// Walks down to the next leaf; false after the last.
    fn next_leaf(&mut self) -> Result<bool, String> {
        loop {
            if !self.started {
                self.started = true;
                self.enter(self.root)?;
            } else {
                let file = self.file;
                let child = loop {
                    let Some(top) = self.interior.last_mut() else {
                        return Ok(false);
                    };
                    if top.next < top.cells {
                        let at = cell_offset(top.data, top.pointers, top.next);
                        top.next += 1;
                        let (no, data) = (top.no, top.data);
                        break at
                            .and_then(|at| data.get(at..at + 4))
                            .map(be32)
                            .ok_or_else(|| file.error(no, "interior cell out of the page"))?;
                    }
                    if top.next == top.cells {
                        top.next += 1;
                        break be32(&top.data[top.pointers - 4..top.pointers]);
                    }
                    self.interior.pop();
                };
                self.enter(child)?;
            }
            if self.leaf.is_some() {
                return Ok(true);
            }
        }
    }

    /// Reads page `no`'s header and makes it the leaf or the deepest interior page.
    fn enter(&mut self, no: u32) -> Result<(), String> {
        let file = self.file;
        let data = file.page(no)?;
        let (word, bit) = (no as usize / 64, 1u64 << (no % 64));
        if self.visited[word] & bit != 0 {
            return Err(file.error(no, "page met twice in the b-tree (a cycle)"));
        }
        self.visited[word] |= bit;
        let hdr = if no == 1 { 100 } else { 0 };
        let kind = data[hdr];
        let size = match kind {
            LEAF_TABLE => 8,
            INTERIOR_TABLE => 12,
            other => {
                return Err(file.error(
                    no,
                    format_args!("type {other:#04x} is not a table b-tree page"),
                ))
            }
        };
        let cells = u16::from_be_bytes([data[hdr + 3], data[hdr + 4]]) as usize;
        let pointers = hdr + size;
        if pointers + 2 * cells > data.len() {
            return Err(file.error(no, format_args!("{cells} cells do not fit in the page")));
        }
        let level = Level {
            no,
            data,
            cells,
            pointers,
            next: 0,
        };
        if kind == LEAF_TABLE {
            self.leaf = Some(level);
        } else {
            if self.interior.len() >= MAX_DEPTH {
                return Err(file.error(
                    no,
                    format_args!("the b-tree is deeper than {MAX_DEPTH} pages"),
                ));
            }
            // The right-most child sits in the last 4 bytes of the header, just before the
            // cell pointers: `pointers - 4`.
            self.interior.push(level);
        }
        Ok(())
    }

    /// Decodes the leaf cell at `at` of page `no`.
    fn leaf_cell(&mut self, no: u32, data: &'a [u8], at: Option<usize>) -> Result<Row<'_>, String> {
        let file = self.file;
        let cut = || file.error(no, "leaf cell out of the page");
        let at = at.ok_or_else(cut)?;
        let (size, at) = varint(data, at).ok_or_else(cut)?;
        let (rowid, at) = varint(data, at).ok_or_else(cut)?;
        let usable = file.usable;
        let max_local = usable - 35;
        if size <= max_local as u64 {
            let payload = data.get(at..at + size as usize).ok_or_else(cut)?;
            return Ok(Row {
                rowid: rowid as i64,
                payload,
                page: no,
                file,
            });
        }
        if size > file.data.len() as u64 {
            return Err(file.error(
                no,
                format_args!("a payload of {size} bytes is larger than the file"),
            ));
        }
        let size = size as usize;
        let min_local = (usable - 12) * 32 / 255 - 23;
        let k = min_local + (size - min_local) % (usable - 4);
        let local = if k <= max_local { k } else { min_local };
        let head = data.get(at..at + local + 4).ok_or_else(cut)?;
        self.overflow.clear();
        self.overflow.reserve(size);
        self.overflow.extend_from_slice(&head[..local]);
        let mut next = be32(&head[local..]);
        while self.overflow.len() < size {
            if next == 0 {
                return Err(file.error(
                    no,
                    format_args!(
                        "overflow chain ends after {} of {size} bytes",
                        self.overflow.len()
                    ),
                ));
            }
            let page = file.page(next)?;
            let (word, bit) = (next as usize / 64, 1u64 << (next % 64));
            if self.visited[word] & bit != 0 {
                return Err(file.error(next, "overflow page met twice (a cycle)"));
            }
            self.visited[word] |= bit;
            let take = (size - self.overflow.len()).min(usable - 4);
            self.overflow.extend_from_slice(&page[4..4 + take]);
            next = be32(page);
        }
        Ok(Row {
            rowid: rowid as i64,
            payload: &self.overflow,
            page: no,
            file,
        })
    }
}

impl<'r> Row<'r> {
    /// Decodes the record's first `out.len()` columns into `out`; a column the record does
    /// not hold (a table that gained columns later) is NULL. Text is returned as stored
    /// (UTF-8 in a file whose text encoding, header bytes 56..60, is 1).
    pub fn columns(&self, out: &mut [ValueRef<'r>]) -> Result<(), String> {
        record_columns(self.payload, out).map_err(|what| {
            self.file
                .error(self.page, format_args!("row {}: record {what}", self.rowid))
        })
    }
}

/// Decodes a record (its header of serial types, then the values) into `out`, one value per
/// slot; the slots past the record's columns are NULL. The error says what is wrong with it.
#[inline]
pub fn record_columns<'r>(p: &'r [u8], out: &mut [ValueRef<'r>]) -> Result<(), String> {
    let (header, mut at) = varint(p, 0).ok_or("header cut")?;
    let header = usize::try_from(header)
        .ok()
        .filter(|&h| h >= at && h <= p.len())
        .ok_or("header size out of the record")?;
    let mut body = header;
    for slot in out.iter_mut() {
        if at >= header {
            *slot = ValueRef::Null;
            continue;
        }
        let (kind, next) = varint(&p[..header], at).ok_or("header cut")?;
        at = next;
        // Bytes of each serial type below 12 (10 and 11 are reserved); 12 and up hold
        // (n - 12) / 2 bytes of blob (even) or text (odd).
        const LEN: [usize; 12] = [0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0];
        let len = match kind {
            0..=9 => LEN[kind as usize],
            10 | 11 => return Err(format!("serial type {kind} is reserved")),
            n => usize::try_from((n - 12) / 2).unwrap_or(usize::MAX),
        };
        let v = body
            .checked_add(len)
            .and_then(|end| p.get(body..end))
            .ok_or("column out of the record")?;
        body += len;
        *slot = match kind {
            0 => ValueRef::Null,
            1..=6 => ValueRef::Integer(int_be(v)),
            7 => ValueRef::Real(f64::from_bits(int_be(v) as u64)),
            8 => ValueRef::Integer(0),
            9 => ValueRef::Integer(1),
            n if n % 2 == 0 => ValueRef::Blob(v),
            _ => ValueRef::Text(v),
        };
    }
    Ok(())
}

/// The offset of cell `i` from the page's pointer array, when it lies in the page.
fn cell_offset(page: &[u8], pointers: usize, i: usize) -> Option<usize> {
    let p = pointers + 2 * i;
    let at = u16::from_be_bytes([page[p], page[p + 1]]) as usize;
    (at < page.len()).then_some(at)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A big-endian two's complement integer of 1, 2, 3, 4, 6 or 8 bytes (0 for other lengths,
/// which a record's serial types never give).
#[inline(always)]
fn int_be(v: &[u8]) -> i64 {
    let hi = |b: u8| b as i8 as i64;
    match *v {
        [a] => hi(a),
        [a, b] => (hi(a) << 8) | b as i64,
        [a, b, c] => (hi(a) << 16) | ((b as i64) << 8) | c as i64,
        [a, b, c, d] => i32::from_be_bytes([a, b, c, d]) as i64,
        [a, b, c, d, e, f] => {
            (hi(a) << 40) | (u32::from_be_bytes([b, c, d, e]) as i64) << 8 | f as i64
        }
        [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => 0,
    }
}

/// The varint at `at` (1 to 9 bytes, big-endian, 7 bits a byte but 8 in the ninth) and the
/// offset after it; `None` when it runs past `buf`.
#[inline(always)]
fn varint(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    // Serial types, header sizes and small payload sizes fit in one byte.
    match buf.get(at) {
        Some(&b) if b < 0x80 => Some((b as u64, at + 1)),
        Some(_) => varint_long(buf, at),
        None => None,
    }
}

#[inline(never)]
fn varint_long(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for i in 0..9 {
        let b = *buf.get(at + i)?;
        if i == 8 {
            return Some(((n << 8) | b as u64, at + 9));
        }
        n = (n << 7) | (b & 0x7f) as u64;
        if b < 0x80 {
            return Some((n, at + i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests;
