//! The pump engine: moves [`Message`]s from a [`Source`] to a [`Sink`] in [`Batch`]es.
//!
//! ```text
//! message.rs     Message (one change) and Op
//! batch.rs       Batch, BatchLimits, BatchBuilder; Ack / Acked / Delivery: end-to-end acks
//! channel.rs     the bounded source -> sink channel (bounded in batches and in bytes), Filter
//! checkpoint.rs  per-vbucket checkpoints that advance over contiguous confirmed seqnos only
//! retry.rs       RetryPolicy (capped exponential backoff, jitter) and what each status means
//! rate.rs        --rate: a token bucket in items/s or bytes/s that the channel's sender waits on
//! stats.rs       live counters (per op, per vbucket lag), the final Summary
//! progress.rs    a live bar on a terminal, periodic lines otherwise, or JSON lines
//! options.rs     Options common to every kind (cbtransfer's -b -B -u -p -l -k -t -n -x ...)
//! spec.rs        Spec: `kind:...` or `kind://...` or a path; VbucketSet
//! registry.rs    SourceKind / SinkKind and the Registry the binary fills
//! pipeline.rs    run(): source -> channel -> sink, Ctrl-C, the summary
//! error.rs       Error
//! ```
//!
//! Embedding: build a [`Registry`] (or construct a source and sink yourself), then call
//! [`pipeline::run`]. See `examples/custom_sink.rs` at the workspace root.

pub mod batch;
pub mod channel;
pub mod checkpoint;
pub mod error;
pub mod message;
pub mod options;
pub mod pipeline;
pub mod progress;
pub mod rate;
pub mod registry;
pub mod retry;
pub mod spec;
pub mod stats;

pub use batch::{Ack, Acked, Batch, BatchBuilder, BatchLimits, Delivery, KeyFailure};
pub use channel::{BatchReceiver, BatchSender, Filter, SourceEnd, TtlRewrite};
pub use checkpoint::Checkpoint;
pub use error::Error;
pub use message::{Message, Op};
pub use options::{parse_size, Credentials, Extra, Options};
pub use pipeline::{run, BatchWriter, Context, Sink, Source, WriterSink};
pub use rate::{Rate, RateLimiter};
pub use registry::{Payload, Registry, SinkKind, SourceKind};
pub use retry::{RetryPolicy, Verdict};
pub use spec::{Spec, VbucketSet};
pub use stats::{OpCounts, Snapshot, Stats, Summary, VbProgress};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
