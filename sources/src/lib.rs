//! Every kind of source the pump can read from, one module each, each with the same shape:
//! its spec (what the user writes, validated without I/O), the source, and its tests.
//!
//! ```text
//! gen.rs        gen:[max-items=N,...]   generated items with real vbucket ids
//! meta2/        meta2:PATH              every table of a meta2 base (OpenIO SDS)
//! ```
//!
//! [`register`] adds them all to a [`pump::Registry`].

pub mod gen;
pub mod meta2;

/// Adds every source kind of this crate to `registry`.
pub fn register(registry: &mut pump::Registry) {
    registry.add_source(gen::GenKind);
    registry.add_source(meta2::Meta2Kind);
}
