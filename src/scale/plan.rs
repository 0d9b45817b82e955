//! Splitting a transfer or a meta2 repair into jobs, and putting the run into the queue.
//!
//! ```text
//! transfer   the vbuckets: -l, else the source's map (couchbase://: REST), a backup's (the
//!            seqno.json beside its data files), gen:'s vbuckets=N, else 0..-x num_vbuckets
//!            (1024); sorted, cut into --jobs contiguous runs of nearly
//!            equal size, each written as -l takes it (0-63). A source that keeps positions
//!            (dcp://, couchbase://) records one per vbucket, so its jobs hold at most
//!            (max-job-size - 4 KiB) / 110 vbuckets each.
//! meta2      the bases of the --from-peer volumes (rebuild) or of --volume (check), sorted by
//!            name, cut into --jobs batches; each body must fit in max-job-size.
//! ```
//!
//! Nothing is put unless every job of the run is valid: the specs parse, the kinds pair, the
//! options are known, no credentials are in a spec (workers bring their own), the sink can
//! take several writers, and every body fits the server's max-job-size.
//!
//! A backup directory sink takes several jobs: its run is planned here, once, as a run of N
//! parts (`pump_sinks::backup::plan`, `-m full|diff|accu` as pump transfer chooses it), and
//! each job names it; a job writes its part, and the last part to complete completes the run
//! (`pump_sinks::backup::plan_part`, `complete_parts`). The directory must be the same, at the
//! same path, for the planner and every worker (a shared file system).

use std::path::{Path, PathBuf};

use pump_meta2::{BaseName, Peer};
use pump_queue::record::{new_run_id, now_secs};
use pump_queue::{CheckWork, Job, Manifest, QueueUrl, RebuildWork, TransferWork, Work};

use super::{connect, failure};
use crate::failure::Failure;
use crate::transfer::TransferRequest;

/// Bytes of a record besides its positions (fields, counts, an error message).
const RECORD_ROOM: usize = 4096;
/// The most a position can take in a record: `[65535,u64,u64,u64,u64],`.
const POSITION_BYTES: usize = 110;
/// Jobs of a transfer when --jobs is not given.
pub const DEFAULT_TRANSFER_JOBS: u32 = 16;
/// Bases per meta2 job when --jobs is not given.
pub const DEFAULT_BASES_PER_JOB: usize = 100;

/// Where and how a run goes into the queue.
#[derive(Debug, Clone)]
pub struct QueueArgs {
    pub url: QueueUrl,
    /// `None`: the kind's default.
    pub jobs: Option<u32>,
    pub ttr: u32,
    pub priority: u32,
}

/// What was put.
#[derive(Debug, Clone)]
pub struct Planned {
    pub run: String,
    pub jobs: u32,
    pub what: String,
}

