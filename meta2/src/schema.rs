//! The tables of a base, read from `sqlite_master` (so unknown tables travel too), the
//! reference meta2 schema (SDS 4.10 to 7.3) and the admin keys.

use rusqlite::Connection;

use crate::Error;

/// The reference schema of a meta2 base, as SDS creates it.
pub const REFERENCE_SCHEMA: &[&str] = &[
    "CREATE TABLE admin (k TEXT PRIMARY KEY NOT NULL, v BLOB DEFAULT NULL)",
    "CREATE TABLE contents (id BLOB NOT NULL, hash BLOB, size INT NOT NULL, ctime INT NOT NULL, mtime INT NOT NULL, mime_type TEXT NOT NULL, chunk_method TEXT NOT NULL, policy TEXT, PRIMARY KEY(id))",
    "CREATE INDEX content_by_hash_size ON contents(hash,size)",
    "CREATE TABLE chunks (id TEXT NOT NULL, content BLOB NOT NULL, position TEXT NOT NULL, hash BLOB NOT NULL, size INT NOT NULL, ctime INT NOT NULL, PRIMARY KEY(id), FOREIGN KEY (content) REFERENCES contents(id) ON UPDATE CASCADE ON DELETE CASCADE)",
    "CREATE INDEX chunk_index_by_header ON chunks(content)",
    "CREATE TABLE aliases (alias TEXT NOT NULL, version INT NOT NULL, content BLOB NOT NULL, deleted BOOL NOT NULL, ctime INT NOT NULL, mtime INT NOT NULL, PRIMARY KEY(alias,version), FOREIGN KEY (content) REFERENCES contents(id) ON UPDATE CASCADE ON DELETE CASCADE)",
    "CREATE INDEX alias_index_by_name ON aliases(alias)",
    "CREATE INDEX alias_index_by_header ON aliases(content)",
    "CREATE TABLE properties (alias TEXT NOT NULL, version INT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY(alias,version,key), FOREIGN KEY (alias,version) REFERENCES aliases(alias,version) ON UPDATE CASCADE ON DELETE CASCADE)",
    "CREATE INDEX properties_index_by_header_version ON properties(alias,version)",
];

/// The tables of the reference schema, in creation order.
pub const REFERENCE_TABLES: &[&str] = &["admin", "contents", "chunks", "aliases", "properties"];

/// `sys.status` of a frozen base.
pub const STATUS_FROZEN: u64 = 4_294_967_295;
/// `sys.status` of a disabled base.
pub const STATUS_DISABLED: u64 = 4_294_967_294;

/// Admin keys a complete copy holds (an incomplete one has only `schema_version`,
/// `sys.name`, `sys.type` and the versions).
pub const REQUIRED_KEYS: &[&str] = &[
    "sys.m2.init",
    "sys.m2.ctime",
    "sys.account",
    "sys.user.name",
];

/// The admin key holding a table's version, `"<n>:<when>"`.
pub fn version_key(table: &str) -> String {
    format!("version:main.{table}")
}

/// Parses a version value `"<n>:<when>"` into n.
pub fn parse_version(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    s.split(':').next()?.trim().parse().ok()
}

/// One table of a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its position among the tables of sqlite_master (the messages' vbucket).
    pub id: u16,
    pub name: String,
    /// CREATE TABLE first, then its indexes and triggers.
    pub statements: Vec<String>,
    pub columns: Vec<String>,
    /// The primary key's columns, in key order; empty when the rowid is the key.
    pub pk: Vec<String>,
}

