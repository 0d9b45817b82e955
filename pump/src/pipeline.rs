//! The pipeline: one source, one bounded channel, one sink, each side with its own workers.
//!
//! ```text
//!   Source::run ──send──▶ [ channel: N batches, B bytes, filter ] ──recv──▶ Sink::run
//!        ▲                                                                    │
//!        └──────────────────── Acked ◀── Ack::confirm ─────────────────────────┘
//! ```
//!
//! The source ends by returning; the channel then drains and the sink's `recv` answers `None`,
//! with [`BatchReceiver::source_end`] saying whether the source completed, failed or was
//! cancelled (a file sink commits only a complete run). Ctrl-C cancels the context's token:
//! the source stops at its next send, the sink drains and confirms what is queued, and the
//! summary reports what was confirmed.
//!
//! A dry run (`-n`) opens and checks the real sink ([`Sink::check`]: connect, authenticate,
//! check the bucket or the directory) and writes nothing: the source's batches are read,
//! filtered and settled as skipped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::batch::{Ack, Delivery};
use crate::channel::{self, BatchReceiver, BatchSender, Filter, SourceEnd};
use crate::collections::{CollectionSelect, RunCollections};
use crate::error::Error;
use crate::message::Message;
use crate::options::Options;
use crate::progress::{self, ProgressMode};
use crate::rate::{Rate, RateLimiter};
use crate::stats::{Stats, Summary};

/// What every worker of a run shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub options: Arc<Options>,
    pub stats: Arc<Stats>,
    pub cancel: CancellationToken,
    pub progress: ProgressMode,
    /// `--rate`: every batch the source sends waits for its tokens.
    pub rate: Option<Arc<RateLimiter>>,
    /// The channel's filter, when it is more than the options say (`--filter-values`,
    /// `--exclude-deletions`, `--replace-ttl`); `options.filter()` otherwise.
    pub filter: Option<Filter>,
    /// The source's collections: its manifest, published once, and its changes.
    pub collections: Arc<RunCollections>,
    /// Cancelled by [`run`] once the source has returned, or earlier by a source that has
    /// handed over everything it reads (the DCP source of one node, while it waits for the
    /// sink's confirmations): what remains is mostly the sink's, which drains the channel and
    /// finishes (a backup syncs and renames its files). A caller running one transfer after
    /// another (`pump worker`) starts reading the next then.
    pub source_done: CancellationToken,
}

impl Context {
    /// A context with fresh stats and token, progress lines off.
    pub fn new(options: Options) -> Context {
        Context {
            options: Arc::new(options),
            stats: Arc::new(Stats::default()),
            cancel: CancellationToken::new(),
            progress: ProgressMode::Off,
            rate: None,
            filter: None,
            collections: Arc::new(RunCollections::default()),
            source_done: CancellationToken::new(),
        }
    }

    /// Builder: the channel's filter.
    pub fn with_filter(mut self, filter: Filter) -> Context {
        self.filter = Some(filter);
        self
    }

    /// Builder: hold the source to `rate` (`--rate`).
    pub fn with_rate(mut self, rate: Rate) -> Context {
        self.rate = Some(Arc::new(RateLimiter::new(rate)));
        self
    }

    /// Builder: how progress is shown.
    pub fn with_progress(mut self, mode: ProgressMode) -> Context {
        self.progress = mode;
        self
    }

    /// How a text sink names each message's collection (the source's names after
    /// `--map-data`).
    pub fn collection_names(&self) -> crate::collections::CollectionNames {
        crate::collections::CollectionNames {
            run: self.collections.clone(),
            rules: Arc::new(self.options.data.clone()),
            bucket: self.options.source_bucket.clone(),
        }
    }
}

/// Reads messages and sends them in batches. Returns when it has sent everything; returning
/// an error fails the run (and [`Error::Cancelled`] is a clean stop after Ctrl-C).
#[async_trait]
pub trait Source: Send {
    /// Streams everything into `out`.
    async fn run(self: Box<Self>, out: BatchSender, ctx: Context) -> Result<(), Error>;
}

