//! `pump transfer SOURCE SINK`, with cbtransfer's options.

use std::path::PathBuf;

use clap::Args;
use pump::progress::ProgressMode;
use pump::{Context, Extra, Options, Spec, VbucketSet};

use super::credentials::CredentialArgs;
use super::{registry, Failure};

/// cbtransfer's options.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Where to read: gen:..., a backup directory, csv:FILE, memcached://HOST:PORT, ...
    pub source: String,
    /// Where to write: a backup directory, csv:FILE, stdout:, blackhole:, memcached://...
    pub sink: String,
    /// Source bucket.
    #[arg(short = 'b', long = "bucket-source", default_value = "default")]
    pub bucket_source: String,
    /// Destination bucket (defaults to the source bucket).
    #[arg(short = 'B', long = "bucket-destination")]
    pub bucket_destination: Option<String>,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Only these vbuckets: 500,612,700-712.
    #[arg(short = 'l', long = "vbucket-list")]
    pub vbucket_list: Option<String>,
    /// Only keys matching this regular expression.
    #[arg(short = 'k', long = "key")]
    pub key: Option<String>,
    /// Workers: connections of a network sink, streams of a network source.
    #[arg(short = 't', long = "threads", default_value_t = 4)]
    pub threads: usize,
    /// Read and check everything, write nothing.
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
    /// More output (repeat for more).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Extra settings: batch_max_size=1000,batch_max_bytes=400000,cbb_max_mb=100000,max_retry=10,rehash=0,...
    #[arg(short = 'x', long = "extra", default_value = "")]
    pub extra: String,
    /// Use ADD instead of SET in a memcached-protocol sink (existing keys are kept).
    #[arg(short = 'a', long = "add")]
    pub add: bool,
    /// Write the keys that failed to this file, one per line.
    #[arg(long = "failed-keys")]
    pub failed_keys: Option<PathBuf>,
    /// No progress output.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// Runs the transfer and prints the summary.
pub async fn run(args: TransferArgs) -> Result<(), Failure> {
    let registry = registry();
    let source_spec = Spec::parse(&args.source)?;
    let sink_spec = Spec::parse(&args.sink)?;
    let (source_kind, sink_kind) = registry.pair(&source_spec, &sink_spec)?;
    let mut kind_keys: Vec<&str> = source_kind.extra_keys().to_vec();
    kind_keys.extend(sink_kind.extra_keys());
    let mut extra = Extra::parse(&args.extra, &kind_keys)?;
    if args.add {
        extra.set("add", "1");
    }
    if args.threads == 0 {
        return Err(Failure::Usage("-t/--threads must be at least 1".into()));
    }
    let key = match &args.key {
        Some(k) => Some(
            regex::bytes::Regex::new(k).map_err(|e| Failure::Usage(format!("-k {k:?}: {e}")))?,
        ),
        None => None,
    };
    let options = Options {
        source_bucket: args.bucket_source.clone(),
        dest_bucket: args.bucket_destination.clone(),
        source_auth: args.credentials.source(),
        dest_auth: args.credentials.dest(),
        vbuckets: args
            .vbucket_list
            .as_deref()
            .map(VbucketSet::parse)
            .transpose()?,
        key,
        threads: args.threads,
        dry_run: args.dry_run,
        verbose: args.verbose,
        extra,
    };
    let source = source_kind.open(&source_spec, &options)?;
    let sink: Box<dyn pump::Sink> = if options.dry_run {
        eprintln!("dry run: reading {source_spec}, checked sink {sink_spec}, writing nothing");
        Box::new(pump_sinks::blackhole::BlackholeSink)
    } else {
        sink_kind.open(&sink_spec, &options)?
    };
    let ctx = Context::new(options).with_progress(if args.quiet {
        ProgressMode::Off
    } else {
        ProgressMode::Auto
    });
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping reads, draining what is in flight");
            cancel.cancel();
        }
    });
    let summary = pump::run(source, sink, ctx).await?;
    eprintln!("{source_spec} -> {sink_spec}");
    eprintln!("{summary}");
    if !summary.failures.is_empty() {
        report_failures(&summary, args.failed_keys.as_deref())?;
    }
    if summary.cancelled {
        return Err(Failure::Failed(format!(
            "interrupted: {} items confirmed before the stop",
            summary.counts.items_written
        )));
    }
    if summary.counts.failed > 0 {
        return Err(Failure::Failed(format!(
            "{} items were not written",
            summary.counts.failed
        )));
    }
    Ok(())
}

fn report_failures(summary: &pump::Summary, file: Option<&std::path::Path>) -> Result<(), Failure> {
    const SHOWN: usize = 20;
    for f in summary.failures.iter().take(SHOWN) {
        eprintln!("  not written: {f}");
    }
    if summary.failures.len() > SHOWN {
        eprintln!("  ... and {} more", summary.counts.failed as usize - SHOWN);
    }
    if let Some(path) = file {
        let mut text = String::new();
        for f in &summary.failures {
            text.push_str(&format!(
                "{}\t{}\t{}\n",
                pump::message::key_display(&f.key),
                f.vbucket,
                f.reason
            ));
        }
        std::fs::write(path, text)
            .map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?;
        eprintln!("  the keys not written are listed in {}", path.display());
    }
    Ok(())
}
