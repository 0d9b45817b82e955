//! `pump meta2 check | sync | move | rebuild | generate`: arguments and output. The work is
//! in `crate::repair::meta2`.
//!
//! Peers are given as `ADDRESS=VOLUME` (ADDRESS as `sys.peers` holds it, VOLUME the directory
//! of that service's bases); every address is validated before anything is read or written.
//! With `--proxy URL --ns NS` (check, sync, move) the peers come from the namespace's proxy
//! (`crate::repair::sds`) and `--peer` only says where volumes are reachable from here.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pump_meta2::generate::{write_base, BaseSpec};
use pump_meta2::{judge, parse_address, BaseName, Health, Peer};

use super::Failure;
use crate::repair::meta2 as repair;
use crate::repair::sds;

/// `pump meta2 ...`.
#[derive(Debug, Args)]
pub struct Meta2Args {
    #[command(subcommand)]
    command: Meta2Command,
}

#[derive(Debug, Subcommand)]
enum Meta2Command {
    /// Report each copy of a base: ok, missing, unreadable, corrupt, incomplete, behind, ...
    Check(CheckArgs),
    /// Refill every bad copy from the best one (answers like `openio election sync`).
    Sync(SyncArgs),
    /// Move one copy to a new service: freeze, copy, rewrite sys.peers, unfreeze, verify.
    Move(MoveArgs),
    /// Rebuild every base a lost service should hold, from the other services' volumes.
    Rebuild(RebuildArgs),
    /// Write realistic bases (reference schema and admin keys) on a volume.
    Generate(GenerateArgs),
}

/// Which base: `BASE` (`<CID>.<seq>`) or `--account A --container C`.
#[derive(Debug, Args)]
struct BaseArgs {
    /// The base name, <CID>.<seq>.
    base: Option<String>,
    /// The account (with --container, instead of BASE).
    #[arg(long)]
    account: Option<String>,
    /// The container (with --account, instead of BASE).
    #[arg(long)]
    container: Option<String>,
}

impl BaseArgs {
    fn resolve(&self) -> Result<Option<BaseName>, Failure> {
        match (&self.base, &self.account, &self.container) {
            (Some(b), None, None) => Ok(Some(BaseName::parse(b).map_err(usage)?)),
            (None, Some(a), Some(c)) => Ok(Some(BaseName::of(a, c))),
            (None, None, None) => Ok(None),
            _ => Err(Failure::Usage(
                "give BASE, or --account and --container".into(),
            )),
        }
    }
}

/// `--proxy URL --ns NS`: work through an OpenIO SDS proxy.
#[derive(Debug, Args)]
struct ProxyArgs {
    /// An SDS proxy, http://HOST:PORT (repeat: the first is driven, every one is flushed).
    #[arg(long = "proxy", value_name = "URL", requires = "ns")]
    proxies: Vec<String>,
    /// The namespace (with --proxy).
    #[arg(long, requires = "proxies")]
    ns: Option<String>,
    /// The oio-sds version of the proxies, 7 or 9 (9.0 and later); detected when not given.
    #[arg(long, value_name = "7|9", requires = "proxies")]
    proxy_version: Option<sds::Dialect>,
}

impl ProxyArgs {
    /// The proxies, when --proxy is given.
    fn open(&self, base: &BaseArgs, dry_run: bool) -> Result<Option<sds::Proxies>, Failure> {
        let Some(ns) = &self.ns else {
            return Ok(None);
        };
        let container =
            match (&base.base, &base.account, &base.container) {
                (None, Some(a), Some(c)) => sds::Container::Named {
                    account: a.clone(),
                    name: c.clone(),
                },
                (Some(b), None, None) => sds::Container::Cid(BaseName::parse(b).map_err(usage)?),
                _ => return Err(Failure::Usage(
                    "with --proxy, give the container: --account and --container, or its CID.seq"
                        .into(),
                )),
            };
        sds::Proxies::new(
            self.proxies.clone(),
            ns.clone(),
            container,
            dry_run,
            self.proxy_version,
        )
        .map(Some)
    }
}

