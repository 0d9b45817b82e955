//! Collections: the collection id in front of a key, the bucket's manifest, DCP system events
//! and the stream filter (kv_engine's docs/Collections.md and docs/dcp/.../system_event.md,
//! stream-request-value.md).
//!
//! ```text
//! key on a COLLECTIONS connection:  unsigned LEB128 collection id (1..=5 bytes, canonical,
//!                                   a stop byte within 5) | the document key
//!     0x00 -> 0x00    0x80 -> 0x80 0x01    0xFFFFFFFF -> 0xFF 0xFF 0xFF 0xFF 0x0F
//! manifest (JSON):  {"uid": "<hex>", "scopes": [{"name", "uid": "<hex>",
//!                    "collections": [{"name", "uid": "<hex>", "maxTTL": n}]}]}
//!                   ids 1..=7 are reserved; 0 is the _default scope and collection
//! DCP_SYSTEM_EVENT (0x5f) extras 13: u64 by_seqno | u32 event | u8 version; key; value
//!     event 0 collection created  key: name  value: u64 manifest uid | u32 scope id
//!                                 | u32 collection id [| u32 maxTTL (version 1)]
//!     event 1 collection dropped  no key     value: u64 manifest uid | u32 scope id | u32 collection id
//!     event 3 scope created       key: name  value: u64 manifest uid | u32 scope id
//!     event 4 scope dropped       no key     value: u64 manifest uid | u32 scope id
//!     (the value layout is kv_engine's CreateEventDcpData & co: scope before collection; the
//!      worked example in system_event.md shows them the other way round, the code wins)
//! STREAM_REQ value (JSON):  {"collections": ["0", "8a"]} | {"scope": "9"}, and "uid"
//! GET_COLLECTION_ID (0xbb)  value: "scope.collection" (either may be empty: _default)
//!                           -> extras 12: u64 manifest uid | u32 collection id
//! UNKNOWN_COLLECTION (0x88) value: {"manifest_uid": "<hex>"}
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Map, Value};

use crate::error::ProtocolError;

/// The id of the `_default` collection (and of the `_default` scope).
pub const DEFAULT_ID: u32 = 0;
/// The name of the default scope and of the default collection.
pub const DEFAULT_NAME: &str = "_default";
/// Ids below this one are kv_engine's own (0 is the default; 1 holds system events).
pub const FIRST_USER_ID: u32 = 8;
/// Longest LEB128 collection id kv_engine accepts.
pub const MAX_LEB128_LEN: usize = 5;
/// Longest scope or collection name.
pub const MAX_NAME_LEN: usize = 251;

/// Appends `id` in unsigned LEB128 (canonical: the fewest bytes).
pub fn put_leb128(out: &mut impl BufMut, mut id: u32) {
    loop {
        let byte = (id & 0x7f) as u8;
        id >>= 7;
        if id == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// How many bytes `id` takes in LEB128.
pub fn leb128_len(id: u32) -> usize {
    match id {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Reads the LEB128 collection id at the start of `key`: the id and how many bytes it took.
/// Fails when the prefix runs past the key, takes more than five bytes, is not canonical, or
/// does not fit 32 bits.
pub fn read_leb128(key: &[u8]) -> Result<(u32, usize), ProtocolError> {
    let mut id: u64 = 0;
    for (i, &b) in key.iter().take(MAX_LEB128_LEN).enumerate() {
        id |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = i + 1;
            if id > u64::from(u32::MAX) {
                return Err(bad_prefix(key, "its collection id does not fit 32 bits"));
            }
            if len > 1 && b == 0 {
                return Err(bad_prefix(
                    key,
                    "its collection id is not in canonical LEB128",
                ));
            }
            return Ok((id as u32, len));
        }
    }
    if key.len() < MAX_LEB128_LEN {
        Err(bad_prefix(
            key,
            "its LEB128 collection id runs past the end of the key",
        ))
    } else {
        Err(bad_prefix(
            key,
            "its LEB128 collection id has no stop byte within 5 bytes",
        ))
    }
}

fn bad_prefix(key: &[u8], why: &str) -> ProtocolError {
    let shown: Vec<String> = key.iter().take(8).map(|b| format!("{b:02x}")).collect();
    ProtocolError::malformed(
        "collection-prefixed key",
        format!("key of {} bytes [{}]: {why}", key.len(), shown.join(" ")),
    )
}

/// Splits a key of a COLLECTIONS connection into its collection id and the document key (a
/// slice of the same buffer). The document key must not be empty.
pub fn split_key(key: &Bytes) -> Result<(u32, Bytes), ProtocolError> {
    let (id, n) = read_leb128(key)?;
    if n == key.len() {
        return Err(bad_prefix(key, "no document key follows the collection id"));
    }
    Ok((id, key.slice(n..)))
}

/// The key as a COLLECTIONS connection carries it: `id` in LEB128, then `key`.
pub fn prefixed_key(id: u32, key: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(leb128_len(id) + key.len());
    put_leb128(&mut b, id);
    b.put_slice(key);
    b.freeze()
}

/// One collection of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub name: String,
    pub uid: u32,
    /// Seconds; None: the bucket's (none here).
    pub max_ttl: Option<u32>,
}

/// One scope of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub uid: u32,
    pub collections: Vec<Collection>,
}

/// A bucket's collections manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub uid: u64,
    pub scopes: Vec<Scope>,
}

