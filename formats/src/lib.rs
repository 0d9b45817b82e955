//! File format facts shared by pump's sources and sinks, kept in one place so that a reader
//! and a writer of the same format can never disagree. Sources and sinks never depend on each
//! other; both depend on this crate.
//!
//! ```text
//! bfd.rs   the Couchbase backup directory (cbbackup / cbrestore): layout, names, the
//!          cbb_msg SQLite schema and its three user_versions, the meta column
//! run.rs   pump's records beside a backup run: pump-run.json (written first),
//!          pump-positions.json (the DCP positions), pump-complete.json (written last)
//! csv.rs   cbtransfer's CSV: columns, and Python bytes literals (b'...') for value and rev
//! sqlite_file.rs  the SQLite file format itself: a table's rows in rowid order, without SQLite,
//!                 each page's structure proven as it is read (Verify)
//! sqlite_open.rs  a database file opened through SQLite read-only with nothing written beside
//!                 it (immutable, or a private copy when a -wal holds pages), a hot journal refused
//! sqlite_build.rs the same format written: b-tree pages laid out from rows in key order
//! ```

pub mod bfd;
pub mod csv;
pub mod run;
pub mod sqlite_build;
pub mod sqlite_file;
pub mod sqlite_open;
