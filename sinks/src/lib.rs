//! Every kind of sink the pump can write to, one module each, each with the same shape:
//! its spec, the sink, and its tests.
//!
//! ```text
//! blackhole.rs  blackhole:  discards, counts
//! stdout.rs     stdout:     one line per message
//! memcached/    memcached://[USER:PASSWORD@]HOST:PORT   pipelined binary-protocol writes
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod blackhole;
pub mod memcached;
pub mod stdout;

/// Adds every sink kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_sink(blackhole::BlackholeKind)
        .add_sink(stdout::StdoutKind)
        .add_sink(memcached::MemcachedKind);
}