/// How a copy streams through the pump (sync, move, rebuild --stream).
#[derive(Debug, Args)]
struct StreamArgs {
    /// Bytes of index keys a table may hold while a copy is written before the biggest index
    /// is sorted into a run on disk, beside the base: 67108864, 64M, 1G (default 256M).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    sort_memory: Option<u64>,
}

impl StreamArgs {
    fn stream(&self) -> Result<repair::StreamCopy, Failure> {
        let mut s = repair::StreamCopy::default();
        if let Some(bytes) = self.sort_memory {
            s.sort_memory = usize::try_from(bytes)
                .map_err(|_| Failure::Usage("--sort-memory: too big for this machine".into()))?;
        }
        Ok(s)
    }
}

/// `ADDRESS` or `ADDRESS=VOLUME`.
fn target(s: &str) -> Result<(String, Option<PathBuf>), String> {
    if s.contains('=') {
        let p = peer(s)?;
        Ok((p.address, Some(p.volume)))
    } else {
        Ok((address(s)?, None))
    }
}

fn usage(e: pump_meta2::Error) -> Failure {
    match e {
        pump_meta2::Error::Usage(m) => Failure::Usage(m),
        e => Failure::Failed(e.to_string()),
    }
}

fn peer(s: &str) -> Result<Peer, String> {
    Peer::parse(s).map_err(|e| e.to_string())
}

/// `--create`: a volume may be new or hold no base yet.
#[derive(Debug, Args)]
struct VolumeArgs {
    /// Accept a volume that does not exist or holds no base yet (a new or emptied disk);
    /// without it such a volume is refused, as a mistyped path would be.
    #[arg(long)]
    create: bool,
}

/// True when `volume` holds at least one base (`<volume>/<CID[0:3]>/<CID>.<seq>.meta2`).
fn holds_bases(volume: &std::path::Path) -> bool {
    let Ok(dirs) = std::fs::read_dir(volume) else {
        return false;
    };
    dirs.filter_map(|d| d.ok())
        .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
        .any(|d| {
            std::fs::read_dir(d.path()).is_ok_and(|files| {
                files.filter_map(|f| f.ok()).any(|f| {
                    f.file_name()
                        .to_str()
                        .is_some_and(|n| n.ends_with(".meta2"))
                })
            })
        })
}

/// Every volume the command may write to must exist and hold bases, unless `--create`: a
/// mistyped path is refused before anything is read or written.
fn check_volumes<'a>(
    volumes: impl IntoIterator<Item = (&'a str, &'a std::path::Path)>,
    v: &VolumeArgs,
) -> Result<(), Failure> {
    for (address, volume) in volumes {
        if v.create {
            // What cannot be written then fails for that peer alone, and says why.
            continue;
        }
        if !volume.is_dir() {
            return Err(Failure::Usage(format!(
                "{address}={}: no such volume directory (a new volume: pass --create)",
                volume.display()
            )));
        }
        if !holds_bases(volume) {
            return Err(Failure::Usage(format!(
                "{address}={}: holds no meta2 base; if it is a new or emptied volume, pass --create",
                volume.display()
            )));
        }
    }
    Ok(())
}

fn size(s: &str) -> Result<u64, String> {
    pump::parse_size(s)
        .ok_or_else(|| format!("{s:?}: expected a positive size: 65536, 64K, 256M, 1G"))
}