/// Plans a transfer: `request` as `pump transfer` takes it (its credentials are used to read
/// the source's map, and go into no job).
/// `rate` (`--rate`, as given) holds each job's source.
pub async fn transfer(
    q: &QueueArgs,
    request: TransferRequest,
    rate: Option<String>,
) -> Result<Planned, Failure> {
    for (which, raw) in [("source", &request.source), ("sink", &request.sink)] {
        let spec = pump::Spec::parse(raw)?;
        if spec.scheme().is_some() {
            if let Ok(a) = spec.authority() {
                if a.user.is_some() || a.password.is_some() {
                    return Err(Failure::Usage(format!(
                        "the {which} spec holds a user or password: credentials do not go into the queue; give them to each worker (-u/-p, -U/-P, PUMP_PASSWORD, PUMP_PASSWORD_DEST)"
                    )));
                }
            }
        }
    }
    let registry = crate::kinds::registry();
    let mut checked = crate::transfer::check(&request, &registry)?;
    if checked.options.extra.get("checkpoint").is_some() {
        return Err(Failure::Usage(
            "-x checkpoint: the queue keeps each job's checkpoint (its record); plan without it"
                .into(),
        ));
    }
    let vbuckets = vbuckets_of(&checked, &request).await?;
    if vbuckets.is_empty() {
        return Err(Failure::Usage(format!(
            "{}: no vbucket to transfer",
            checked.source_spec
        )));
    }
    let jobs = q
        .jobs
        .unwrap_or(DEFAULT_TRANSFER_JOBS)
        .min(u32::try_from(vbuckets.len()).unwrap_or(u32::MAX));
    if jobs == 0 {
        return Err(Failure::Usage("--jobs must be at least 1".into()));
    }
    if jobs > 1 {
        match checked.sink_kind {
            "csv" | "stdout" => {
                return Err(Failure::Usage(format!(
                    "{}: one file or stream cannot take {jobs} jobs writing at once; plan --jobs 1, or write into a backup directory or a server",
                    checked.sink_spec
                )))
            }
            _ => {}
        }
    }
    let mut client = connect(&q.url).await?;
    let max_job = client.stats().await.map_err(failure)?.max_job_size;
    if checked.keeps_positions() {
        let per_job = max_job.saturating_sub(RECORD_ROOM) / POSITION_BYTES;
        let need = vbuckets.len().div_ceil(per_job.max(1));
        if (jobs as usize) < need {
            return Err(Failure::Usage(format!(
                "--jobs {jobs}: each job would stream up to {} vbuckets, and its record keeps a position for each: at most {per_job} fit in the queue's max-job-size of {max_job} bytes; use --jobs {need} or more (or start beanstalkd with a larger -z)",
                vbuckets.len().div_ceil(jobs as usize)
            )));
        }
    }
    // A backup directory: its run is planned now, once, for this many parts (nothing else
    // is written before every job is known to fit).
    let chunks = split(&vbuckets, jobs as usize);
    let jobs = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    let backup_run = if checked.is_backup_sink() {
        Some(crate::transfer::plan_backup(
            &mut checked,
            request.mode,
            Some(jobs),
        )?)
    } else {
        None
    };
    let run_id = new_run_id(now_secs());
    let mut out = Vec::with_capacity(chunks.len());
    for (k, chunk) in (0u32..).zip(&chunks) {
        let work = TransferWork {
            source: request.source.clone(),
            sink: request.sink.clone(),
            vbuckets: pump::VbucketSet::from_ids(chunk.iter().copied()).to_list_string(),
            bucket_source: request.bucket_source.clone(),
            bucket_destination: request.bucket_destination.clone(),
            key: request.key.clone(),
            threads: request.threads,
            extra: request.extra.clone(),
            add: request.add,
            backup_run: backup_run.as_ref().map(|p| p.run.clone()),
            rate: rate.clone(),
        };
        out.push(Job::new(&run_id, k, jobs, q.ttr, Work::Transfer(work)));
    }
    let what = format!(
        "{} -> {} (bucket {}, {} vbuckets){}",
        checked.source_spec,
        checked.sink_spec,
        request.bucket_source,
        vbuckets.len(),
        backup_run
            .as_ref()
            .map(|p| format!(", the {} run {}", p.mode, p.run))
            .unwrap_or_default()
    );
    let put = put(q, &mut client, max_job, &run_id, "transfer", &what, out).await;
    if let (Err(_), Some(p)) = (&put, &backup_run) {
        // Nothing was put: the run planned for the jobs is removed again.
        remove_planned_run(&p.node_dir);
    }
    put
}

/// Removes a backup run planned for jobs that were not put: its node directory (its records
/// only) and the bucket and run directories above it when nothing else is in them.
fn remove_planned_run(node_dir: &Path) {
    let _ = std::fs::remove_dir_all(node_dir);
    let mut dir = node_dir.parent();
    for _ in 0..3 {
        match dir {
            Some(d) if std::fs::remove_dir(d).is_ok() => dir = d.parent(),
            _ => break,
        }
    }
}

