//! `pump meta2 rebuild`: every base a lost service should hold, from the other volumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pump_meta2::schema;
use pump_meta2::{inspect, BaseName, Health, Peer};

use super::{aside_path, corrupted_suffix, volume_writable, StreamCopy};
use crate::failure::Failure;

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct RebuildSummary {
    pub rebuilt: usize,
    pub present: usize,
    /// Bases on the other volumes that do not list the lost service.
    pub elsewhere: usize,
    pub failed: Vec<String>,
    /// The size of the copies made.
    pub bytes: u64,
}

/// What became of one base (told to a [`rebuild_bases`] caller as each is settled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseOutcome {
    /// A new copy is in place and on disk: its size.
    Rebuilt(u64),
    /// A sound copy at least as recent was there already.
    Present,
    /// No copy on the other volumes lists the lost service.
    Elsewhere,
    Failed(String),
}

/// Rebuilds on `lost` every base that lists it in `sys.peers` on the other volumes.
pub async fn rebuild(
    lost: &Peer,
    others: &[Peer],
    threads: usize,
    quiet: bool,
    mode: RebuildMode,
) -> Result<RebuildSummary, Failure> {
    let mut holders: BTreeMap<BaseName, Vec<PathBuf>> = BTreeMap::new();
    for p in others {
        let bases = BaseName::list(&p.volume).map_err(|e| Failure::Failed(e.to_string()))?;
        for b in bases {
            holders.entry(b.clone()).or_default().push(p.path(&b));
        }
    }
    let work: Vec<(BaseName, Vec<PathBuf>)> = holders.into_iter().collect();
    let stop = tokio_util::sync::CancellationToken::new();
    rebuild_work(lost, work, threads, quiet, mode, &stop, &mut |_, _| {}).await
}

/// Rebuilds these `bases` only (a job of `pump plan meta2 rebuild`): their copies are looked
/// for on the `others` volumes. `on_done` hears of each base once it is settled (a new copy
/// linked and synced, or found present, elsewhere, failed); once `stop` is cancelled no new
/// base is started and the ones under way finish.
pub async fn rebuild_bases(
    lost: &Peer,
    others: &[Peer],
    bases: &[BaseName],
    threads: usize,
    mode: RebuildMode,
    stop: &tokio_util::sync::CancellationToken,
    on_done: &mut (dyn FnMut(&BaseName, BaseOutcome) + Send),
) -> Result<RebuildSummary, Failure> {
    let work: Vec<(BaseName, Vec<PathBuf>)> = bases
        .iter()
        .map(|b| {
            let copies = others
                .iter()
                .map(|p| p.path(b))
                .filter(|p| p.exists())
                .collect();
            (b.clone(), copies)
        })
        .collect();
    rebuild_work(lost, work, threads, true, mode, stop, on_done).await
}

