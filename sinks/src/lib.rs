//! Every kind of sink the pump can write to, one module each, each with the same shape:
//! its spec, the sink, and its tests.
//!
//! ```text
//! backup/       BACKUP_DIR  the Couchbase backup directory (cbbackup / cbrestore)
//! blackhole.rs  blackhole:  discards, counts
//! csv.rs        csv:FILE    cbtransfer's CSV columns
//! stdout.rs     stdout:     one line per message
//! memcached/    memcached://[USER:PASSWORD@]HOST:PORT   pipelined binary-protocol writes
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod backup;
pub mod blackhole;
pub mod csv;
pub mod memcached;
pub mod stdout;

/// Adds every sink kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_sink(blackhole::BlackholeKind)
        .add_sink(stdout::StdoutKind)
        .add_sink(csv::CsvKind)
        .add_sink(memcached::MemcachedKind)
        .add_sink(backup::BackupKind);
}
