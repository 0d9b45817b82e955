//! `pump transfer SOURCE SINK`, with cbtransfer's options, cbbackup's `-m`, cbbackupmgr
//! restore's filters, `--rate`, and machine-readable output.
//!
//! ```text
//! specs -> kinds (a bare word naming a kind is refused) -> options and filters
//!       -> a backup sink plans its run (full, diff, accu, or the resumption of an incomplete one)
//!          and a source that keeps positions is pointed at the run's positions file
//!       -> pump::run (Ctrl-C drains, exit 130) -> the summary: text, or JSON on stdout (--json)
//! ```

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use pump::progress::ProgressMode;
use pump::{Context, Rate, Spec, TtlRewrite};
use pump_sinks::backup::{RunKind, RunPlan};

use super::credentials::CredentialArgs;
use super::{print_out, registry, Failure};

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
    /// Only mutations whose value matches this regular expression (removals pass).
    #[arg(long = "filter-values")]
    pub filter_values: Option<String>,
    /// Leave deletions and expirations out.
    #[arg(long = "exclude-deletions")]
    pub exclude_deletions: bool,
    /// Replace expiries: none, all, or expired (those already past); see --replace-ttl-with.
    #[arg(long = "replace-ttl", value_enum)]
    pub replace_ttl: Option<ReplaceTtl>,
    /// The new expiry for --replace-ttl: 0 (none) or an RFC 3339 time (2030-01-02T15:04:05Z).
    #[arg(long = "replace-ttl-with")]
    pub replace_ttl_with: Option<String>,
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
    /// A backup sink's run: full, diff (what changed since the last run; the default when the
    /// directory holds a run to start from) or accu (what changed since the last full run).
    #[arg(short = 'm', long = "mode", value_enum)]
    pub mode: Option<Mode>,
    /// Restore what incomplete runs of a backup hold instead of refusing them.
    #[arg(long = "allow-partial")]
    pub allow_partial: bool,
    /// Let a file sink (csv:FILE) replace a file that exists.
    #[arg(long = "overwrite")]
    pub overwrite: bool,
    /// Hold the source to this rate: items/s (50000, 50k, 2M) or bytes/s (10MB/s).
    #[arg(long = "rate")]
    pub rate: Option<String>,
    /// Write the final summary as JSON on standard output (nothing else there).
    #[arg(long = "json")]
    pub json: bool,
    /// How progress is shown: bar (a bar on a terminal, lines otherwise), lines, json (one
    /// object per line on stderr, every -x report seconds) or none.
    #[arg(long = "progress", value_enum, default_value = "bar")]
    pub progress: Progress,
    /// Serve Prometheus metrics on this address while the transfer runs (GET /metrics).
    #[arg(long = "metrics")]
    pub metrics: Option<String>,
    /// Write the keys that failed to this file, one per line.
    #[arg(long = "failed-keys")]
    pub failed_keys: Option<PathBuf>,
    /// No progress output.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: crate::cli::credentials::TlsArgs,
}

/// `-m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Full,
    Diff,
    Accu,
}

impl From<Mode> for RunKind {
    fn from(m: Mode) -> RunKind {
        match m {
            Mode::Full => RunKind::Full,
            Mode::Diff => RunKind::Diff,
            Mode::Accu => RunKind::Accu,
        }
    }
}

/// `--replace-ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplaceTtl {
    None,
    All,
    Expired,
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Bar,
    Lines,
    Json,
    None,
}

pub use crate::transfer::check_bare_word;

impl TransferArgs {
    /// The request `crate::transfer` checks and opens (a job of `pump worker` makes the same).
    pub fn request(&self) -> Result<crate::transfer::TransferRequest, Failure> {
        Ok(crate::transfer::TransferRequest {
            source: self.source.clone(),
            sink: self.sink.clone(),
            bucket_source: self.bucket_source.clone(),
            bucket_destination: self.bucket_destination.clone(),
            source_auth: self.credentials.source()?,
            dest_auth: self.credentials.dest()?,
            vbucket_list: self.vbucket_list.clone(),
            key: self.key.clone(),
            threads: self.threads,
            dry_run: self.dry_run,
            verbose: self.verbose,
            extra: self.extra.clone(),
            add: self.add,
            mode: self.mode.map(RunKind::from),
            allow_partial: self.allow_partial,
            overwrite: self.overwrite,
            cacert: self.tls.cacert.clone(),
            no_ssl_verify: self.tls.no_ssl_verify,
        })
    }
}

