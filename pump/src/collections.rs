//! The source's collections, shared by the run: its manifest once, then what changed.
//!
//! ```text
//! source                                   RunCollections                 sink
//!  | publish(manifest) before its first batch --> manifest (the newest uid wins)
//!  | changed(vb, seqno, event) on a DCP system event --> manifest updated, event kept
//!  |                                          path(id): every id ever seen --> by name
//! ```
//!
//! Each [`crate::Message`] carries its collection id (`collection`, 0 for the default
//! collection); a sink maps the id to a name through [`RunCollections::path`], since ids
//! differ between clusters. A source without collections (gen, memcached, TAP, an old backup)
//! publishes nothing: every message is of the default collection. The source publishes
//! before it sends the batch that uses an id, so a sink that looks an id up when the batch
//! arrives finds it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pump_protocol::collections::{CollectionPath, EventKind, Manifest, SystemEvent};

/// A change to the source's collections during the run, where the stream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionChange {
    pub vbucket: u16,
    pub seqno: u64,
    pub event: SystemEvent,
}

#[derive(Debug, Default)]
struct State {
    manifest: Option<Arc<Manifest>>,
    /// Every collection id seen in this run, dropped ones included.
    paths: HashMap<u32, CollectionPath>,
    /// Each change once (the first vbucket to carry it).
    changes: Vec<CollectionChange>,
}

/// The run's view of the source's collections (see the module docs).
#[derive(Debug, Default)]
pub struct RunCollections {
    state: RwLock<State>,
}

impl RunCollections {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The source's manifest (each connection may publish; an older uid does not replace a
    /// newer one).
    pub fn publish(&self, manifest: Manifest) {
        let mut s = self.write();
        for (id, path) in manifest.collections() {
            s.paths.insert(id, path);
        }
        if s.manifest.as_ref().is_none_or(|m| m.uid <= manifest.uid) {
            s.manifest = Some(Arc::new(manifest));
        }
    }

    /// A system event a stream carried: applied to the manifest once (each vbucket carries
    /// every change). Returns false for an event already applied.
    pub fn changed(&self, vbucket: u16, seqno: u64, event: SystemEvent) -> bool {
        let mut s = self.write();
        if s.changes.iter().any(|c| c.event == event) {
            return false;
        }
        let mut m = s.manifest.as_deref().cloned().unwrap_or_default();
        if event.kind == EventKind::CollectionCreated {
            if let (Some(id), Some(name)) = (event.collection, &event.name) {
                let scope = m
                    .scope_by_id(event.scope)
                    .map(|sc| sc.name.clone())
                    .unwrap_or_else(|| format!("scope-{:x}", event.scope));
                s.paths.insert(id, CollectionPath::new(&scope, name));
            }
        }
        m.apply(&event);
        s.manifest = Some(Arc::new(m));
        s.changes.push(CollectionChange {
            vbucket,
            seqno,
            event,
        });
        true
    }

    /// The source's manifest as it stands, or None when the source has no collections.
    pub fn manifest(&self) -> Option<Arc<Manifest>> {
        self.read().manifest.clone()
    }

    /// True when the source published a manifest holding more than the default collection,
    /// or changed it during the run.
    pub fn has_collections(&self) -> bool {
        let s = self.read();
        !s.changes.is_empty() || s.manifest.as_ref().is_some_and(|m| !m.is_default_only())
    }

    /// The path of collection `id`: the default collection's for 0, any id seen in this run
    /// otherwise (a dropped one too), None for an id the source never named.
    pub fn path(&self, id: u32) -> Option<CollectionPath> {
        if id == 0 {
            return Some(CollectionPath::default_collection());
        }
        self.read().paths.get(&id).cloned()
    }

    /// True when [`RunCollections::path`] knows collection `id` (without building its path:
    /// a stream asks it for every item).
    pub fn knows(&self, id: u32) -> bool {
        id == 0 || self.read().paths.contains_key(&id)
    }

    /// Every collection id seen in this run, in order.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.read().paths.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Names collection `id` (a backup's record of a collection dropped since).
    pub fn remember(&self, id: u32, path: CollectionPath) {
        self.write().paths.entry(id).or_insert(path);
    }

