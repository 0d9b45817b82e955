//! Inspecting the copies of a base and judging them against each other.
//!
//! [`inspect`] looks at one file alone (missing, unreadable, corrupt, or readable with its
//! admin keys); [`judge`] compares the readable copies (incomplete, behind, not listed in
//! `sys.peers`, `sys.peers` disagreeing, frozen) and gives one [`CopyReport`] per peer.
//! [`digest`] hashes each table's rows in key order, for "same content" checks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use crate::codec::put_cell;
use crate::schema::{self, REQUIRED_KEYS, STATUS_FROZEN};
use crate::Error;

/// What is wrong with a copy, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Ok,
    Missing,
    Unreadable,
    Corrupt,
    Incomplete,
    Behind,
    NotListed,
    PeersDisagree,
    Frozen,
}

impl Health {
    /// The word used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Missing => "missing",
            Health::Unreadable => "unreadable",
            Health::Corrupt => "corrupt",
            Health::Incomplete => "incomplete",
            Health::Behind => "behind",
            Health::NotListed => "not-listed",
            Health::PeersDisagree => "peers-disagree",
            Health::Frozen => "frozen",
        }
    }

    /// Whether the copy can be read as a source of rows (its file is sound).
    pub fn readable(self) -> bool {
        !matches!(self, Health::Missing | Health::Unreadable | Health::Corrupt)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file, looked at alone.
#[derive(Debug, Clone)]
pub struct CopyState {
    pub path: PathBuf,
    /// Ok (readable), Missing, Unreadable or Corrupt.
    pub health: Health,
    pub message: String,
    pub admin: BTreeMap<String, Vec<u8>>,
    /// `version:main.<table>` -> n.
    pub versions: BTreeMap<String, u64>,
    /// `sys.peers`, split.
    pub peers: Vec<String>,
}

impl CopyState {
    fn bad(path: &Path, health: Health, message: String) -> CopyState {
        CopyState {
            path: path.to_path_buf(),
            health,
            message,
            admin: BTreeMap::new(),
            versions: BTreeMap::new(),
            peers: Vec::new(),
        }
    }

    /// `sys.status` (absent = 0, enabled).
    pub fn status(&self) -> u64 {
        self.admin
            .get("sys.status")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sum of the table versions (to rank copies).
    pub fn version_total(&self) -> u64 {
        self.versions.values().sum()
    }
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) | Some(rusqlite::ErrorCode::NotADatabase)
    )
}

/// Looks at one copy: `quick_check` (or `integrity_check` with `full`), then its admin table.
pub fn inspect(path: &Path, full: bool) -> CopyState {
    inspect_with(
        path,
        Some(if full {
            "integrity_check"
        } else {
            "quick_check"
        }),
    )
}

/// [`inspect`] without the structure check: the admin table only (for a copy whose pages
/// are checked later anyway, e.g. by `quick_check` of a page copy of it).
pub fn inspect_admin(path: &Path) -> CopyState {
    inspect_with(path, None)
}

