//! Opening a transfer from its arguments: `pump transfer` and the transfer jobs `pump worker`
//! runs go through here, so that a job runs exactly as `pump transfer -l RANGE` would.
//!
//! ```text
//! TransferRequest (specs, cbtransfer's options, credentials)
//!   -> check: a bare word naming a kind refused, Registry::pair (both kinds known, the sink
//!      takes what the source gives), Options (-x checked against the engine's and both kinds'
//!      keys, -a, --allow-partial, --overwrite, -m only for a backup sink, -k compiled, -l parsed)
//!   -> plan_backup (a backup sink): the run it writes (-m full|diff|accu, the resumption of an
//!      incomplete run, or a run of N parts for N jobs), and a source that keeps positions
//!      pointed at the run's positions file
//!   -> open: Opened { source, sink } ready for pump::run (a dry run opens the real sink, which
//!      pump::run checks and writes nothing to; a backup sink writes the planned run, or the
//!      part of it a job was given)
//! ```

use pump::{Credentials, Extra, Options, Registry, Sink, Source, Spec, VbucketSet};
use pump_sinks::backup::{BackupConfig, BackupSink, PlanRequest, RunKind, RunPlan};

use crate::failure::Failure;

/// Everything a transfer is opened from.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub source: String,
    pub sink: String,
    pub bucket_source: String,
    pub bucket_destination: Option<String>,
    pub source_auth: Option<Credentials>,
    pub dest_auth: Option<Credentials>,
    /// `-l`.
    pub vbucket_list: Option<String>,
    /// `-k`.
    pub key: Option<String>,
    pub threads: usize,
    pub dry_run: bool,
    pub verbose: u8,
    /// `-x`, as given.
    pub extra: String,
    /// `-a`.
    pub add: bool,
    /// `-m`: a backup sink's run.
    pub mode: Option<RunKind>,
    /// `--allow-partial`: a backup source's incomplete runs are read.
    pub allow_partial: bool,
    /// `--overwrite`: a file sink replaces a file that exists.
    pub overwrite: bool,
    /// `--cacert`: the CA certificate a TLS peer is checked against.
    pub cacert: Option<std::path::PathBuf>,
    /// `--no-ssl-verify`: a TLS peer is not checked.
    pub no_ssl_verify: bool,
}

/// A request checked against the registry, nothing opened yet.
pub struct Checked {
    pub source_spec: Spec,
    pub sink_spec: Spec,
    pub options: Options,
    /// The source kind's name (`dcp`, `couchbase`, `backup`, ...).
    pub source_kind: &'static str,
    /// The sink kind's name.
    pub sink_kind: &'static str,
    /// The source kind's own `-x` keys.
    pub source_keys: &'static [&'static str],
}

impl Checked {
    /// True when the source keeps per-vbucket positions it can resume from (`-x checkpoint`):
    /// a DCP stream (not `-x stream=tap`).
    pub fn keeps_positions(&self) -> bool {
        self.source_keys.contains(&"checkpoint")
            && self.options.extra.get("stream").unwrap_or("dcp") == "dcp"
    }

    /// True when the sink is a backup directory.
    pub fn is_backup_sink(&self) -> bool {
        self.sink_kind == "backup"
    }
}

