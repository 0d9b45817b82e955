//! The cluster's vbucket map, as `GET /pools/default/buckets/<bucket>` returns it.
//!
//! ```text
//! {"vBucketServerMap": {"hashAlgorithm": "CRC", "numReplicas": 1,
//!                       "serverList": ["127.0.0.1:12000", "127.0.0.1:12001"],
//!                       "vBucketMap": [[0, 1], [1, -1], ...]}, ...}
//! ```
//! Each row of `vBucketMap` is one vbucket: the index of its active server in `serverList`,
//! then its replicas; -1 means none.
//!
//! The config a node serves over KV (GET_CLUSTER_CONFIG, a NOT_MY_VBUCKET answer) and REST's
//! terse `/pools/default/b/<bucket>` have the same map, with `$HOST` for the host the client
//! reached, and `nodesExt` (one per serverList entry) with each node's ports: `kvSSL` is the
//! KV port over TLS ([`VbucketMap::from_config`]).
//!
//! Every config carries `rev` (and since 7.x `revEpoch`): a client keeps the map of the highest
//! (revEpoch, rev) it has seen ([`VbucketMap::is_newer_than`]), so an older config in a late
//! NOT_MY_VBUCKET answer never replaces a newer map. The bucket's `conflictResolutionType`
//! ("seqno", "lww") says how its with-meta writes are resolved.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::connection::Auth;
use crate::error::{with_causes, ClientError};
use crate::tls::TlsClient;
use pump_protocol::meta::ConflictResolution;

/// Which server holds each vbucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbucketMap {
    /// KV addresses, `host:port`.
    pub servers: Vec<String>,
    /// Per vbucket: active server index, then replica indexes; -1 for none.
    pub vbuckets: Vec<Vec<i32>>,
    pub num_replicas: usize,
    /// `(revEpoch, rev)` of the config, when it has a `rev`.
    pub revision: Option<(u64, u64)>,
    /// The bucket's `conflictResolutionType`, when the config names it.
    pub conflict_resolution: Option<ConflictResolution>,
}

