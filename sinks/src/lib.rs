//! Every kind of sink the pump can write to, one module each, each with the same shape:
//! its spec, the sink, and its tests.
//!
//! ```text
//! blackhole.rs  blackhole:  discards, counts
//! meta2/        meta2:PATH  a new meta2 base (temp file, checked, renamed)
//! stdout.rs     stdout:     one line per message
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod blackhole;
pub mod meta2;
pub mod stdout;

/// Adds every sink kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry
        .add_sink(blackhole::BlackholeKind)
        .add_sink(meta2::Meta2Kind)
        .add_sink(stdout::StdoutKind);
}