fn inspect_with(path: &Path, pragma: Option<&str>) -> CopyState {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return CopyState::bad(path, Health::Missing, "no file".into())
        }
        Err(e) => return CopyState::bad(path, Health::Unreadable, e.to_string()),
        Ok(m) if !m.is_file() => {
            return CopyState::bad(path, Health::Unreadable, "not a regular file".into())
        }
        Ok(_) => {}
    }
    if let Err(e) = std::fs::File::open(path) {
        return CopyState::bad(path, Health::Unreadable, e.to_string());
    }
    let conn = match schema::open_read(path) {
        Ok(c) => c,
        Err(e) => return CopyState::bad(path, Health::Unreadable, e.to_string()),
    };
    let check: rusqlite::Result<Vec<String>> = match pragma {
        Some(pragma) => conn
            .prepare(&format!("PRAGMA {pragma}"))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect()),
        None => Ok(vec!["ok".to_string()]),
    };
    let pragma = pragma.unwrap_or_default();
    match check {
        Err(e) if is_corruption(&e) => return CopyState::bad(path, Health::Corrupt, e.to_string()),
        Err(e) => return CopyState::bad(path, Health::Unreadable, e.to_string()),
        Ok(lines) if lines != ["ok"] => {
            let first = lines.first().cloned().unwrap_or_default();
            return CopyState::bad(path, Health::Corrupt, format!("{pragma}: {first}"));
        }
        Ok(_) => {}
    }
    let admin: rusqlite::Result<BTreeMap<String, Vec<u8>>> =
        conn.prepare("SELECT k, v FROM admin").and_then(|mut s| {
            s.query_map([], |r| {
                let v = match r.get_ref(1)? {
                    ValueRef::Null => Vec::new(),
                    ValueRef::Integer(i) => i.to_string().into_bytes(),
                    ValueRef::Real(f) => f.to_string().into_bytes(),
                    ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
                };
                Ok((r.get::<_, String>(0)?, v))
            })?
            .collect()
        });
    let admin = match admin {
        Ok(a) => a,
        Err(e) if is_corruption(&e) => return CopyState::bad(path, Health::Corrupt, e.to_string()),
        Err(e) => return CopyState::bad(path, Health::Corrupt, format!("admin table: {e}")),
    };
    let versions = admin
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("version:main.")?.to_string(),
                schema::parse_version(v)?,
            ))
        })
        .collect();
    let peers = admin
        .get("sys.peers")
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    CopyState {
        path: path.to_path_buf(),
        health: Health::Ok,
        message: "ok".into(),
        admin,
        versions,
        peers,
    }
}

/// The verdict on one peer's copy.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub address: String,
    pub path: PathBuf,
    pub health: Health,
    pub message: String,
}

/// Judges every copy against the others. `copies` = (address, state) per peer.
pub fn judge(copies: &[(String, CopyState)]) -> Vec<CopyReport> {
    let readable: Vec<&CopyState> = copies
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.health.readable())
        .collect();
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &readable {
        for (t, n) in &c.versions {
            let e = highest.entry(t.as_str()).or_insert(0);
            *e = (*e).max(*n);
        }
    }
    let mut peer_votes: BTreeMap<&[String], usize> = BTreeMap::new();
    for c in &readable {
        *peer_votes.entry(c.peers.as_slice()).or_insert(0) += 1;
    }
    let majority = peer_votes.iter().max_by_key(|(_, n)| **n).map(|(p, _)| *p);
    copies
        .iter()
        .map(|(address, c)| {
            let (health, message) = judge_one(address, c, &highest, majority, peer_votes.len());
            CopyReport {
                address: address.clone(),
                path: c.path.clone(),
                health,
                message,
            }
        })
        .collect()
}

fn judge_one(
    address: &str,
    c: &CopyState,
    highest: &BTreeMap<&str, u64>,
    majority: Option<&[String]>,
    peer_sets: usize,
) -> (Health, String) {
    if !c.health.readable() {
        return (c.health, c.message.clone());
    }
    let missing: Vec<&str> = REQUIRED_KEYS
        .iter()
        .copied()
        .filter(|k| !c.admin.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return (
            Health::Incomplete,
            format!("admin keys missing: {}", missing.join(", ")),
        );
    }
    let behind: Vec<String> = highest
        .iter()
        .filter_map(|(t, max)| {
            let n = c.versions.get(*t).copied().unwrap_or(0);
            (n < *max).then(|| format!("{t} at {n}, another copy at {max}"))
        })
        .collect();
    if !behind.is_empty() {
        return (Health::Behind, behind.join("; "));
    }
    if !c.peers.iter().any(|p| p == address) {
        return (
            Health::NotListed,
            format!("{address} is not in sys.peers ({})", c.peers.join(",")),
        );
    }
    if peer_sets > 1 && majority != Some(c.peers.as_slice()) {
        return (
            Health::PeersDisagree,
            format!(
                "sys.peers {} differs from the other copies",
                c.peers.join(",")
            ),
        );
    }
    if c.status() == STATUS_FROZEN {
        return (Health::Frozen, "sys.status frozen (4294967295)".into());
    }
    (Health::Ok, "ok".into())
}

/// The digest of one table as [`digest`] computes it, fed row by row: the table's SQL
/// statements first, then every row's cells in key order (the rowid first when the table has
/// no primary key), each encoded as in [`crate::codec`] without the leading count.
pub struct TableDigest(Sha256);

