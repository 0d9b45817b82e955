//! The cluster's vbucket map, as `GET /pools/default/buckets/<bucket>` returns it.
//!
//! ```text
//! {"vBucketServerMap": {"hashAlgorithm": "CRC", "numReplicas": 1,
//!                       "serverList": ["127.0.0.1:12000", "127.0.0.1:12001"],
//!                       "vBucketMap": [[0, 1], [1, -1], ...]}, ...}
//! ```
//! Each row of `vBucketMap` is one vbucket: the index of its active server in `serverList`,
//! then its replicas; -1 means none.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::connection::Auth;
use crate::error::{with_causes, ClientError};

/// Which server holds each vbucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbucketMap {
    /// KV addresses, `host:port`.
    pub servers: Vec<String>,
    /// Per vbucket: active server index, then replica indexes; -1 for none.
    pub vbuckets: Vec<Vec<i32>>,
    pub num_replicas: usize,
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
        Ok(VbucketMap {
            servers,
            vbuckets,
            num_replicas,
        })
    }

    /// Fetches `<base>/pools/default/buckets/<bucket>` (base: `http://host:port`).
    pub async fn fetch(
        base: &str,
        bucket: &str,
        auth: Option<&Auth>,
        timeout: Duration,
    ) -> Result<VbucketMap, ClientError> {
        let url = format!(
            "{}/pools/default/buckets/{}",
            base.trim_end_matches('/'),
            bucket
        );
        let rest = |message: String| ClientError::Rest {
            url: url.clone(),
            message,
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| rest(format!("cannot build an HTTP client: {e}")))?;
        let mut req = client.get(&url);
        if let Some(a) = auth {
            req = req.basic_auth(&a.user, Some(&a.password));
        }
        let resp = req.send().await.map_err(|e| rest(with_causes(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| rest(format!("reading the answer: {}", with_causes(&e))))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(rest(format!("HTTP {status}: {text}")));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| rest(format!("not JSON: {e}")))?;
        VbucketMap::parse(&json, &url)
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
