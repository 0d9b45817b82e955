//! The cluster side of cbrecovery: which vbuckets have no active copy, and the two REST dialects
//! that bring them back.
//!
//! ```text
//! recovery design (per bucket)                 Couchbase Server's shipped form (per bucket)
//! GET  vbucketsMissing        -> [5, 8, ...]    POST controller/startRecovery -> map + uuid
//! POST replaceNode add= remove= 202|401|402|403 POST controller/commitVBucket?recovery_uuid=U
//! POST changeVbucketStates    202|410|411             vbucket=N   200|400|402|404|406
//! POST updateVbucketMap       202|410           POST controller/stopRecovery?recovery_uuid=U
//! ```
//!
//! A vbucket is missing when no member node holds it active. Bringing one back assigns it a
//! node (the one `replaceNode` added, else a healthy member chosen by vbucket id), where it
//! takes the states the client asks for; the map names that node from then on, and
//! `vbucketsMissing` keeps listing the vbucket until it is really active there, so an
//! interrupted recovery is picked up where it stopped.

use std::collections::BTreeMap;

use pump_protocol::VbucketState;
use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterState, Membership};

/// A refused call: the HTTP status and the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// A recovery started with `startRecovery`: its uuid and the vbuckets left to commit.
#[derive(Debug, Clone)]
pub struct ShippedRecovery {
    pub uuid: String,
    /// vbucket -> the node index it is being recovered into.
    pub pending: BTreeMap<u16, usize>,
}

/// Which REST dialect(s) of the recovery the nodes answer; the other answers 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryApi {
    #[default]
    Both,
    /// Only the recovery design (vbucketsMissing, replaceNode, changeVbucketStates, ...).
    Design,
    /// Only Couchbase Server's startRecovery / commitVBucket / stopRecovery.
    Shipped,
}

impl std::str::FromStr for RecoveryApi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(RecoveryApi::Both),
            "design" => Ok(RecoveryApi::Design),
            "shipped" => Ok(RecoveryApi::Shipped),
            _ => Err(format!("{s}: expected both, design or shipped")),
        }
    }
}

fn parse_state(s: &str) -> Option<VbucketState> {
    match s {
        "active" => Some(VbucketState::Active),
        "replica" => Some(VbucketState::Replica),
        "pending" => Some(VbucketState::Pending),
        "dead" => Some(VbucketState::Dead),
        _ => None,
    }
}

impl Cluster {
    fn is_serving(&self, s: &ClusterState, node: usize) -> bool {
        s.nodes[node].membership == Membership::Active && !self.nodes[node].is_halted()
    }

    /// True when `vb` is active on the serving member its map row names.
    fn is_recovered(&self, s: &ClusterState, vb: usize) -> bool {
        let a = s.map[vb][0];
        a >= 0
            && self.is_serving(s, a as usize)
            && self.nodes[a as usize].bucket.state(vb as u16) == Some(VbucketState::Active)
    }

    /// Every vbucket no member holds active, ascending.
    pub fn missing_vbuckets(&self) -> Vec<u16> {
        let s = self.lock();
        (0..s.map.len())
            .filter(|vb| !self.is_recovered(&s, *vb))
            .map(|vb| vb as u16)
            .collect()
    }

    /// The node `vb` is (or will be) recovered into: the one its row names if it serves, else
    /// the node `replaceNode` added, else a serving member chosen by vbucket id.
    fn assign(&self, s: &mut ClusterState, vb: u16) -> Result<usize, Refusal> {
        let row0 = s.map[vb as usize][0];
        if row0 >= 0 && self.is_serving(s, row0 as usize) {
            return Ok(row0 as usize);
        }
        let target = match s.added.filter(|i| self.is_serving(s, *i)) {
            Some(i) => i,
            None => {
                let serving: Vec<usize> = (0..s.nodes.len())
                    .filter(|i| self.is_serving(s, *i))
                    .collect();
                if serving.is_empty() {
                    return Err(Refusal::new(
                        500,
                        "no healthy node is left to take the missing vbuckets",
                    ));
                }
                serving[vb as usize % serving.len()]
            }
        };
        s.map[vb as usize][0] = target as i32;
        Ok(target)
    }

