//! The destination's collections: created by name before anything is written, and each
//! source collection id mapped to the destination's id (ids differ between clusters).
//!
//! ```text
//! GET  /pools/default/buckets/<-B>/scopes                     the destination's manifest
//! POST /pools/default/buckets/<-B>/scopes                     name=S      (a scope it lacks)
//! POST /pools/default/buckets/<-B>/scopes/S/collections       name=C      (a collection)
//! GET  .../scopes again -> source id -> destination id, by name after --map-data
//! every key then goes out as LEB128(destination id) | key (COLLECTIONS negotiated)
//! ```
//!
//! A run whose source has no collections but the default one, and no `--map-data`, writes
//! through COLLECTIONS too when the source knows collections (it published a manifest: a
//! DCP stream of a 7.x cluster) and the destination answers its manifest, so that a
//! collection created at the source during the run reaches the destination
//! ([`CollectionMap::extend`], with its first item or after its system event); otherwise
//! (a source or a destination without collections) keys go as they are, without COLLECTIONS. A mapping to another bucket than the
//! destination's, or to a collection the destination refuses to create, fails the run before
//! anything is written, naming it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use pump::{DataRules, Message, RunCollections};
use pump_client::{Auth, TlsClient};
use pump_protocol::collections::{put_leb128, CollectionPath, Manifest, DEFAULT_NAME};

/// How to reach the destination's REST API.
#[derive(Debug, Clone)]
pub struct Rest {
    pub spec: String,
    /// `http://host:port` (or https).
    pub base: String,
    pub bucket: String,
    pub auth: Option<Auth>,
    pub tls: Option<TlsClient>,
    pub timeout: Duration,
}

impl Rest {
    fn err(&self, e: impl std::fmt::Display) -> String {
        e.to_string()
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder().timeout(self.timeout);
        if let Some(t) = &self.tls {
            b = b.use_preconfigured_tls((*t.config()).clone());
        }
        b.build()
            .map_err(|e| self.err(format!("cannot build an HTTP client: {e}")))
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/pools/default/buckets/{}/scopes{path}",
            self.base.trim_end_matches('/'),
            self.bucket
        )
    }

    /// The destination bucket's manifest.
    pub async fn manifest(&self) -> Result<Manifest, String> {
        let url = self.url("");
        let mut req = self.client()?.get(&url);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.user, Some(&a.password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.err(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(self.err(format!(
                "{url}: HTTP {status}: {} (is bucket {:?} there, and does the cluster do collections?)",
                String::from_utf8_lossy(&body[..body.len().min(200)]),
                self.bucket
            )));
        }
        Manifest::from_json(&body).map_err(|e| self.err(format!("{url}: {e}")))
    }

    /// POSTs `name=...` to `path`; an "already exists" answer is fine (another writer made it).
    async fn create(&self, path: &str, name: &str, what: &str) -> Result<(), String> {
        let url = self.url(path);
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", name)
            .finish();
        let mut req = self
            .client()?
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.user, Some(&a.password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(format!("cannot create {what}: {url}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() || text.contains("already exists") {
            return Ok(());
        }
        Err(self.err(format!(
            "cannot create {what} on the destination: HTTP {status}: {}",
            &text[..text.len().min(300)]
        )))
    }
}

/// Source collection id -> destination collection id.
#[derive(Debug, Clone, Default)]
pub struct CollectionMap {
    ids: HashMap<u32, u32>,
}

impl CollectionMap {
    /// True when the run writes through collections (COLLECTIONS negotiated, keys prefixed).
    pub fn needed(run: &RunCollections, rules: &DataRules) -> bool {
        run.has_collections() || !rules.map.is_empty()
    }

    /// Creates on the destination every scope and collection the source's collections land
    /// in (after `rules`), then maps each source id to the destination's. `source_bucket` is
    /// what the rules' source paths name.
    pub async fn prepare(
        rest: &Rest,
        run: &RunCollections,
        rules: &DataRules,
        source_bucket: &str,
    ) -> Result<CollectionMap, String> {
        let ids = match run.manifest() {
            Some(m) => m.collections().map(|(id, _)| id).collect::<Vec<u32>>(),
            None => vec![0],
        };
        CollectionMap::default()
            .extend(rest, run, rules, source_bucket, &ids)
            .await
    }

    /// This map and source collections `ids` (those it lacks, that the source named and
    /// `rules` keep): created on the destination when it lacks them, then mapped. A collection
    /// created at the source during the run comes this way, with its first item or with the
    /// first batch after its system event.
    pub async fn extend(
        &self,
        rest: &Rest,
        run: &RunCollections,
        rules: &DataRules,
        source_bucket: &str,
        ids: &[u32],
    ) -> Result<CollectionMap, String> {
        let mut wanted: Vec<(u32, CollectionPath)> = Vec::new();
        for &id in ids {
            if self.ids.contains_key(&id) {
                continue;
            }
            let Some(path) = run.path(id) else { continue };
            if !rules.keeps(source_bucket, &path) {
                continue;
            }
            let (bucket, target) = rules.target(source_bucket, &path);
            if bucket != rest.bucket {
                return Err(rest.err(format!(
                    "--map-data maps {source_bucket}.{}.{} to bucket {bucket:?}, but the destination bucket is {:?} (-B)",
                    path.scope, path.collection, rest.bucket
                )));
            }
            wanted.push((id, target));
        }
        if wanted.is_empty() {
            return Ok(self.clone());
        }
        let mut have = rest.manifest().await?;
        for (_, t) in &wanted {
            if have.id_of(&t.scope, &t.collection).is_some() {
                continue;
            }
            if t.collection == DEFAULT_NAME && t.scope == DEFAULT_NAME {
                return Err(rest.err(
                    "the destination bucket has no _default._default collection (it was dropped): it cannot be created again",
                ));
            }
            if have.scope(&t.scope).is_none() {
                rest.create("", &t.scope, &format!("scope {}", t.scope))
                    .await?;
            }
            rest.create(
                &format!("/{}/collections", enc(&t.scope)),
                &t.collection,
                &format!("collection {}.{}", t.scope, t.collection),
            )
            .await?;
            have = rest.manifest().await?;
        }
        let mut map = self.clone();
        for (id, t) in wanted {
            let to = have.id_of(&t.scope, &t.collection).ok_or_else(|| {
                rest.err(format!(
                    "collection {}.{} was created but the destination's manifest does not list it",
                    t.scope, t.collection
                ))
            })?;
            map.ids.insert(id, to);
        }
        Ok(map)
    }

    /// The destination id of source collection `id`; None for one not mapped (left out by
    /// the rules, or created at the source after the run started).
    pub fn target(&self, id: u32) -> Option<u32> {
        self.ids.get(&id).copied()
    }

    /// The key as a COLLECTIONS connection sends it: the destination id, then the key.
    pub fn key(&self, m: &Message) -> Option<Bytes> {
        let mut k = Vec::with_capacity(5 + m.key.len());
        self.key_into(m, &mut k)?;
        Some(Bytes::from(k))
    }

    /// Writes [`CollectionMap::key`] into `out` (cleared first), without allocating once it
    /// has grown; None for a message whose collection is not mapped.
    pub fn key_into(&self, m: &Message, out: &mut Vec<u8>) -> Option<()> {
        let to = self.target(m.collection)?;
        out.clear();
        put_leb128(out, to);
        out.put_slice(&m.key);
        Some(())
    }
}

/// A path segment, percent-encoded.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