/// Quotes an SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    /// `SELECT [rowid,] cols FROM t ORDER BY key`: the rowid first when the table has no
    /// primary key.
    pub fn select_sql(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        if self.pk.is_empty() {
            format!(
                "SELECT rowid, {} FROM {} ORDER BY rowid",
                cols.join(", "),
                quote(&self.name)
            )
        } else {
            let pk: Vec<String> = self.pk.iter().map(|c| quote(c)).collect();
            format!(
                "SELECT {} FROM {} ORDER BY {}",
                cols.join(", "),
                quote(&self.name),
                pk.join(", ")
            )
        }
    }

    /// `SELECT [rowid,] cols FROM t` in the order the rows are stored: [`Table::select_sql`]
    /// for a WITHOUT ROWID table (stored in key order), a table without a primary key (the
    /// rowid is its key) or one with a column hiding the rowid; rowid order otherwise (for a
    /// table built by inserting its rows in key order, that is key order too).
    pub fn stored_sql(&self, without_rowid: bool) -> String {
        let hidden = self.columns.iter().any(|c| {
            ["rowid", "_rowid_", "oid"]
                .iter()
                .any(|r| c.eq_ignore_ascii_case(r))
        });
        if without_rowid || self.pk.is_empty() || hidden {
            return self.select_sql();
        }
        let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        format!(
            "SELECT {} FROM {} ORDER BY rowid",
            cols.join(", "),
            quote(&self.name)
        )
    }

    /// The positions of the key columns among `columns`.
    pub fn pk_positions(&self) -> Vec<usize> {
        self.pk
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| c == k))
            .collect()
    }

    /// `INSERT INTO t([rowid,] cols) VALUES (?, ...)`.
    pub fn insert_sql(&self) -> String {
        let mut cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        if self.pk.is_empty() {
            cols.insert(0, "rowid".into());
        }
        let marks = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            quote(&self.name),
            cols.join(", ")
        )
    }
}

/// Every table of the base open on `conn`, in the order of sqlite_master, with its indexes
/// and triggers (views are not copied).
pub fn tables(conn: &Connection) -> rusqlite::Result<Vec<Table>> {
    let mut out = master(conn)?;
    for t in &mut out {
        (t.columns, t.pk) = columns(conn, &t.name)?;
    }
    Ok(out)
}

/// [`tables`] as `sqlite_master` gives them: ids, names and statements, without their
/// columns (one query).
pub fn master(conn: &Connection) -> rusqlite::Result<Vec<Table>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid",
    )?;
    let rows: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut out: Vec<Table> = Vec::new();
    for (kind, name, _, sql) in &rows {
        if kind == "table" && !name.starts_with("sqlite_") {
            out.push(Table {
                id: out.len() as u16,
                name: name.clone(),
                statements: vec![sql.clone()],
                columns: Vec::new(),
                pk: Vec::new(),
            });
        }
    }
    for (kind, _, tbl, sql) in &rows {
        if kind == "index" || kind == "trigger" {
            if let Some(t) = out.iter_mut().find(|t| &t.name == tbl) {
                t.statements.push(sql.clone());
            }
        }
    }
    Ok(out)
}

/// A table's columns and its primary key's columns in key order (empty when the rowid is
/// the key), from `PRAGMA table_info`.
pub fn columns(conn: &Connection, table: &str) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    let mut info = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let mut pk: Vec<(i64, String)> = Vec::new();
    let mut columns = Vec::new();
    let cols: Vec<(String, i64)> = info
        .query_map([], |r| Ok((r.get(1)?, r.get(5)?)))?
        .collect::<Result<_, _>>()?;
    for (c, k) in cols {
        if k > 0 {
            pk.push((k, c.clone()));
        }
        columns.push(c);
    }
    pk.sort();
    Ok((columns, pk.into_iter().map(|(_, c)| c).collect()))
}

/// Whether `table` (of the main schema) is a WITHOUT ROWID table: stored in primary key
/// order, with no rowid.
pub fn without_rowid(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    use rusqlite::OptionalExtension;
    let wr: Option<i64> = conn
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(wr == Some(1))
}

/// Creates `path`'s connection for reading only.
pub fn open_read(path: &std::path::Path) -> Result<Connection, Error> {
    Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite(path, e))
}

/// Reads one admin value.
pub fn admin_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT v FROM admin WHERE k = ?1", [key], |r| {
        Ok(match r.get_ref(0)? {
            rusqlite::types::ValueRef::Null => Vec::new(),
            rusqlite::types::ValueRef::Integer(i) => i.to_string().into_bytes(),
            rusqlite::types::ValueRef::Real(f) => f.to_string().into_bytes(),
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
        })
    })
    .optional()
}

/// Writes (or replaces) one admin value, as a BLOB as SDS does.
pub fn admin_set(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO admin (k, v) VALUES (?1, ?2)",
        rusqlite::params![key, value],
    )?;
    Ok(())
}

/// Removes one admin value.
pub fn admin_delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM admin WHERE k = ?1", [key])?;
    Ok(())
}

/// The table called `name` on `conn`, if any.
pub fn table(conn: &Connection, name: &str) -> rusqlite::Result<Option<Table>> {
    Ok(tables(conn)?.into_iter().find(|t| t.name == name))
}
