//! Every kind of source the pump can read from, one module each, each with the same shape:
//! its spec (what the user writes, validated without I/O), the source, and its tests.
//!
//! ```text
//! gen.rs        gen:[max-items=N,...]        generated items with real vbucket ids
//! tap/          tap://HOST:PORT              a TAP dump of one node
//! dcp/          dcp://HOST:PORT              DCP streams of one node, resumable (checkpoint)
//! couchbase/    couchbase://HOST:RESTPORT    every vbucket from its active node (REST map)
//! net.rs        what the network sources share: credentials, timeouts, the ordered acker
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod couchbase;
pub mod dcp;
pub mod gen;
pub mod net;
pub mod tap;
#[cfg(test)]
mod testutil;

/// Adds every source kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_source(gen::GenKind)
        .add_source(tap::TapSourceKind)
        .add_source(dcp::DcpSourceKind)
        .add_source(couchbase::CouchbaseSourceKind);
}
