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
//! caller reads such a file through SQLite instead ([`crate::sqlite_open`]).
//!
//! The file is read with `pread` into windows of whole pages (never mapped: a file that
//! shrinks under a mapping kills the reader with SIGBUS; here it is an error naming the file
//! and the page that is gone). A window grows while pages are read in sequence, so a table
//! laid out in rowid order is read in large reads, and a row's value is a slice of its
//! window, not a copy. A window's buffer goes back to the file's pool when its last value is
//! dropped, and the next window is read into it: memory already in place, not fresh pages to
//! zero and fault in.
//!
//! Every offset is checked against its page: a corrupt file is an error naming the file and
//! the page, never a panic, and a page met twice (a cycle) or a tree deeper than
//! [`MAX_DEPTH`] ends the walk. With [`Verify::Quick`] (the default) or [`Verify::Full`] each
//! page's structure is proven as it is entered, so that a damaged tree is refused rather than
//! read short or read twice:
//!
//! ```text
//! cells      each cell pointer lies in the cell content area and each cell within the page
//! space      the cells, the freeblock chain (ascending, in the content area) and the
//!            fragmented byte count tile the content area exactly, with no overlap: a cell
//!            count that is wrong, or a cell pointer that repeats another, cannot add up
//! rowids     strictly increasing within a page, and within the bounds the parent's keys
//!            give each child (so across pages too); interior keys the same
//! tree       every child page number in the file, every page met once, every leaf at the
//!            same depth, an overflow chain that ends exactly where its payload does
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use rusqlite::types::ValueRef;

/// The first 16 bytes of every SQLite database file.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The deepest b-tree this reader walks (SQLite itself stops at 20).
pub const MAX_DEPTH: usize = 40;

const INTERIOR_TABLE: u8 = 0x05;
const LEAF_TABLE: u8 = 0x0D;

/// The first read of a run of pages, and the most one read takes (a window).
const FIRST_WINDOW: usize = 64 << 10;
const MAX_WINDOW: usize = 1 << 20;

/// How much a reader proves about the file it reads (`-x verify=none|quick|full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Only what reading needs: every offset inside its page, no cycle.
    None,
    /// Each page's structure as it is entered (see the module's documentation), and the
    /// rows read against the rows counted.
    #[default]
    Quick,
    /// Quick, and SQLite's `integrity_check` over the whole file before it is read.
    Full,
}

impl Verify {
    /// `none`, `quick` or `full`.
    pub fn parse(s: &str) -> Option<Verify> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "0" => Some(Verify::None),
            "quick" | "1" => Some(Verify::Quick),
            "full" => Some(Verify::Full),
            _ => None,
        }
    }

    /// Whether pages are checked as they are entered.
    pub fn checks_pages(self) -> bool {
        self != Verify::None
    }
}

impl std::fmt::Display for Verify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verify::None => "none",
            Verify::Quick => "quick",
            Verify::Full => "full",
        })
    }
}

/// Whether a `-wal` file or a rollback journal beside `path` may hold pages the file does
/// not have yet: then only SQLite reads its rows right.
pub fn has_side_files(path: &Path) -> bool {
    ["-wal", "-journal"].iter().any(|suffix| {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        std::fs::metadata(&side).is_ok_and(|m| m.len() > 0)
    })
}

/// Where the bytes come from: the file (read with `pread`), or memory.
enum Backing {
    File(File, WindowPool),
    Memory(Bytes),
}

/// Window buffers given back when the last value sliced from them is dropped (wherever the
/// sink drops it), so that a long read reuses memory already in place: a fresh buffer per
/// window cost a zeroing and a page fault per 4 KiB, more CPU than the reading itself. A
/// buffer keeps its size from window to window (a window reads into its first bytes), so
/// that a short read (one page) between long ones never makes the next long one zero the
/// bytes it gave up.
///
/// A window starts at a 64-byte boundary of its buffer: `malloc` puts a large block 16 bytes
/// past a page boundary, and the kernel's copy into a destination 16 bytes off its source's
/// alignment ran three times slower on this machine (a 136 MB data file read in 1 MiB
/// windows: 68 ms of CPU at 16 bytes past a boundary, 21 ms at 0, 32, 64 or 128).
#[derive(Default)]
struct WindowPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse: as many windows as a few batches in flight hold.
const POOLED: usize = 16;