async fn rebuild_work(
    lost: &Peer,
    work: Vec<(BaseName, Vec<PathBuf>)>,
    threads: usize,
    quiet: bool,
    mode: RebuildMode,
    stop: &tokio_util::sync::CancellationToken,
    on_done: &mut (dyn FnMut(&BaseName, BaseOutcome) + Send),
) -> Result<RebuildSummary, Failure> {
    volume_writable(&lost.volume)
        .map_err(|e| Failure::Usage(format!("--peer {}: {e}", lost.address)))?;
    let total = work.len();
    let threads = threads.max(1);
    let mut summary = RebuildSummary::default();
    let mut set = tokio::task::JoinSet::new();
    let mut iter = work.into_iter();
    let mut done = 0usize;
    // Streamed copies are linked as they finish; their directories are synced at the end.
    let mut streamed: Vec<(BaseName, u64)> = Vec::new();
    let mut pending: Pending = Vec::new();
    let mut linking: Option<Linking> = None;
    let started = std::time::Instant::now();
    loop {
        while set.len() < threads && !stop.is_cancelled() {
            let Some((base, copies)) = iter.next() else {
                break;
            };
            let lost = lost.clone();
            set.spawn(async move {
                let r = rebuild_one(&base, &copies, &lost, mode).await;
                (base, r)
            });
        }
        let Some(r) = set.join_next().await else {
            break;
        };
        let (base, r) = r.map_err(|e| Failure::Failed(format!("a rebuild task failed: {e}")))?;
        done += 1;
        match r {
            Ok(Rebuilt::Copied(bytes)) => {
                streamed.push((base, bytes));
                summary.rebuilt += 1;
                summary.bytes += bytes;
                if streamed.len() >= STREAM_SYNC_BATCH {
                    settle_streamed(lost, std::mem::take(&mut streamed), on_done).await?;
                }
            }
            Ok(Rebuilt::Built { bytes, aside }) => {
                pending.push((base, bytes, aside));
                if pending.len() >= LINK_BATCH {
                    // One batch links while the next is copied.
                    finish_linking(linking.take(), &mut summary, on_done).await?;
                    linking = Some(start_linking(lost, std::mem::take(&mut pending)));
                }
            }
            Ok(Rebuilt::Present) => {
                summary.present += 1;
                on_done(&base, BaseOutcome::Present);
            }
            Ok(Rebuilt::Elsewhere) => {
                summary.elsewhere += 1;
                on_done(&base, BaseOutcome::Elsewhere);
            }
            Err(e) => {
                summary.failed.push(format!("{base}: {e}"));
                on_done(&base, BaseOutcome::Failed(e));
            }
        }
        if !quiet && (done.is_multiple_of(1000) || done == total) {
            eprintln!(
                "rebuild: {done}/{total} bases looked at ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
        }
    }
    finish_linking(linking.take(), &mut summary, on_done).await?;
    if !pending.is_empty() {
        let last = start_linking(lost, pending);
        finish_linking(Some(last), &mut summary, on_done).await?;
    }
    settle_streamed(lost, streamed, on_done).await?;
    Ok(summary)
}

/// Verified copies are synced (fsyncs in parallel) and linked this many at a time.
const LINK_BATCH: usize = 256;
/// Streamed copies (each synced before its link) have their directories synced this many at
/// a time, and only then count as done.
const STREAM_SYNC_BATCH: usize = 32;

/// Each streamed base was synced before its link; the links reach the disk here (one sync per
/// directory), before the bases count as done.
async fn settle_streamed(
    lost: &Peer,
    streamed: Vec<(BaseName, u64)>,
    on_done: &mut (dyn FnMut(&BaseName, BaseOutcome) + Send),
) -> Result<(), Failure> {
    if streamed.is_empty() {
        return Ok(());
    }
    let dirs = parent_dirs(streamed.iter().map(|(b, _)| lost.path(b)));
    tokio::task::spawn_blocking(move || pump_meta2::files::sync_paths(&dirs))
        .await
        .map_err(|e| Failure::Failed(format!("a rebuild task failed: {e}")))?
        .map_err(Failure::Failed)?;
    for (base, bytes) in streamed {
        on_done(&base, BaseOutcome::Rebuilt(bytes));
    }
    Ok(())
}

/// The copies of a batch not linked yet: each base, its size, where a bad copy that was in
/// place went.
type Pending = Vec<(BaseName, u64, Option<PathBuf>)>;
type Linking = tokio::task::JoinHandle<(Vec<Result<(), String>>, Pending)>;

/// Starts syncing the verified copies of `batch` (their temporary files) to disk at once,
/// then linking each into place and syncing their directories, on a blocking task; a base
/// whose link fails gets back the bad copy set aside for it. The copies of the next bases go
/// on meanwhile.
fn start_linking(lost: &Peer, batch: Pending) -> Linking {
    let lost = lost.clone();
    tokio::task::spawn_blocking(move || {
        let tmps: Vec<PathBuf> = batch
            .iter()
            .map(|(b, _, _)| pump_meta2::copy::tmp_path(&lost.path(b)))
            .collect();
        let synced = pump_meta2::files::sync_paths(&tmps);
        let results: Vec<Result<(), String>> = batch
            .iter()
            .map(|(b, _, aside)| {
                let target = lost.path(b);
                let r = synced.clone().and_then(|()| {
                    pump_meta2::copy::link_built(&target).map_err(|e| e.to_string())
                });
                if r.is_err() {
                    let _ = std::fs::remove_file(pump_meta2::copy::tmp_path(&target));
                    if let Some(a) = aside {
                        let _ = std::fs::rename(a, &target);
                    }
                }
                r
            })
            .collect();
        // The links reach the disk before the batch counts as rebuilt.
        let dirs = parent_dirs(batch.iter().map(|(b, _, _)| lost.path(b)));
        let results = match pump_meta2::files::sync_paths(&dirs) {
            Ok(()) => results,
            Err(e) => results
                .into_iter()
                .map(|r| r.and(Err(format!("linked but not synced: {e}"))))
                .collect(),
        };
        (results, batch)
    })
}

/// Waits for a batch started by [`start_linking`] and counts it.
async fn finish_linking(
    linking: Option<Linking>,
    summary: &mut RebuildSummary,
    on_done: &mut (dyn FnMut(&BaseName, BaseOutcome) + Send),
) -> Result<(), Failure> {
    let Some(linking) = linking else {
        return Ok(());
    };
    let (results, batch) = linking
        .await
        .map_err(|e| Failure::Failed(format!("a rebuild task failed: {e}")))?;
    for ((base, bytes, _), r) in batch.into_iter().zip(results) {
        match r {
            Ok(()) => {
                summary.rebuilt += 1;
                summary.bytes += bytes;
                on_done(&base, BaseOutcome::Rebuilt(bytes));
            }
            Err(e) => {
                summary.failed.push(format!("{base}: {e}"));
                on_done(&base, BaseOutcome::Failed(e));
            }
        }
    }
    Ok(())
}

/// The distinct directories of `paths`.
fn parent_dirs(paths: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// How a rebuild copies each base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildMode {
    /// The image of a sound, complete peer copy (it passes quick_check in the read
    /// transaction the image is taken in) is written, read back and compared, and synced
    /// before its link ([`pump_meta2::copy::copy_verified`]).
    Pages,
    /// Each base streams through the pump (meta2 source -> meta2 sink), as `sync` does.
    Stream(StreamCopy),
}

enum Rebuilt {
    /// Copied and linked (a streamed copy).
    Copied(u64),
    /// A verified copy under the temporary name, to sync and link ([`start_linking`]);
    /// `aside`: where a bad copy that was in place went.
    Built {
        bytes: u64,
        aside: Option<PathBuf>,
    },
    Present,
    Elsewhere,
}

async fn rebuild_one(
    base: &BaseName,
    copies: &[PathBuf],
    lost: &Peer,
    mode: RebuildMode,
) -> Result<Rebuilt, String> {
    let target = lost.path(base);
    let copies = copies.to_vec();
    let address = lost.address.clone();
    // Everything but a streamed copy reads and writes files: off the async workers.
    let plan = tokio::task::spawn_blocking(move || {
        let r = plan_one(&copies, &address, &target, mode);
        (r, target)
    })
    .await
    .map_err(|e| format!("{base}: {e}"))?;
    let (plan, target) = plan;
    let (src, aside, stream) = match plan? {
        Planned::Done(r) => return Ok(r),
        Planned::Stream { src, aside, stream } => (src, aside, stream),
    };
    // The directories are synced once each at the end of the rebuild.
    match stream.copy_with(&src, &target, false).await {
        Ok(_rows) => Ok(Rebuilt::Copied(
            std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0),
        )),
        Err(e) => {
            if let Some(a) = aside {
                let _ = std::fs::rename(&a, &target);
            }
            Err(e)
        }
    }
}

