//! Repairs around a transfer: plans of typed steps and the executors that carry them out.
//!
//! ```text
//! meta2.rs  pump meta2 check | sync | move | rebuild: plans of Steps run by a FileExecutor
//! ```

pub mod meta2;
