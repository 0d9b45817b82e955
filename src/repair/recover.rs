//! `pump recover FROM TO` (cbrecovery): bring back the vbuckets a failed-over node lost.
//!
//! Two REST dialects, detected on the destination:
//!
//! ```text
//! recovery design                                 Couchbase Server's shipped form
//! GET  .../vbucketsMissing -> [500, 612]          POST .../controller/startRecovery
//! POST .../replaceNode add=NEW&remove=OLD  (-a/-r)     -> {"recoveryMap":[{"node","vbuckets"}],"uuid"}
//! POST .../changeVbucketStates vbucket=..&state=replica
//!   transfer each vbucket FROM -> its node (TAP)    transfer each vbucket FROM -> its node (TAP)
//! POST .../changeVbucketStates vbucket=N&state=active  POST .../controller/commitVBucket?recovery_uuid=U
//! POST .../updateVbucketMap                                 vbucket=N
//! ```
//!
//! Each vbucket is transferred then activated on its own, so an interrupted run leaves the
//! vbuckets it finished active and a rerun picks up the rest. Status codes become sentences
//! that name the node or vbucket.

use std::collections::BTreeMap;
use std::time::Instant;

use pump::spec::RestUrl;
use pump::{Context, Credentials, Options, Spec, VbucketSet};
use pump_client::error::with_causes;
use serde_json::Value;

/// What `pump recover` was asked to do.
#[derive(Debug, Clone)]
pub struct RecoverRequest {
    pub from: String,
    pub to: String,
    pub bucket_source: String,
    pub bucket_destination: String,
    pub source_auth: Option<Credentials>,
    pub dest_auth: Option<Credentials>,
    pub vbuckets: Option<VbucketSet>,
    pub add_node: Option<String>,
    pub remove_node: Option<String>,
    pub dry_run: bool,
    pub verbose: u8,
    pub threads: usize,
}

/// Why a recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Rest(String),
    #[error("{0}")]
    Transfer(String),
}

/// One vbucket brought back.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub vbucket: u16,
    pub node: String,
    pub items: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The transfer's counts (per op, skipped, failed...).
    pub counts: pump::Snapshot,
}

/// What a recovery did.
#[derive(Debug, Default)]
pub struct RecoverReport {
    pub missing: Vec<u16>,
    pub recovered: Vec<Recovered>,
    pub dialect: &'static str,
}

/// A small REST client for one cluster.
struct Rest {
    base: String,
    auth: Option<Credentials>,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    body: String,
}

impl Rest {
    fn new(url: &RestUrl) -> Result<Rest, RecoverError> {
        let (base, auth) = (url.base().to_string(), url.credentials().cloned());
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| RecoverError::Rest(format!("{base}: cannot build an HTTP client: {e}")))?;
        Ok(Rest { base, auth, http })
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Answer, RecoverError> {
        let req = match &self.auth {
            Some(c) => req.basic_auth(&c.user, Some(&c.password)),
            None => req,
        };
        let res = req.send().await.map_err(|e| {
            RecoverError::Rest(format!("{}: {what}: {}", self.base, with_causes(&e)))
        })?;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        Ok(Answer { status, body })
    }

    async fn get(&self, path: &str) -> Result<Answer, RecoverError> {
        self.send(
            self.http.get(format!("{}{path}", self.base)),
            &format!("GET {path}"),
        )
        .await
    }

    async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<Answer, RecoverError> {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(req, &format!("POST {path}")).await
    }
}

/// The one REST normaliser ([`RestUrl`]), credentials taken out of the URL (else `auth`).
fn rest_url(url: &str, auth: Option<Credentials>) -> Result<RestUrl, RecoverError> {
    RestUrl::parse(url)
        .map(|u| u.or_credentials(auth))
        .map_err(|e| RecoverError::Usage(e.to_string()))
}

