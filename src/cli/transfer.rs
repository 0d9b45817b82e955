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
use pump::{Context, Extra, Options, Rate, SinkKind, SourceKind, Spec, TtlRewrite, VbucketSet};
use pump_sinks::backup::{BackupConfig, BackupSink, PlanRequest, RunKind, RunPlan};

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
    /// Only these collections: bucket[.scope[.collection]],... (cbbackupmgr's form)
    #[arg(long = "include-data")]
    pub include_data: Option<String>,
    /// All collections but these: bucket[.scope[.collection]],...
    #[arg(long = "exclude-data")]
    pub exclude_data: Option<String>,
    /// Where collections land: SRC=DST,... (bucket=bucket, bucket.scope=bucket.scope,
    /// bucket.scope.collection=bucket.scope.collection); the most specific mapping wins
    #[arg(long = "map-data")]
    pub map_data: Option<String>,
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
    /// couchbases:// and dcps://: trust the PEM certificates of FILE (the cluster's CA).
    #[arg(long = "cacert", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// couchbases:// and dcps://: accept any server certificate (encrypted, not authenticated).
    #[arg(long = "no-ssl-verify")]
    pub no_ssl_verify: bool,
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

/// A bare word (no `:`, no `/`) that names a kind is almost always a forgotten colon: it would
/// otherwise be a backup directory of that name in the current directory.
pub fn check_bare_word(role: &str, raw: &str, registry: &pump::Registry) -> Result<(), Failure> {
    if raw.contains(':') || raw.contains('/') || raw.contains(std::path::MAIN_SEPARATOR) {
        return Ok(());
    }
    let word = raw.to_ascii_lowercase();
    let syntax = registry
        .sources()
        .map(|k| (k.name(), k.syntax()))
        .chain(registry.sinks().map(|k| (k.name(), k.syntax())))
        .filter(|(name, _)| *name != "backup")
        .find(|(name, _)| *name == word);
    if let Some((name, syntax)) = syntax {
        return Err(Failure::Usage(format!(
            "{role} {raw:?} is a bare word, which would be a backup directory named {raw} here: did you mean {name}:? ({syntax}; write ./{raw} for a directory)"
        )));
    }
    Ok(())
}