/// The alignment of a window's first byte in its buffer (see [`WindowPool`]).
const WINDOW_ALIGN: usize = 64;

impl WindowPool {
    /// A buffer holding a window of `len` bytes at a [`WINDOW_ALIGN`] boundary, and where the
    /// window starts in it; reused when one is free (its old bytes are all read over before
    /// they are read). A new one has room for the largest window of a file of `file` bytes.
    fn take(&self, len: usize, file: u64) -> (Vec<u8>, usize) {
        let reused = self.0.lock().ok().and_then(|mut free| free.pop());
        let mut buf = match reused {
            Some(buf) => buf,
            None => {
                let most = MAX_WINDOW.min(usize::try_from(file).unwrap_or(MAX_WINDOW));
                vec![0u8; len.max(most) + WINDOW_ALIGN]
            }
        };
        if buf.len() < len + WINDOW_ALIGN {
            buf.resize(len + WINDOW_ALIGN, 0);
        }
        let start = match buf.as_ptr().align_offset(WINDOW_ALIGN) {
            at if at + len <= buf.len() => at,
            _ => 0,
        };
        (buf, start)
    }

    /// The `len` bytes of `buf` from `start` as shared bytes; the buffer returns to the pool
    /// when the last slice of them is dropped.
    fn share(&self, buf: Vec<u8>, start: usize, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            start: start.min(buf.len()),
            len: len.min(buf.len() - start.min(buf.len())),
            buf,
            pool: Arc::downgrade(&self.0),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    /// Where the window read starts in `buf`, and its length.
    start: usize,
    len: usize,
    pool: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            if let Ok(mut free) = pool.lock() {
                if free.len() < POOLED {
                    free.push(std::mem::take(&mut self.buf));
                }
            }
        }
    }
}

/// A database file open for reading, with its header checked.
pub struct SqliteFile {
    path: PathBuf,
    backing: Backing,
    len: u64,
    page_size: usize,
    usable: usize,
    pages: u32,
}