/// The sentence for a status of the recovery design's REST API.
fn design_error(call: &str, status: u16, subject: &str) -> String {
    let why = match (call, status) {
        ("replaceNode", 401) => format!("node {subject} was not found in the destination cluster"),
        ("replaceNode", 402) => {
            format!("node {subject} is already part of the destination cluster")
        }
        ("replaceNode", 403) => format!("node {subject} is still active: fail it over first"),
        ("changeVbucketStates", 410) => {
            format!("vbucket(s) {subject} not found on the destination")
        }
        ("changeVbucketStates", 411) => {
            format!("state {subject} is not valid: it must be active, replica, pending or dead")
        }
        ("updateVbucketMap", 410) => "the destination could not update its vbucket map".to_string(),
        (_, 401) => "authentication failed: check -U/-P".to_string(),
        _ => format!("unexpected status {status}"),
    };
    format!("{call}: {why}")
}

/// The sentence for a status of Couchbase Server's startRecovery / commitVBucket.
fn shipped_error(call: &str, status: u16, subject: &str) -> String {
    let why = match (call, status) {
        ("startRecovery", 400) => "no recovery needed".to_string(),
        ("startRecovery", 404) => format!("bucket {subject} not found on the destination"),
        ("startRecovery", 500) => "could not start recovery because some nodes failed".to_string(),
        ("startRecovery", 503) => {
            "could not start recovery because a rebalance is running".to_string()
        }
        ("commitVBucket", 400) => "the recovery_uuid parameter is missing".to_string(),
        ("commitVBucket", 402) => format!("vbucket {subject} is unspecified or not a number"),
        ("commitVBucket", 404) => format!("vbucket {subject} is not part of the recovery map"),
        ("commitVBucket", 406) => "no recovery in progress, or a wrong recovery_uuid".to_string(),
        ("commitVBucket", 500) => {
            format!("could not commit vbucket {subject} because some nodes failed")
        }
        (_, 401) => "authentication failed: check -U/-P".to_string(),
        _ => format!("unexpected status {status}"),
    };
    format!("{call}: {why}")
}

fn vb_list(vbs: &[u16]) -> String {
    VbucketSet::from_ids(vbs.iter().copied()).to_list_string()
}

/// `N vbuckets: LIST`, the list cut after 120 characters unless `verbose`.
fn vb_summary(vbs: &[u16], verbose: u8) -> String {
    let list = vb_list(vbs);
    match list.char_indices().nth(120) {
        Some((cut, _)) if verbose == 0 => {
            let cut = list[..cut].rfind(',').unwrap_or(cut);
            format!(
                "{} vbuckets: {},... (-v lists them all)",
                vbs.len(),
                &list[..cut]
            )
        }
        _ => format!("{} vbuckets: {list}", vbs.len()),
    }
}

/// The cluster's KV address of each node index, and each vbucket's chain, from the bucket's map.
struct BucketMap {
    servers: Vec<String>,
    chains: Vec<Vec<i64>>,
}

impl BucketMap {
    fn parse(body: &str, what: &str) -> Result<BucketMap, RecoverError> {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            RecoverError::Rest(format!("{what}: the bucket's JSON does not parse: {e}"))
        })?;
        let m = &v["vBucketServerMap"];
        let servers = m["serverList"]
            .as_array()
            .ok_or_else(|| RecoverError::Rest(format!("{what}: no vBucketServerMap.serverList")))?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        let chains = m["vBucketMap"]
            .as_array()
            .ok_or_else(|| RecoverError::Rest(format!("{what}: no vBucketServerMap.vBucketMap")))?
            .iter()
            .map(|c| {
                c.as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default()
            })
            .collect();
        Ok(BucketMap { servers, chains })
    }

    /// The KV address of the first node holding `vb` in any position of its chain.
    fn holder(&self, vb: u16) -> Option<String> {
        let chain = self.chains.get(vb as usize)?;
        chain
            .iter()
            .find(|i| **i >= 0)
            .and_then(|i| self.servers.get(*i as usize))
            .cloned()
    }
}