/// The vbuckets a transfer covers.
async fn vbuckets_of(
    checked: &crate::transfer::Checked,
    request: &TransferRequest,
) -> Result<Vec<u16>, Failure> {
    if let Some(v) = &checked.options.vbuckets {
        return Ok(v.iter().collect());
    }
    let n = match checked.source_kind {
        "couchbase" => {
            let a = checked.source_spec.authority()?;
            let auth = a
                .credentials(request.source_auth.as_ref())
                .map(|c| pump_client::Auth {
                    user: c.user,
                    password: c.password,
                });
            // couchbases:// reads the map over HTTPS, trusting --cacert / --no-ssl-verify,
            // as the couchbase source does.
            let tls = matches!(checked.source_spec.scheme(), Some("couchbases" | "https"))
                .then(|| pump_sinks::net::tls_client(&checked.options))
                .transpose()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let map = pump_client::VbucketMap::fetch_with(
                &format!("{scheme}://{}", a.addr()),
                &request.bucket_source,
                auth.as_ref(),
                checked.options.extra.timeout()?,
                tls.as_ref(),
            )
            .await
            .map_err(|e| Failure::Failed(format!("{}: {e}", checked.source_spec)))?;
            map.num_vbuckets()
        }
        "backup" => {
            let found = backup_vbuckets(checked, request)?;
            if !found.is_empty() {
                return Ok(found);
            }
            usize::from(checked.options.extra.num_vbuckets)
        }
        "gen" => checked
            .source_spec
            .params()?
            .get("vbuckets")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1024),
        _ => usize::from(checked.options.extra.num_vbuckets),
    };
    Ok((0..n.min(65536)).map(|v| v as u16).collect())
}

/// The vbuckets a backup directory holds data of: the keys of the `seqno.json` beside its data
/// files (empty when it has none: an old backup, or one of a source without seqnos).
fn backup_vbuckets(
    checked: &crate::transfer::Checked,
    request: &TransferRequest,
) -> Result<Vec<u16>, Failure> {
    let dir = std::path::Path::new(checked.source_spec.body());
    let files = pump_sources::backup::data_files(dir, &request.bucket_source)
        .map_err(|e| Failure::Usage(format!("{}: {e}", checked.source_spec)))?;
    let mut vbs = std::collections::BTreeSet::new();
    let dirs: std::collections::BTreeSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("seqno.json")) else {
            continue;
        };
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&text) {
            vbs.extend(m.keys().filter_map(|k| k.parse::<u16>().ok()));
        }
    }
    Ok(vbs.into_iter().collect())
}

/// `items` cut into `n` contiguous runs whose sizes differ by one at most.
pub fn split<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let n = n.clamp(1, items.len().max(1));
    let (q, r) = (items.len() / n, items.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for k in 0..n {
        let len = q + usize::from(k < r);
        out.push(items[at..at + len].to_vec());
        at += len;
    }
    out
}

/// A meta2 rebuild's own arguments.
#[derive(Debug, Clone)]
pub struct RebuildArgs {
    pub lost: Peer,
    pub from: Vec<Peer>,
    pub threads: usize,
    pub stream: bool,
    pub sort_memory: Option<u64>,
}

fn peer_spec(p: &Peer) -> String {
    format!("{}={}", p.address, p.volume.display())
}

fn list_bases(volumes: &[PathBuf]) -> Result<Vec<BaseName>, Failure> {
    let mut all = std::collections::BTreeSet::new();
    for v in volumes {
        let bases = BaseName::list(v).map_err(|e| Failure::Failed(e.to_string()))?;
        all.extend(bases);
    }
    Ok(all.into_iter().collect())
}

fn meta2_jobs(q: &QueueArgs, bases: usize) -> Result<u32, Failure> {
    let jobs = q
        .jobs
        .unwrap_or_else(|| u32::try_from(bases.div_ceil(DEFAULT_BASES_PER_JOB)).unwrap_or(u32::MAX))
        .min(u32::try_from(bases).unwrap_or(u32::MAX));
    if jobs == 0 {
        return Err(Failure::Usage("--jobs must be at least 1".into()));
    }
    Ok(jobs)
}