    /// True when collection `id` is in the manifest as it stands (not dropped); without a
    /// manifest, the default collection only.
    pub fn is_live(&self, id: u32) -> bool {
        match &self.read().manifest {
            None => id == 0,
            Some(m) => m.collection(id).is_some(),
        }
    }

    /// The changes seen during the run, in the order they arrived.
    pub fn changes(&self) -> Vec<CollectionChange> {
        self.read().changes.clone()
    }
}

/// `bucket[.scope[.collection]]`, as cbbackupmgr's `--include-data`, `--exclude-data` and
/// `--map-data` write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath {
    pub bucket: String,
    pub scope: Option<String>,
    pub collection: Option<String>,
}

impl DataPath {
    /// Parses `bucket[.scope[.collection]]`; an empty part or a fourth is an error.
    pub fn parse(s: &str) -> Result<DataPath, String> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!("{s:?} is not bucket[.scope[.collection]]"));
        }
        Ok(DataPath {
            bucket: parts[0].to_string(),
            scope: parts.get(1).map(|p| p.to_string()),
            collection: parts.get(2).map(|p| p.to_string()),
        })
    }

    /// How many parts it names (1 bucket, 2 scope, 3 collection).
    pub fn depth(&self) -> usize {
        1 + usize::from(self.scope.is_some()) + usize::from(self.collection.is_some())
    }

    /// True when it covers collection `path` of `bucket`.
    pub fn covers(&self, bucket: &str, path: &CollectionPath) -> bool {
        self.bucket == bucket
            && self.scope.as_ref().is_none_or(|s| *s == path.scope)
            && self
                .collection
                .as_ref()
                .is_none_or(|c| *c == path.collection)
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.bucket)?;
        for p in [&self.scope, &self.collection].into_iter().flatten() {
            write!(f, ".{p}")?;
        }
        Ok(())
    }
}

/// Which collections a run moves and where they land: `--include-data`, `--exclude-data`
/// (one or the other) and `--map-data` (the most specific mapping of a collection wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataRules {
    pub include: Vec<DataPath>,
    pub exclude: Vec<DataPath>,
    pub map: Vec<(DataPath, DataPath)>,
}

impl DataRules {
    /// Reads the three options' comma-separated lists. Refused: include and exclude together,
    /// a malformed path, a mapping that is not `SRC=DST` of the same depth, and two mappings
    /// of one source.
    pub fn parse(
        include: Option<&str>,
        exclude: Option<&str>,
        map: Option<&str>,
    ) -> Result<DataRules, String> {
        if include.is_some() && exclude.is_some() {
            return Err("--include-data and --exclude-data cannot be used together".into());
        }
        let list = |s: Option<&str>, what: &str| -> Result<Vec<DataPath>, String> {
            s.map(|s| {
                s.split(',')
                    .map(|p| DataPath::parse(p.trim()).map_err(|e| format!("{what}: {e}")))
                    .collect()
            })
            .unwrap_or(Ok(Vec::new()))
        };
        let mut rules = DataRules {
            include: list(include, "--include-data")?,
            exclude: list(exclude, "--exclude-data")?,
            map: Vec::new(),
        };
        for m in map.into_iter().flat_map(|m| m.split(',')) {
            let (src, dst) = m
                .split_once('=')
                .ok_or_else(|| format!("--map-data: {m:?} is not SOURCE=TARGET"))?;
            let (src, dst) = (
                DataPath::parse(src.trim()).map_err(|e| format!("--map-data: {e}"))?,
                DataPath::parse(dst.trim()).map_err(|e| format!("--map-data: {e}"))?,
            );
            if src.depth() != dst.depth() {
                return Err(format!(
                    "--map-data: {src}={dst} maps a {} to a {}: map a bucket to a bucket, a scope to a scope, a collection to a collection",
                    ["bucket", "scope", "collection"][src.depth() - 1],
                    ["bucket", "scope", "collection"][dst.depth() - 1]
                ));
            }
            if let Some((_, other)) = rules.map.iter().find(|(s, _)| *s == src) {
                return Err(format!(
                    "--map-data: {src} is mapped twice (to {other} and to {dst})"
                ));
            }
            rules.map.push((src, dst));
        }
        Ok(rules)
    }