/// Runs the recovery and returns what was done.
pub async fn recover(mut req: RecoverRequest) -> Result<RecoverReport, RecoverError> {
    // From here on both URLs are their normalised bases: whatever is printed carries no
    // password (the credentials travel apart, as HTTP basic authentication).
    let to = rest_url(&req.to, req.dest_auth.take())?;
    let from = rest_url(&req.from, req.source_auth.take())?;
    (req.to, req.dest_auth) = (to.base().to_string(), to.credentials().cloned());
    (req.from, req.source_auth) = (from.base().to_string(), from.credentials().cloned());
    let dest = Rest::new(&to)?;
    let bucket = &req.bucket_destination;
    let missing_path = format!("/pools/default/buckets/{bucket}/vbucketsMissing");
    let probe = dest.get(&missing_path).await?;
    match probe.status {
        200 => recover_design(&req, &dest, &probe.body).await,
        404 => recover_shipped(&req, &dest).await,
        401 => Err(RecoverError::Rest(format!(
            "{}: authentication failed: check -U/-P",
            dest.base
        ))),
        s => Err(RecoverError::Rest(format!(
            "{}: GET {missing_path}: unexpected status {s}: {}",
            dest.base, probe.body
        ))),
    }
}

fn keep_listed(req: &RecoverRequest, mut vbs: Vec<u16>) -> Vec<u16> {
    if let Some(set) = &req.vbuckets {
        vbs.retain(|vb| set.contains(*vb));
    }
    vbs.sort_unstable();
    vbs.dedup();
    vbs
}

async fn recover_design(
    req: &RecoverRequest,
    dest: &Rest,
    body: &str,
) -> Result<RecoverReport, RecoverError> {
    let bucket = &req.bucket_destination;
    let listed: Vec<u16> = serde_json::from_str::<Vec<u16>>(body.trim()).map_err(|e| {
        RecoverError::Rest(format!(
            "{}: vbucketsMissing is not a list of vbucket ids: {e}",
            dest.base
        ))
    })?;
    let missing = keep_listed(req, listed);
    let mut report = RecoverReport {
        missing: missing.clone(),
        dialect: "recovery design",
        ..Default::default()
    };
    if missing.is_empty() {
        return Ok(report);
    }
    eprintln!(
        "missing on {}: {}",
        dest.base,
        vb_summary(&missing, req.verbose)
    );
    if req.dry_run {
        eprintln!("dry run: would {}set them to replica, stream them from {}, set them active, update the map",
            match (&req.add_node, &req.remove_node) {
                (Some(a), Some(r)) => format!("replace node {r} by {a}, "),
                (Some(a), None) => format!("add node {a}, "),
                _ => String::new(),
            },
            req.from);
        return Ok(report);
    }
    let b = format!("/pools/default/buckets/{bucket}");
    if req.add_node.is_some() || req.remove_node.is_some() {
        let mut form = Vec::new();
        if let Some(a) = &req.add_node {
            form.push(("add", a.clone()));
        }
        if let Some(r) = &req.remove_node {
            form.push(("remove", r.clone()));
        }
        if already_replaced(dest, req).await? {
            eprintln!(
                "{} already in place (a rerun): replaceNode skipped",
                describe_replacement(req)
            );
        } else {
            replace_node(dest, &b, req, &form).await?;
        }
    }
    change_states(dest, &b, &missing, "replica").await?;
    let map = BucketMap::parse(&dest.get(&b).await?.body, &dest.base)?;
    let mut plan = Vec::with_capacity(missing.len());
    for vb in &missing {
        let node = map.holder(*vb).ok_or_else(|| {
            RecoverError::Rest(format!("vbucket {vb}: the destination's map names no node for it after changeVbucketStates"))
        })?;
        plan.push((*vb, node));
    }
    report.recovered = for_each_vbucket(req, plan, |vb| {
        let b = b.clone();
        async move { change_states(dest, &b, &[vb], "active").await }
    })
    .await?;
    let a = dest.post(&format!("{b}/updateVbucketMap"), &[]).await?;
    if !(200..=202).contains(&a.status) {
        return Err(RecoverError::Rest(design_error(
            "updateVbucketMap",
            a.status,
            "",
        )));
    }
    Ok(report)
}

fn describe_replacement(req: &RecoverRequest) -> String {
    match (&req.add_node, &req.remove_node) {
        (Some(a), Some(r)) => format!("node {a} in place of {r}"),
        (Some(a), None) => format!("node {a}"),
        (None, Some(r)) => format!("the removal of node {r}"),
        (None, None) => String::new(),
    }
}