/// Runs the transfer and prints the summary.
pub async fn run(args: TransferArgs) -> Result<(), Failure> {
    let registry = registry();
    let mut checked = crate::transfer::check(&args.request()?, &registry)?;
    let regex = |flag: &str, re: &Option<String>| -> Result<Option<regex::bytes::Regex>, Failure> {
        re.as_deref()
            .map(|k| {
                regex::bytes::Regex::new(k)
                    .map_err(|e| Failure::Usage(format!("{flag} {k:?}: {e}")))
            })
            .transpose()
    };
    let value = regex("--filter-values", &args.filter_values)?;
    let ttl = ttl_rewrite(args.replace_ttl, args.replace_ttl_with.as_deref())?;
    let rate = args.rate.as_deref().map(Rate::parse).transpose()?;
    let mut filter = checked.options.filter();
    filter.value = value;
    filter.exclude_deletions = args.exclude_deletions;
    filter.ttl = ttl;
    describe(&args, &checked, rate);

    let plan = if checked.is_backup_sink() && !checked.options.dry_run {
        Some(crate::transfer::plan_backup(
            &mut checked,
            args.mode.map(RunKind::from),
            None,
        )?)
    } else {
        None
    };
    let opened = crate::transfer::open(checked, &registry, plan.clone())?;
    let (source, sink, options) = (opened.source, opened.sink, opened.options);
    let (source_spec, sink_spec) = (opened.source_spec, opened.sink_spec);
    let mut ctx = Context::new(options)
        .with_progress(match (args.quiet, args.progress) {
            (true, _) | (_, Progress::None) => ProgressMode::Off,
            (false, Progress::Bar) => ProgressMode::Auto,
            (false, Progress::Lines) => ProgressMode::Lines,
            (false, Progress::Json) => ProgressMode::Json,
        })
        .with_filter(filter.clone());
    if let Some(rate) = rate {
        ctx = ctx.with_rate(rate);
    }
    let metrics = match &args.metrics {
        Some(addr) => Some(super::metrics::serve(addr, ctx.stats.clone()).await?),
        None => None,
    };
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping reads, draining what is in flight");
            cancel.cancel();
        }
    });
    let stats = ctx.stats.clone();
    let result = pump::run(source, sink, ctx).await;
    if let Some(m) = metrics {
        m.stop().await;
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // A failed run still lists the keys that were not written (a TAP source stops at
            // the first one, for example).
            let partial = stats.summary();
            if !partial.failures.is_empty() {
                report_failures(&partial, args.failed_keys.as_deref(), args.json)?;
            }
            return Err(e.into());
        }
    };
    if filter.selects() && summary.counts.items_read == 0 && summary.counts.filtered > 0 {
        eprintln!(
            "warning: the filters matched nothing: all {} items read were left out ({})",
            summary.counts.filtered,
            filter_names(&args)
        );
    }
    let run_state = plan.as_ref().map(|p| {
        let complete = p.node_dir.join(pump_formats::run::COMPLETE_JSON).exists();
        (p, complete)
    });
    if args.json {
        print_out(&format!(
            "{}\n",
            summary_json(&source_spec, &sink_spec, &summary, run_state)
        ))?;
    } else {
        eprintln!("{source_spec} -> {sink_spec}");
        eprintln!("{summary}");
        if let Some((p, complete)) = run_state {
            eprintln!(
                "  run       {} ({}{}{}), {}",
                p.node_dir.display(),
                p.mode,
                p.base
                    .as_deref()
                    .map(|b| format!(" of {b}"))
                    .unwrap_or_default(),
                if p.resumed { ", resumed" } else { "" },
                if complete { "complete" } else { "incomplete" }
            );
        }
    }
    if !summary.failures.is_empty() {
        report_failures(&summary, args.failed_keys.as_deref(), args.json)?;
    }
    if summary.cancelled {
        return Err(Failure::Interrupted(format!(
            "interrupted: {} items confirmed before the stop{}",
            summary.counts.items_written,
            if plan.is_some() {
                "; run the same command again to resume the backup"
            } else {
                ""
            }
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

/// `--replace-ttl` and `--replace-ttl-with`, as cbbackupmgr restore takes them.
fn ttl_rewrite(
    which: Option<ReplaceTtl>,
    with: Option<&str>,
) -> Result<Option<TtlRewrite>, Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let parse = |w: &str| -> Result<u32, Failure> {
        if w == "0" {
            return Ok(0);
        }
        let t = chrono::DateTime::parse_from_rfc3339(w).map_err(|e| {
            Failure::Usage(format!(
                "--replace-ttl-with {w:?}: expected 0 or an RFC 3339 time such as 2030-01-02T15:04:05Z ({e})"
            ))
        })?;
        u32::try_from(t.timestamp())
            .ok()
            .filter(|s| *s > 30 * 24 * 3600)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "--replace-ttl-with {w:?}: not a time a memcached expiry can hold"
                ))
            })
    };
    match (which, with) {
        (None, None) | (Some(ReplaceTtl::None), None) => Ok(None),
        (None, Some(_)) => Err(Failure::Usage(
            "--replace-ttl-with needs --replace-ttl all or expired".into(),
        )),
        (Some(ReplaceTtl::None), Some(_)) => Err(Failure::Usage(
            "--replace-ttl none changes nothing: leave out --replace-ttl-with".into(),
        )),
        (Some(w), with) => Ok(Some(TtlRewrite {
            all: w == ReplaceTtl::All,
            with: match with {
                Some(v) => parse(v)?,
                None if w == ReplaceTtl::All => {
                    return Err(Failure::Usage(
                        "--replace-ttl all needs --replace-ttl-with (0 or an RFC 3339 time)".into(),
                    ))
                }
                None => 0,
            },
            now,
        })),
    }
}

