//! Repairs: thin phases before and after a transfer, as plans of typed steps and the executors
//! that carry them out.
//!
//! ```text
//! recover.rs  pump recover: bring back a failed-over node's missing vbuckets from another cluster
//! meta2/      pump meta2 check | sync | move | rebuild: plans of Steps run by a FileExecutor
//! sds.rs      the same with --proxy: an OpenIO SDS proxy's routes around the transfer
//! ```

pub mod meta2;
pub mod recover;
pub mod sds;
