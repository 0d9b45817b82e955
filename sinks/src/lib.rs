//! Every kind of sink the pump can write to, one module each, each with the same shape:
//! its spec, the sink, and its tests.
//!
//! ```text
//! blackhole.rs  blackhole:                  discards, counts
//! stdout.rs     stdout:                     one line per message
//! tap/          tap://HOST:PORT             a TAP consumer into a node's replica vbuckets
//! couchbase/    couchbase://HOST:RESTPORT   each message to the node holding its vbucket
//! net.rs        what the network sinks share: destination credentials, timeouts
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod blackhole;
pub mod couchbase;
pub mod net;
pub mod stdout;
pub mod tap;
#[cfg(test)]
mod testutil;

/// Adds every sink kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_sink(blackhole::BlackholeKind)
        .add_sink(stdout::StdoutKind)
        .add_sink(tap::TapSinkKind)
        .add_sink(couchbase::CouchbaseSinkKind);
}