/// True when a previous run already did the replacement: the added node is an active member
/// and the removed one is gone or marked removed.
async fn already_replaced(dest: &Rest, req: &RecoverRequest) -> Result<bool, RecoverError> {
    let members = node_memberships(dest).await?;
    let added = req
        .add_node
        .as_ref()
        .is_none_or(|a| members.get(a).is_some_and(|m| m == "active"));
    let removed = req
        .remove_node
        .as_ref()
        .is_none_or(|r| members.get(r).is_none_or(|m| m == "inactiveRemoved"));
    Ok(added && removed)
}

async fn replace_node(
    dest: &Rest,
    b: &str,
    req: &RecoverRequest,
    form: &[(&str, String)],
) -> Result<(), RecoverError> {
    let a = dest.post(&format!("{b}/replaceNode"), form).await?;
    match a.status {
        200..=202 => {
            eprintln!("replaceNode: {}", describe_replacement(req));
            Ok(())
        }
        s => {
            // 401: whichever named node the cluster does not know; 403: the one to remove.
            let subject = match s {
                401 => req
                    .add_node
                    .iter()
                    .chain(&req.remove_node)
                    .find(|n| a.body.contains(n.as_str()))
                    .or(req.add_node.as_ref())
                    .or(req.remove_node.as_ref()),
                403 => req.remove_node.as_ref(),
                _ => req.add_node.as_ref(),
            };
            let subject = subject.cloned().unwrap_or_default();
            Err(RecoverError::Rest(design_error("replaceNode", s, &subject)))
        }
    }
}

/// otpNode and hostname -> clusterMembership, from `GET /pools/default`.
async fn node_memberships(dest: &Rest) -> Result<BTreeMap<String, String>, RecoverError> {
    let v = pool_default(dest).await?;
    let mut out = BTreeMap::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        let m = n["clusterMembership"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for name in ["otpNode", "hostname"] {
            if let Some(x) = n[name].as_str() {
                out.insert(x.to_string(), m.clone());
            }
        }
    }
    Ok(out)
}

async fn pool_default(dest: &Rest) -> Result<Value, RecoverError> {
    let a = dest.get("/pools/default").await?;
    serde_json::from_str(&a.body).map_err(|e| {
        RecoverError::Rest(format!("{}: /pools/default does not parse: {e}", dest.base))
    })
}

async fn change_states(dest: &Rest, b: &str, vbs: &[u16], state: &str) -> Result<(), RecoverError> {
    let mut form: Vec<(&str, String)> = vbs.iter().map(|vb| ("vbucket", vb.to_string())).collect();
    form.push(("state", state.to_string()));
    let a = dest
        .post(&format!("{b}/changeVbucketStates"), &form)
        .await?;
    match a.status {
        200..=202 => Ok(()),
        411 => Err(RecoverError::Rest(design_error(
            "changeVbucketStates",
            411,
            state,
        ))),
        s => Err(RecoverError::Rest(design_error(
            "changeVbucketStates",
            s,
            &vb_list(vbs),
        ))),
    }
}

