//! Every kind of sink the pump can write to, one module each, each with the same shape:
//! its spec, the sink, and its tests.
//!
//! ```text
//! backup/       BACKUP_DIR                  the Couchbase backup directory (cbbackup / cbrestore)
//! blackhole.rs  blackhole:                  discards, counts
//! couchbase/    couchbase://HOST:RESTPORT   each message to the node holding its vbucket
//! csv.rs        csv:FILE                    cbtransfer's CSV columns
//! meta2/        meta2:PATH                  a new meta2 base (temp file, checked, renamed)
//! memcached/    memcached://HOST:PORT       pipelined binary-protocol writes to a memcached
//! stdout.rs     stdout:                     one line per message
//! tap/          tap://HOST:PORT             a TAP consumer into a node's replica vbuckets
//! net.rs        what the network sinks share: destination credentials, the Couchbase handshake,
//!               a binary-protocol connection as a link of the one writer (pump::deliver)
//! values.rs     a value as a sink can take it: decompressed, without xattrs, by datatype
//! writable.rs   what a dry run checks of a file sink's directory, writing nothing
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod backup;
pub mod blackhole;
pub mod couchbase;
pub mod csv;
pub mod memcached;
pub mod meta2;
pub mod net;
pub mod stdout;
pub mod tap;
#[cfg(test)]
mod testutil;
pub mod values;
pub mod writable;

/// Adds every sink kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_sink(blackhole::BlackholeKind)
        .add_sink(stdout::StdoutKind)
        .add_sink(csv::CsvKind)
        .add_sink(memcached::MemcachedKind)
        .add_sink(tap::TapSinkKind)
        .add_sink(couchbase::CouchbaseSinkKind)
        .add_sink(meta2::Meta2Kind)
        .add_sink(backup::BackupKind);
}