impl TableDigest {
    /// Starts with the table's statements (CREATE TABLE, then its indexes and triggers).
    pub fn new(statements: &[String]) -> TableDigest {
        let mut h = Sha256::new();
        for s in statements {
            h.update(s.as_bytes());
        }
        TableDigest(h)
    }

    /// Adds encoded cells (no count).
    pub fn update(&mut self, cells: &[u8]) {
        self.0.update(cells);
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The tables whose digests differ between `a` and `b` (present in one only, or with other
/// rows), in name order.
pub fn tables_differing<'a>(
    a: &'a BTreeMap<String, String>,
    b: &'a BTreeMap<String, String>,
) -> Vec<&'a str> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|t| a.get(*t) != b.get(*t))
        .map(String::as_str)
        .collect()
}

/// Per table, the SHA-256 (hex) of its rows in key order, every cell encoded as in
/// [`crate::codec`]. Tables whose name is in `skip` are left out.
pub fn digest(path: &Path, skip: &[&str]) -> Result<BTreeMap<String, String>, Error> {
    let conn = schema::open_read(path)?;
    digest_conn(&conn, path, skip)
}

/// The per-table digests of a file nobody else writes (a base just built, not yet renamed
/// into place), on a connection of its own (read through a memory map, with a large page
/// cache), each table's rows taken in the order they are stored ([`schema::Table::stored_sql`]):
/// a table scan, not a lookup per row. For a base built by inserting each table's rows in
/// key order this equals [`digest_tables`]; otherwise it is the digest of the rows in the
/// order they were inserted, which is what a builder compares with the rows it received.
pub fn digest_private(
    path: &Path,
    tables: &[schema::Table],
) -> Result<BTreeMap<String, String>, Error> {
    let conn = schema::open_read(path)?;
    conn.execute_batch("PRAGMA mmap_size=4294967296; PRAGMA cache_size=-262144")
        .map_err(|e| Error::sqlite(path, e))?;
    digest_stored(&conn, tables).map_err(|e| Error::sqlite(path, e))
}

/// [`digest_private`] on an open connection.
pub fn digest_stored(
    conn: &rusqlite::Connection,
    tables: &[schema::Table],
) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in tables {
        let sql = t.stored_sql(schema::without_rowid(conn, &t.name)?);
        out.insert(t.name.clone(), digest_query(conn, t, &sql, None)?);
    }
    Ok(out)
}

fn digest_conn(
    conn: &rusqlite::Connection,
    path: &Path,
    skip: &[&str],
) -> Result<BTreeMap<String, String>, Error> {
    let tables = schema::tables(conn).map_err(|e| Error::sqlite(path, e))?;
    digest_tables(conn, &tables, skip, None).map_err(|e| Error::sqlite(path, e))
}

/// [`digest`] of `tables` (already known) on an open connection.
/// Adds the rows read to `rows` when given.
pub fn digest_tables(
    conn: &rusqlite::Connection,
    tables: &[schema::Table],
    skip: &[&str],
    mut rows_read: Option<&mut u64>,
) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in tables.iter().filter(|t| !skip.contains(&t.name.as_str())) {
        let d = digest_query(conn, t, &t.select_sql(), rows_read.as_deref_mut())?;
        out.insert(t.name.clone(), d);
    }
    Ok(out)
}

/// The digest of table `t`'s rows as `sql` returns them (its statements first).
fn digest_query(
    conn: &rusqlite::Connection,
    t: &schema::Table,
    sql: &str,
    mut rows_read: Option<&mut u64>,
) -> rusqlite::Result<String> {
    let mut h = TableDigest::new(&t.statements);
    let mut buf = Vec::new();
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(n) = rows_read.as_deref_mut() {
            *n += 1;
        }
        buf.clear();
        for i in 0..n {
            put_cell(&mut buf, r.get_ref(i)?);
        }
        h.update(&buf);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_differing_names_changed_and_one_sided_tables_once_in_order() {
        let d = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = d(&[("alias", "1"), ("chunks", "2"), ("only_a", "3")]);
        let b = d(&[("alias", "1"), ("chunks", "X"), ("only_b", "4")]);
        assert_eq!(tables_differing(&a, &b), ["chunks", "only_a", "only_b"]);
        assert!(tables_differing(&a, &a).is_empty());
    }
}
