//! meta2 bases (OpenIO SDS container databases): the facts and formats shared by the
//! `meta2:` source, the `meta2:` sink and the `pump meta2` repair commands.
//!
//! ```text
//! base.rs      CID, base names, paths on a volume, peer addresses (ADDRESS=VOLUME)
//! codec.rs     the lossless row encoding and the schema message carried through the pump
//! schema.rs    the tables of a base (from sqlite_master), the reference schema, admin keys
//! check.rs     inspecting a copy (missing, unreadable, corrupt, incomplete, behind, ...)
//!              and per-table content digests
//! copy.rs      a verified page copy of a sound base (rebuild)
//! files.rs     names beside a base (.pump-tmp, .corrupted, ...), volume checks, fsyncs
//! generate.rs  realistic bases for tests and benches
//! ```

pub mod base;
pub mod check;
pub mod codec;
pub mod copy;
pub mod files;
pub mod generate;
pub mod schema;

pub use base::{cid, parse_address, BaseName, Peer};
pub use check::{digest, inspect, judge, tables_differing, CopyReport, CopyState, Health};

/// Errors of this crate; each names the file or value it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given by the user is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// SQLite refused something on a file.
    #[error("{path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Bytes that do not decode (a message of the row encoding).
    #[error("bad encoding: {0}")]
    Encoding(String),
}

impl Error {
    /// Wraps a SQLite error with the file it is about.
    pub fn sqlite(path: impl AsRef<std::path::Path>, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    /// Wraps an I/O error with the file it is about.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
