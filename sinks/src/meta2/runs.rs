//! Sorted runs of an index's records, for an index whose keys outgrow the memory given to
//! them: each run is written to one temporary file (unlinked at once, in the directory of
//! the base being built), and the runs are merged in the index's order as its b-tree is
//! written.
//!
//! ```text
//! file:  run 0: (u32 LE length, record) ...   run 1: ...   ...
//! merge: a heap of the runs' next records, ordered by key columns, then rowid
//! ```

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use pump_formats::sqlite_build::{compare_keys, KeyOrder};
use pump_formats::sqlite_file::record_columns;
use rusqlite::types::ValueRef;

/// Bytes read from a run at a time while merging.
const READ_CHUNK: usize = 64 * 1024;

/// The runs of one index, in its temporary file.
pub(super) struct Runs {
    index: String,
    out: BufWriter<File>,
    /// The byte range of each run in the file.
    bounds: Vec<Range<u64>>,
    len: u64,
}

impl Runs {
    /// A new, empty set of runs for `index`, in a temporary file in `dir`.
    pub fn new(index: &str, dir: &Path) -> Result<Runs, String> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            format!(
                "index {index}: a temporary file for its sorted keys in {}: {e}",
                dir.display()
            )
        })?;
        Ok(Runs {
            index: index.to_string(),
            out: BufWriter::with_capacity(READ_CHUNK, file),
            bounds: Vec::new(),
            len: 0,
        })
    }

    /// Appends one run: the records `records[..ends[0]]`, `records[ends[0]..ends[1]]`, ...,
    /// already in the index's order.
    pub fn push(&mut self, records: &[u8], ends: &[usize]) -> Result<(), String> {
        let start = self.len;
        let mut from = 0;
        for &end in ends {
            let r = &records[from..end];
            let len = u32::try_from(r.len())
                .map_err(|_| format!("index {}: a key of over 4 GiB", self.index))?;
            self.out
                .write_all(&len.to_le_bytes())
                .and_then(|_| self.out.write_all(r))
                .map_err(|e| self.io_error(e))?;
            self.len += 4 + r.len() as u64;
            from = end;
        }
        self.bounds.push(start..self.len);
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> String {
        format!("index {}: its sorted keys' temporary file: {e}", self.index)
    }

    /// The records of every run in the index's order: `orders` for the key columns, then the
    /// rowid (the record's last column). With `unique`, two equal keys (NULLs apart) are an
    /// error.
    pub fn merge(mut self, orders: &[KeyOrder], unique: bool) -> Result<Merge, String> {
        self.out.flush().map_err(|e| self.io_error(e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| format!("index {}: {}", self.index, e.error()))?;
        let file = Arc::new(file);
        let mut order = orders.to_vec();
        order.push(KeyOrder::ROWID);
        let order: Arc<[KeyOrder]> = order.into();
        let mut merge = Merge {
            index: self.index,
            heap: BinaryHeap::with_capacity(self.bounds.len()),
            order,
            unique,
            last: Vec::new(),
            current: Vec::new(),
        };
        for range in self.bounds {
            let mut run = RunReader {
                file: file.clone(),
                next: range.start,
                end: range.end,
                buf: Vec::new(),
                at: 0,
            };
            if let Some(record) = run.next(&merge.index)? {
                merge.heap.push(Head {
                    record,
                    run,
                    order: merge.order.clone(),
                });
            }
        }
        Ok(merge)
    }
}

/// One run being read back.
struct RunReader {
    file: Arc<File>,
    /// The file offset of the bytes after `buf`.
    next: u64,
    end: u64,
    buf: Vec<u8>,
    at: usize,
}

impl RunReader {
    /// The run's next record; `None` at its end.
    fn next(&mut self, index: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(len) = self.take(4, index)? else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        match self.take(len, index)? {
            Some(r) => Ok(Some(r)),
            None => Err(format!("index {index}: a sorted run ends inside a record")),
        }
    }

    /// The next `n` bytes of the run; `None` when the run has no bytes left.
    fn take(&mut self, n: usize, index: &str) -> Result<Option<Vec<u8>>, String> {
        if self.at == self.buf.len() && self.next == self.end {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.at == self.buf.len() {
                let left = self.end - self.next;
                if left == 0 {
                    return Err(format!("index {index}: a sorted run ends inside a record"));
                }
                let want = (left as usize).min(READ_CHUNK.max(n - out.len()));
                self.buf.resize(want, 0);
                self.file
                    .read_exact_at(&mut self.buf, self.next)
                    .map_err(|e| format!("index {index}: its sorted keys' temporary file: {e}"))?;
                self.next += want as u64;
                self.at = 0;
            }
            let k = (n - out.len()).min(self.buf.len() - self.at);
            out.extend_from_slice(&self.buf[self.at..self.at + k]);
            self.at += k;
        }
        Ok(Some(out))
    }
}

/// A run's next record in the merge's heap: the heap's top is the smallest record.
struct Head {
    record: Vec<u8>,
    run: RunReader,
    order: Arc<[KeyOrder]>,
}

impl Head {
    fn cmp_records(&self, other: &Head) -> Ordering {
        compare_records(&self.record, &other.record, &self.order)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_records(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap keeps its greatest on top: reversed, the smallest record.
        self.cmp_records(other).reverse()
    }
}

/// The most columns decoded on the stack to compare two records.
const STACK_COLUMNS: usize = 16;

/// Calls `f` with the values of `record`'s `n` columns (NULL for a broken record: records
/// are written by this module, and the b-tree writer checks them again).
fn with_values<T>(record: &[u8], n: usize, f: impl FnOnce(&[ValueRef<'_>]) -> T) -> T {
    if n <= STACK_COLUMNS {
        let mut values = [ValueRef::Null; STACK_COLUMNS];
        let _ = record_columns(record, &mut values[..n]);
        f(&values[..n])
    } else {
        let mut values = vec![ValueRef::Null; n];
        let _ = record_columns(record, &mut values);
        f(&values)
    }
}

/// The order of two index records under `order` (one entry per column, the rowid's last).
fn compare_records(a: &[u8], b: &[u8], order: &[KeyOrder]) -> Ordering {
    let n = order.len();
    with_values(a, n, |x| with_values(b, n, |y| compare_keys(x, y, order)))
}

/// The records of all the runs, in order.
pub(super) struct Merge {
    index: String,
    heap: BinaryHeap<Head>,
    /// The key columns' orders, then the rowid's.
    order: Arc<[KeyOrder]>,
    unique: bool,
    /// The record returned before `current`, for the UNIQUE check (empty before the
    /// second: a record is never empty).
    last: Vec<u8>,
    current: Vec<u8>,
}

impl Merge {
    /// The next record in the index's order; `None` after the last.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, String> {
        let Some(mut head) = self.heap.pop() else {
            return Ok(None);
        };
        let record = std::mem::take(&mut head.record);
        if let Some(next) = head.run.next(&self.index)? {
            head.record = next;
            self.heap.push(head);
        }
        std::mem::swap(&mut self.last, &mut self.current);
        self.current = record;
        if self.unique && !self.last.is_empty() {
            self.check_unique()?;
        }
        Ok(Some(&self.current))
    }

    /// A UNIQUE index's two neighbours must differ in their key (a NULL in it makes any two
    /// keys differ).
    fn check_unique(&self) -> Result<(), String> {
        let n = self.order.len();
        let keys = &self.order[..n - 1];
        with_values(&self.last, n, |a| {
            with_values(&self.current, n, |b| {
                let null = a[..n - 1].iter().any(|v| matches!(v, ValueRef::Null));
                if !null && compare_keys(&a[..n - 1], &b[..n - 1], keys) == Ordering::Equal {
                    let rowid = |v: &ValueRef<'_>| match v {
                        ValueRef::Integer(r) => r.to_string(),
                        _ => "?".into(),
                    };
                    return Err(unique_violation(
                        &self.index,
                        rowid(&a[n - 1]),
                        rowid(&b[n - 1]),
                    ));
                }
                Ok(())
            })
        })
    }
}

/// The error of two rows with the same key in a UNIQUE index.
pub(super) fn unique_violation(
    index: &str,
    a: impl std::fmt::Display,
    b: impl std::fmt::Display,
) -> String {
    format!("index {index}: rows {a} and {b} have the same key in a UNIQUE index")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump_formats::sqlite_build::{encode_record, Collation};

    fn record(values: &[ValueRef<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(values, &mut out);
        out
    }

    /// One run of (text key, rowid) records, in the order given.
    fn run(runs: &mut Runs, rows: &[(&str, i64)]) {
        let mut records = Vec::new();
        let mut ends = Vec::new();
        for (k, r) in rows {
            encode_record(
                &[ValueRef::Text(k.as_bytes()), ValueRef::Integer(*r)],
                &mut records,
            );
            ends.push(records.len());
        }
        runs.push(&records, &ends).unwrap();
    }

    fn merged(runs: Runs, orders: &[KeyOrder], unique: bool) -> Result<Vec<(String, i64)>, String> {
        let mut m = runs.merge(orders, unique)?;
        let mut out = Vec::new();
        while let Some(r) = m.next_record()? {
            let mut v = [ValueRef::Null; 2];
            record_columns(r, &mut v).unwrap();
            match v {
                [ValueRef::Text(t), ValueRef::Integer(i)] => {
                    out.push((String::from_utf8(t.to_vec()).unwrap(), i))
                }
                other => panic!("{other:?}"),
            }
        }
        Ok(out)
    }

    fn order(collation: Collation, descending: bool) -> [KeyOrder; 1] {
        [KeyOrder {
            collation,
            descending,
        }]
    }

    #[test]
    fn runs_merge_in_the_index_order_then_by_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new("ix", dir.path()).unwrap();
        run(&mut runs, &[("a", 5), ("B", 1), ("c", 9)]);
        run(&mut runs, &[("A", 2), ("b", 3)]);
        run(&mut runs, &[]);
        run(&mut runs, &[("a", 1), ("d", 4)]);
        assert_eq!(runs.bounds.len(), 4);
        let got = merged(runs, &order(Collation::NoCase, false), false).unwrap();
        let want = [
            ("a", 1),
            ("A", 2),
            ("a", 5),
            ("B", 1),
            ("b", 3),
            ("c", 9),
            ("d", 4),
        ];
        let want: Vec<(String, i64)> = want.iter().map(|(k, r)| (k.to_string(), *r)).collect();
        assert_eq!(got, want);
        // Nothing was left in the directory: the file was unlinked when made.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn descending_keys_merge_greatest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new("ix", dir.path()).unwrap();
        run(&mut runs, &[("c", 1), ("a", 2)]);
        run(&mut runs, &[("d", 3), ("b", 4)]);
        let got = merged(runs, &order(Collation::Binary, true), false).unwrap();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["d", "c", "b", "a"]);
    }

    #[test]
    fn equal_keys_in_two_runs_of_a_unique_index_are_an_error_naming_both_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new("ix_u", dir.path()).unwrap();
        run(&mut runs, &[("a", 1), ("k", 2)]);
        run(&mut runs, &[("k", 7), ("z", 8)]);
        let e = merged(runs, &order(Collation::Binary, false), true).unwrap_err();
        assert!(e.contains("ix_u") && e.contains("rows 2 and 7"), "{e}");
    }

    #[test]
    fn null_keys_of_a_unique_index_may_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new("ix_u", dir.path()).unwrap();
        for rowid in [1, 2] {
            let r = record(&[ValueRef::Null, ValueRef::Integer(rowid)]);
            runs.push(&r, &[r.len()]).unwrap();
        }
        let mut m = runs.merge(&order(Collation::Binary, false), true).unwrap();
        assert!(m.next_record().unwrap().is_some());
        assert!(m.next_record().unwrap().is_some());
        assert!(m.next_record().unwrap().is_none());
    }

    #[test]
    fn a_record_bigger_than_a_read_chunk_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new("ix", dir.path()).unwrap();
        let big = "x".repeat(3 * READ_CHUNK + 5);
        run(&mut runs, &[("a", 1), (&big, 2)]);
        run(&mut runs, &[("b", 3)]);
        let got = merged(runs, &order(Collation::Binary, false), false).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (big, 2));
    }
}