/// The filter flags given, for the warning when they match nothing.
fn filter_names(args: &TransferArgs) -> String {
    let mut v = Vec::new();
    if let Some(l) = &args.vbucket_list {
        v.push(format!("-l {l}"));
    }
    if let Some(k) = &args.key {
        v.push(format!("-k {k:?}"));
    }
    if let Some(f) = &args.filter_values {
        v.push(format!("--filter-values {f:?}"));
    }
    if args.exclude_deletions {
        v.push("--exclude-deletions".into());
    }
    v.join(", ")
}

/// What `-v` shows before the run: the kinds, limits, filters and rate.
fn describe(args: &TransferArgs, c: &crate::transfer::Checked, rate: Option<Rate>) {
    tracing::info!("source {}: kind {}", c.source_spec, c.source_kind);
    tracing::info!("sink {}: kind {}", c.sink_spec, c.sink_kind);
    let options = &c.options;
    let l = options.batch_limits();
    tracing::info!(
        "batches of {} items or {} bytes, {} worker(s), retries {} (backoff up to {:?})",
        l.max_items,
        l.max_bytes,
        options.threads,
        options.extra.max_retry,
        options.extra.backoff_cap
    );
    let filters = filter_names(args);
    if !filters.is_empty() {
        tracing::info!("filters: {filters}");
    }
    if let Some(r) = rate {
        tracing::info!("rate: held to {r}");
    }
}

/// The summary as one JSON object.
fn summary_json(
    source: &Spec,
    sink: &Spec,
    summary: &pump::Summary,
    run: Option<(&RunPlan, bool)>,
) -> String {
    let counts: serde_json::Value =
        serde_json::from_str(&summary.counts.to_json(summary.elapsed)).unwrap_or_default();
    let mut v = serde_json::json!({
        "source": source.to_string(),
        "sink": sink.to_string(),
        "complete": summary.is_complete(),
        "cancelled": summary.cancelled,
        "counts": counts,
        "runs": run.map(|(p, complete)| vec![serde_json::json!({
            "path": p.node_dir.display().to_string(),
            "run": p.run,
            "mode": p.mode.name(),
            "base": p.base,
            "resumed": p.resumed,
            "complete": complete,
        })]).unwrap_or_default(),
    });
    if !summary.failures.is_empty() {
        v["failures"] = summary
            .failures
            .iter()
            .take(1000)
            .map(|f| {
                serde_json::json!({
                    "key": pump::message::key_display(&f.key),
                    "vbucket": f.vbucket,
                    "reason": f.reason,
                })
            })
            .collect();
    }
    v.to_string()
}

fn report_failures(
    summary: &pump::Summary,
    file: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Failure> {
    const SHOWN: usize = 20;
    if !json {
        for f in summary.failures.iter().take(SHOWN) {
            eprintln!("  not written: {f}");
        }
        if summary.failures.len() > SHOWN {
            eprintln!("  ... and {} more", summary.counts.failed as usize - SHOWN);
        }
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
