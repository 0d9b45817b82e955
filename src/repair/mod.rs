//! Repairs: thin phases before and after a transfer.
//!
//! ```text
//! recover.rs  pump recover: bring back a failed-over node's missing vbuckets from another cluster
//! ```

pub mod recover;