impl VbucketMap {
    /// Parses a bucket's JSON; `url` names where it came from, for errors.
    pub fn parse(json: &serde_json::Value, url: &str) -> Result<VbucketMap, ClientError> {
        let bad = |message: String| ClientError::Rest {
            url: url.to_string(),
            message,
        };
        let m = json
            .get("vBucketServerMap")
            .ok_or_else(|| bad("no vBucketServerMap in the bucket's JSON".into()))?;
        let servers = m
            .get("serverList")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("vBucketServerMap has no serverList array".into()))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("serverList entry {s} is not a string")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = m
            .get("vBucketMap")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("vBucketServerMap has no vBucketMap array".into()))?;
        if rows.len() > usize::from(u16::MAX) + 1 {
            return Err(bad(format!("{} vbuckets is more than 65536", rows.len())));
        }
        let mut vbuckets = Vec::with_capacity(rows.len());
        for (vb, row) in rows.iter().enumerate() {
            let row = row
                .as_array()
                .ok_or_else(|| bad(format!("vBucketMap[{vb}] is not an array")))?;
            let mut ids = Vec::with_capacity(row.len());
            for v in row {
                let i = v
                    .as_i64()
                    .filter(|i| *i >= -1 && *i < servers.len() as i64)
                    .ok_or_else(|| {
                        bad(format!(
                            "vBucketMap[{vb}] holds {v}, not -1 or a serverList index below {}",
                            servers.len()
                        ))
                    })?;
                ids.push(i as i32);
            }
            vbuckets.push(ids);
        }
        let num_replicas = m.get("numReplicas").and_then(|n| n.as_u64()).unwrap_or(0) as usize;
        let revision = json.get("rev").and_then(|r| r.as_u64()).map(|rev| {
            let epoch = json.get("revEpoch").and_then(|e| e.as_u64()).unwrap_or(0);
            (epoch, rev)
        });
        let conflict_resolution = json
            .get("conflictResolutionType")
            .and_then(|c| c.as_str())
            .and_then(ConflictResolution::parse);
        Ok(VbucketMap {
            servers,
            vbuckets,
            num_replicas,
            revision,
            conflict_resolution,
        })
    }

    /// A config as a node serves it: `$HOST` becomes `host` (the host the client reached);
    /// with `tls`, each server is its `nodesExt` entry's `kvSSL` port.
    pub fn from_config(
        json: &serde_json::Value,
        url: &str,
        host: &str,
        tls: bool,
    ) -> Result<VbucketMap, ClientError> {
        let mut map = VbucketMap::parse(json, url)?;
        for s in &mut map.servers {
            *s = s.replace("$HOST", host);
        }
        if tls {
            let ext = json
                .get("nodesExt")
                .and_then(|n| n.as_array())
                .ok_or_else(|| ClientError::Rest {
                    url: url.to_string(),
                    message: "no nodesExt: the TLS ports of the nodes are unknown".into(),
                })?;
            for (i, s) in map.servers.iter_mut().enumerate() {
                let node = ext.get(i);
                let port = node
                    .and_then(|n| n["services"]["kvSSL"].as_u64())
                    .ok_or_else(|| ClientError::Rest {
                        url: url.to_string(),
                        message: format!("nodesExt[{i}] has no kvSSL port: the node serves no TLS"),
                    })?;
                let h = node
                    .and_then(|n| n["hostname"].as_str())
                    .map(|h| h.replace("$HOST", host))
                    .or_else(|| s.rsplit_once(':').map(|(h, _)| h.to_string()))
                    .unwrap_or_else(|| host.to_string());
                *s = format!("{h}:{port}");
            }
        }
        Ok(map)
    }

    /// The config a NOT_MY_VBUCKET answer carries in its body, if it carries one (a server
    /// before 5.0, or memcached, answers with an empty body or plain text): `host` is the host
    /// the answering node was reached at (for `$HOST`), `tls` as in [`VbucketMap::from_config`].
    pub fn from_not_my_vbucket(
        body: &[u8],
        peer: &str,
        tls: bool,
    ) -> Option<Result<VbucketMap, ClientError>> {
        if body.first() != Some(&b'{') {
            return None;
        }
        let what = format!("the NOT_MY_VBUCKET answer of {peer}");
        let json: serde_json::Value = match serde_json::from_slice(body) {
            Ok(j) => j,
            Err(e) => {
                return Some(Err(ClientError::Rest {
                    url: what,
                    message: format!("its config is not JSON: {e}"),
                }))
            }
        };
        let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
        Some(VbucketMap::from_config(&json, &what, host, tls))
    }

    /// True when this map's config is newer than `other`'s (a higher (revEpoch, rev)); a map
    /// without a revision (REST's full bucket JSON of an old server) is never newer than one
    /// with, and one with is always newer than one without.
    pub fn is_newer_than(&self, other: &VbucketMap) -> bool {
        match (self.revision, other.revision) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Fetches `<base>/pools/default/buckets/<bucket>` (base: `http://host:port`).
    pub async fn fetch(
        base: &str,
        bucket: &str,
        auth: Option<&Auth>,
        timeout: Duration,
    ) -> Result<VbucketMap, ClientError> {
        VbucketMap::fetch_with(base, bucket, auth, timeout, None).await
    }

    /// [`VbucketMap::fetch`], or with `tls` over HTTPS (base `https://host:port`) from the
    /// terse `/pools/default/b/<bucket>`, every server at its TLS KV port.
    pub async fn fetch_with(
        base: &str,
        bucket: &str,
        auth: Option<&Auth>,
        timeout: Duration,
        tls: Option<&TlsClient>,
    ) -> Result<VbucketMap, ClientError> {
        let path = if tls.is_some() { "b" } else { "buckets" };
        let url = format!(
            "{}/pools/default/{path}/{}",
            base.trim_end_matches('/'),
            bucket
        );
        let rest = |message: String| ClientError::Rest {
            url: url.clone(),
            message,
        };
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(t) = tls {
            builder = builder.use_preconfigured_tls((*t.config()).clone());
        }
        let client = builder
            .build()
            .map_err(|e| rest(format!("cannot build an HTTP client: {e}")))?;
        let mut req = client.get(&url);
        if let Some(a) = auth {
            req = req.basic_auth(&a.user, Some(&a.password));
        }
        let resp = req.send().await.map_err(|e| {
            let why = with_causes(&e);
            match tls {
                Some(t) if why.contains("certificate") => rest(format!(
                    "{why} (trusting {}: give --cacert FILE, or --no-ssl-verify)",
                    t.trust()
                )),
                _ => rest(why),
            }
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| rest(format!("reading the answer: {}", with_causes(&e))))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The REST port wants the cluster's credentials: a refusal, not a failure to retry.
            let reason = format!("HTTP {status}");
            return Err(match auth {
                Some(a) => ClientError::Auth {
                    peer: url.clone(),
                    user: a.user.clone(),
                    reason,
                },
                None => ClientError::AuthRequired {
                    peer: url.clone(),
                    reason,
                },
            });
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(rest(format!("HTTP {status}: {text}")));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| rest(format!("not JSON: {e}")))?;
        match tls {
            None => VbucketMap::parse(&json, &url),
            Some(_) => {
                let host = base
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.rsplit_once(':').map(|(h, _)| h))
                    .unwrap_or("127.0.0.1");
                VbucketMap::from_config(&json, &url, host, true)
            }
        }
    }

    /// Number of vbuckets.
    pub fn num_vbuckets(&self) -> usize {
        self.vbuckets.len()
    }

    /// The index of the server holding `vb` active, if any.
    pub fn active(&self, vb: u16) -> Option<usize> {
        self.vbuckets
            .get(usize::from(vb))
            .and_then(|row| row.first())
            .and_then(|i| usize::try_from(*i).ok())
    }

    /// The KV address of the server holding `vb` active.
    pub fn active_server(&self, vb: u16) -> Option<&str> {
        self.active(vb).map(|i| self.servers[i].as_str())
    }

    /// Groups `vbs` by the server holding them active; the second list holds the vbuckets
    /// with no active server (or beyond the map).
    pub fn by_active_server(
        &self,
        vbs: impl IntoIterator<Item = u16>,
    ) -> (BTreeMap<usize, Vec<u16>>, Vec<u16>) {
        let mut owned: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        let mut none = Vec::new();
        for vb in vbs {
            match self.active(vb) {
                Some(i) => owned.entry(i).or_default().push(vb),
                None => none.push(vb),
            }
        }
        (owned, none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "name": "default",
            "vBucketServerMap": {
                "hashAlgorithm": "CRC",
                "numReplicas": 1,
                "serverList": ["127.0.0.1:12000", "127.0.0.1:12001"],
                "vBucketMap": [[0, 1], [1, 0], [-1, 0], [1, -1]]
            }
        })
    }

    #[test]
    fn parses_servers_rows_and_replicas() {
        let m = VbucketMap::parse(&sample(), "u").unwrap();
        assert_eq!(m.servers, vec!["127.0.0.1:12000", "127.0.0.1:12001"]);
        assert_eq!(m.num_vbuckets(), 4);
        assert_eq!(m.num_replicas, 1);
        assert_eq!(m.active_server(0), Some("127.0.0.1:12000"));
        assert_eq!(m.active_server(1), Some("127.0.0.1:12001"));
        assert_eq!(m.active(2), None);
        assert_eq!(m.active(9), None);
    }

    #[test]
    fn groups_vbuckets_by_active_server_and_lists_the_unowned() {
        let m = VbucketMap::parse(&sample(), "u").unwrap();
        let (owned, none) = m.by_active_server(0..4);
        assert_eq!(owned[&0], vec![0]);
        assert_eq!(owned[&1], vec![1, 3]);
        assert_eq!(none, vec![2]);
    }

    #[test]
    fn a_node_config_names_host_and_with_tls_each_nodes_kv_tls_port() {
        let j = serde_json::json!({
            "rev": 3,
            "nodesExt": [
                {"hostname": "$HOST", "services": {"kv": 12000, "kvSSL": 13000}},
                {"hostname": "10.0.0.2", "services": {"kv": 11210, "kvSSL": 11207}}
            ],
            "vBucketServerMap": {
                "serverList": ["$HOST:12000", "10.0.0.2:11210"],
                "vBucketMap": [[0], [1]]
            }
        });
        let m = VbucketMap::from_config(&j, "u", "192.168.1.5", false).unwrap();
        assert_eq!(m.servers, vec!["192.168.1.5:12000", "10.0.0.2:11210"]);
        let m = VbucketMap::from_config(&j, "u", "192.168.1.5", true).unwrap();
        assert_eq!(m.servers, vec!["192.168.1.5:13000", "10.0.0.2:11207"]);
        let mut no_tls = j.clone();
        no_tls["nodesExt"][1]["services"] = serde_json::json!({"kv": 1});
        let e = VbucketMap::from_config(&no_tls, "u", "h", true).unwrap_err();
        assert!(e.to_string().contains("nodesExt[1] has no kvSSL"), "{e}");
    }

    #[test]
    fn a_not_my_vbucket_body_gives_the_map_and_only_a_newer_revision_replaces_one() {
        let cfg = |epoch: u64, rev: u64, owner: i32| {
            serde_json::json!({
                "rev": rev, "revEpoch": epoch, "conflictResolutionType": "lww",
                "vBucketServerMap": {
                    "serverList": ["$HOST:12000", "$HOST:12001"],
                    "vBucketMap": [[owner], [1]]
                }
            })
            .to_string()
        };
        let m = VbucketMap::from_not_my_vbucket(cfg(1, 7, 1).as_bytes(), "10.1.1.1:12000", false)
            .unwrap()
            .unwrap();
        assert_eq!(m.servers, vec!["10.1.1.1:12000", "10.1.1.1:12001"]);
        assert_eq!((m.active(0), m.revision), (Some(1), Some((1, 7))));
        assert_eq!(m.conflict_resolution, Some(ConflictResolution::Lww));
        let older = VbucketMap::from_not_my_vbucket(cfg(1, 6, 0).as_bytes(), "h:1", false)
            .unwrap()
            .unwrap();
        let next_epoch = VbucketMap::from_not_my_vbucket(cfg(2, 1, 0).as_bytes(), "h:1", false)
            .unwrap()
            .unwrap();
        assert!(m.is_newer_than(&older) && !older.is_newer_than(&m));
        assert!(!m.is_newer_than(&m));
        assert!(next_epoch.is_newer_than(&m));
        let rest = VbucketMap::parse(&sample(), "u").unwrap();
        assert_eq!(rest.revision, None);
        assert!(m.is_newer_than(&rest) && !rest.is_newer_than(&m));
        // No body (memcached, old servers) or text: no map; a broken config: an error.
        assert!(VbucketMap::from_not_my_vbucket(b"", "h:1", false).is_none());
        assert!(VbucketMap::from_not_my_vbucket(b"Not my vbucket", "h:1", false).is_none());
        let e = VbucketMap::from_not_my_vbucket(b"{\"rev\":", "h:1", false)
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string().contains("NOT_MY_VBUCKET answer of h:1"),
            "{e}"
        );
    }

    #[test]
    fn an_index_past_the_server_list_is_an_error_naming_the_vbucket() {
        let mut j = sample();
        j["vBucketServerMap"]["vBucketMap"][3] = serde_json::json!([5]);
        let e = VbucketMap::parse(&j, "http://h:1/x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vBucketMap[3]") && e.contains("http://h:1/x"),
            "{e}"
        );
        let e = VbucketMap::parse(&serde_json::json!({}), "u").unwrap_err();
        assert!(e.to_string().contains("no vBucketServerMap"));
    }
}