async fn recover_shipped(req: &RecoverRequest, dest: &Rest) -> Result<RecoverReport, RecoverError> {
    let bucket = &req.bucket_destination;
    let c = format!("/pools/default/buckets/{bucket}/controller");
    let a = dest.post(&format!("{c}/startRecovery"), &[]).await?;
    let mut report = RecoverReport {
        dialect: "startRecovery",
        ..Default::default()
    };
    match a.status {
        200..=202 => {}
        400 => return Ok(report),
        s => {
            return Err(RecoverError::Rest(shipped_error(
                "startRecovery",
                s,
                bucket,
            )))
        }
    }
    let v: Value = serde_json::from_str(&a.body).map_err(|e| {
        RecoverError::Rest(format!(
            "{}: startRecovery answer does not parse: {e}",
            dest.base
        ))
    })?;
    let uuid = v["uuid"].as_str().map(str::to_string).unwrap_or_default();
    let nodes = node_kv_addresses(dest).await?;
    let mut plan: BTreeMap<u16, String> = BTreeMap::new();
    for entry in v["recoveryMap"].as_array().into_iter().flatten() {
        let otp = entry["node"].as_str().unwrap_or_default();
        let kv = nodes.get(otp).cloned().ok_or_else(|| {
            RecoverError::Rest(format!(
                "startRecovery names node {otp:?}, which /pools/default does not list"
            ))
        })?;
        for vb in entry["vbuckets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
        {
            plan.insert(vb as u16, kv.clone());
        }
    }
    let listed = plan.len();
    let keep = keep_listed(req, plan.keys().copied().collect());
    plan.retain(|vb, _| keep.contains(vb));
    report.missing = plan.keys().copied().collect();
    if req.dry_run || plan.is_empty() {
        if !plan.is_empty() {
            eprintln!(
                "dry run: would stream vbuckets {} from {} and commit each",
                vb_list(&report.missing),
                req.from
            );
        }
        let _ = dest
            .post(&format!("{c}/stopRecovery?recovery_uuid={uuid}"), &[])
            .await?;
        return Ok(report);
    }
    eprintln!(
        "missing on {}: {}",
        dest.base,
        vb_summary(&report.missing, req.verbose)
    );
    let partial = plan.len() < listed;
    let commit = format!("{c}/commitVBucket?recovery_uuid={uuid}");
    report.recovered = for_each_vbucket(req, plan.into_iter().collect(), |vb| {
        let commit = commit.clone();
        async move {
            let a = dest.post(&commit, &[("vbucket", vb.to_string())]).await?;
            if (200..=202).contains(&a.status) {
                Ok(())
            } else {
                Err(RecoverError::Rest(shipped_error(
                    "commitVBucket",
                    a.status,
                    &vb.to_string(),
                )))
            }
        }
    })
    .await?;
    if partial {
        // -l left vbuckets of the recovery uncommitted: stop it, so they show missing again
        // rather than held by a recovery nobody will finish.
        let _ = dest
            .post(&format!("{c}/stopRecovery?recovery_uuid={uuid}"), &[])
            .await?;
    }
    Ok(report)
}

/// Transfers each vbucket of `plan` into its node, then `activate`s it: up to `-t` vbuckets
/// at a time, each activated as soon as its own transfer is confirmed, so an interruption
/// leaves only whole vbuckets active. Stops at the first error (the others in flight finish
/// or are dropped unactivated). The report is in vbucket order.
async fn for_each_vbucket<F, Fut>(
    req: &RecoverRequest,
    plan: Vec<(u16, String)>,
    activate: F,
) -> Result<Vec<Recovered>, RecoverError>
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = Result<(), RecoverError>>,
{
    use futures::stream::{StreamExt, TryStreamExt};
    let activate = &activate;
    let mut done: Vec<Recovered> = futures::stream::iter(plan)
        .map(|(vb, node)| async move {
            let r = transfer_vbucket(req, vb, &node).await?;
            activate(vb).await?;
            if req.verbose > 0 {
                eprintln!("vbucket {vb}: {} items recovered into {node}", r.items);
            }
            Ok::<_, RecoverError>(r)
        })
        .buffer_unordered(req.threads.max(1))
        .try_collect()
        .await?;
    done.sort_by_key(|r| r.vbucket);
    Ok(done)
}

/// otpNode -> KV address, from `GET /pools/default`.
async fn node_kv_addresses(dest: &Rest) -> Result<BTreeMap<String, String>, RecoverError> {
    let v = pool_default(dest).await?;
    let mut out = BTreeMap::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        let otp = n["otpNode"].as_str().unwrap_or_default().to_string();
        let host = n["hostname"].as_str().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if let Some(port) = n["ports"]["direct"].as_u64() {
            out.insert(otp, format!("{host}:{port}"));
        }
    }
    Ok(out)
}

