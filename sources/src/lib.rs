//! Every kind of source the pump can read from, one module each, each with the same shape:
//! its spec (what the user writes, validated without I/O), the source, and its tests.
//!
//! ```text
//! backup/       BACKUP_DIR                   a Couchbase backup directory (cbbackup / cbrestore)
//! couchbase/    couchbase://HOST:RESTPORT    every vbucket from its active node (REST map)
//! csv.rs        csv:FILE                     rows of cbtransfer's CSV
//! dcp/          dcp://HOST:PORT              DCP streams of one node, resumable (checkpoint)
//! gen.rs        gen:[max-items=N,...]        generated items with real vbucket ids
//! memcached/    memcached://HOST:PORT        every item of a running memcached (metadump + GETKQ)
//! meta2/        meta2:PATH                   every table of a meta2 base (OpenIO SDS)
//! tap/          tap://HOST:PORT              a TAP dump of one node
//! file.rs       what the file sources share: a blocking reader thread forwarding its batches
//! net.rs        what the network sources share: credentials, the ordered acker
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod backup;
pub mod couchbase;
pub mod csv;
pub mod dcp;
pub mod file;
pub mod gen;
pub mod memcached;
pub mod meta2;
pub mod net;
pub mod tap;
#[cfg(test)]
mod testutil;

/// Adds every source kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_source(gen::GenKind)
        .add_source(csv::CsvKind)
        .add_source(memcached::MemcachedKind)
        .add_source(tap::TapSourceKind)
        .add_source(dcp::DcpSourceKind)
        .add_source(couchbase::CouchbaseSourceKind)
        .add_source(meta2::Meta2Kind)
        .add_source(backup::BackupKind);
}