/// Writes batches and confirms each through its ack, until `input` is drained.
#[async_trait]
pub trait Sink: Send {
    /// Opens and checks the destination without writing anything: connects and
    /// authenticates, checks the bucket, the directory or the file. A dry run calls only this;
    /// an error says what is wrong with the destination.
    async fn check(&mut self, ctx: &Context) -> Result<(), Error>;
    /// Consumes `input`; confirms every batch once it is applied (durably written, or
    /// answered by the destination), and each message once.
    async fn run(self: Box<Self>, input: BatchReceiver, ctx: Context) -> Result<(), Error>;
}

/// The simple shape of a sink: write one batch, say what happened. [`WriterSink`] runs it.
#[async_trait]
pub trait BatchWriter: Send {
    /// What [`Sink::check`] does for this writer: checks the destination, writes nothing.
    async fn check(&mut self, ctx: &Context) -> Result<(), Error>;
    /// Takes what it needs of the run before the first batch (a text sink: the source's
    /// collections, to name each message's). By default nothing.
    fn begin(&mut self, _ctx: &Context) {}
    /// Writes the messages; returns once they are durable (or failed per key).
    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error>;
    /// Writes a batch and confirms its `ack` once the batch is applied. By default: `write`,
    /// then confirm. A writer that applies batches on a thread of its own hands the ack over
    /// with the batch instead, so that it takes the next batch while the thread applies this
    /// one; it still confirms only what was applied (an ack dropped rejects its batch).
    async fn write_acked(&mut self, messages: Vec<Message>, ack: Ack) -> Result<(), Error> {
        let delivery = self.write(messages).await?;
        ack.confirm(delivery);
        Ok(())
    }
    /// Called once the channel is drained, with how the source ended. A file writer commits
    /// here only when `end` is [`SourceEnd::Complete`].
    async fn finish(&mut self, _end: SourceEnd) -> Result<(), Error> {
        Ok(())
    }
}

/// Runs a [`BatchWriter`] as a [`Sink`]: one batch at a time, each confirmed once written.
pub struct WriterSink<W>(pub W);

#[async_trait]
impl<W: BatchWriter> Sink for WriterSink<W> {
    async fn check(&mut self, ctx: &Context) -> Result<(), Error> {
        self.0.check(ctx).await
    }

    async fn run(mut self: Box<Self>, input: BatchReceiver, ctx: Context) -> Result<(), Error> {
        self.0.begin(&ctx);
        while let Some(batch) = input.recv().await {
            let (messages, ack) = batch.into_parts();
            self.0.write_acked(messages, ack).await?;
        }
        self.0.finish(input.source_end()).await
    }
}

/// What a dry run puts in the sink's place once the sink is checked: every batch settled as
/// skipped, nothing written.
struct DryRun;

#[async_trait]
impl Sink for DryRun {
    async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    async fn run(self: Box<Self>, input: BatchReceiver, _ctx: Context) -> Result<(), Error> {
        while let Some(batch) = input.recv().await {
            let n = batch.len();
            let (_, ack) = batch.into_parts();
            ack.confirm(Delivery {
                skipped: n,
                ..Delivery::default()
            });
        }
        Ok(())
    }
}

/// Channel bounds for a run: a few batches per worker, and bytes to match.
fn channel_bounds(options: &Options) -> (usize, usize) {
    let workers = options.threads.max(1);
    let batches = workers * 4 + 4;
    let bytes = (options.extra.batch_max_bytes * batches).clamp(16 << 20, 256 << 20);
    (batches, bytes)
}

