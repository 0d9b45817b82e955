//! The Couchbase backup directory ("BFD"), as cbbackup writes it and cbrestore reads it.
//!
//! ```text
//! <dir>/<YYYY-MM-DDThhmmssZ>/<YYYY-MM-DDThhmmssZ>-full/bucket-<name>/node-<host>/data-0000.cbb
//!                                                    .../bucket-<name>/node-<host>/meta.json
//!                                                    .../seqno.json failover.json snapshot_markers.json
//!                                                    .../bucket-<name>/design.json (optional)
//!                             <YYYY-MM-DDThhmmssZ>-diff/...  later runs into the same directory
//! ```
//!
//! Names are percent-encoded as Python's `quote_plus` does (`+` for a space). The first run
//! into a directory makes a new timestamped root with a `-full` run; a later run adds a `-diff`
//! run under the newest root (cbbackup's default mode). A restore reads every run of the newest
//! root in name order (full first, then the diffs by time), files in name order.
//!
//! Each data file is SQLite at `PRAGMA user_version = 2015` with one table, [`CREATE_TABLE`].
//! Older files: 2004 (the first 8 columns) and 2014 (the first 11).

use std::path::{Path, PathBuf};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The user_version of files this crate writes.
pub const USER_VERSION: i64 = 2015;

/// The one table of a data file, exactly as cbbackup creates it (the sqlite3 shell's `.schema`
/// prints this text back).
pub const CREATE_TABLE: &str = "CREATE TABLE cbb_msg (cmd integer, vbucket_id integer, key blob, flg integer, exp integer, cas text, meta blob, val blob, seqno integer, dtype integer, meta_size integer, conf_res integer)";

/// The insert a writer prepares once, columns in table order.
pub const INSERT: &str = "INSERT INTO cbb_msg (cmd, vbucket_id, key, flg, exp, cas, meta, val, seqno, dtype, meta_size, conf_res) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// The rows of collections other than the default one (the pump's addition): cbb_msg's
/// columns, then the collection id. Created in a data file only when such a row comes, so a
/// backup of the default collection alone is exactly what cbbackup writes; cbtransfer and
/// cbrestore read `cbb_msg` only, and so restore the default collection of any backup.
pub const COLLECTION_TABLE: &str = "cbb_collection_msg";

/// [`COLLECTION_TABLE`]'s schema.
pub const CREATE_COLLECTION_TABLE: &str = "CREATE TABLE cbb_collection_msg (cmd integer, vbucket_id integer, key blob, flg integer, exp integer, cas text, meta blob, val blob, seqno integer, dtype integer, meta_size integer, conf_res integer, collection_id integer)";

/// The insert of a row of [`COLLECTION_TABLE`].
pub const INSERT_COLLECTION: &str = "INSERT INTO cbb_collection_msg (cmd, vbucket_id, key, flg, exp, cas, meta, val, seqno, dtype, meta_size, conf_res, collection_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// The rows of [`COLLECTION_TABLE`]: [`COLUMNS`] in order, then the collection id (column 12).
pub const SELECT_COLLECTION: &str = "SELECT cmd, vbucket_id, key, flg, exp, cas, meta, val, seqno, dtype, meta_size, conf_res, collection_id FROM cbb_collection_msg";

/// The table's columns in table order (a file of an older version has the first
/// [`Version::columns`] of them).
pub const COLUMNS: [&str; 12] = [
    "cmd",
    "vbucket_id",
    "key",
    "flg",
    "exp",
    "cas",
    "meta",
    "val",
    "seqno",
    "dtype",
    "meta_size",
    "conf_res",
];

/// Column indexes in [`select`]'s result.
pub mod col {
    pub const CMD: usize = 0;
    pub const VBUCKET_ID: usize = 1;
    pub const KEY: usize = 2;
    pub const FLG: usize = 3;
    pub const EXP: usize = 4;
    pub const CAS: usize = 5;
    pub const META: usize = 6;
    pub const VAL: usize = 7;
    pub const SEQNO: usize = 8;
    pub const DTYPE: usize = 9;
    pub const META_SIZE: usize = 10;
    pub const CONF_RES: usize = 11;
}