/// A bare word (no `:`, no `/`) that names a kind is almost always a forgotten colon: it would
/// otherwise be a backup directory of that name in the current directory.
pub fn check_bare_word(role: &str, raw: &str, registry: &Registry) -> Result<(), Failure> {
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

/// A transfer ready to run.
pub struct Opened {
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
    pub options: Options,
    pub source_spec: Spec,
    pub sink_spec: Spec,
}

/// Checks the specs, kinds and options without opening anything.
pub fn check(req: &TransferRequest, registry: &Registry) -> Result<Checked, Failure> {
    check_bare_word("source", &req.source, registry)?;
    check_bare_word("sink", &req.sink, registry)?;
    let source_spec = Spec::parse(&req.source)?;
    let sink_spec = Spec::parse(&req.sink)?;
    let (source_kind, sink_kind) = registry.pair(&source_spec, &sink_spec)?;
    let mut kind_keys: Vec<&str> = source_kind.extra_keys().to_vec();
    kind_keys.extend(sink_kind.extra_keys());
    let mut extra = Extra::parse(&req.extra, &kind_keys)?;
    if req.add {
        extra.set("add", "1");
    }
    if req.allow_partial {
        if source_kind.name() != "backup" {
            return Err(Failure::Usage(format!(
                "--allow-partial: {source_spec} is not a backup directory"
            )));
        }
        extra.set("allow_partial", "1");
    }
    if req.overwrite {
        if !sink_kind.extra_keys().contains(&"overwrite") {
            return Err(Failure::Usage(format!(
                "--overwrite: {sink_spec} is not a file sink (csv:FILE)"
            )));
        }
        extra.set("overwrite", "1");
    }
    if req.mode.is_some() && sink_kind.name() != "backup" {
        return Err(Failure::Usage(format!(
            "-m: {sink_spec} is not a backup directory; -m chooses a backup's run"
        )));
    }
    if let Some(c) = &req.cacert {
        if !c.is_file() {
            return Err(Failure::Usage(format!(
                "--cacert {}: no such file",
                c.display()
            )));
        }
        extra.set("cacert", &c.to_string_lossy());
    }
    if req.no_ssl_verify {
        extra.set("no_ssl_verify", "1");
    }
    if req.threads == 0 {
        return Err(Failure::Usage("-t/--threads must be at least 1".into()));
    }
    let key = match &req.key {
        Some(k) => Some(
            regex::bytes::Regex::new(k).map_err(|e| Failure::Usage(format!("-k {k:?}: {e}")))?,
        ),
        None => None,
    };
    let options = Options {
        source_bucket: req.bucket_source.clone(),
        dest_bucket: req.bucket_destination.clone(),
        source_auth: req.source_auth.clone(),
        dest_auth: req.dest_auth.clone(),
        vbuckets: req
            .vbucket_list
            .as_deref()
            .map(VbucketSet::parse)
            .transpose()?,
        key,
        threads: req.threads,
        dry_run: req.dry_run,
        verbose: req.verbose,
        extra,
    };
    Ok(Checked {
        source_spec,
        sink_spec,
        options,
        source_kind: source_kind.name(),
        sink_kind: sink_kind.name(),
        source_keys: source_kind.extra_keys(),
    })
}

/// Plans a backup sink's run (`parts`: a run that many jobs write) and, for a source that
/// keeps positions, points it at the run's positions file (so a diff starts where the last
/// run ended, and a rerun resumes).
pub fn plan_backup(
    c: &mut Checked,
    mode: Option<RunKind>,
    parts: Option<u32>,
) -> Result<RunPlan, Failure> {
    let resumable = c.keeps_positions();
    if resumable && c.options.extra.get("checkpoint").is_some() {
        return Err(Failure::Usage(format!(
            "-x checkpoint: {} is a backup, which keeps its source's positions with each run; leave -x checkpoint out",
            c.sink_spec
        )));
    }
    let config = BackupConfig::from_spec(&c.sink_spec, &c.options)?;
    let source = c.source_spec.to_string();
    let plan = pump_sinks::backup::plan(&PlanRequest {
        dir: &config.dir,
        bucket: &config.bucket,
        node: &config.node,
        mode,
        resumable,
        source: &source,
        now: chrono::Utc::now(),
        parts,
    })
    .map_err(|e| {
        if e.starts_with("-m ")
            || e.contains("incomplete: rerun")
            || e.contains("is an incomplete run of")
            || e.contains("is incomplete")
        {
            Failure::Usage(format!("{}: {e}", c.sink_spec))
        } else {
            Failure::Failed(format!("sink {}: {e}", c.sink_spec))
        }
    })?;
    for note in &plan.notes {
        eprintln!("{note}");
    }
    if parts.is_none() {
        if let Some(p) = &plan.positions {
            c.options.extra.set("checkpoint", &p.display().to_string());
        }
    }
    tracing::info!(
        "backup run {} ({}), data files from data-{:04}.cbb",
        plan.node_dir.display(),
        plan.mode,
        plan.first_file
    );
    Ok(plan)
}

/// Opens the checked transfer's source and sink: a backup sink with a plan writes that run
/// (or part of a run). A dry run opens the real sink too: pump::run checks it (connects,
/// authenticates, checks the bucket or the directory) and writes nothing.
pub fn open(c: Checked, registry: &Registry, plan: Option<RunPlan>) -> Result<Opened, Failure> {
    let (source_kind, sink_kind) = registry.pair(&c.source_spec, &c.sink_spec)?;
    let source = source_kind.open(&c.source_spec, &c.options)?;
    let sink: Box<dyn Sink> = if let Some(plan) = plan {
        Box::new(BackupSink::with_plan(
            BackupConfig::from_spec(&c.sink_spec, &c.options)?,
            plan,
        ))
    } else {
        sink_kind.open(&c.sink_spec, &c.options)?
    };
    if c.options.dry_run {
        eprintln!(
            "dry run: reading {}, checking {}, writing nothing",
            c.source_spec, c.sink_spec
        );
    }
    Ok(Opened {
        source,
        sink,
        options: c.options,
        source_spec: c.source_spec,
        sink_spec: c.sink_spec,
    })
}