fn address(s: &str) -> Result<String, String> {
    parse_address(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    base: BaseArgs,
    /// A service holding a copy: ADDRESS=VOLUME (repeat).
    #[arg(long = "peer", value_parser = peer)]
    peers: Vec<Peer>,
    /// Check every base found on this volume (across the --peer volumes).
    #[arg(long)]
    volume: Option<PathBuf>,
    /// integrity_check instead of quick_check.
    #[arg(long)]
    full: bool,
    /// JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(Debug, Args)]
struct SyncArgs {
    #[command(flatten)]
    base: BaseArgs,
    /// A service holding a copy: ADDRESS=VOLUME (repeat; with --proxy, the volumes reachable
    /// from here).
    #[arg(long = "peer", value_parser = peer, required_unless_present = "proxies")]
    peers: Vec<Peer>,
    /// Use this peer's copy as the source.
    #[arg(long, value_parser = address)]
    from: Option<String>,
    /// JSON for scripts.
    #[arg(long)]
    json: bool,
    /// With --proxy: print the plan with the exact requests, change nothing.
    #[arg(long, requires = "proxies")]
    dry_run: bool,
    #[command(flatten)]
    volumes: VolumeArgs,
    #[command(flatten)]
    copy: StreamArgs,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(Debug, Args)]
struct MoveArgs {
    #[command(flatten)]
    base: BaseArgs,
    /// The service whose copy moves (one of --peer).
    #[arg(long, value_parser = address)]
    from: String,
    /// The new service: ADDRESS=VOLUME (with --proxy, ADDRESS alone when its volume is not
    /// reachable from here: the proxy's admin/copy then makes the copy).
    #[arg(long, value_parser = target, value_name = "ADDRESS[=VOLUME]")]
    to: (String, Option<PathBuf>),
    /// Every current service holding a copy: ADDRESS=VOLUME (repeat; with --proxy, the
    /// volumes reachable from here).
    #[arg(long = "peer", value_parser = peer, required_unless_present = "proxies")]
    peers: Vec<Peer>,
    /// Delete the old copy once the new one is verified (kept aside otherwise).
    #[arg(long)]
    delete_source: bool,
    /// Print the plan, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    volumes: VolumeArgs,
    #[command(flatten)]
    copy: StreamArgs,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(Debug, Args)]
struct RebuildArgs {
    /// The service that lost its volume: ADDRESS=VOLUME (the new, empty volume).
    #[arg(long = "peer", value_parser = peer)]
    peer: Peer,
    /// Another service's volume to find the bases on: ADDRESS=VOLUME (repeat).
    #[arg(long = "from-peer", value_parser = peer, required = true)]
    from_peers: Vec<Peer>,
    /// Bases rebuilt at the same time.
    #[arg(short = 't', long, default_value_t = 4)]
    threads: usize,
    /// No progress lines.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Stream each base through the pump (meta2 source -> meta2 sink, as sync does)
    /// instead of a verified page copy of a sound peer copy.
    #[arg(long)]
    stream: bool,
    #[command(flatten)]
    volumes: VolumeArgs,
    #[command(flatten)]
    copy: StreamArgs,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// The volume to write on.
    #[arg(long)]
    volume: PathBuf,
    /// The services holding the bases (sys.peers): a,b,c.
    #[arg(long, value_delimiter = ',', value_parser = address, required = true)]
    peers: Vec<String>,
    /// How many bases (containers c000000, c000001, ...).
    #[arg(long, default_value_t = 1)]
    bases: usize,
    /// Aliases per base (each with a content, 3 chunks and a property).
    #[arg(long, default_value_t = 10)]
    aliases: usize,
    /// The account.
    #[arg(long, default_value = "acct")]
    account: String,
    /// The namespace.
    #[arg(long, default_value = "OPENIO")]
    ns: String,
}

/// Runs a `pump meta2` command.
pub async fn run(args: Meta2Args) -> Result<(), Failure> {
    match args.command {
        Meta2Command::Check(a) => check(a).await,
        Meta2Command::Sync(a) => sync(a).await,
        Meta2Command::Move(a) => move_(a).await,
        Meta2Command::Rebuild(a) => rebuild(a).await,
        Meta2Command::Generate(a) => generate(a),
    }
}

async fn check(a: CheckArgs) -> Result<(), Failure> {
    if let Some(p) = a.proxy.open(&a.base, false)? {
        if a.volume.is_some() || a.json {
            return Err(Failure::Usage(
                "--volume and --json are for checks on files, not with --proxy".into(),
            ));
        }
        let base = need_base(&a.base)?;
        return sds::check(&p, &base, &a.peers, a.full).await;
    }
    let mut bases = Vec::new();
    if let Some(b) = a.base.resolve()? {
        bases.push(b);
    }
    if let Some(v) = &a.volume {
        bases.extend(BaseName::list(v).map_err(usage)?);
    }
    if bases.is_empty() {
        return Err(Failure::Usage(
            "give BASE, --account/--container or --volume".into(),
        ));
    }
    let peers = if a.peers.is_empty() {
        match &a.volume {
            Some(v) => {
                return Err(Failure::Usage(format!(
                    "--volume {}: give the --peer ADDRESS=VOLUME list too",
                    v.display()
                )))
            }
            None => {
                return Err(Failure::Usage(
                    "give at least one --peer ADDRESS=VOLUME".into(),
                ))
            }
        }
    } else {
        a.peers
    };
    let mut rows = Vec::new();
    let mut bad = 0;
    for b in &bases {
        let states = repair::inspect_copies(b, &peers, a.full);
        note_not_given(b, &repair::listed_not_given(&states), "checked");
        for r in judge(&states) {
            if r.health != Health::Ok {
                bad += 1;
            }
            rows.push((b.to_string(), r));
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(b, r)| {
                serde_json::json!({"base": b, "peer": r.address, "status": r.health.as_str(),
                    "message": r.message, "path": r.path.display().to_string()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!("{:<66} {:<22} {:<15} MESSAGE", "BASE", "PEER", "STATUS");
        for (b, r) in &rows {
            println!(
                "{b:<66} {:<22} {:<15} {}",
                r.address,
                r.health.as_str(),
                r.message
            );
        }
    }
    if bad > 0 {
        return Err(Failure::Failed(format!(
            "{bad} of {} copies are not ok",
            rows.len()
        )));
    }
    Ok(())
}

/// A note on stderr for each service `sys.peers` lists that no --peer gives: its copy is not
/// `done` (checked, synced).
fn note_not_given(base: &BaseName, not_given: &[String], done: &str) {
    for address in not_given {
        eprintln!(
            "pump: note: {base}: sys.peers lists {address}, which no --peer gives: its copy \
             was not {done}"
        );
    }
}

fn need_base(b: &BaseArgs) -> Result<BaseName, Failure> {
    b.resolve()?
        .ok_or_else(|| Failure::Usage("give BASE, or --account and --container".into()))
}

async fn sync(a: SyncArgs) -> Result<(), Failure> {
    let base = need_base(&a.base)?;
    check_volumes(
        a.peers
            .iter()
            .map(|p| (p.address.as_str(), p.volume.as_path())),
        &a.volumes,
    )?;
    if let Some(p) = a.proxy.open(&a.base, a.dry_run)? {
        let local_only = [
            ("--json", a.json),
            ("--sort-memory", a.copy.sort_memory.is_some()),
        ];
        if let Some((flag, _)) = local_only.iter().find(|(_, given)| *given) {
            return Err(Failure::Usage(format!(
                "{flag} is not available with --proxy: the proxy makes the copies"
            )));
        }
        return sds::sync(&p, &base, &a.peers, a.from.as_deref()).await;
    }
    let stream = a.copy.stream()?;
    let synced = repair::sync(&base, &a.peers, a.from.as_deref(), stream).await?;
    note_not_given(&base, &synced.not_given, "synced");
    let answers = synced.answers;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&answers).map_err(|e| Failure::Failed(e.to_string()))?
        );
    } else {
        println!("{:<22} {:<6} MESSAGE", "PEER", "STATUS");
        for s in &answers {
            println!("{:<22} {:<6} {}", s.peer, s.status, s.message);
        }
    }
    let failed = answers
        .iter()
        .filter(|s| s.status != 200 && s.status != 301)
        .count();
    if failed > 0 {
        return Err(Failure::Failed(format!(
            "{base}: {failed} copies could not be synced"
        )));
    }
    Ok(())
}

async fn move_(a: MoveArgs) -> Result<(), Failure> {
    let base = need_base(&a.base)?;
    let new_volume = a.to.1.as_deref().map(|v| (a.to.0.as_str(), v));
    check_volumes(
        a.peers
            .iter()
            .map(|p| (p.address.as_str(), p.volume.as_path()))
            .chain(new_volume),
        &a.volumes,
    )?;
    if let Some(p) = a.proxy.open(&a.base, a.dry_run)? {
        if a.delete_source {
            return Err(Failure::Usage(
                "--delete-source is for moves on files: through a proxy the old copy is left \
                 frozen, outside the reference"
                    .into(),
            ));
        }
        let mut volumes: std::collections::BTreeMap<String, PathBuf> = a
            .peers
            .iter()
            .map(|p| (p.address.clone(), p.volume.clone()))
            .collect();
        if let Some(v) = &a.to.1 {
            volumes.insert(a.to.0.clone(), v.clone());
        }
        let m = sds::ProxyMove {
            base,
            from: a.from,
            to: a.to.0,
            volumes,
            stream: a.copy.stream()?,
        };
        return sds::move_base(&p, &m).await;
    }
    let (to_address, Some(to_volume)) = a.to else {
        return Err(Failure::Usage(
            "--to: give ADDRESS=VOLUME (ADDRESS alone only with --proxy)".into(),
        ));
    };
    let to = Peer {
        address: to_address,
        volume: to_volume,
    };
    let req = repair::MoveRequest {
        base: base.clone(),
        peers: a.peers,
        from: a.from,
        to,
        delete_source: a.delete_source,
        dry_run: a.dry_run,
        stream: a.copy.stream()?,
    };
    if a.dry_run {
        println!(
            "plan for moving {base} from {} to {} (dry run, nothing written):",
            req.from, req.to.address
        );
    }
    // Each step as it happens, flushed: after a kill or a failed step, what was done shows.
    repair::move_base(&req, &mut |line: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })
    .await?;
    if !a.dry_run {
        println!("{base}: moved from {} to {}", req.from, req.to.address);
    }
    Ok(())
}

async fn rebuild(a: RebuildArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    check_volumes(
        [(a.peer.address.as_str(), a.peer.volume.as_path())],
        &a.volumes,
    )?;
    check_volumes(
        a.from_peers
            .iter()
            .map(|p| (p.address.as_str(), p.volume.as_path())),
        &VolumeArgs { create: false },
    )?;
    let mode = if a.stream {
        repair::RebuildMode::Stream(a.copy.stream()?)
    } else if a.copy.sort_memory.is_some() {
        return Err(Failure::Usage(
            "--sort-memory is for --stream: a page copy sorts nothing".into(),
        ));
    } else {
        repair::RebuildMode::Pages
    };
    let s = repair::rebuild(&a.peer, &a.from_peers, a.threads, a.quiet, mode).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} bases ({:.1} MB) on {} in {secs:.1}s ({:.0} bases/s); {} already there, {} not for this service, {} failed",
        s.rebuilt,
        s.bytes as f64 / 1e6,
        a.peer.address,
        s.rebuilt as f64 / secs.max(1e-9),
        s.present,
        s.elsewhere,
        s.failed.len()
    );
    for f in &s.failed {
        println!("  failed: {f}");
    }
    if !s.failed.is_empty() {
        return Err(Failure::Failed(format!(
            "{} bases were not rebuilt",
            s.failed.len()
        )));
    }
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<(), Failure> {
    for i in 0..a.bases {
        let spec = BaseSpec {
            ns: a.ns.clone(),
            account: a.account.clone(),
            container: format!("c{i:06}"),
            peers: a.peers.clone(),
            aliases: a.aliases,
        };
        let path = write_base(&a.volume, &spec).map_err(usage)?;
        println!("{} {}", spec.name(), path.display());
    }
    Ok(())
}