/// Streams one vbucket from the source cluster into `node`'s replica copy over TAP.
async fn transfer_vbucket(
    req: &RecoverRequest,
    vb: u16,
    node: &str,
) -> Result<Recovered, RecoverError> {
    let registry = crate::kinds::registry();
    let from = req.from.replacen("http://", "couchbase://", 1);
    let source_spec = Spec::parse(&from).map_err(|e| RecoverError::Usage(e.to_string()))?;
    let sink_spec =
        Spec::parse(&format!("tap://{node}")).map_err(|e| RecoverError::Usage(e.to_string()))?;
    let options = Options {
        source_bucket: req.bucket_source.clone(),
        dest_bucket: Some(req.bucket_destination.clone()),
        source_auth: req.source_auth.clone(),
        dest_auth: req.dest_auth.clone(),
        vbuckets: Some(VbucketSet::from_ids([vb])),
        // One vbucket is one stream; -t runs that many vbuckets at once instead.
        threads: 1,
        verbose: req.verbose,
        ..Options::default()
    };
    let open_err = |e: pump::Error| RecoverError::Transfer(format!("vbucket {vb}: {e}"));
    let source = registry
        .source_kind(&source_spec)
        .map_err(open_err)?
        .open(&source_spec, &options)
        .map_err(open_err)?;
    let sink = registry
        .sink_kind(&sink_spec)
        .map_err(open_err)?
        .open(&sink_spec, &options)
        .map_err(open_err)?;
    let started = Instant::now();
    let summary = pump::run(source, sink, Context::new(options))
        .await
        .map_err(|e| {
            RecoverError::Transfer(format!("vbucket {vb} from {} into {node}: {e}", req.from))
        })?;
    if summary.counts.failed > 0 {
        return Err(RecoverError::Transfer(format!(
            "vbucket {vb}: {} items could not be written into {node}; first: {}",
            summary.counts.failed,
            summary
                .failures
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        )));
    }
    Ok(Recovered {
        vbucket: vb,
        node: node.to_string(),
        items: summary.counts.items_written,
        bytes: summary.counts.bytes_written,
        seconds: started.elapsed().as_secs_f64(),
        counts: summary.counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_with_the_one_normaliser_and_bad_ones_are_usage_errors() {
        let u = rest_url("couchbase://h:9000", None).unwrap();
        assert_eq!(u.base(), "http://h:9000");
        assert!(matches!(
            rest_url("http://h", None),
            Err(RecoverError::Usage(_))
        ));
        assert!(matches!(
            rest_url("http://h:99999", None),
            Err(RecoverError::Usage(_))
        ));
        let opt = Credentials {
            user: "o".into(),
            password: "p".into(),
        };
        let u = rest_url("http://a:b@h:1", Some(opt.clone())).unwrap();
        assert_eq!(u.credentials().unwrap().user, "a");
        assert_eq!(
            rest_url("h:1", Some(opt.clone())).unwrap().credentials(),
            Some(&opt)
        );
    }

    #[test]
    fn every_design_status_has_a_sentence_naming_its_subject() {
        assert!(design_error("replaceNode", 401, "n_9@h").contains("n_9@h was not found"));
        assert!(design_error("replaceNode", 402, "n_3@h").contains("already part"));
        assert!(design_error("replaceNode", 403, "n_1@h").contains("fail it over first"));
        assert!(design_error("changeVbucketStates", 410, "500,612").contains("500,612 not found"));
        assert!(
            design_error("changeVbucketStates", 411, "bogus").contains("state bogus is not valid")
        );
        assert!(design_error("updateVbucketMap", 410, "").contains("could not update"));
        assert!(shipped_error("commitVBucket", 404, "12").contains("vbucket 12 is not part"));
        assert!(shipped_error("startRecovery", 503, "default").contains("rebalance"));
    }

    #[test]
    fn map_holder_is_the_first_node_in_the_chain() {
        let body = r#"{"vBucketServerMap":{"serverList":["127.0.0.1:12000","127.0.0.1:12001"],"vBucketMap":[[0,1],[-1,1],[-1,-1]]}}"#;
        let m = BucketMap::parse(body, "test").unwrap();
        assert_eq!(m.holder(0).as_deref(), Some("127.0.0.1:12000"));
        assert_eq!(m.holder(1).as_deref(), Some("127.0.0.1:12001"));
        assert_eq!(m.holder(2), None);
        assert_eq!(m.holder(99), None);
    }
}