/// Plans a rebuild of every base the lost service should hold, found on the other volumes.
pub async fn meta2_rebuild(q: &QueueArgs, a: RebuildArgs) -> Result<Planned, Failure> {
    if a.threads == 0 {
        return Err(Failure::Usage("-t/--threads must be at least 1".into()));
    }
    let volumes: Vec<PathBuf> = a.from.iter().map(|p| p.volume.clone()).collect();
    let bases = list_bases(&volumes)?;
    if bases.is_empty() {
        return Err(Failure::Usage(
            "no base on the --from-peer volumes: nothing to rebuild".into(),
        ));
    }
    let jobs = meta2_jobs(q, bases.len())?;
    let run_id = new_run_id(now_secs());
    let names: Vec<String> = bases.iter().map(|b| b.to_string()).collect();
    let out = split(&names, jobs as usize)
        .into_iter()
        .zip(0u32..)
        .map(|(chunk, k)| {
            let work = RebuildWork {
                lost: peer_spec(&a.lost),
                from: a.from.iter().map(peer_spec).collect(),
                bases: chunk,
                threads: a.threads,
                stream: a.stream,
                sort_memory: a.sort_memory,
            };
            Job::new(&run_id, k, jobs, q.ttr, Work::Meta2Rebuild(work))
        })
        .collect();
    let what = format!(
        "rebuild of {} bases for {} from {}",
        names.len(),
        a.lost.address,
        a.from
            .iter()
            .map(|p| p.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut client = connect(&q.url).await?;
    let max_job = client.stats().await.map_err(failure)?.max_job_size;
    put(
        q,
        &mut client,
        max_job,
        &run_id,
        "meta2 rebuild",
        &what,
        out,
    )
    .await
}

/// Plans a check of every base of `volume` across `peers`.
pub async fn meta2_check(
    q: &QueueArgs,
    peers: Vec<Peer>,
    volume: PathBuf,
    full: bool,
) -> Result<Planned, Failure> {
    if peers.is_empty() {
        return Err(Failure::Usage(
            "give the --peer ADDRESS=VOLUME list of the services holding copies".into(),
        ));
    }
    let bases = list_bases(std::slice::from_ref(&volume))?;
    if bases.is_empty() {
        return Err(Failure::Usage(format!(
            "--volume {}: no base there: nothing to check",
            volume.display()
        )));
    }
    let jobs = meta2_jobs(q, bases.len())?;
    let run_id = new_run_id(now_secs());
    let names: Vec<String> = bases.iter().map(|b| b.to_string()).collect();
    let out = split(&names, jobs as usize)
        .into_iter()
        .zip(0u32..)
        .map(|(chunk, k)| {
            let work = CheckWork {
                peers: peers.iter().map(peer_spec).collect(),
                bases: chunk,
                full,
            };
            Job::new(&run_id, k, jobs, q.ttr, Work::Meta2Check(work))
        })
        .collect();
    let what = format!(
        "check of {} bases of {} across {} peers",
        names.len(),
        volume.display(),
        peers.len()
    );
    let mut client = connect(&q.url).await?;
    let max_job = client.stats().await.map_err(failure)?.max_job_size;
    put(q, &mut client, max_job, &run_id, "meta2 check", &what, out).await
}

/// Checks every body against the server's limit, then puts the run.
async fn put(
    q: &QueueArgs,
    client: &mut pump_queue::Client,
    max_job: usize,
    run_id: &str,
    kind: &str,
    what: &str,
    jobs: Vec<Job>,
) -> Result<Planned, Failure> {
    let mut biggest = 0;
    let mut total = 0;
    for j in &jobs {
        let n = j.to_body().map_err(failure)?.len();
        biggest = biggest.max(n);
        total += n;
    }
    if biggest > max_job {
        let need = total.div_ceil(max_job.saturating_sub(RECORD_ROOM).max(1));
        return Err(Failure::Usage(format!(
            "--jobs {}: a job body would take {biggest} bytes, over the queue's max-job-size of {max_job}; use --jobs {need} or more",
            jobs.len()
        )));
    }
    let n = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
    let manifest = Manifest::new(run_id, now_secs(), kind, what, n, q.ttr);
    pump_queue::run::put_run(client, &q.url.tube, &manifest, &jobs, q.priority)
        .await
        .map_err(failure)?;
    Ok(Planned {
        run: run_id.to_string(),
        jobs: n,
        what: what.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_contiguous_and_differ_by_one_at_most() {
        let v: Vec<u16> = (0..1024).collect();
        let s = split(&v, 16);
        assert_eq!(s.len(), 16);
        assert!(s.iter().all(|c| c.len() == 64));
        let s = split(&v, 3);
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), [342, 341, 341]);
        assert_eq!(s.concat(), v);
        assert_eq!(split(&v[..2], 5).len(), 2);
    }
}