impl SqliteFile {
    /// Opens `path` (a regular file only: a FIFO or a device is refused at once) and checks
    /// its header; fails naming the file when it is not a database this reader understands.
    pub fn open(path: &Path) -> Result<SqliteFile, String> {
        let file =
            pump_files::open_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        let mut header = [0u8; 100];
        let got = if len >= 100 {
            file.read_exact_at(&mut header, 0)
                .map(|_| 100)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => Ok(0),
                    _ => Err(e),
                })
                .map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            0
        };
        SqliteFile::with_header(
            path,
            Backing::File(file, WindowPool::default()),
            len,
            &header[..got],
        )
    }

    /// A database held in `data`; `path` names it in errors.
    pub fn from_bytes(path: &Path, data: Bytes) -> Result<SqliteFile, String> {
        let header = data.slice(..data.len().min(100));
        SqliteFile::with_header(
            path,
            Backing::Memory(data.clone()),
            data.len() as u64,
            &header,
        )
    }

    fn with_header(
        path: &Path,
        backing: Backing,
        len: u64,
        data: &[u8],
    ) -> Result<SqliteFile, String> {
        let bad = |what: String| format!("{}: not an SQLite database: {what}", path.display());
        if data.len() < 100 {
            return Err(bad(format!(
                "{len} bytes, shorter than the 100-byte header"
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
        // 1 is a rollback journal, 2 WAL; SQLite reads 0 as 1 and refuses above 2 (a file
        // written by a later format), and so does this reader (found by the fuzz suite).
        let read_version = data[19];
        if read_version > 2 {
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
        if !len.is_multiple_of(page_size as u64) {
            return Err(bad(format!(
                "{len} bytes is not a whole number of {page_size}-byte pages: the file was cut short, or written to by something other than SQLite"
            )));
        }
        let in_file = u32::try_from(len / page_size as u64)
            .map_err(|_| bad(format!("{len} bytes is too large")))?;
        // The page count in the header, when it is valid (its "version valid for" at 92
        // equals the change counter at 24), is the database's size, as SQLite reads it.
        let in_header = u32::from_be_bytes([data[28], data[29], data[30], data[31]]);
        let pages = if in_header != 0 && data[24..28] == data[92..96] {
            if in_header > in_file {
                return Err(bad(format!(
                    "the header counts {in_header} pages, the file holds {in_file}: it was cut short"
                )));
            }
            in_header
        } else {
            in_file
        };
        Ok(SqliteFile {
            path: path.to_path_buf(),
            backing,
            len,
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

    /// Pages in the file (its length when opened, in whole pages).
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The rows of the table b-tree rooted at page `root`, in rowid order, each page's
    /// structure checked as it is entered ([`Verify::Quick`]).
    pub fn table(&self, root: u32) -> TableRows<'_> {
        self.table_with(root, Verify::Quick)
    }

    /// [`SqliteFile::table`] with the checks `verify` asks for.
    pub fn table_with(&self, root: u32, verify: Verify) -> TableRows<'_> {
        self.rows(root, verify.checks_pages(), verify.checks_pages())
    }

    /// The rows of a table whose every page a [`TableRows::count`] with checks has just
    /// proven: the pages are not proven again, but each row must still come after the last
    /// (a page that changed since the count is caught there, or by the number of rows).
    pub fn table_counted(&self, root: u32) -> TableRows<'_> {
        self.rows(root, false, true)
    }

    fn rows(&self, root: u32, pages: bool, order: bool) -> TableRows<'_> {
        TableRows {
            file: self,
            root,
            pages,
            order,
            started: false,
            interior: Vec::new(),
            leaf: None,
            leaf_depth: None,
            last_rowid: None,
            visited: vec![0u64; (self.pages as usize).div_ceil(64) + 1],
            overflow: Vec::new(),
            extents: Vec::new(),
            window: Window::default(),
        }
    }

    fn error(&self, page: u32, what: impl std::fmt::Display) -> String {
        format!("{}: page {page}: {what}", self.path.display())
    }

    /// Pages `first..first + n` (1-based, in the file), whole.
    fn read_pages(&self, first: u32, n: usize) -> Result<Bytes, String> {
        let start = (first as u64 - 1) * self.page_size as u64;
        let len = n * self.page_size;
        match &self.backing {
            Backing::Memory(data) => Ok(data.slice(start as usize..start as usize + len)),
            Backing::File(f, pool) => {
                let (mut buf, at) = pool.take(len, self.len);
                match f.read_exact_at(&mut buf[at..at + len], start) {
                    Ok(()) => Ok(pool.share(buf, at, len)),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        let now = f.metadata().map(|m| m.len()).unwrap_or(0);
                        Err(self.error(
                            first,
                            format_args!(
                                "the file ends before this page: it was {} bytes when opened and is {now} now (it shrank while being read)",
                                self.len
                            ),
                        ))
                    }
                    Err(e) => Err(self.error(first, format_args!("cannot read: {e}"))),
                }
            }
        }
    }
}

/// The pages read last: a run of whole pages starting at page `first`, and where the next
/// read of a sequential run starts.
#[derive(Default)]
struct Window {
    first: u32,
    data: Bytes,
    /// The page after the window (a read of it continues a run and grows the window).
    end: u32,
    /// The page after the last page read alone (a read of it starts a run).
    side_end: u32,
    /// Bytes the next run's read takes.
    run: usize,
}

/// The bounds the keys of a subtree must keep to: above `lo`, at most `hi`.
#[derive(Clone, Copy, Default)]
struct Bounds {
    lo: Option<i64>,
    hi: Option<i64>,
}

/// A b-tree page being walked: its usable bytes, where its cell pointers start, its cell
/// count, the next cell (or, on an interior page, child) to visit, and the bounds of its keys.
struct Level {
    no: u32,
    data: Bytes,
    cells: usize,
    pointers: usize,
    next: usize,
    bounds: Bounds,
    /// On an interior page: the key of the last cell descended through.
    last_key: Option<i64>,
}

/// A cursor over a table's rows; [`TableRows::next_row`] lends each row until the next call.
pub struct TableRows<'a> {
    file: &'a SqliteFile,
    root: u32,
    /// Each page's structure is proven as it is entered.
    pages: bool,
    /// Each row's rowid must be above the last.
    order: bool,
    started: bool,
    interior: Vec<Level>,
    leaf: Option<Level>,
    leaf_depth: Option<usize>,
    last_rowid: Option<i64>,
    visited: Vec<u64>,
    overflow: Vec<u8>,
    extents: Vec<(usize, usize)>,
    window: Window,
}

/// One row: its rowid and its record.
pub struct Row<'r> {
    /// The row's rowid.
    pub rowid: i64,
    /// The record, whole (put together from its overflow pages when it spilled).
    pub payload: &'r [u8],
    /// The page that holds the row.
    pub page: u32,
    /// That page's bytes, when the record lies in it (not spilled).
    page_data: Option<&'r Bytes>,
    file: &'r SqliteFile,
}