    /// `POST replaceNode add=NEW remove=OLD`: NEW (a spare) joins, OLD (failed over) leaves.
    pub fn replace_node(&self, add: Option<&str>, remove: Option<&str>) -> Result<(), Refusal> {
        if add.is_none() && remove.is_none() {
            return Err(Refusal::new(
                400,
                "replaceNode needs add=NODE, remove=NODE or both",
            ));
        }
        let find = |name: &str| {
            self.find(name)
                .ok_or_else(|| Refusal::new(401, format!("node {name} not found")))
        };
        let add_i = add.map(find).transpose()?;
        let remove_i = remove.map(find).transpose()?;
        let mut s = self.lock();
        if let (Some(i), Some(name)) = (add_i, add) {
            if s.nodes[i].membership != Membership::Spare {
                return Err(Refusal::new(
                    402,
                    format!("node {name} exists already in the cluster"),
                ));
            }
        }
        if let (Some(i), Some(name)) = (remove_i, remove) {
            if s.nodes[i].membership == Membership::Active {
                return Err(Refusal::new(
                    403,
                    format!("node {name} is still active: fail it over first"),
                ));
            }
        }
        if let Some(i) = add_i {
            s.nodes[i].membership = Membership::Active;
            s.added = Some(i);
        }
        if let Some(i) = remove_i {
            if s.nodes[i].membership == Membership::Failed {
                s.nodes[i].membership = Membership::Removed;
            }
        }
        Ok(())
    }

    /// `POST changeVbucketStates vbucket=N&vbucket=M&state=S`: every vbucket must exist and the
    /// state be valid before anything changes.
    pub fn change_vbucket_states(&self, vbuckets: &[String], state: &str) -> Result<(), Refusal> {
        let Some(st) = parse_state(state) else {
            return Err(Refusal::new(
                411,
                format!("state {state:?} is not valid: active, replica, pending or dead"),
            ));
        };
        let mut s = self.lock();
        let nvb = s.map.len();
        let mut vbs = Vec::with_capacity(vbuckets.len());
        for v in vbuckets {
            match v.trim().parse::<u16>() {
                Ok(vb) if (vb as usize) < nvb => vbs.push(vb),
                _ => return Err(Refusal::new(410, format!("vbucket {v} not found"))),
            }
        }
        if vbs.is_empty() {
            return Err(Refusal::new(410, "no vbucket given"));
        }
        for vb in vbs {
            let node = self.assign(&mut s, vb)?;
            let bucket = &self.nodes[node].bucket;
            if bucket.state(vb) != Some(st) {
                bucket.set_state(vb, st);
            }
        }
        Ok(())
    }

    /// `POST updateVbucketMap`: publishes the map once every vbucket it names is active on its
    /// node; 410 when one is not.
    pub fn update_vbucket_map(&self) -> Result<(), Refusal> {
        let mut s = self.lock();
        for vb in 0..s.map.len() {
            let a = s.map[vb][0];
            if a >= 0 && !self.is_recovered(&s, vb) {
                return Err(Refusal::new(
                    410,
                    format!(
                        "update failure: vbucket {vb} is not active on {}",
                        s.nodes[a as usize].otp
                    ),
                ));
            }
        }
        s.revision += 1;
        Ok(())
    }

    /// `POST controller/startRecovery`: assigns every missing vbucket a node in replica state
    /// and answers the recovery map. A recovery already running is replaced.
    pub fn start_recovery(&self) -> Result<Value, Refusal> {
        let missing = self.missing_vbuckets();
        if missing.is_empty() {
            return Err(Refusal::new(400, "no recovery needed"));
        }
        let mut s = self.lock();
        let mut pending = BTreeMap::new();
        for vb in missing {
            let node = self.assign(&mut s, vb)?;
            self.nodes[node].bucket.set_state(vb, VbucketState::Replica);
            pending.insert(vb, node);
        }
        let mut by_node: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        for (vb, node) in &pending {
            by_node.entry(*node).or_default().push(*vb);
        }
        let uuid = new_uuid(&pending);
        let map: Vec<Value> = by_node
            .into_iter()
            .map(|(n, vbs)| json!({"node": s.nodes[n].otp, "vbuckets": vbs}))
            .collect();
        s.recovery = Some(ShippedRecovery {
            uuid: uuid.clone(),
            pending,
        });
        Ok(json!({"code": "ok", "recoveryMap": map, "uuid": uuid}))
    }