/// Runs `source` into `sink` and returns the summary. The error, when there is one, is the
/// sink's if it failed (the source then only saw the channel close), the source's otherwise.
/// With `-n` (a dry run) the sink is only checked (see the module docs).
pub async fn run(
    source: Box<dyn Source>,
    mut sink: Box<dyn Sink>,
    ctx: Context,
) -> Result<Summary, Error> {
    if ctx.options.dry_run {
        sink.check(&ctx).await?;
        sink = Box::new(DryRun);
        ctx.stats.mark_dry_run();
    }
    let (batches, bytes) = channel_bounds(&ctx.options);
    let mut filter = ctx.filter.clone().unwrap_or_else(|| ctx.options.filter());
    let data = &ctx.options.data;
    if !data.include.is_empty() || !data.exclude.is_empty() {
        filter.collections = Some(CollectionSelect {
            run: ctx.collections.clone(),
            rules: Arc::new(data.clone()),
            bucket: ctx.options.source_bucket.clone(),
        });
    }
    let (tx, rx) = channel::bounded(
        batches,
        bytes,
        filter,
        ctx.stats.clone(),
        ctx.cancel.clone(),
    );
    let tx = match &ctx.rate {
        Some(rate) => tx.with_rate(rate.clone()),
        None => tx,
    };
    let done = CancellationToken::new();
    let reporter = progress::spawn(
        ctx.stats.clone(),
        ctx.progress,
        Duration::from_secs(ctx.options.extra.report),
        done.clone(),
    );

    let sink_task = tokio::spawn(sink.run(rx, ctx.clone()));
    let keep = tx.clone();
    let source_result = tokio::spawn(source.run(tx, ctx.clone()))
        .await
        .unwrap_or_else(|e| Err(Error::source("source", format!("worker panicked: {e}"))));
    let end = match &source_result {
        Ok(()) if ctx.cancel.is_cancelled() => SourceEnd::Cancelled,
        Ok(()) => SourceEnd::Complete,
        Err(Error::Cancelled) => SourceEnd::Cancelled,
        Err(_) => SourceEnd::Failed,
    };
    keep.set_end(end);
    // Before the channel closes: a sink that sees its end finds the source done.
    ctx.source_done.cancel();
    drop(keep);
    let sink_result = sink_task
        .await
        .unwrap_or_else(|e| Err(Error::sink("sink", format!("worker panicked: {e}"))));

    done.cancel();
    let _ = reporter.await;
    if end == SourceEnd::Cancelled {
        ctx.stats.mark_cancelled();
    }
    sink_result?;
    match source_result {
        Ok(()) | Err(Error::Cancelled) => Ok(ctx.stats.summary()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use std::sync::Mutex;

    struct Numbers(usize);

    #[async_trait]
    impl Source for Numbers {
        async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
            for chunk in (0..self.0).collect::<Vec<_>>().chunks(10) {
                let msgs = chunk
                    .iter()
                    .map(|i| Message {
                        seqno: *i as u64 + 1,
                        ..Message::mutation(format!("k{i}"), "v")
                    })
                    .collect();
                out.send(Batch::new(msgs)).await?;
            }
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<(Vec<Message>, Option<SourceEnd>)>>);

    #[async_trait]
    impl BatchWriter for Collect {
        async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
            Ok(())
        }
        async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
            let n = messages.len();
            self.0.lock().unwrap().0.extend(messages);
            Ok(Delivery::all(n))
        }
        async fn finish(&mut self, end: SourceEnd) -> Result<(), Error> {
            self.0.lock().unwrap().1 = Some(end);
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_message_arrives_in_order_and_is_counted() {
        let out = Collect::default();
        let summary = run(
            Box::new(Numbers(95)),
            Box::new(WriterSink(out.clone())),
            Context::new(Options::default()),
        )
        .await
        .unwrap();
        let got = out.0.lock().unwrap();
        assert_eq!(got.0.len(), 95);
        assert!(got.0.windows(2).all(|w| w[0].seqno < w[1].seqno));
        assert_eq!(got.1, Some(SourceEnd::Complete));
        assert_eq!(summary.counts.items_written, 95);
        assert_eq!(summary.counts.batches, 10);
        assert!(summary.is_complete());
    }

    struct Failing;

    #[async_trait]
    impl Source for Failing {
        async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
            out.send_messages(vec![Message::mutation("a", "1")]).await?;
            Err(Error::source("test:", "disk on fire"))
        }
    }

    #[tokio::test]
    async fn a_failed_source_fails_the_run_and_the_sink_is_told_not_to_commit() {
        let out = Collect::default();
        let err = run(
            Box::new(Failing),
            Box::new(WriterSink(out.clone())),
            Context::new(Options::default()),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        assert_eq!(out.0.lock().unwrap().1, Some(SourceEnd::Failed));
    }

    struct BrokenSink;

    #[async_trait]
    impl BatchWriter for BrokenSink {
        async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
            Err(Error::sink("test:", "no such destination"))
        }
        async fn write(&mut self, _m: Vec<Message>) -> Result<Delivery, Error> {
            Err(Error::sink("test:", "refused"))
        }
    }

    #[tokio::test]
    async fn a_failed_sink_stops_the_source_and_its_error_is_reported() {
        let err = run(
            Box::new(Numbers(100_000)),
            Box::new(WriterSink(BrokenSink)),
            Context::new(Options::default()),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }

    /// Notes whether the source was done before the first batch and at the channel's end.
    struct Watch(Arc<Mutex<Vec<bool>>>);

    #[async_trait]
    impl Sink for Watch {
        async fn check(&mut self, _ctx: &Context) -> Result<(), Error> {
            Ok(())
        }
        async fn run(self: Box<Self>, input: BatchReceiver, ctx: Context) -> Result<(), Error> {
            let mut first = true;
            while let Some(batch) = input.recv().await {
                if first {
                    self.0.lock().unwrap().push(ctx.source_done.is_cancelled());
                    first = false;
                }
                let n = batch.len();
                batch.into_parts().1.confirm(Delivery::all(n));
            }
            self.0.lock().unwrap().push(ctx.source_done.is_cancelled());
            Ok(())
        }
    }

    #[tokio::test]
    async fn source_done_is_cancelled_once_the_source_returned_before_the_sink_sees_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ctx = Context::new(Options::default());
        let done = ctx.source_done.clone();
        // 10,000 batches: more than the channel holds, so the source is still sending when
        // the sink takes its first batch.
        run(
            Box::new(Numbers(100_000)),
            Box::new(Watch(seen.clone())),
            ctx,
        )
        .await
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), [false, true]);
        assert!(done.is_cancelled());
    }

    #[tokio::test]
    async fn a_dry_run_checks_the_sink_and_writes_nothing() {
        let options = Options {
            dry_run: true,
            ..Options::default()
        };
        let out = Collect::default();
        let summary = run(
            Box::new(Numbers(25)),
            Box::new(WriterSink(out.clone())),
            Context::new(options.clone()),
        )
        .await
        .unwrap();
        assert!(out.0.lock().unwrap().0.is_empty(), "nothing written");
        assert_eq!(
            (summary.counts.items_written, summary.counts.skipped),
            (0, 25)
        );
        assert!(summary.dry_run && summary.to_string().contains("nothing written"));
        // A destination that fails its check fails the dry run.
        let err = run(
            Box::new(Numbers(25)),
            Box::new(WriterSink(BrokenSink)),
            Context::new(options),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no such destination"), "{err}");
    }

    struct Endless;

    #[async_trait]
    impl Source for Endless {
        async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
            loop {
                out.send_messages(vec![Message::mutation("k", "v"); 10])
                    .await?;
            }
        }
    }

    #[tokio::test]
    async fn cancel_stops_reading_drains_and_reports_what_was_confirmed() {
        let ctx = Context::new(Options::default());
        let cancel = ctx.cancel.clone();
        let out = Collect::default();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let summary = run(Box::new(Endless), Box::new(WriterSink(out.clone())), ctx)
            .await
            .unwrap();
        assert!(summary.cancelled);
        let got = out.0.lock().unwrap();
        assert_eq!(got.1, Some(SourceEnd::Cancelled));
        assert_eq!(summary.counts.items_written, got.0.len() as u64);
        assert_eq!(summary.counts.items_read, summary.counts.items_written);
    }
}
