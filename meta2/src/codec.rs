//! How a meta2 base travels through the pump as [`pump::Message`]s (this crate does not
//! depend on `pump`: it encodes the byte strings; the source and sink build the messages).
//!
//! ```text
//! Rows are item messages (pump's `Op::Mutation`); the base, schema and end messages are
//! control messages (pump's `Op::Control(code)`, the codes in [`control`]), which filters and
//! rehash leave alone. The table id travels in `vbucket`.
//!
//! 1 base message       control BASE, key empty, value = u32 BE page size, u32 BE
//!                      user_version, u32 BE application_id: what a copy keeps of the source
//!                      file's header (a sink given none writes 4096-byte pages and zeros)
//! per table, in the order of sqlite_master (table id = vbucket, 0, 1, 2, ...):
//!   1 schema message   control SCHEMA, key = table name,
//!                      value = u16 count, then count x (u32 len, SQL text): the CREATE TABLE
//!                      first, then the table's CREATE INDEX / CREATE TRIGGER statements
//!   n row messages     a mutation, key = the primary key cells (or the rowid as one INTEGER
//!                      cell when the table has no primary key), value = every column's cell,
//!                      in key order (the rowid's when the table has no primary key)
//!   1 end message      control TABLE_END, key = table name, value = u64 BE row count,
//!                      then the table's digest as the source computed it over the rows it
//!                      sent ([`crate::check::TableDigest`], hex): the sink compares the
//!                      table it built with it
//!
//! cells  = u16 BE count, then count x cell
//! cell   = tag u8 then
//!          0 NULL     nothing
//!          1 INTEGER  i64, 8 bytes big-endian
//!          2 REAL     f64 bits, 8 bytes big-endian (NaN, -0.0, ... kept bit for bit)
//!          3 TEXT     u32 BE length, the bytes as SQLite stores them
//!          4 BLOB     u32 BE length, the bytes
//! ```
//! Every SQLite storage class keeps its own tag, so `1` (INTEGER), `1.0` (REAL), `'1'` (TEXT)
//! and `x'31'` (BLOB) come back as they were.

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

use crate::Error;

/// What the meta2 kinds' messages are, in the user's words (pump's `Payload::Format`).
pub const PAYLOAD: &str = "a meta2 base";

/// The codes of the control messages (pump's `Op::Control(code)`).
pub mod control {
    /// A table's schema.
    pub const SCHEMA: u8 = 1;
    /// A table's end: its row count and digest.
    pub const TABLE_END: u8 = 2;
    /// The base's header, sent before the first table.
    pub const BASE: u8 = 3;
}

/// What a copy keeps of its source file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseHeader {
    /// Bytes per page, 512 to 65536.
    pub page_size: u32,
    /// `PRAGMA user_version` (header bytes 60..64).
    pub user_version: u32,
    /// `PRAGMA application_id` (header bytes 68..72).
    pub application_id: u32,
}

impl Default for BaseHeader {
    fn default() -> Self {
        BaseHeader {
            page_size: 4096,
            user_version: 0,
            application_id: 0,
        }
    }
}

/// Encodes the base message's value.
pub fn encode_base(h: &BaseHeader) -> Vec<u8> {
    [h.page_size, h.user_version, h.application_id]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

/// Decodes the base message's value.
pub fn decode_base(b: &[u8]) -> Result<BaseHeader, Error> {
    if b.len() != 12 {
        return Err(Error::Encoding(format!(
            "a base message of {} bytes; it has 12",
            b.len()
        )));
    }
    let at = |i: usize| u32_of(&b[i..i + 4]);
    Ok(BaseHeader {
        page_size: at(0),
        user_version: at(4),
        application_id: at(8),
    })
}

/// Encodes a table end message's value: the rows sent and their digest.
pub fn encode_table_end(rows: u64, digest: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + digest.len());
    out.extend_from_slice(&rows.to_be_bytes());
    out.extend_from_slice(digest.as_bytes());
    out
}

/// Decodes a table end message's value: (rows, digest).
pub fn decode_table_end(b: &[u8]) -> Result<(u64, String), Error> {
    if b.len() < 8 {
        return Err(Error::Encoding(format!(
            "a table end of {} bytes, 8 at least wanted",
            b.len()
        )));
    }
    let digest = std::str::from_utf8(&b[8..])
        .map_err(|_| Error::Encoding("a table digest that is not text".into()))?;
    Ok((u64_of(&b[..8]), digest.to_string()))
}