    fn check_uuid<'a>(
        s: &'a mut ClusterState,
        uuid: Option<&str>,
    ) -> Result<&'a mut ShippedRecovery, Refusal> {
        let Some(uuid) = uuid.filter(|u| !u.is_empty()) else {
            return Err(Refusal::new(400, "recovery_uuid is missing"));
        };
        match s.recovery.as_mut() {
            Some(r) if r.uuid == uuid => Ok(r),
            Some(_) => Err(Refusal::new(
                406,
                format!("recovery {uuid} is not the one running"),
            )),
            None => Err(Refusal::new(406, "no recovery is running")),
        }
    }

    /// `POST controller/commitVBucket?recovery_uuid=U` with `vbucket=N`: activates one vbucket
    /// of the running recovery.
    pub fn commit_vbucket(
        &self,
        uuid: Option<&str>,
        vbucket: Option<&str>,
    ) -> Result<Value, Refusal> {
        let mut s = self.lock();
        let r = Self::check_uuid(&mut s, uuid)?;
        let vb = vbucket
            .and_then(|v| v.trim().parse::<u16>().ok())
            .ok_or_else(|| {
                Refusal::new(
                    402,
                    format!(
                        "vbucket {:?} is unspecified or not a number",
                        vbucket.unwrap_or("")
                    ),
                )
            })?;
        let Some(node) = r.pending.remove(&vb) else {
            return Err(Refusal::new(
                404,
                format!("vbucket {vb} is not in the recovery map"),
            ));
        };
        let done = r.pending.is_empty();
        self.nodes[node].bucket.set_state(vb, VbucketState::Active);
        if done {
            s.recovery = None;
            s.revision += 1;
            return Ok(json!({"code": "recovery_completed"}));
        }
        Ok(json!({"code": "ok"}))
    }

    /// `POST controller/stopRecovery?recovery_uuid=U`: the vbuckets not committed go back to
    /// missing (dead, no node in the map).
    pub fn stop_recovery(&self, uuid: Option<&str>) -> Result<Value, Refusal> {
        let mut s = self.lock();
        let pending = std::mem::take(&mut Self::check_uuid(&mut s, uuid)?.pending);
        for (vb, node) in pending {
            self.nodes[node].bucket.set_state(vb, VbucketState::Dead);
            s.map[vb as usize][0] = -1;
        }
        s.recovery = None;
        Ok(json!({"code": "ok"}))
    }
}