/// `cmd` values: TAP and DCP mutation and deletion opcodes.
pub mod cmd {
    pub const TAP_MUTATION: i64 = 0x41;
    pub const TAP_DELETE: i64 = 0x42;
    pub const DCP_MUTATION: i64 = 0x57;
    pub const DCP_DELETE: i64 = 0x58;
    pub const DCP_EXPIRATION: i64 = 0x59;
}

/// A data file's format version, from its `user_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 2004: cmd, vbucket_id, key, flg, exp, cas, meta, val.
    V2004,
    /// 2014: adds seqno, dtype, meta_size.
    V2014,
    /// 2015: adds conf_res.
    V2015,
}

impl Version {
    /// The version for a `user_version`, if it is one of the three.
    pub fn from_user_version(v: i64) -> Option<Version> {
        match v {
            2004 => Some(Version::V2004),
            2014 => Some(Version::V2014),
            2015 => Some(Version::V2015),
            _ => None,
        }
    }

    /// The `user_version` of files of this version.
    pub fn user_version(self) -> i64 {
        match self {
            Version::V2004 => 2004,
            Version::V2014 => 2014,
            Version::V2015 => 2015,
        }
    }

    /// Columns the file's table has.
    pub fn columns(self) -> usize {
        match self {
            Version::V2004 => 8,
            Version::V2014 => 11,
            Version::V2015 => 12,
        }
    }
}

/// The SELECT that reads a file of `version`, columns in [`col`] order.
pub fn select(version: Version) -> &'static str {
    match version {
        Version::V2004 => "SELECT cmd, vbucket_id, key, flg, exp, cas, meta, val FROM cbb_msg",
        Version::V2014 => "SELECT cmd, vbucket_id, key, flg, exp, cas, meta, val, seqno, dtype, meta_size FROM cbb_msg",
        Version::V2015 => "SELECT cmd, vbucket_id, key, flg, exp, cas, meta, val, seqno, dtype, meta_size, conf_res FROM cbb_msg",
    }
}

/// Creates the table and sets the user_version in a new, empty database.
pub fn create_schema(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    db.execute_batch(&format!(
        "BEGIN; {CREATE_TABLE}; PRAGMA user_version = {USER_VERSION}; COMMIT;"
    ))
}

/// Pragmas a writer uses on a data file that stays under a temporary name until the run is
/// complete: a rollback journal, so that a transaction is whole or absent even when the
/// process is killed (the next opener rolls an interrupted one back, and a resumed run goes on
/// from what was committed); no fsync per commit (the writer syncs each file once before
/// renaming it). Appending rows journals only the few pages a commit changes. The journal is
/// truncated at each commit rather than deleted, so a commit creates no file (creating one
/// per batch cost a 64-job run 0.3 s of CPU in ext4's inode allocation): an empty journal
/// beside a data file holds no transaction, and the writer removes it with the file's close.
pub const WRITER_PRAGMAS: [(&str, &str); 3] = [
    ("journal_mode", "TRUNCATE"),
    ("synchronous", "OFF"),
    ("cache_size", "-65536"),
];

/// The timestamp format of root and run directory names (strftime), UTC.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H%M%SZ";

/// True when `name` looks like `YYYY-MM-DDThhmmssZ`.
pub fn is_timestamp(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 18
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            17 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// A run directory's kind, from its name's suffix (cbbackup's `-m full|diff|accu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Full,
    Diff,
    Accu,
}

/// The kind of a run directory name (`<ts>-full`, `<ts>-diff`, `<ts>-accu`).
pub fn run_kind(name: &str) -> Option<RunKind> {
    let (ts, kind) = name.split_at_checked(18)?;
    if !is_timestamp(ts) {
        return None;
    }
    match kind {
        "-full" => Some(RunKind::Full),
        "-diff" => Some(RunKind::Diff),
        "-accu" => Some(RunKind::Accu),
        _ => None,
    }
}