impl Default for Manifest {
    /// The manifest of a bucket that never had a collection: `_default._default` only.
    fn default() -> Manifest {
        Manifest {
            uid: 0,
            scopes: vec![Scope {
                name: DEFAULT_NAME.into(),
                uid: DEFAULT_ID,
                collections: vec![Collection {
                    name: DEFAULT_NAME.into(),
                    uid: DEFAULT_ID,
                    max_ttl: None,
                }],
            }],
        }
    }
}

/// Where a collection sits: its scope's and its own name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionPath {
    pub scope: String,
    pub collection: String,
}

impl CollectionPath {
    /// `scope.collection`.
    pub fn new(scope: &str, collection: &str) -> CollectionPath {
        CollectionPath {
            scope: scope.into(),
            collection: collection.into(),
        }
    }

    /// `_default._default`.
    pub fn default_collection() -> CollectionPath {
        CollectionPath::new(DEFAULT_NAME, DEFAULT_NAME)
    }

    /// True for `_default._default`.
    pub fn is_default(&self) -> bool {
        self.scope == DEFAULT_NAME && self.collection == DEFAULT_NAME
    }
}

impl std::fmt::Display for CollectionPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.scope, self.collection)
    }
}

/// Why a scope or collection name is refused, if it is (kv_engine's rule: 1 to 251 of
/// `A-Z a-z 0-9 _ - %`, not starting with `_` or `%` unless it is `_default`; with `system`,
/// names starting with `_` are a server's own, as `_system._mobile` of Server 7.6, and pass).
pub fn name_error(name: &str, system: bool) -> Option<String> {
    if name == DEFAULT_NAME {
        return None;
    }
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some(format!(
            "name {name:?} must be 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '%')))
    {
        return Some(format!(
            "name {name:?} holds {c:?}: only A-Z, a-z, 0-9, _, - and % are allowed"
        ));
    }
    if name.starts_with('%') || (name.starts_with('_') && !system) {
        return Some(format!("name {name:?} must not start with _ or %"));
    }
    None
}

fn hex_u64(v: &Value, what: &str) -> Result<u64, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{what} is not a string of hex digits"))?;
    if s.is_empty() || s.len() > 16 {
        return Err(format!("{what} {s:?} is not a hex number"));
    }
    u64::from_str_radix(s, 16).map_err(|_| format!("{what} {s:?} is not a hex number"))
}

fn hex_u32(v: &Value, what: &str) -> Result<u32, String> {
    let n = hex_u64(v, what)?;
    u32::try_from(n).map_err(|_| format!("{what} {n:x} does not fit 32 bits"))
}

fn field<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Value, String> {
    o.get(key).ok_or_else(|| format!("{what} has no {key:?}"))
}

impl Manifest {
    /// Parses a manifest in Couchbase's JSON form and checks it: hex uids, valid and unique
    /// names, unique ids, ids 1 to 7 unused, a `_default` scope. The error says what is wrong.
    pub fn from_json(text: &[u8]) -> Result<Manifest, ProtocolError> {
        let bad = |reason: String| ProtocolError::malformed("collections manifest", reason);
        let v: Value = serde_json::from_slice(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        Manifest::from_value(&v).map_err(bad)
    }

    /// As [`Manifest::from_json`], from parsed JSON.
    pub fn from_value(v: &Value) -> Result<Manifest, String> {
        let o = v.as_object().ok_or("the manifest is not a JSON object")?;
        let uid = hex_u64(field(o, "uid", "the manifest")?, "the manifest's uid")?;
        let scopes_json = field(o, "scopes", "the manifest")?
            .as_array()
            .ok_or("\"scopes\" is not an array")?;
        let mut scopes = Vec::with_capacity(scopes_json.len());
        for s in scopes_json {
            let so = s.as_object().ok_or("a scope is not a JSON object")?;
            let name = field(so, "name", "a scope")?
                .as_str()
                .ok_or("a scope's name is not a string")?
                .to_string();
            let what = format!("scope {name:?}");
            let uid = hex_u32(field(so, "uid", &what)?, &format!("the uid of {what}"))?;
            let mut collections = Vec::new();
            if let Some(cs) = so.get("collections") {
                for c in cs
                    .as_array()
                    .ok_or_else(|| format!("the collections of {what} are not an array"))?
                {
                    let co = c
                        .as_object()
                        .ok_or_else(|| format!("a collection of {what} is not a JSON object"))?;
                    let cname = field(co, "name", &format!("a collection of {what}"))?
                        .as_str()
                        .ok_or_else(|| format!("a collection name of {what} is not a string"))?
                        .to_string();
                    let cwhat = format!("collection {name}.{cname}");
                    let cuid = hex_u32(field(co, "uid", &cwhat)?, &format!("the uid of {cwhat}"))?;
                    let max_ttl = match co.get("maxTTL").or_else(|| co.get("max_ttl")) {
                        None => None,
                        Some(t) => {
                            let n = t
                                .as_i64()
                                .ok_or_else(|| format!("the maxTTL of {cwhat} is not a number"))?;
                            // -1 (Server 7.6): never expire, whatever the bucket says.
                            if n <= 0 {
                                None
                            } else {
                                Some(u32::try_from(n).map_err(|_| {
                                    format!("the maxTTL of {cwhat} ({n}) is out of range")
                                })?)
                            }
                        }
                    };
                    collections.push(Collection {
                        name: cname,
                        uid: cuid,
                        max_ttl,
                    });
                }
            }
            scopes.push(Scope {
                name,
                uid,
                collections,
            });
        }
        let m = Manifest { uid, scopes };
        m.check()?;
        Ok(m)
    }

    /// Checks names and ids (see [`Manifest::from_json`]).
    pub fn check(&self) -> Result<(), String> {
        let mut scope_ids = std::collections::HashSet::new();
        let mut scope_names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for s in &self.scopes {
            if let Some(e) = name_error(&s.name, true) {
                return Err(format!("scope {e}"));
            }
            if !scope_names.insert(&s.name) {
                return Err(format!("scope {:?} appears twice", s.name));
            }
            if !scope_ids.insert(s.uid) {
                return Err(format!("scope id {:x} appears twice", s.uid));
            }
            if (1..FIRST_USER_ID).contains(&s.uid) || (s.uid == 0) != (s.name == DEFAULT_NAME) {
                return Err(format!(
                    "scope {:?} has id {:x}: 0 is _default's, 1 to 7 are reserved",
                    s.name, s.uid
                ));
            }
            let mut names = std::collections::HashSet::new();
            for c in &s.collections {
                if let Some(e) = name_error(&c.name, true) {
                    return Err(format!("collection {e} (in scope {:?})", s.name));
                }
                if !names.insert(&c.name) {
                    return Err(format!("collection {}.{} appears twice", s.name, c.name));
                }
                if !ids.insert(c.uid) {
                    return Err(format!("collection id {:x} appears twice", c.uid));
                }
                let default = c.uid == DEFAULT_ID;
                if (1..FIRST_USER_ID).contains(&c.uid)
                    || default != (c.name == DEFAULT_NAME && s.uid == DEFAULT_ID)
                {
                    return Err(format!(
                        "collection {}.{} has id {:x}: 0 is _default._default's, 1 to 7 are reserved",
                        s.name, c.name, c.uid
                    ));
                }
            }
        }
        if !scope_ids.contains(&DEFAULT_ID) {
            return Err("the manifest has no _default scope".into());
        }
        Ok(())
    }

    /// The manifest in Couchbase's JSON form (what GET_COLLECTIONS_MANIFEST and
    /// `GET /pools/default/buckets/B/scopes` answer).
    pub fn to_json(&self) -> Value {
        json!({
            "uid": format!("{:x}", self.uid),
            "scopes": self.scopes.iter().map(|s| json!({
                "name": s.name,
                "uid": format!("{:x}", s.uid),
                "collections": s.collections.iter().map(|c| {
                    let mut o = json!({"name": c.name, "uid": format!("{:x}", c.uid)});
                    if let Some(t) = c.max_ttl {
                        o["maxTTL"] = json!(t);
                    }
                    o
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The scope and collection of collection id `id`.
    pub fn collection(&self, id: u32) -> Option<(&Scope, &Collection)> {
        self.scopes
            .iter()
            .find_map(|s| s.collections.iter().find(|c| c.uid == id).map(|c| (s, c)))
    }

    /// The path of collection `id`.
    pub fn path(&self, id: u32) -> Option<CollectionPath> {
        self.collection(id)
            .map(|(s, c)| CollectionPath::new(&s.name, &c.name))
    }

    /// The id of `scope.collection`.
    pub fn id_of(&self, scope: &str, collection: &str) -> Option<u32> {
        self.scope(scope)?
            .collections
            .iter()
            .find(|c| c.name == collection)
            .map(|c| c.uid)
    }

    /// The scope named `name`.
    pub fn scope(&self, name: &str) -> Option<&Scope> {
        self.scopes.iter().find(|s| s.name == name)
    }

    /// The scope of id `id`.
    pub fn scope_by_id(&self, id: u32) -> Option<&Scope> {
        self.scopes.iter().find(|s| s.uid == id)
    }

    /// Every collection: its id and path, in manifest order.
    pub fn collections(&self) -> impl Iterator<Item = (u32, CollectionPath)> + '_ {
        self.scopes.iter().flat_map(|s| {
            s.collections
                .iter()
                .map(move |c| (c.uid, CollectionPath::new(&s.name, &c.name)))
        })
    }

    /// True when the bucket holds no collection but `_default._default` (and no scope but
    /// `_default`): what a bucket without collections looks like.
    pub fn is_default_only(&self) -> bool {
        self.scopes.len() == 1
            && self.scopes[0].uid == DEFAULT_ID
            && self.scopes[0].collections.len() == 1
            && self.scopes[0].collections[0].uid == DEFAULT_ID
    }

    /// The next unused id for a new scope or collection (one past the highest seen, at least 8).
    pub fn next_id(&self) -> u32 {
        self.scopes
            .iter()
            .flat_map(|s| std::iter::once(s.uid).chain(s.collections.iter().map(|c| c.uid)))
            .max()
            .map_or(FIRST_USER_ID, |m| (m + 1).max(FIRST_USER_ID))
    }

    /// Applies a system event: adds or removes the scope or collection it names.
    pub fn apply(&mut self, e: &SystemEvent) {
        self.uid = self.uid.max(e.manifest_uid);
        match e.kind {
            EventKind::CollectionCreated | EventKind::CollectionModified => {
                let Some(cid) = e.collection else { return };
                for s in &mut self.scopes {
                    s.collections.retain(|c| c.uid != cid);
                }
                let name = e.name.clone().unwrap_or_default();
                match self.scopes.iter_mut().find(|s| s.uid == e.scope) {
                    Some(s) => s.collections.push(Collection {
                        name,
                        uid: cid,
                        max_ttl: e.max_ttl,
                    }),
                    None => self.scopes.push(Scope {
                        // The scope's own event came in another vbucket: its name is not here.
                        name: format!("scope-{:x}", e.scope),
                        uid: e.scope,
                        collections: vec![Collection {
                            name,
                            uid: cid,
                            max_ttl: e.max_ttl,
                        }],
                    }),
                }
            }
            EventKind::CollectionDropped => {
                if let Some(cid) = e.collection {
                    for s in &mut self.scopes {
                        s.collections.retain(|c| c.uid != cid);
                    }
                }
            }
            EventKind::ScopeCreated => {
                let name = e.name.clone().unwrap_or_default();
                match self.scopes.iter_mut().find(|s| s.uid == e.scope) {
                    Some(s) => s.name = name,
                    None => self.scopes.push(Scope {
                        name,
                        uid: e.scope,
                        collections: Vec::new(),
                    }),
                }
            }
            EventKind::ScopeDropped => self.scopes.retain(|s| s.uid != e.scope),
        }
    }
}

/// What a DCP system event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A collection begins (created, or flushed).
    CollectionCreated,
    /// A collection ends (dropped).
    CollectionDropped,
    /// A scope was created.
    ScopeCreated,
    /// A scope was dropped.
    ScopeDropped,
    /// A collection's settings changed.
    CollectionModified,
}

impl EventKind {
    /// The wire value (the extras' `event`).
    pub fn value(self) -> u32 {
        match self {
            EventKind::CollectionCreated => 0,
            EventKind::CollectionDropped => 1,
            EventKind::ScopeCreated => 3,
            EventKind::ScopeDropped => 4,
            EventKind::CollectionModified => 5,
        }
    }

    /// From the wire value; None for 2 (reserved) and values not defined.
    pub fn from_u32(v: u32) -> Option<EventKind> {
        Some(match v {
            0 => EventKind::CollectionCreated,
            1 => EventKind::CollectionDropped,
            3 => EventKind::ScopeCreated,
            4 => EventKind::ScopeDropped,
            5 => EventKind::CollectionModified,
            _ => return None,
        })
    }

    /// True for the events of a collection (not of a scope).
    pub fn is_collection(self) -> bool {
        matches!(
            self,
            EventKind::CollectionCreated
                | EventKind::CollectionDropped
                | EventKind::CollectionModified
        )
    }

    /// `collection created`, ...: how messages name it.
    pub fn describe(self) -> &'static str {
        match self {
            EventKind::CollectionCreated => "collection created",
            EventKind::CollectionDropped => "collection dropped",
            EventKind::ScopeCreated => "scope created",
            EventKind::ScopeDropped => "scope dropped",
            EventKind::CollectionModified => "collection modified",
        }
    }
}

/// A DCP system event, decoded (versions 0 and 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemEvent {
    pub kind: EventKind,
    /// The last manifest the vbucket completely processed.
    pub manifest_uid: u64,
    pub scope: u32,
    /// The collection, for collection events.
    pub collection: Option<u32>,
    /// The new scope's or collection's name (creations carry it).
    pub name: Option<String>,
    /// A created collection's maxTTL (version 1).
    pub max_ttl: Option<u32>,
}

impl SystemEvent {
    /// Decodes an event from its type, version, key and value. Fails on an undefined type, a
    /// version this crate does not read (2: FlatBuffers, never asked for), a value of the
    /// wrong length or a name that is not UTF-8.
    pub fn decode(
        event: u32,
        version: u8,
        key: &[u8],
        value: &[u8],
    ) -> Result<SystemEvent, ProtocolError> {
        let bad = |r: String| ProtocolError::malformed("DCP system event", r);
        let kind = EventKind::from_u32(event)
            .ok_or_else(|| bad(format!("event type {event} is not one kv_engine defines")))?;
        if version > 1 {
            return Err(bad(format!(
                "{}: version {version} (FlatBuffers) was not asked for",
                kind.describe()
            )));
        }
        let want = match (kind, version) {
            (EventKind::CollectionCreated | EventKind::CollectionModified, 1) => 20,
            (EventKind::CollectionCreated | EventKind::CollectionModified, _) => 16,
            (EventKind::CollectionDropped, _) => 16,
            (EventKind::ScopeCreated | EventKind::ScopeDropped, _) => 12,
        };
        if value.len() != want {
            return Err(bad(format!(
                "{} (version {version}): value of {} bytes, expected {want}",
                kind.describe(),
                value.len()
            )));
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([value[i], value[i + 1], value[i + 2], value[i + 3]]);
        let mut u = [0u8; 8];
        u.copy_from_slice(&value[..8]);
        let name = match kind {
            EventKind::CollectionCreated
            | EventKind::CollectionModified
            | EventKind::ScopeCreated => {
                let n = std::str::from_utf8(key)
                    .map_err(|_| bad(format!("{}: the name is not UTF-8", kind.describe())))?;
                Some(n.to_string())
            }
            _ => None,
        };
        Ok(SystemEvent {
            kind,
            manifest_uid: u64::from_be_bytes(u),
            scope: u32_at(8),
            collection: kind.is_collection().then(|| u32_at(12)),
            name,
            max_ttl: (want == 20).then(|| u32_at(16)).filter(|t| *t > 0),
        })
    }

    /// The event's version, key and value as DCP carries them (version 1 for a creation with
    /// a maxTTL, 0 otherwise).
    pub fn encode(&self) -> (u8, Bytes, Bytes) {
        let mut v = BytesMut::with_capacity(20);
        v.put_u64(self.manifest_uid);
        v.put_u32(self.scope);
        if self.kind.is_collection() {
            v.put_u32(self.collection.unwrap_or(0));
        }
        let mut version = 0;
        if matches!(
            self.kind,
            EventKind::CollectionCreated | EventKind::CollectionModified
        ) {
            if let Some(t) = self.max_ttl {
                v.put_u32(t);
                version = 1;
            }
        }
        let key = match self.kind {
            EventKind::CollectionDropped | EventKind::ScopeDropped => Bytes::new(),
            _ => Bytes::from(self.name.clone().unwrap_or_default()),
        };
        (version, key, v.freeze())
    }
}

/// What a collection-aware DCP stream is limited to (the STREAM_REQ value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFilter {
    /// Every collection of one scope.
    Scope(u32),
    /// These collections.
    Collections(Vec<u32>),
}

impl StreamFilter {
    /// The STREAM_REQ value: `{"scope": "9"}` or `{"collections": ["0", "8a"]}`, with the
    /// manifest `uid` the client knows when given.
    pub fn to_json(&self, uid: Option<u64>) -> Bytes {
        let mut o = match self {
            StreamFilter::Scope(s) => json!({"scope": format!("{s:x}")}),
            StreamFilter::Collections(cs) => {
                json!({"collections": cs.iter().map(|c| format!("{c:x}")).collect::<Vec<_>>()})
            }
        };
        if let Some(u) = uid {
            o["uid"] = json!(format!("{u:x}"));
        }
        Bytes::from(o.to_string())
    }

    /// Reads a STREAM_REQ value: None for an empty value or one that names neither; an error
    /// for JSON that is not an object, for both keys at once, or for ids that are not hex.
    pub fn from_json(value: &[u8]) -> Result<Option<StreamFilter>, ProtocolError> {
        if value.is_empty() {
            return Ok(None);
        }
        let bad = |r: String| ProtocolError::malformed("stream filter", r);
        let v: Value = serde_json::from_slice(value).map_err(|e| bad(format!("not JSON: {e}")))?;
        let o = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        match (o.get("scope"), o.get("collections")) {
            (Some(_), Some(_)) => Err(bad("both \"scope\" and \"collections\"".into())),
            (Some(s), None) => Ok(Some(StreamFilter::Scope(
                hex_u32(s, "the scope").map_err(bad)?,
            ))),
            (None, Some(cs)) => {
                let ids = cs
                    .as_array()
                    .ok_or_else(|| bad("\"collections\" is not an array".into()))?
                    .iter()
                    .map(|c| hex_u32(c, "a collection id"))
                    .collect::<Result<Vec<u32>, String>>()
                    .map_err(bad)?;
                Ok(Some(StreamFilter::Collections(ids)))
            }
            (None, None) => Ok(None),
        }
    }

    /// True when the stream includes collection `id` of scope `scope`.
    pub fn includes(&self, scope: u32, id: u32) -> bool {
        match self {
            StreamFilter::Scope(s) => *s == scope,
            StreamFilter::Collections(cs) => cs.contains(&id),
        }
    }
}

/// Reads GET_COLLECTION_ID's path: `scope.collection`, an empty part being `_default`. Fails
/// without exactly one `.`, or with an invalid name.
pub fn parse_path(path: &[u8]) -> Result<CollectionPath, ProtocolError> {
    let bad = |r: String| ProtocolError::malformed("collection path", r);
    let s = std::str::from_utf8(path).map_err(|_| bad("not UTF-8".into()))?;
    let (scope, collection) = s
        .split_once('.')
        .filter(|(_, c)| !c.contains('.'))
        .ok_or_else(|| bad(format!("{s:?} is not scope.collection")))?;
    let or_default = |n: &str| {
        if n.is_empty() {
            DEFAULT_NAME.to_string()
        } else {
            n.to_string()
        }
    };
    let p = CollectionPath {
        scope: or_default(scope),
        collection: or_default(collection),
    };
    for n in [&p.scope, &p.collection] {
        if let Some(e) = name_error(n, true) {
            return Err(bad(e));
        }
    }
    Ok(p)
}

/// The value of an UNKNOWN_COLLECTION (or UNKNOWN_SCOPE) answer: the manifest uid it was
/// decided against.
pub fn unknown_collection_value(uid: u64) -> Bytes {
    Bytes::from(json!({"manifest_uid": format!("{uid:x}")}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leb128_matches_the_table_of_collections_md() {
        let table: &[(u32, &[u8])] = &[
            (0x00, &[0x00]),
            (0x01, &[0x01]),
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x01]),
            (0x555, &[0xD5, 0x0A]),
            (0x7FFF, &[0xFF, 0xFF, 0x01]),
            (0xBFFF, &[0xFF, 0xFF, 0x02]),
            (0xFFFF, &[0xFF, 0xFF, 0x03]),
            (0x8000, &[0x80, 0x80, 0x02]),
            (0x5555, &[0xD5, 0xAA, 0x01]),
            (0xCAFEF00, &[0x80, 0xDE, 0xBF, 0x65]),
            (0xCAFEF00D, &[0x8D, 0xE0, 0xFB, 0xD7, 0x0C]),
            (0xFFFFFFFF, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        ];
        for (id, bytes) in table {
            let mut b = BytesMut::new();
            put_leb128(&mut b, *id);
            assert_eq!(&b[..], *bytes, "{id:#x}");
            assert_eq!(leb128_len(*id), bytes.len());
            let mut k = b.to_vec();
            k.extend_from_slice(b"Hello");
            let (got, key) = split_key(&Bytes::from(k)).unwrap();
            assert_eq!((got, &key[..]), (*id, &b"Hello"[..]));
        }
        // The ADD example: 0x555 then "Hello".
        assert_eq!(&prefixed_key(0x555, b"Hello")[..], b"\xd5\x0aHello");
    }

    #[test]
    fn a_prefix_past_the_key_a_long_or_non_canonical_one_is_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80", "runs past the end of the key"),
            (b"\xff\xff", "runs past the end of the key"),
            (b"\x80\x80\x80\x80\x80\x00", "no stop byte within 5 bytes"),
            (b"\x81\x00k", "not in canonical LEB128"),
            (b"\xff\xff\xff\xff\x1fk", "does not fit 32 bits"),
            (b"\x08", "no document key follows"),
            (b"", "runs past the end of the key"),
        ];
        for (key, why) in cases {
            let e = split_key(&Bytes::copy_from_slice(key))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{key:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_id_and_key_round_trip(id in any::<u32>(), key in proptest::collection::vec(any::<u8>(), 1..64)) {
            let k = prefixed_key(id, &key);
            let (got, rest) = split_key(&k).unwrap();
            prop_assert_eq!(got, id);
            prop_assert_eq!(&rest[..], &key[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(key in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = split_key(&Bytes::from(key));
        }
    }

    const EXAMPLE: &str = r#"{"uid": "a2", "scopes": [{"name": "_default", "uid": "0",
        "collections": [{"name": "_default", "uid": "0"}, {"name": "brewery", "uid": "1c", "maxTTL": 1}]},
        {"name": "s1", "uid": "8", "collections": []}]}"#;

    #[test]
    fn the_example_manifest_parses_and_renders_back() {
        let m = Manifest::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(m.uid, 0xa2);
        assert_eq!(m.id_of("_default", "brewery"), Some(0x1c));
        assert_eq!(m.path(0x1c).unwrap().to_string(), "_default.brewery");
        assert_eq!(m.collection(0x1c).unwrap().1.max_ttl, Some(1));
        assert!(!m.is_default_only());
        assert!(Manifest::default().is_default_only());
        assert_eq!(m.next_id(), 0x1d);
        let again = Manifest::from_value(&m.to_json()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn a_manifest_that_does_not_parse_or_breaks_a_rule_is_refused_with_the_reason() {
        let cases = [
            ("{", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"scopes": []}"#, "has no \"uid\""),
            (r#"{"uid": "zz", "scopes": []}"#, "not a hex number"),
            (r#"{"uid": "1", "scopes": []}"#, "no _default scope"),
            (
                r#"{"uid": "1", "scopes": [{"name": "_default", "uid": "0", "collections": [{"name": "c", "uid": "3"}]}]}"#,
                "reserved",
            ),
            (
                r#"{"uid": "1", "scopes": [{"name": "_default", "uid": "0", "collections": [{"name": "c", "uid": "8"}, {"name": "d", "uid": "8"}]}]}"#,
                "appears twice",
            ),
            (
                r#"{"uid": "1", "scopes": [{"name": "_default", "uid": "0", "collections": [{"name": "%bad", "uid": "8"}]}]}"#,
                "must not start with _ or %",
            ),
            (
                r#"{"uid": "1", "scopes": [{"name": "_default", "uid": "0", "collections": [{"name": "a.b", "uid": "8"}]}]}"#,
                "only A-Z",
            ),
        ];
        for (text, why) in cases {
            let e = Manifest::from_json(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("collections manifest") && e.contains(why),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn system_events_round_trip_with_the_scope_before_the_collection() {
        let created = SystemEvent {
            kind: EventKind::CollectionCreated,
            manifest_uid: 2,
            scope: 0,
            collection: Some(8),
            name: Some("mycollection".into()),
            max_ttl: Some(72000),
        };
        let (version, key, value) = created.encode();
        assert_eq!(version, 1);
        assert_eq!(&key[..], b"mycollection");
        // kv_engine's CreateWithMaxTtlEventDcpData: uid, scope, collection, maxTTL.
        assert_eq!(
            &value[..],
            &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, 0x19, 0x40]
        );
        for e in [
            created,
            SystemEvent {
                kind: EventKind::CollectionDropped,
                manifest_uid: 3,
                scope: 9,
                collection: Some(0x1c),
                name: None,
                max_ttl: None,
            },
            SystemEvent {
                kind: EventKind::ScopeCreated,
                manifest_uid: 4,
                scope: 9,
                collection: None,
                name: Some("s1".into()),
                max_ttl: None,
            },
            SystemEvent {
                kind: EventKind::ScopeDropped,
                manifest_uid: 5,
                scope: 9,
                collection: None,
                name: None,
                max_ttl: None,
            },
        ] {
            let (v, k, val) = e.encode();
            assert_eq!(SystemEvent::decode(e.kind.value(), v, &k, &val).unwrap(), e);
        }
        assert!(SystemEvent::decode(2, 0, b"", &[0; 16]).is_err());
        assert!(SystemEvent::decode(1, 0, b"", &[0; 15]).is_err());
        assert!(SystemEvent::decode(0, 2, b"c", &[0; 16]).is_err());
    }

    #[test]
    fn a_manifest_follows_the_events() {
        let mut m = Manifest::default();
        m.apply(&SystemEvent {
            kind: EventKind::ScopeCreated,
            manifest_uid: 1,
            scope: 8,
            collection: None,
            name: Some("s1".into()),
            max_ttl: None,
        });
        m.apply(&SystemEvent {
            kind: EventKind::CollectionCreated,
            manifest_uid: 2,
            scope: 8,
            collection: Some(9),
            name: Some("c1".into()),
            max_ttl: None,
        });
        assert_eq!(m.id_of("s1", "c1"), Some(9));
        m.apply(&SystemEvent {
            kind: EventKind::CollectionDropped,
            manifest_uid: 3,
            scope: 8,
            collection: Some(9),
            name: None,
            max_ttl: None,
        });
        assert_eq!(m.id_of("s1", "c1"), None);
        assert_eq!(m.uid, 3);
    }

    #[test]
    fn stream_filters_read_and_write_the_documented_json() {
        let f = StreamFilter::Collections(vec![0, 0x8a]);
        let v = f.to_json(Some(0xb4));
        let back: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(back, json!({"collections": ["0", "8a"], "uid": "b4"}));
        assert_eq!(StreamFilter::from_json(&v).unwrap(), Some(f));
        assert_eq!(
            StreamFilter::from_json(br#"{"scope": "9"}"#).unwrap(),
            Some(StreamFilter::Scope(9))
        );
        assert_eq!(StreamFilter::from_json(b"").unwrap(), None);
        assert_eq!(StreamFilter::from_json(br#"{"uid": "1"}"#).unwrap(), None);
        assert!(StreamFilter::from_json(br#"{"scope": "9", "collections": []}"#).is_err());
        assert!(StreamFilter::from_json(br#"{"collections": "8"}"#).is_err());
        assert!(StreamFilter::from_json(b"nope").is_err());
    }

    #[test]
    fn collection_paths_take_the_defaults_by_omission() {
        assert_eq!(
            parse_path(b"_default.c1").unwrap(),
            parse_path(b".c1").unwrap()
        );
        assert!(parse_path(b".").unwrap().is_default());
        assert_eq!(parse_path(b"App1.c1").unwrap().to_string(), "App1.c1");
        assert!(parse_path(b"a").is_err());
        assert!(parse_path(b"a.b.c").is_err());
        assert!(parse_path(b"a.%x").is_err());
    }
}