enum Planned {
    Done(Rebuilt),
    /// Stream `src` to the target (`aside`: where a bad copy that was there went).
    Stream {
        src: PathBuf,
        aside: Option<PathBuf>,
        stream: StreamCopy,
    },
}

fn plan_one(
    copies: &[PathBuf],
    address: &str,
    target: &Path,
    mode: RebuildMode,
) -> Result<Planned, String> {
    // A page copy checks the pages it copies (quick_check of the copy): the candidates need
    // only their admin keys read here.
    let look = |c: &PathBuf| match mode {
        RebuildMode::Pages => pump_meta2::check::inspect_admin(c),
        RebuildMode::Stream(_) => inspect(c, false),
    };
    let states: Vec<pump_meta2::CopyState> = copies.iter().map(look).collect();
    if !states.iter().any(|s| s.peers.iter().any(|p| p == address)) {
        return Ok(Planned::Done(Rebuilt::Elsewhere));
    }
    let existing = inspect(target, false);
    let mut candidates: Vec<&pump_meta2::CopyState> = states
        .iter()
        .filter(|s| {
            s.health == Health::Ok
                && schema::REQUIRED_KEYS
                    .iter()
                    .all(|k| s.admin.contains_key(*k))
        })
        .collect();
    candidates.sort_by_key(|s| std::cmp::Reverse(s.version_total()));
    let best = candidates
        .first()
        .ok_or_else(|| "no sound, complete copy on the other volumes".to_string())?;
    if existing.health == Health::Ok && existing.version_total() >= best.version_total() {
        return Ok(Planned::Done(Rebuilt::Present));
    }
    let mut aside = None;
    if existing.health != Health::Missing {
        let a = aside_path(target, &corrupted_suffix(target));
        std::fs::rename(target, &a).map_err(|e| format!("{}: {e}", target.display()))?;
        aside = Some(a);
    }
    if let RebuildMode::Stream(stream) = mode {
        return Ok(Planned::Stream {
            src: best.path.clone(),
            aside,
            stream,
        });
    }
    // The best copy first; a copy whose pages fail the checks gives way to the next.
    let mut errors = Vec::new();
    for c in candidates {
        match pump_meta2::copy::build_verified(&c.path, target, false) {
            Ok(bytes) => return Ok(Planned::Done(Rebuilt::Built { bytes, aside })),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(a) = aside {
        let _ = std::fs::rename(&a, target);
    }
    Err(errors.join("; "))
}
