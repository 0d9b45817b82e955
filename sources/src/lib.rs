//! Every kind of source the pump can read from, one module each, each with the same shape:
//! its spec (what the user writes, validated without I/O), the source, and its tests.
//!
//! ```text
//! backup/       BACKUP_DIR              a Couchbase backup directory (cbbackup / cbrestore)
//! csv.rs        csv:FILE                rows of cbtransfer's CSV
//! gen.rs        gen:[max-items=N,...]   generated items with real vbucket ids
//! memcached/    memcached://HOST:PORT   every item of a running memcached (metadump + GETKQ)
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod backup;
pub mod csv;
pub mod gen;
pub mod memcached;

/// Adds every source kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_source(gen::GenKind)
        .add_source(csv::CsvKind)
        .add_source(memcached::MemcachedKind)
        .add_source(backup::BackupKind);
}
