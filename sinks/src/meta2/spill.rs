//! The rows of a table the meta2 sink leaves to SQLite, kept on disk until the file's pages are
//! written (then read back once, in order, and inserted), so that the sink's memory is bounded
//! however big such a table is.
//!
//! ```text
//! an unlinked temporary file beside the base (0600, gone when closed), records in order:
//!   u32 BE key length | key | u32 BE value length | value      (a row message's key and value)
//! ```

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use pump::Message;

/// Bytes buffered before a write to the file.
const BUFFER: usize = 256 << 10;

/// A table's rows on disk, written as they come.
pub struct Spill {
    file: Option<BufWriter<File>>,
    rows: u64,
}

impl Spill {
    /// An empty spill in `dir` (an unlinked file).
    pub fn new(dir: &Path) -> Result<Spill, String> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            format!(
                "{}: cannot create a temporary file for rows: {e}",
                dir.display()
            )
        })?;
        Ok(Spill {
            file: Some(BufWriter::with_capacity(BUFFER, file)),
            rows: 0,
        })
    }

    /// Appends one row (its message's key and value).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let w = self
            .file
            .as_mut()
            .ok_or("the rows were read back already")?;
        let len =
            |b: &[u8]| u32::try_from(b.len()).map_err(|_| format!("a cell of {} bytes", b.len()));
        let (k, v) = (len(key)?, len(value)?);
        w.write_all(&k.to_be_bytes())
            .and_then(|_| w.write_all(key))
            .and_then(|_| w.write_all(&v.to_be_bytes()))
            .and_then(|_| w.write_all(value))
            .map_err(|e| format!("writing a row to the temporary file: {e}"))?;
        self.rows += 1;
        Ok(())
    }

    /// The rows, from the first: once.
    pub fn read_back(&mut self) -> Result<SpillReader, String> {
        let w = self.file.take().ok_or("the rows were read back already")?;
        let mut f = w
            .into_inner()
            .map_err(|e| format!("writing the rows' temporary file: {}", e.error()))?;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| format!("rewinding the rows' temporary file: {e}"))?;
        Ok(SpillReader {
            r: BufReader::with_capacity(BUFFER, f),
            left: self.rows,
        })
    }
}

/// Reads a spill's rows back in order.
pub struct SpillReader {
    r: BufReader<File>,
    left: u64,
}

impl SpillReader {
    /// The next row as a row message (key and value only), or `None` after the last.
    pub fn next_row(&mut self) -> Result<Option<Message>, String> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let key = self.part()?;
        let value = self.part()?;
        Ok(Some(Message::mutation(key, value)))
    }

    fn part(&mut self) -> Result<Bytes, String> {
        let err = |e: std::io::Error| format!("reading the rows' temporary file: {e}");
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len).map_err(err)?;
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        self.r.read_exact(&mut b).map_err(err)?;
        Ok(Bytes::from(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_in_order_and_leave_no_file() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spill::new(d.path()).unwrap();
        for i in 0..10_000u32 {
            let value = vec![b'v'; (i % 300) as usize];
            s.push(format!("k{i}").as_bytes(), &value).unwrap();
        }
        s.push(b"", b"").unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "unlinked");
        let mut r = s.read_back().unwrap();
        for i in 0..10_000u32 {
            let m = r.next_row().unwrap().unwrap();
            assert_eq!(&m.key[..], format!("k{i}").as_bytes());
            assert_eq!(m.value.len(), (i % 300) as usize);
        }
        let last = r.next_row().unwrap().unwrap();
        assert!(last.key.is_empty() && last.value.is_empty());
        assert!(r.next_row().unwrap().is_none());
        assert!(s.read_back().is_err(), "once");
    }
}
