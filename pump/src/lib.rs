//! The pump engine: moves [`Message`]s from a [`Source`] to a [`Sink`] in [`Batch`]es.
//!
//! ```text
//! message.rs     Message (one change) and Op
//! collections.rs RunCollections: the source's manifest once per run, its changes, ids -> names
//! batch.rs       Batch, BatchLimits, BatchBuilder; Ack / Acked / Delivery: end-to-end acks
//! channel.rs     the bounded source -> sink channel (bounded in batches and in bytes), Filter
//! checkpoint.rs  per-vbucket checkpoints that advance over contiguous confirmed seqnos only
//! deliver.rs     the one pipelined writer and retry driver of every network sink (Protocol)
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
//!
//! # The delivery contract (every sink; `tests/conformance.rs` checks each kind against it)
//!
//! ```text
//! source ──Batch (+ Ack)──▶ channel ──▶ sink ──Ack::confirm(Delivery) / reject──▶ Acked ──▶ source
//!                                                                       Outcome = Result<Delivery, Rejected>
//! Delivery { written, skipped, failed: [KeyFailure { key, vbucket, seqno, size, reason }], retries }
//! ```
//!
//! 1. **Order.** Messages of one vbucket, and so of one key, are applied by a sink in source
//!    order, whatever the retries, reconnects, `-t` or in-flight window. Duplicates after a
//!    reconnect or a retry are allowed (at least once); an older value applied last is not.
//!    File sinks write in the order they take batches (one writer); network sinks go through
//!    the one writer of [`deliver`], which routes each group (a vbucket: every source gives a
//!    key the same one) to one fixed connection and, when one of its writes must wait
//!    for a retry or a new map, holds the group's later writes and resends them after it.
//! 2. **A typed outcome.** A sink settles every message of a batch it takes exactly once:
//!    written, skipped (declined harmlessly: KEY_EEXISTS on add, KEY_ENOENT on delete, a
//!    control message an item sink does not write) or failed by key with its reason; a batch it
//!    does not settle is [`Rejected`] (an error stopped the sink; a dropped [`Ack`] rejects).
//!    The summary counts each message once, however often it was sent; retries apart.
//! 3. **Sources act on delivered messages only.** A TAP ack is sent only for a batch delivered
//!    whole (a failed key withholds it, and the TAP stream stops with the key reported); a DCP
//!    BUFFER_ACK credits the window with the bytes of delivered messages only; a per-vbucket
//!    checkpoint ([`checkpoint::Checkpoint::settle`]) advances over contiguous delivered
//!    batches and a failed key holds its vbucket where it stood before the batch, for the rest
//!    of the run, so a rerun from the checkpoint retries it. A rejected batch stops the source
//!    with an error: nothing past it is acknowledged. Failed keys are listed at the end and in
//!    `--failed-keys`, and the run exits 1.
//! 4. **Confirm only what is applied.** A sink confirms a batch once the destination has
//!    answered for it (a network sink: the round's last answer) or it is durable (a backup:
//!    its transaction committed; a meta2 base: its rows applied by the builder thread). Memory
//!    stays bounded by the channel: a batch keeps its share of the byte budget until settled.
//! 5. **A dry run checks the real sink** ([`Sink::check`]: connect, authenticate, check the
//!    bucket or directory) and writes nothing; the batches read are settled as skipped.
//! 6. **Credentials are never retried.** A refusal (at connect, or answered to a write) stops
//!    the run naming `-u/-p` (a source) or `-U/-P` (a sink).
//!
//! A network sink supplies a [`deliver::Protocol`]: its connections (a connected, authenticated
//! link), its routing, its encoding of a round and the meaning of each status; the writer does
//! the pipelining (several rounds in flight per connection), the retries (capped exponential
//! backoff with jitter, `-x max_retry,backoff_cap`), the reconnects (everything unsettled on
//! a lost connection resent in order) and the counting, the same for every sink.

pub mod batch;
pub mod channel;
pub mod checkpoint;
pub mod collections;
pub mod deliver;
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

pub use batch::{
    Ack, Acked, Batch, BatchBuilder, BatchLimits, Delivery, KeyFailure, Outcome, Rejected,
};
pub use channel::{BatchReceiver, BatchSender, Filter, SourceEnd, TtlRewrite};
pub use checkpoint::Checkpoint;
pub use collections::{
    CollectionChange, CollectionNames, CollectionSelect, DataPath, DataRules, RunCollections,
};
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