/// 32 hex digits, different for every recovery of a process.
fn new_uuid(pending: &BTreeMap<u16, usize>) -> String {
    use std::hash::BuildHasher;
    let seed = (pending.len(), std::time::SystemTime::now());
    let a = std::collections::hash_map::RandomState::new().hash_one(seed);
    let b = std::collections::hash_map::RandomState::new().hash_one(a);
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterConfig, NodeConfig};
    use std::sync::Arc;

    /// 3 members and 1 spare, 12 vbuckets, no replica; node 1 failed over.
    async fn failed_cluster(api: RecoveryApi) -> Arc<Cluster> {
        let c = Cluster::start(ClusterConfig {
            nodes: 3,
            replicas: 0,
            node: NodeConfig {
                vbuckets: 12,
                ..NodeConfig::default()
            },
            kv_port: 0,
            rest_port: 0,
            spares: 1,
            recovery_api: api,
            tls: None,
        })
        .await
        .unwrap();
        c.failover(1).await.unwrap();
        c
    }

    fn strings(vbs: &[u16]) -> Vec<String> {
        vbs.iter().map(u16::to_string).collect()
    }

    #[tokio::test]
    async fn a_failover_without_replicas_leaves_that_nodes_vbuckets_missing() {
        let c = failed_cluster(RecoveryApi::Both).await;
        assert_eq!(c.missing_vbuckets(), vec![1, 4, 7, 10]);
    }

    #[tokio::test]
    async fn a_failed_over_node_refuses_connections_once_the_failover_returns() {
        // On this single-threaded runtime the listener task has not run between the failover's
        // cancel and the connect below, so this holds only if the failover waits for it.
        let c = failed_cluster(RecoveryApi::Both).await;
        let kv = c.nodes[1].kv_addr;
        assert!(
            std::net::TcpStream::connect(kv).is_err(),
            "{kv} still accepts"
        );
        assert!(std::net::TcpStream::connect(c.nodes[0].kv_addr).is_ok());
    }

    #[tokio::test]
    async fn replace_node_refuses_unknown_existing_and_active_nodes_before_changing_anything() {
        let c = failed_cluster(RecoveryApi::Both).await;
        let status = |r: Result<(), Refusal>| r.unwrap_err().status;
        assert_eq!(status(c.replace_node(Some("n_9@127.0.0.1"), None)), 401);
        assert_eq!(
            status(c.replace_node(Some("n_3@127.0.0.1"), Some("n_8@h"))),
            401
        );
        assert_eq!(status(c.replace_node(Some("n_0@127.0.0.1"), None)), 402);
        assert_eq!(status(c.replace_node(None, Some("n_2@127.0.0.1"))), 403);
        // A refused call added nothing.
        assert_eq!(c.lock().nodes[3].membership, Membership::Spare);
        c.replace_node(Some("n_3@127.0.0.1"), Some("n_1@127.0.0.1"))
            .unwrap();
        assert_eq!(c.lock().nodes[3].membership, Membership::Active);
        assert_eq!(c.lock().nodes[1].membership, Membership::Removed);
        // Again (a rerun): the added node exists already.
        assert_eq!(
            status(c.replace_node(Some("n_3@127.0.0.1"), Some("n_1@127.0.0.1"))),
            402
        );
    }

    #[tokio::test]
    async fn the_design_flow_brings_every_missing_vbucket_back_on_the_added_node() {
        let c = failed_cluster(RecoveryApi::Both).await;
        c.replace_node(Some("n_3@127.0.0.1"), Some("n_1@127.0.0.1"))
            .unwrap();
        let missing = c.missing_vbuckets();
        c.change_vbucket_states(&strings(&missing), "replica")
            .unwrap();
        for vb in &missing {
            assert_eq!(c.lock().map[*vb as usize][0], 3);
            assert_eq!(c.nodes[3].bucket.state(*vb), Some(VbucketState::Replica));
        }
        // Still missing until active: a rerun would pick them up.
        assert_eq!(c.missing_vbuckets(), missing);
        // The map names a node where vbucket 1 is not active yet.
        assert_eq!(c.update_vbucket_map().unwrap_err().status, 410);
        c.change_vbucket_states(&strings(&missing), "active")
            .unwrap();
        assert!(c.missing_vbuckets().is_empty());
        let rev = c.lock().revision;
        c.update_vbucket_map().unwrap();
        assert_eq!(c.lock().revision, rev + 1);
    }

    #[tokio::test]
    async fn change_vbucket_states_checks_every_vbucket_and_the_state_first() {
        let c = failed_cluster(RecoveryApi::Both).await;
        let r = c.change_vbucket_states(&strings(&[1, 4]), "bogus");
        assert_eq!(r.unwrap_err().status, 411);
        let r = c.change_vbucket_states(&["1".into(), "12".into()], "replica");
        let e = r.unwrap_err();
        assert_eq!((e.status, e.message.contains("vbucket 12")), (410, true));
        // Vbucket 1 was not touched by the refused call.
        assert_eq!(c.lock().map[1][0], -1);
        // Without an added node, missing vbuckets go to the serving members.
        c.change_vbucket_states(&strings(&[1, 4]), "active")
            .unwrap();
        let map = c.lock().map.clone();
        assert!(map[1][0] == 0 || map[1][0] == 2);
        assert_eq!(c.missing_vbuckets(), vec![7, 10]);
    }

    #[tokio::test]
    async fn the_shipped_flow_commits_each_vbucket_under_its_uuid() {
        let c = failed_cluster(RecoveryApi::Shipped).await;
        let v = c.start_recovery().unwrap();
        let uuid = v["uuid"].as_str().unwrap().to_string();
        let mut listed: Vec<u64> = v["recoveryMap"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["vbuckets"].as_array().unwrap().clone())
            .map(|x| x.as_u64().unwrap())
            .collect();
        listed.sort();
        assert_eq!(listed, vec![1, 4, 7, 10]);
        let status = |r: Result<Value, Refusal>| r.unwrap_err().status;
        assert_eq!(status(c.commit_vbucket(None, Some("1"))), 400);
        assert_eq!(status(c.commit_vbucket(Some("nope"), Some("1"))), 406);
        assert_eq!(status(c.commit_vbucket(Some(&uuid), Some("x"))), 402);
        assert_eq!(status(c.commit_vbucket(Some(&uuid), Some("2"))), 404);
        for vb in ["1", "4", "7"] {
            assert_eq!(
                c.commit_vbucket(Some(&uuid), Some(vb)).unwrap()["code"],
                "ok"
            );
        }
        let last = c.commit_vbucket(Some(&uuid), Some("10")).unwrap();
        assert_eq!(last["code"], "recovery_completed");
        assert!(c.missing_vbuckets().is_empty());
        assert_eq!(c.start_recovery().unwrap_err().status, 400);
    }

    #[tokio::test]
    async fn stop_recovery_puts_the_uncommitted_vbuckets_back_to_missing() {
        let c = failed_cluster(RecoveryApi::Shipped).await;
        let uuid = c.start_recovery().unwrap()["uuid"]
            .as_str()
            .unwrap()
            .to_string();
        c.commit_vbucket(Some(&uuid), Some("4")).unwrap();
        assert_eq!(c.stop_recovery(Some("other")).unwrap_err().status, 406);
        c.stop_recovery(Some(&uuid)).unwrap();
        assert_eq!(c.missing_vbuckets(), vec![1, 7, 10]);
        assert_eq!(c.lock().map[1][0], -1);
        assert_eq!(c.stop_recovery(Some(&uuid)).unwrap_err().status, 406);
    }
}