    /// True when no option was given.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.map.is_empty()
    }

    /// True when collection `path` of `bucket` is moved.
    pub fn keeps(&self, bucket: &str, path: &CollectionPath) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.covers(bucket, path)))
            && !self.exclude.iter().any(|p| p.covers(bucket, path))
    }

    /// Where collection `path` of `bucket` lands: its bucket and path after the most specific
    /// mapping that covers it (unchanged without one).
    pub fn target(&self, bucket: &str, path: &CollectionPath) -> (String, CollectionPath) {
        let best = self
            .map
            .iter()
            .filter(|(s, _)| s.covers(bucket, path))
            .max_by_key(|(s, _)| s.depth());
        match best {
            None => (bucket.to_string(), path.clone()),
            Some((_, d)) => (
                d.bucket.clone(),
                CollectionPath::new(
                    d.scope.as_deref().unwrap_or(&path.scope),
                    d.collection.as_deref().unwrap_or(&path.collection),
                ),
            ),
        }
    }

    /// The collections `--include-data` names of `bucket`, as a DCP stream filter asks for them
    /// (a scope: `collection` empty); None when every collection is streamed.
    pub fn stream_paths(&self, bucket: &str) -> Option<Vec<CollectionPath>> {
        if self.include.is_empty()
            || self
                .include
                .iter()
                .any(|p| p.bucket == bucket && p.scope.is_none())
        {
            return None;
        }
        Some(
            self.include
                .iter()
                .filter(|p| p.bucket == bucket)
                .map(|p| CollectionPath {
                    scope: p.scope.clone().unwrap_or_default(),
                    collection: p.collection.clone().unwrap_or_default(),
                })
                .collect(),
        )
    }
}

/// The channel's selection by collection: the run's collections and the rules.
#[derive(Debug, Clone)]
pub struct CollectionSelect {
    pub run: Arc<RunCollections>,
    pub rules: Arc<DataRules>,
    /// The source bucket the rules' paths are matched against.
    pub bucket: String,
}

impl CollectionSelect {
    /// True when collection `id` is moved (an id the source never named is kept: the sink
    /// names it in its error).
    pub fn keeps(&self, id: u32) -> bool {
        match self.run.path(id) {
            Some(p) => self.rules.keeps(&self.bucket, &p),
            None => true,
        }
    }
}

/// How a text sink (`csv:`, `stdout:`) names each message's collection: the source's scope
/// and collection names, after `--map-data`.
#[derive(Debug, Clone, Default)]
pub struct CollectionNames {
    pub run: Arc<RunCollections>,
    pub rules: Arc<DataRules>,
    /// The source bucket the rules' paths are matched against.
    pub bucket: String,
}

impl CollectionNames {
    /// Where collection `id` is shown: its path after `--map-data`; None for an id the source
    /// never named.
    pub fn path(&self, id: u32) -> Option<CollectionPath> {
        let path = self.run.path(id)?;
        if self.rules.map.is_empty() {
            return Some(path);
        }
        Some(self.rules.target(&self.bucket, &path).1)
    }

    /// True when some message may be shown outside the default collection: the source holds
    /// other collections, or `--map-data` may move the default one.
    pub fn beyond_default(&self) -> bool {
        self.run.has_collections() || self.path(0).is_some_and(|p| !p.is_default())
    }
}