impl RunKind {
    /// `full`, `diff` or `accu`.
    pub fn name(self) -> &'static str {
        match self {
            RunKind::Full => "full",
            RunKind::Diff => "diff",
            RunKind::Accu => "accu",
        }
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `<ts>-full`, `<ts>-diff` or `<ts>-accu`.
pub fn run_dir_name(timestamp: &str, kind: RunKind) -> String {
    format!("{timestamp}-{}", kind.name())
}

/// What Python's `quote_plus` leaves alone: letters, digits and `_.-~`.
const QUOTE_PLUS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// Percent-encodes a bucket or node name as `quote_plus` does (`a b:c` -> `a+b%3Ac`).
pub fn quote_plus(name: &str) -> String {
    utf8_percent_encode(name, QUOTE_PLUS)
        .to_string()
        .replace("%20", "+")
}

/// Decodes a [`quote_plus`]-encoded name; `None` when it is not UTF-8.
pub fn unquote_plus(name: &str) -> Option<String> {
    percent_decode_str(&name.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// `bucket-<name>`.
pub fn bucket_dir_name(bucket: &str) -> String {
    format!("bucket-{}", quote_plus(bucket))
}

/// `node-<host>`.
pub fn node_dir_name(node: &str) -> String {
    format!("node-{}", quote_plus(node))
}

/// `<run>/bucket-<b>/node-<n>`.
pub fn node_dir(run: &Path, bucket: &str, node: &str) -> PathBuf {
    run.join(bucket_dir_name(bucket)).join(node_dir_name(node))
}

/// `data-0000.cbb`, `data-0001.cbb`, ...
pub fn data_file_name(index: u32) -> String {
    format!("data-{index:04}.cbb")
}

/// True for `data-NNNN.cbb`.
pub fn is_data_file_name(name: &str) -> bool {
    name.strip_prefix("data-")
        .and_then(|r| r.strip_suffix(".cbb"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// The temporary name a data file has until its run is complete. It does not match
/// `data-*.cbb`, so cbrestore and pump never read it.
pub fn partial_name(final_name: &str) -> String {
    format!("{final_name}.partial")
}

/// SQLite's rollback journal of a data file: `<file>-journal`.
pub fn journal_path(data_file: &Path) -> PathBuf {
    let mut journal = data_file.as_os_str().to_owned();
    journal.push("-journal");
    PathBuf::from(journal)
}

/// True when `data_file` has a journal holding a transaction (a process cut in the middle of
/// one): an empty journal, which [`WRITER_PRAGMAS`] leave after each commit, holds none.
pub fn has_hot_journal(data_file: &Path) -> bool {
    std::fs::metadata(journal_path(data_file)).is_ok_and(|m| m.len() > 0)
}

/// Removes the empty journal a closed data file leaves (nothing when there is none; a journal
/// holding a transaction is left for the next opener to roll back).
pub fn remove_empty_journal(data_file: &Path) -> std::io::Result<()> {
    let journal = journal_path(data_file);
    match std::fs::metadata(&journal) {
        Ok(m) if m.len() == 0 => std::fs::remove_file(&journal),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The files beside the data files.
pub const META_JSON: &str = "meta.json";
pub const SEQNO_JSON: &str = "seqno.json";
pub const FAILOVER_JSON: &str = "failover.json";
pub const SNAPSHOT_MARKERS_JSON: &str = "snapshot_markers.json";
/// In the node directory of a run whose source had collections (the pump's addition): the
/// bucket's manifest at the end of the run, every collection id the run saw with its path, and
/// the changes the streams carried:
/// `{"manifest": {..the manifest's JSON..}, "ids": {"9": ["s1", "c1"], ..}, "dropped": [10],
///   "changes": [{"vbucket": 0, "seqno": 8, "event": "collection dropped",
///                "manifest_uid": "4", "scope": "8", "collection": "a", "name": null}, ..]}`
pub const COLLECTIONS_JSON: &str = "collections.json";
/// In the bucket directory, optional.
pub const DESIGN_JSON: &str = "design.json";

/// `meta.json`: `{"pred": [], "conflict_resolution_type": ..., "version": ...}`.
pub fn meta_json(conflict_resolution_type: &str, version: &str) -> String {
    serde_json::json!({
        "pred": [],
        "conflict_resolution_type": conflict_resolution_type,
        "version": version,
    })
    .to_string()
}

/// `seqno.json`: the highest seqno per vbucket, keyed by the vbucket id as a string; vbuckets
/// without data are left out (as cbbackup does).
pub fn seqno_json(seqnos: &[u64]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = seqnos
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > 0)
        .map(|(vb, s)| (vb.to_string(), serde_json::Value::from(*s)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The `meta` column for a message: its rev seqno as decimal text when it has one (what
/// cbbackup stores from DCP), its raw metadata bytes otherwise (TAP-era revid bytes).
pub fn meta_column(rev_seqno: u64, meta: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if rev_seqno > 0 {
        std::borrow::Cow::Owned(rev_seqno.to_string().into_bytes())
    } else {
        std::borrow::Cow::Borrowed(meta)
    }
}

/// Reads a `meta` column back: `(rev_seqno, meta)`. Decimal text is a rev seqno; anything else
/// is kept as metadata bytes.
pub fn parse_meta_column(bytes: &[u8]) -> (u64, Option<&[u8]>) {
    if !bytes.is_empty() && bytes.len() <= 20 && bytes.iter().all(u8::is_ascii_digit) {
        if let Some(n) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|n| *n > 0)
        {
            return (n, None);
        }
    }
    (0, if bytes.is_empty() { None } else { Some(bytes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_journal_is_removed_and_only_a_full_one_is_hot() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data-0000.cbb.partial");
        let journal = journal_path(&data);
        assert_eq!(journal, dir.path().join("data-0000.cbb.partial-journal"));
        assert!(!has_hot_journal(&data));
        remove_empty_journal(&data).unwrap();
        std::fs::write(&journal, b"").unwrap();
        assert!(
            !has_hot_journal(&data),
            "an empty journal holds no transaction"
        );
        remove_empty_journal(&data).unwrap();
        assert!(!journal.exists());
        std::fs::write(&journal, b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7").unwrap();
        assert!(has_hot_journal(&data));
        remove_empty_journal(&data).unwrap();
        assert!(
            journal.exists(),
            "a journal holding a transaction is left to roll back"
        );
    }

    #[test]
    fn names_are_quote_plus_encoded_both_ways() {
        assert_eq!(node_dir_name("127.0.0.1:8091"), "node-127.0.0.1%3A8091");
        assert_eq!(bucket_dir_name("my bucket+x"), "bucket-my+bucket%2Bx");
        assert_eq!(unquote_plus("my+bucket%2Bx").unwrap(), "my bucket+x");
        assert_eq!(quote_plus("a_b.c-d~e"), "a_b.c-d~e");
    }

    #[test]
    fn timestamps_runs_and_data_file_names() {
        assert!(is_timestamp("2026-11-23T003715Z"));
        assert!(!is_timestamp("2026-11-23T00371Z"));
        assert_eq!(run_kind("2026-11-23T003715Z-full"), Some(RunKind::Full));
        assert_eq!(run_kind("2026-11-23T003715Z-diff"), Some(RunKind::Diff));
        assert_eq!(run_kind("notes"), None);
        assert_eq!(data_file_name(1), "data-0001.cbb");
        assert!(is_data_file_name("data-0012.cbb"));
        assert!(!is_data_file_name(&partial_name("data-0012.cbb")));
    }

    #[test]
    fn a_new_database_has_the_schema_and_user_version_2015() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        create_schema(&db).unwrap();
        let v: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2015);
        let sql: String = db
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name='cbb_msg'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sql, CREATE_TABLE);
        for v in [Version::V2004, Version::V2014, Version::V2015] {
            let st = db.prepare(select(v)).unwrap();
            assert_eq!(st.column_count(), v.columns());
        }
    }

    #[test]
    fn the_meta_column_carries_rev_seqno_as_text_or_raw_bytes() {
        assert_eq!(&*meta_column(5, b""), b"5");
        assert_eq!(parse_meta_column(b"5"), (5, None));
        assert_eq!(&*meta_column(0, b"\x01\x02"), b"\x01\x02");
        assert_eq!(parse_meta_column(b"\x01\x02"), (0, Some(&b"\x01\x02"[..])));
        assert_eq!(parse_meta_column(b""), (0, None));
    }

    #[test]
    fn columns_are_the_table_and_select_columns_in_order() {
        assert_eq!(
            select(Version::V2015),
            format!("SELECT {} FROM cbb_msg", COLUMNS.join(", "))
        );
        let names: Vec<&str> = CREATE_TABLE
            .split_once('(')
            .map_or("", |(_, cols)| cols.trim_end_matches(')'))
            .split(", ")
            .filter_map(|c| c.split(' ').next())
            .collect();
        assert_eq!(names, COLUMNS);
    }

    #[test]
    fn seqno_json_keeps_only_vbuckets_with_data() {
        let mut s = vec![0u64; 4];
        s[2] = 7;
        assert_eq!(seqno_json(&s), r#"{"2":7}"#);
    }
}