/// One SQLite value, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Cell {
    /// Copies a value read from SQLite.
    pub fn from_ref(v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Integer(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(t.to_vec()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(*i),
            Cell::Real(f) => ValueRef::Real(*f),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Appends one value to `out`.
pub fn put_cell(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(0),
        ValueRef::Integer(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => {
            out.push(3);
            out.extend_from_slice(&(t.len() as u32).to_be_bytes());
            out.extend_from_slice(t);
        }
        ValueRef::Blob(b) => {
            out.push(4);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// Encodes values as `cells`.
pub fn encode_cells<'a>(values: impl ExactSizeIterator<Item = ValueRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + values.len() * 9);
    out.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for v in values {
        put_cell(&mut out, v);
    }
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if b.len() < n {
        return Err(Error::Encoding(format!(
            "{} bytes wanted, {} left",
            n,
            b.len()
        )));
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// Decodes `cells`.
pub fn decode_cells(mut b: &[u8]) -> Result<Vec<Cell>, Error> {
    let h = take(&mut b, 2)?;
    let n = u16::from_be_bytes([h[0], h[1]]) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = take(&mut b, 1)?[0];
        out.push(match tag {
            0 => Cell::Null,
            1 => Cell::Integer(u64_of(take(&mut b, 8)?) as i64),
            2 => Cell::Real(f64::from_bits(u64_of(take(&mut b, 8)?))),
            3 | 4 => {
                let len = u32_of(take(&mut b, 4)?) as usize;
                let bytes = take(&mut b, len)?.to_vec();
                if tag == 3 {
                    Cell::Text(bytes)
                } else {
                    Cell::Blob(bytes)
                }
            }
            t => return Err(Error::Encoding(format!("unknown cell tag {t}"))),
        });
    }
    if !b.is_empty() {
        return Err(Error::Encoding(format!(
            "{} bytes after the last cell",
            b.len()
        )));
    }
    Ok(out)
}

/// Decodes `cells` without copying: TEXT and BLOB borrow from `b`.
pub fn decode_refs(b: &[u8]) -> Result<Vec<ValueRef<'_>>, Error> {
    let mut out = Vec::new();
    decode_refs_into(b, &mut out)?;
    Ok(out)
}

/// Decodes `cells` without copying, appending to `out` (a buffer reused from row to row).
pub fn decode_refs_into<'a>(mut b: &'a [u8], out: &mut Vec<ValueRef<'a>>) -> Result<(), Error> {
    let h = take(&mut b, 2)?;
    let n = u16::from_be_bytes([h[0], h[1]]) as usize;
    out.reserve(n);
    for _ in 0..n {
        let tag = take(&mut b, 1)?[0];
        out.push(match tag {
            0 => ValueRef::Null,
            1 => ValueRef::Integer(u64_of(take(&mut b, 8)?) as i64),
            2 => ValueRef::Real(f64::from_bits(u64_of(take(&mut b, 8)?))),
            3 => {
                let len = u32_of(take(&mut b, 4)?) as usize;
                ValueRef::Text(take(&mut b, len)?)
            }
            4 => {
                let len = u32_of(take(&mut b, 4)?) as usize;
                ValueRef::Blob(take(&mut b, len)?)
            }
            t => return Err(Error::Encoding(format!("unknown cell tag {t}"))),
        });
    }
    if !b.is_empty() {
        return Err(Error::Encoding(format!(
            "{} bytes after the last cell",
            b.len()
        )));
    }
    Ok(())
}

/// Encodes a schema message's value: the table's SQL statements.
pub fn encode_schema(statements: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(statements.len() as u16).to_be_bytes());
    for s in statements {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Decodes a schema message's value.
pub fn decode_schema(mut b: &[u8]) -> Result<Vec<String>, Error> {
    let h = take(&mut b, 2)?;
    let n = u16::from_be_bytes([h[0], h[1]]) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u32_of(take(&mut b, 4)?) as usize;
        let s = take(&mut b, len)?;
        out.push(
            String::from_utf8(s.to_vec())
                .map_err(|_| Error::Encoding("schema SQL is not UTF-8".into()))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_header_roundtrips_and_a_wrong_length_is_an_error() {
        let h = BaseHeader {
            page_size: 65536,
            user_version: 0xffff_fffe,
            application_id: 0x4d45_5441,
        };
        assert_eq!(decode_base(&encode_base(&h)).unwrap(), h);
        let b = encode_base(&h);
        assert!(decode_base(&b[..11]).is_err());
        assert!(decode_base(&[b.as_slice(), &[0]].concat()).is_err());
    }

    #[test]
    fn cells_keep_every_storage_class_apart() {
        let vals = [
            ValueRef::Null,
            ValueRef::Integer(1),
            ValueRef::Real(1.0),
            ValueRef::Text(b"1"),
            ValueRef::Blob(b"1"),
            ValueRef::Real(-0.0),
            ValueRef::Integer(i64::MIN),
        ];
        let enc = encode_cells(vals.iter().copied());
        let dec = decode_cells(&enc).unwrap();
        assert_eq!(
            dec[..5],
            [
                Cell::Null,
                Cell::Integer(1),
                Cell::Real(1.0),
                Cell::Text(b"1".to_vec()),
                Cell::Blob(b"1".to_vec())
            ]
        );
        assert!(matches!(dec[5], Cell::Real(f) if f.to_bits() == (-0.0f64).to_bits()));
        assert_eq!(dec[6], Cell::Integer(i64::MIN));
    }

    #[test]
    fn truncated_cells_are_an_error_not_a_panic() {
        let enc = encode_cells([ValueRef::Text(b"hello")].into_iter());
        for n in 0..enc.len() {
            assert!(decode_cells(&enc[..n]).is_err());
        }
    }

    #[test]
    fn table_end_roundtrips_and_a_short_one_is_an_error() {
        let enc = encode_table_end(42, "abcd");
        assert_eq!(decode_table_end(&enc).unwrap(), (42, "abcd".to_string()));
        assert!(decode_table_end(&enc[..7]).is_err());
    }

    #[test]
    fn schema_roundtrips() {
        let s = vec![
            "CREATE TABLE t(a)".to_string(),
            "CREATE INDEX i ON t(a)".into(),
        ];
        assert_eq!(decode_schema(&encode_schema(&s)).unwrap(), s);
    }
}
