//! Opening a transfer from its arguments: `pump transfer` and the transfer jobs `pump worker`
//! runs go through here, so that a job runs exactly as `pump transfer -l RANGE` would.
//!
//! ```text
//! TransferRequest (specs, cbtransfer's options, credentials)
//!   -> Registry::pair (both kinds known, the sink takes what the source gives)
//!   -> Options (-x checked against the engine's and both kinds' keys, -k compiled, -l parsed)
//!   -> Opened { source, sink }: ready for pump::run
//! ```

use pump::{Credentials, Extra, Options, Registry, Sink, Source, Spec, VbucketSet};

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
    /// True when the source keeps per-vbucket positions it can resume from (`-x checkpoint`).
    pub fn keeps_positions(&self) -> bool {
        self.source_keys.contains(&"checkpoint")
    }
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
    let source_spec = Spec::parse(&req.source)?;
    let sink_spec = Spec::parse(&req.sink)?;
    let (source_kind, sink_kind) = registry.pair(&source_spec, &sink_spec)?;
    let mut kind_keys: Vec<&str> = source_kind.extra_keys().to_vec();
    kind_keys.extend(sink_kind.extra_keys());
    let mut extra = Extra::parse(&req.extra, &kind_keys)?;
    if req.add {
        extra.set("add", "1");
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

/// Checks the request and opens its source and sink (a dry run's sink discards).
pub fn open(req: &TransferRequest, registry: &Registry) -> Result<Opened, Failure> {
    let c = check(req, registry)?;
    let (source_kind, sink_kind) = registry.pair(&c.source_spec, &c.sink_spec)?;
    let source = source_kind.open(&c.source_spec, &c.options)?;
    let sink: Box<dyn Sink> = if c.options.dry_run {
        eprintln!(
            "dry run: reading {}, checked sink {}, writing nothing",
            c.source_spec, c.sink_spec
        );
        Box::new(pump_sinks::blackhole::BlackholeSink)
    } else {
        sink_kind.open(&c.sink_spec, &c.options)?
    };
    Ok(Opened {
        source,
        sink,
        options: c.options,
        source_spec: c.source_spec,
        sink_spec: c.sink_spec,
    })
}