impl<'a> TableRows<'a> {
    /// The next row, `None` after the last; an error names the file and the page.
    pub fn next_row(&mut self) -> Result<Option<Row<'_>>, String> {
        loop {
            if let Some(leaf) = &mut self.leaf {
                if leaf.next < leaf.cells {
                    let at = cell_offset(&leaf.data, leaf.pointers, leaf.next);
                    leaf.next += 1;
                    return self.leaf_cell(at).map(Some);
                }
                self.leaf = None;
            }
            if !self.next_leaf()? {
                return Ok(None);
            }
        }
    }

    /// The number of rows: the cell counts of the leaves, whose records are not read (nor
    /// their overflow pages); the pages are checked as [`TableRows::next_row`] checks them.
    /// Consumes the cursor.
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
                self.enter(self.root, Bounds::default())?;
            } else {
                let file = self.file;
                let checks = self.pages;
                let (child, bounds) = loop {
                    let Some(top) = self.interior.last_mut() else {
                        return Ok(false);
                    };
                    if top.next < top.cells {
                        let at = cell_offset(&top.data, top.pointers, top.next);
                        top.next += 1;
                        let cut = || file.error(top.no, "interior cell out of the page");
                        let at = at.ok_or_else(cut)?;
                        let child = top.data.get(at..at + 4).map(be32).ok_or_else(cut)?;
                        let mut bounds = Bounds::default();
                        if checks {
                            let (key, _) = varint(&top.data, at + 4).ok_or_else(cut)?;
                            bounds = Bounds {
                                lo: top.last_key.or(top.bounds.lo),
                                hi: Some(key as i64),
                            };
                            top.last_key = Some(key as i64);
                        }
                        break (child, bounds);
                    }
                    if top.next == top.cells {
                        top.next += 1;
                        let bounds = Bounds {
                            lo: top.last_key.or(top.bounds.lo),
                            hi: top.bounds.hi,
                        };
                        break (be32(&top.data[top.pointers - 4..top.pointers]), bounds);
                    }
                    self.interior.pop();
                };
                self.enter(child, bounds)?;
            }
            if self.leaf.is_some() {
                return Ok(true);
            }
        }
    }

    /// Page `no` (1-based), cut to its usable bytes, read through the window.
    fn page(&mut self, no: u32) -> Result<Bytes, String> {
        let file = self.file;
        if no == 0 || no > file.pages {
            return Err(file.error(
                no,
                format_args!("page number out of range (the file has {})", file.pages),
            ));
        }
        let ps = file.page_size;
        let w = &mut self.window;
        if !(no >= w.first && no < w.end) {
            let left = (file.pages - no + 1) as usize;
            if let Backing::Memory(_) = file.backing {
                // Memory: the whole rest of the file is one window.
                w.data = file.read_pages(no, left)?;
                w.first = no;
                w.end = no + left as u32;
            } else if no == w.end || no == w.side_end {
                // A run continues (or a page read alone is followed by the next): read
                // ahead, twice as far each time.
                w.run = (w.run * 2).clamp(FIRST_WINDOW, MAX_WINDOW);
                let n = (w.run / ps).max(1).min(left);
                w.data = file.read_pages(no, n)?;
                w.first = no;
                w.end = no + n as u32;
            } else {
                // A jump (an interior page, an overflow page): that page alone, the
                // window kept for the run it interrupts.
                let page = file.read_pages(no, 1)?;
                w.side_end = no + 1;
                w.run = 0;
                return Ok(page.slice(..file.usable));
            }
        }
        let at = (no - w.first) as usize * ps;
        Ok(w.data.slice(at..at + file.usable))
    }

    /// Marks page `no` visited; false when it already was.
    fn visit(&mut self, no: u32) -> bool {
        let (word, bit) = (no as usize / 64, 1u64 << (no % 64));
        let seen = self.visited[word] & bit != 0;
        self.visited[word] |= bit;
        !seen
    }

    /// Reads page `no`'s header (and, when checking, its whole structure) and makes it the
    /// leaf or the deepest interior page.
    fn enter(&mut self, no: u32, bounds: Bounds) -> Result<(), String> {
        let file = self.file;
        let data = self.page(no)?;
        if !self.visit(no) {
            return Err(file.error(no, "page met twice in the b-tree (a cycle)"));
        }
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
        let depth = self.interior.len();
        if depth >= MAX_DEPTH {
            return Err(file.error(
                no,
                format_args!("the b-tree is deeper than {MAX_DEPTH} pages"),
            ));
        }
        if self.pages {
            self.check_page(no, &data, hdr, kind == LEAF_TABLE, cells, bounds)?;
            if kind == LEAF_TABLE {
                match self.leaf_depth {
                    None => self.leaf_depth = Some(depth),
                    Some(d) if d != depth => {
                        return Err(file.error(
                            no,
                            format_args!(
                                "a leaf {depth} levels below the root where the first leaf was {d}: the tree is not balanced"
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        let level = Level {
            no,
            data,
            cells,
            pointers,
            next: 0,
            bounds,
            last_key: None,
        };
        if kind == LEAF_TABLE {
            self.leaf = Some(level);
        } else {
            // The right-most child sits in the last 4 bytes of the header, just before the
            // cell pointers: `pointers - 4`.
            self.interior.push(level);
        }
        Ok(())
    }

    /// Proves the structure of page `no` (see the module's documentation).
    fn check_page(
        &mut self,
        no: u32,
        d: &[u8],
        hdr: usize,
        leaf: bool,
        cells: usize,
        bounds: Bounds,
    ) -> Result<(), String> {
        let file = self.file;
        let bad = |what: std::fmt::Arguments<'_>| file.error(no, what);
        let usable = d.len();
        let pointers = hdr + if leaf { 8 } else { 12 };
        let ptr_end = pointers + 2 * cells;
        let top = match u16::from_be_bytes([d[hdr + 5], d[hdr + 6]]) {
            0 => 65536,
            n => n as usize,
        };
        if top < ptr_end || top > usable {
            return Err(bad(format_args!(
                "the cell content area starts at {top}, outside {ptr_end}..{usable} (after the {cells} cell pointers the header counts)"
            )));
        }
        let extents = &mut self.extents;
        extents.clear();
        // The freeblock chain: ascending, each block in the content area.
        let mut free = 0usize;
        let mut fb = u16::from_be_bytes([d[hdr + 1], d[hdr + 2]]) as usize;
        let mut prev_end = top;
        while fb != 0 {
            if fb < prev_end || fb + 4 > usable {
                return Err(bad(format_args!(
                    "a freeblock at {fb} lies outside the free part of the content area ({prev_end}..{usable})"
                )));
            }
            let next = u16::from_be_bytes([d[fb], d[fb + 1]]) as usize;
            let size = u16::from_be_bytes([d[fb + 2], d[fb + 3]]) as usize;
            if size < 4 || fb + size > usable {
                return Err(bad(format_args!(
                    "the freeblock at {fb} of {size} bytes does not fit in the page"
                )));
            }
            extents.push((fb, fb + size));
            free += size;
            prev_end = fb + size;
            fb = next;
        }
        // The cells: in the content area, within the page, keys in order and in bounds.
        let mut sum = 0usize;
        let mut prev = bounds.lo;
        // SQLite fills the content area from the end of the page down, so the cells of a page
        // written in rowid order lie at falling offsets: while each ends where (or before)
        // the one before it starts, they cannot overlap, and without freeblocks there is
        // nothing to sort to prove it.
        let mut falling = extents.is_empty();
        let mut below = usable;
        for i in 0..cells {
            let p = pointers + 2 * i;
            let at = u16::from_be_bytes([d[p], d[p + 1]]) as usize;
            if at < top || at >= usable {
                return Err(bad(format_args!(
                    "cell {i} at offset {at} lies outside the cell content area ({top}..{usable})"
                )));
            }
            let extent = if leaf {
                leaf_cell_extent(d, at, file.usable)
            } else {
                interior_cell_extent(d, at)
            };
            let Some((size, key)) = extent.filter(|(size, _)| at + size <= usable) else {
                return Err(bad(format_args!(
                    "cell {i} at offset {at} runs past the end of the page"
                )));
            };
            if let Some(p) = prev {
                if key <= p {
                    return Err(bad(format_args!(
                        "cell {i}: rowid {key} is not above {p}, the rowid before it (rowids out of order, or a cell listed twice)"
                    )));
                }
            }
            if let Some(hi) = bounds.hi {
                if key > hi {
                    return Err(bad(format_args!(
                        "cell {i}: rowid {key} is above {hi}, the key the parent page gives this page"
                    )));
                }
            }
            prev = Some(key);
            sum += size;
            falling &= at + size <= below;
            below = at;
            extents.push((at, at + size));
        }
        let frag = d[hdr + 7] as usize;
        if sum + free + frag != usable - top {
            return Err(bad(format_args!(
                "{cells} cells ({sum} bytes), {free} bytes of freeblocks and {frag} fragmented bytes do not fill the {}-byte cell content area: a wrong cell count or a lost cell",
                usable - top
            )));
        }
        if falling {
            return Ok(());
        }
        extents.sort_unstable();
        for pair in extents.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(bad(format_args!(
                    "the cells (or freeblocks) at offsets {} and {} overlap",
                    pair[0].0, pair[1].0
                )));
            }
        }
        Ok(())
    }

    /// Decodes the leaf cell at `at` of the current leaf.
    fn leaf_cell(&mut self, at: Option<usize>) -> Result<Row<'_>, String> {
        let file = self.file;
        // Rows in order and overflow chains that end exactly: checked on every read with
        // checks on (a count reads no overflow page, so the read proves the chains).
        let checks = self.order;
        let usable = file.usable;
        let max_local = usable - 35;
        // The cell's header, read with a borrow of the leaf that ends here.
        let (no, size, rowid, at) = {
            let Some(leaf) = &self.leaf else {
                return Err(format!("{}: no leaf page", file.path.display()));
            };
            let cut = || file.error(leaf.no, "leaf cell out of the page");
            let at = at.ok_or_else(cut)?;
            let (size, at) = varint(&leaf.data, at).ok_or_else(cut)?;
            let (rowid, at) = varint(&leaf.data, at).ok_or_else(cut)?;
            (leaf.no, size, rowid as i64, at)
        };
        if checks {
            if let Some(last) = self.last_rowid {
                if rowid <= last {
                    return Err(file.error(
                        no,
                        format_args!("rowid {rowid} read after rowid {last}: out of order"),
                    ));
                }
            }
            self.last_rowid = Some(rowid);
        }
        let cut = || file.error(no, "leaf cell out of the page");
        if size <= max_local as u64 {
            let Some(leaf) = &self.leaf else {
                return Err(cut());
            };
            let payload = leaf.data.get(at..at + size as usize).ok_or_else(cut)?;
            return Ok(Row {
                rowid,
                payload,
                page: no,
                page_data: Some(&leaf.data),
                file,
            });
        }
        if size > file.len {
            return Err(file.error(
                no,
                format_args!("a payload of {size} bytes is larger than the file"),
            ));
        }
        let size = size as usize;
        let min_local = (usable - 12) * 32 / 255 - 23;
        let k = min_local + (size - min_local) % (usable - 4);
        let local = if k <= max_local { k } else { min_local };
        let mut overflow = std::mem::take(&mut self.overflow);
        overflow.clear();
        overflow.reserve(size);
        let mut next = {
            let head = self
                .leaf
                .as_ref()
                .and_then(|leaf| leaf.data.get(at..at + local + 4))
                .ok_or_else(cut)?;
            overflow.extend_from_slice(&head[..local]);
            be32(&head[local..])
        };
        let mut from = no;
        let result = loop {
            if overflow.len() >= size {
                if checks && next != 0 {
                    break Err(file.error(
                        from,
                        format_args!(
                            "the overflow chain of rowid {rowid} goes on to page {next} past the end of its {size}-byte payload"
                        ),
                    ));
                }
                break Ok(());
            }
            if next == 0 {
                break Err(file.error(
                    no,
                    format_args!(
                        "overflow chain ends after {} of {size} bytes",
                        overflow.len()
                    ),
                ));
            }
            let page = match self.page(next) {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            if !self.visit(next) {
                break Err(file.error(next, "overflow page met twice (a cycle)"));
            }
            let take = (size - overflow.len()).min(usable - 4);
            overflow.extend_from_slice(&page[4..4 + take]);
            from = next;
            next = be32(&page);
        };
        self.overflow = overflow;
        result?;
        Ok(Row {
            rowid,
            payload: &self.overflow,
            page: no,
            page_data: None,
            file,
        })
    }
}

/// The size a leaf table cell at `at` takes in its page, and its rowid.
fn leaf_cell_extent(d: &[u8], at: usize, usable: usize) -> Option<(usize, i64)> {
    let (size, after) = varint(d, at)?;
    let (rowid, after) = varint(d, after)?;
    let head = after - at;
    let max_local = usable - 35;
    let cell = if size <= max_local as u64 {
        (head + size as usize).max(4)
    } else {
        let size = usize::try_from(size).ok()?;
        let min_local = (usable - 12) * 32 / 255 - 23;
        let k = min_local + (size - min_local) % (usable - 4);
        let local = if k <= max_local { k } else { min_local };
        head + local + 4
    };
    Some((cell, rowid as i64))
}

/// The size an interior table cell at `at` takes (child page, then the key), and its key.
fn interior_cell_extent(d: &[u8], at: usize) -> Option<(usize, i64)> {
    let (key, after) = varint(d, at.checked_add(4)?)?;
    Some((after - at, key as i64))
}

impl<'r> Row<'r> {
    /// `part` (a value decoded from this row) as a `Bytes` sharing the page it lies in, when
    /// the record was read in place; `None` for a record put together from overflow pages.
    pub fn share(&self, part: &[u8]) -> Option<Bytes> {
        let page = self.page_data?;
        let (p, w) = (part.as_ptr() as usize, page.as_ptr() as usize);
        (p >= w && p + part.len() <= w + page.len()).then(|| page.slice_ref(part))
    }

    /// The bytes of the page the record lies in, when it was read in place.
    pub fn page_bytes(&self) -> Option<&'r Bytes> {
        self.page_data
    }

    /// Decodes the record's first `out.len()` columns into `out`; a column the record does
    /// not hold (a table that gained columns later) is NULL. Text is returned as stored
    /// (UTF-8 in a file whose text encoding, header bytes 56..60, is 1).
    pub fn columns(&self, out: &mut [ValueRef<'r>]) -> Result<(), String> {
        record_columns(self.payload, out).map_err(|what| {
            self.file.error(
                self.page,
                format_args!("rowid {}: record {what}", self.rowid),
            )
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
        let len = serial_len(kind)?;
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
    // The columns not asked for, then: the header's serial types must account for the
    // payload exactly (SQLite finds such a record malformed; it is no row to read).
    while at < header {
        let (kind, next) = varint(&p[..header], at).ok_or("header cut")?;
        at = next;
        body = body
            .checked_add(serial_len(kind)?)
            .filter(|&end| end <= p.len())
            .ok_or("column out of the record")?;
    }
    if body != p.len() {
        return Err(format!(
            "columns end at byte {body} of its {} bytes",
            p.len()
        ));
    }
    Ok(())
}

/// The bytes a value of serial type `kind` takes (below 12: 0, 1, 2, 3, 4, 6, 8, 8, 0, 0;
/// 10 and 11 are reserved; 12 and up: (n - 12) / 2 bytes of blob or text).
#[inline]
fn serial_len(kind: u64) -> Result<usize, String> {
    const LEN: [usize; 12] = [0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0];
    match kind {
        0..=9 => Ok(LEN[kind as usize]),
        10 | 11 => Err(format!("serial type {kind} is reserved")),
        n => Ok(usize::try_from((n - 12) / 2).unwrap_or(usize::MAX)),
    }
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
    // Serial types, header sizes and small payload sizes fit in one byte; a record's size
    // and the serial type of a value of up to 8 KiB in two.
    match buf.get(at) {
        Some(&b) if b < 0x80 => Some((b as u64, at + 1)),
        Some(&b) => match buf.get(at + 1) {
            Some(&c) if c < 0x80 => Some(((((b & 0x7f) as u64) << 7) | c as u64, at + 2)),
            _ => varint_long(buf, at),
        },
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
