//! One prepared INSERT whose parameters are bound without a copy.
//!
//! rusqlite binds TEXT and BLOB with `SQLITE_TRANSIENT` (SQLite copies every value into its
//! own allocation, then copies it again into the record); here they are bound with
//! `SQLITE_STATIC`, pointing into the message being inserted, which lives until the row is
//! stepped. After the step the statement is reset and every parameter set back to NULL, so
//! it never keeps a pointer into a message that is dropped afterwards.

use std::ffi::{c_char, c_int, c_void};

use rusqlite::ffi;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// A prepared statement on a connection; finalized when dropped, which must happen before
/// the connection is closed (the builder drops its statements first).
pub(super) struct RawInsert {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
}

fn message(db: *mut ffi::sqlite3, rc: c_int) -> String {
    // SAFETY: `db` is an open connection; sqlite3_errmsg returns a NUL-terminated string
    // owned by SQLite, copied out at once.
    let msg = unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(db)) };
    format!("{} (SQLite code {rc})", msg.to_string_lossy())
}

impl RawInsert {
    /// Prepares `sql` on `conn`.
    pub(super) fn new(conn: &Connection, sql: &str) -> Result<RawInsert, String> {
        // SAFETY: the handle is only used while `conn` is open: the statement is finalized
        // (Drop) before the builder closes its connection.
        let db = unsafe { conn.handle() };
        let mut stmt = std::ptr::null_mut();
        let len = c_int::try_from(sql.len()).map_err(|_| "an INSERT too long".to_string())?;
        // SAFETY: `sql` is valid for `len` bytes; `stmt` receives the statement.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                db,
                sql.as_ptr().cast::<c_char>(),
                len,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK || stmt.is_null() {
            return Err(message(db, rc));
        }
        Ok(RawInsert { db, stmt })
    }

    /// Binds `cells` to the parameters 1.. in order, inserts the row, then resets the
    /// statement and clears its parameters.
    pub(super) fn insert(&mut self, cells: &[ValueRef<'_>]) -> Result<(), String> {
        let r = self.bind_and_step(cells);
        // SAFETY: a prepared statement; after this no parameter points into `cells`.
        unsafe {
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
        }
        r
    }

    fn bind_and_step(&mut self, cells: &[ValueRef<'_>]) -> Result<(), String> {
        for (i, c) in cells.iter().enumerate() {
            let col = c_int::try_from(i + 1).map_err(|_| "too many columns".to_string())?;
            // SAFETY: TEXT and BLOB bytes are borrowed from `cells`, alive until the step
            // below and unbound by `insert` right after it (SQLITE_STATIC: no copy).
            let rc = unsafe {
                match *c {
                    ValueRef::Null => ffi::sqlite3_bind_null(self.stmt, col),
                    ValueRef::Integer(v) => ffi::sqlite3_bind_int64(self.stmt, col, v),
                    ValueRef::Real(f) => ffi::sqlite3_bind_double(self.stmt, col, f),
                    ValueRef::Text(t) => ffi::sqlite3_bind_text64(
                        self.stmt,
                        col,
                        if t.is_empty() {
                            c"".as_ptr()
                        } else {
                            t.as_ptr().cast::<c_char>()
                        },
                        t.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    ValueRef::Blob([]) => ffi::sqlite3_bind_zeroblob(self.stmt, col, 0),
                    ValueRef::Blob(b) => ffi::sqlite3_bind_blob64(
                        self.stmt,
                        col,
                        b.as_ptr().cast::<c_void>(),
                        b.len() as u64,
                        ffi::SQLITE_STATIC(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(message(self.db, rc));
            }
        }
        // SAFETY: a prepared statement with every parameter bound.
        let rc = unsafe { ffi::sqlite3_step(self.stmt) };
        if rc != ffi::SQLITE_DONE {
            return Err(message(self.db, rc));
        }
        Ok(())
    }
}

impl Drop for RawInsert {
    fn drop(&mut self) {
        // SAFETY: prepared by `new`, finalized once.
        unsafe {
            ffi::sqlite3_finalize(self.stmt);
        }
    }
}