/// For a sink that holds the default collection only (memcached, TAP): the source collection
/// ids it may take (those `rules` map to `_default._default`; the default collection itself
/// unless mapped away), or an error naming the first collection it would have to refuse and
/// how to leave it out or map it. Called before anything is written.
pub fn default_only(
    run: &RunCollections,
    rules: &DataRules,
    bucket: &str,
    kind: &str,
) -> Result<std::collections::HashSet<u32>, String> {
    let mut allowed = std::collections::HashSet::new();
    let mut refused = Vec::new();
    let ids: Vec<u32> = match run.manifest() {
        Some(m) => m.collections().map(|(id, _)| id).collect(),
        None => vec![0],
    };
    for id in ids {
        let Some(path) = run.path(id) else { continue };
        if !rules.keeps(bucket, &path) {
            continue;
        }
        if rules.target(bucket, &path).1.is_default() {
            allowed.insert(id);
        } else {
            refused.push(path);
        }
    }
    match refused.first() {
        None => Ok(allowed),
        Some(p) => Err(format!(
            "the source holds collection {}.{}{}: {kind} holds the default collection only; leave it out (--exclude-data {bucket}.{}) or map it (--map-data {bucket}.{}.{}={bucket}._default._default)",
            p.scope,
            p.collection,
            match refused.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            },
            p.scope,
            p.scope,
            p.collection
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump_protocol::collections::{Collection, Scope};

    fn manifest(uid: u64) -> Manifest {
        let mut m = Manifest {
            uid,
            ..Manifest::default()
        };
        m.scopes.push(Scope {
            name: "s1".into(),
            uid: 8,
            collections: vec![Collection {
                name: "c1".into(),
                uid: 9,
                max_ttl: None,
            }],
        });
        m
    }

    #[test]
    fn ids_keep_their_names_after_a_drop_and_an_older_manifest_does_not_win() {
        let r = RunCollections::default();
        assert!(r.manifest().is_none() && !r.has_collections());
        assert_eq!(r.path(0), Some(CollectionPath::default_collection()));
        r.publish(manifest(3));
        r.publish(Manifest::default());
        assert_eq!(r.manifest().unwrap().uid, 3);
        assert!(r.has_collections() && r.is_live(9));
        let drop = SystemEvent {
            kind: EventKind::CollectionDropped,
            manifest_uid: 4,
            scope: 8,
            collection: Some(9),
            name: None,
            max_ttl: None,
        };
        assert!(r.changed(5, 100, drop.clone()));
        // The same change from another vbucket: applied once.
        assert!(!r.changed(6, 90, drop));
        assert_eq!(r.changes().len(), 1);
        assert!(!r.is_live(9));
        assert_eq!(r.path(9), Some(CollectionPath::new("s1", "c1")));
        let created = SystemEvent {
            kind: EventKind::CollectionCreated,
            manifest_uid: 5,
            scope: 8,
            collection: Some(10),
            name: Some("c2".into()),
            max_ttl: None,
        };
        r.changed(1, 101, created);
        assert_eq!(r.path(10), Some(CollectionPath::new("s1", "c2")));
        assert_eq!(r.manifest().unwrap().id_of("s1", "c2"), Some(10));
    }

    #[test]
    fn data_rules_keep_and_map_as_cbbackupmgr_words_them() {
        let p = |s: &str, c: &str| CollectionPath::new(s, c);
        let r = DataRules::parse(
            Some("default.s1"),
            None,
            Some("default.s1.c1=default.s2.c9,default.s1=default.s3"),
        )
        .unwrap();
        assert!(r.keeps("default", &p("s1", "c2")));
        assert!(!r.keeps("default", &p("_default", "_default")));
        // The most specific mapping wins.
        assert_eq!(
            r.target("default", &p("s1", "c1")),
            ("default".into(), p("s2", "c9"))
        );
        assert_eq!(
            r.target("default", &p("s1", "c2")),
            ("default".into(), p("s3", "c2"))
        );
        assert_eq!(
            r.target("default", &p("s4", "c")),
            ("default".into(), p("s4", "c"))
        );
        assert_eq!(r.stream_paths("default"), Some(vec![p("s1", "")]));
        let x = DataRules::parse(None, Some("default.s1.c1"), Some("default=other")).unwrap();
        assert!(!x.keeps("default", &p("s1", "c1")) && x.keeps("default", &p("s1", "c2")));
        assert_eq!(x.target("default", &p("s1", "c2")).0, "other");
        assert_eq!(x.stream_paths("default"), None);
        for (i, e, m, why) in [
            (Some("a"), Some("b"), None, "together"),
            (None, None, Some("a.s=b.s,a.s=c.s"), "mapped twice"),
            (None, None, Some("a.s=b"), "a scope to a bucket"),
            (None, None, Some("a.s"), "SOURCE=TARGET"),
            (Some("a..c"), None, None, "bucket[.scope[.collection]]"),
            (Some("a.b.c.d"), None, None, "bucket[.scope[.collection]]"),
        ] {
            let err = DataRules::parse(i, e, m).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