/// Runs the transfer and prints the summary.
pub async fn run(args: TransferArgs) -> Result<(), Failure> {
    let registry = registry();
    check_bare_word("source", &args.source, &registry)?;
    check_bare_word("sink", &args.sink, &registry)?;
    let source_spec = Spec::parse(&args.source)?;
    let sink_spec = Spec::parse(&args.sink)?;
    let (source_kind, sink_kind) = registry.pair(&source_spec, &sink_spec)?;
    let mut kind_keys: Vec<&str> = source_kind.extra_keys().to_vec();
    kind_keys.extend(sink_kind.extra_keys());
    let mut extra = Extra::parse(&args.extra, &kind_keys)?;
    if args.add {
        extra.set("add", "1");
    }
    let is_backup_sink = sink_kind.name() == "backup";
    if args.allow_partial {
        if source_kind.name() != "backup" {
            return Err(Failure::Usage(format!(
                "--allow-partial: {source_spec} is not a backup directory"
            )));
        }
        extra.set("allow_partial", "1");
    }
    if args.overwrite {
        if !sink_kind.extra_keys().contains(&"overwrite") {
            return Err(Failure::Usage(format!(
                "--overwrite: {sink_spec} is not a file sink (csv:FILE)"
            )));
        }
        extra.set("overwrite", "1");
    }
    if args.mode.is_some() && !is_backup_sink {
        return Err(Failure::Usage(format!(
            "-m: {sink_spec} is not a backup directory; -m chooses a backup's run"
        )));
    }
    if let Some(c) = &args.cacert {
        if !c.is_file() {
            return Err(Failure::Usage(format!(
                "--cacert {}: no such file",
                c.display()
            )));
        }
        extra.set("cacert", &c.to_string_lossy());
    }
    if args.no_ssl_verify {
        extra.set("no_ssl_verify", "1");
    }
    if args.threads == 0 {
        return Err(Failure::Usage("-t/--threads must be at least 1".into()));
    }
    let regex = |flag: &str, re: &Option<String>| -> Result<Option<regex::bytes::Regex>, Failure> {
        re.as_deref()
            .map(|k| {
                regex::bytes::Regex::new(k)
                    .map_err(|e| Failure::Usage(format!("{flag} {k:?}: {e}")))
            })
            .transpose()
    };
    let key = regex("-k", &args.key)?;
    let value = regex("--filter-values", &args.filter_values)?;
    let ttl = ttl_rewrite(args.replace_ttl, args.replace_ttl_with.as_deref())?;
    let rate = args.rate.as_deref().map(Rate::parse).transpose()?;
    let mut options = Options {
        source_bucket: args.bucket_source.clone(),
        dest_bucket: args.bucket_destination.clone(),
        source_auth: args.credentials.source()?,
        dest_auth: args.credentials.dest()?,
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
        data: pump::DataRules::parse(
            args.include_data.as_deref(),
            args.exclude_data.as_deref(),
            args.map_data.as_deref(),
        )
        .map_err(Failure::Usage)?,
    };
    let mut filter = options.filter();
    filter.value = value;
    filter.exclude_deletions = args.exclude_deletions;
    filter.ttl = ttl;
    describe(
        &args,
        &source_spec,
        source_kind,
        &sink_spec,
        sink_kind,
        &options,
        rate,
    );

    let plan = if is_backup_sink && !options.dry_run {
        Some(plan_backup(
            &args,
            &source_spec,
            source_kind,
            &sink_spec,
            &mut options,
        )?)
    } else {
        None
    };
    let source = source_kind.open(&source_spec, &options)?;
    // A dry run opens the real sink too: pump::run checks it (connects, authenticates, checks
    // the bucket or the directory) and writes nothing.
    let sink: Box<dyn pump::Sink> = if let Some(plan) = &plan {
        Box::new(BackupSink::with_plan(
            BackupConfig::from_spec(&sink_spec, &options)?,
            plan.clone(),
        ))
    } else {
        sink_kind.open(&sink_spec, &options)?
    };
    if options.dry_run {
        eprintln!("dry run: reading {source_spec}, checking {sink_spec}, writing nothing");
    }
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
fn describe(
    args: &TransferArgs,
    source_spec: &Spec,
    source_kind: &dyn SourceKind,
    sink_spec: &Spec,
    sink_kind: &dyn SinkKind,
    options: &Options,
    rate: Option<Rate>,
) {
    tracing::info!("source {source_spec}: kind {}", source_kind.name());
    tracing::info!("sink {sink_spec}: kind {}", sink_kind.name());
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

/// Plans a backup sink's run and, for a source that keeps positions, points it at the run's
/// positions file (so a diff starts where the last run ended, and a rerun resumes).
fn plan_backup(
    args: &TransferArgs,
    source_spec: &Spec,
    source_kind: &dyn SourceKind,
    sink_spec: &Spec,
    options: &mut Options,
) -> Result<RunPlan, Failure> {
    let resumable = source_kind.extra_keys().contains(&"checkpoint")
        && options.extra.get("stream").unwrap_or("dcp") == "dcp";
    if resumable && options.extra.get("checkpoint").is_some() {
        return Err(Failure::Usage(format!(
            "-x checkpoint: {sink_spec} is a backup, which keeps its source's positions with each run; leave -x checkpoint out"
        )));
    }
    let config = BackupConfig::from_spec(sink_spec, options)?;
    let source = source_spec.to_string();
    let plan = pump_sinks::backup::plan(&PlanRequest {
        dir: &config.dir,
        bucket: &config.bucket,
        node: &config.node,
        mode: args.mode.map(RunKind::from),
        resumable,
        source: &source,
        now: chrono::Utc::now(),
    })
    .map_err(|e| {
        if e.starts_with("-m ")
            || e.contains("incomplete: rerun")
            || e.contains("is an incomplete run of")
        {
            Failure::Usage(format!("{sink_spec}: {e}"))
        } else {
            Failure::Failed(format!("sink {sink_spec}: {e}"))
        }
    })?;
    for note in &plan.notes {
        eprintln!("{note}");
    }
    if let Some(p) = &plan.positions {
        options.extra.set("checkpoint", &p.display().to_string());
    }
    tracing::info!(
        "backup run {} ({}), data files from data-{:04}.cbb",
        plan.node_dir.display(),
        plan.mode,
        plan.first_file
    );
    Ok(plan)
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
