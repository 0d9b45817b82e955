//! A reference OpenIO SDS proxy over local meta2 volumes, for tests and demos of the meta2
//! repairs that go through a proxy (`pump node --sds NS --meta2 ADDRESS=VOLUME ...`).
//!
//! ```text
//! POST /v3.0/cache/flush/{low,high}                 204: forget every cached reference
//! GET  /v3.0/NS/conscience/list?type=meta2          [{"addr", "score", "tags"}] (the --meta2 services)
//! GET  /v3.0/NS/reference/show?acct&ref             {"dir": [], "srv": [{"seq","type","host","args"}]}
//! POST /v3.0/NS/reference/unlink?acct&ref&type=meta2  204
//! POST /v3.0/NS/reference/force?acct&ref[&replace=yes] {"seq","type","host","args"}  204 | 403
//! POST /v3.0/NS/admin/{ping,has,status,sync,leave,debug}?acct&ref&type=meta2[&service_id=a,b]
//!                                                   200 {"ADDR": {"status": {..}, "body": ..}}
//! POST /v3.0/NS/admin/{freeze,enable,disable}       200 {} | 436 frozen | 439 enabled
//! POST /v3.0/NS/admin/{set_properties,get_properties}  {"properties": {}, "system": {}}
//! POST /v3.0/NS/admin/copy  {"to", "from"}          204: `to` pulls the base from `from`
//! POST /v3.0/NS/container/set_properties?acct&ref   {"properties": {}}  204 | 503 frozen
//!
//! test hooks
//! POST /pump/faults   route=admin/copy&status=503   the next call of that route answers it
//! GET  /pump/requests                               every request so far: method, route, query, body
//! ```
//!
//! Every `--meta2` service is emulated over its volume: a service "manages" a base when its
//! copy exists and that copy's `sys.peers` lists it (431 otherwise). meta1 is a reference
//! store (CID -> meta2 services), kept in memory or in a JSON file (`--meta1 FILE`, shared by
//! several proxies over the same volumes). Without `service_id` an admin call goes to the
//! reference's services as the proxy's cache has them: the cache is filled from meta1 on first
//! use and never refreshed, not even by this proxy's own `force` or `unlink`, until flushed.
//! `reference/show` answers from the cache too. Each base has one election per proxy: its
//! peers are the `sys.peers` of the copy that started it, the master the lowest address among
//! the peers that manage the base; it is restarted when `sys.peers` changes and dropped by
//! `leave`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pump_meta2::schema::{self, STATUS_DISABLED, STATUS_FROZEN};
use pump_meta2::{inspect, BaseName, Health};
use serde_json::{json, Map, Value};

/// One meta2 service the proxy emulates: its address and its volume.
#[derive(Debug, Clone)]
pub struct Meta2Service {
    pub address: String,
    pub volume: PathBuf,
}

/// What the proxy serves.
#[derive(Debug, Clone)]
pub struct SdsConfig {
    pub ns: String,
    pub services: Vec<Meta2Service>,
    /// The meta1 store as a JSON file (created from the volumes when absent).
    pub meta1: Option<PathBuf>,
}

/// One reference in meta1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub account: String,
    pub reference: String,
    /// The meta2 services, `a,b,c`; None once unlinked.
    pub meta2: Option<String>,
}

/// A request as the proxy saw it (for tests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    pub method: String,
    /// `admin/freeze`, `reference/show`, `cache/flush/low`, ...
    pub route: String,
    pub query: String,
    pub body: String,
}

#[derive(Debug)]
struct Election {
    peers: Vec<String>,
    master: String,
    /// Per peer, the lines `<ms>:<state>:<event>:<state>`.
    log: BTreeMap<String, Vec<String>>,
}

#[derive(Default)]
struct State {
    meta1: BTreeMap<String, Reference>,
    cache: BTreeMap<String, Vec<String>>,
    elections: BTreeMap<String, Election>,
    faults: HashMap<String, VecDeque<u16>>,
    requests: Vec<Recorded>,
}

/// The proxy: its configuration and its state.
pub struct SdsProxy {
    config: SdsConfig,
    state: Mutex<State>,
}

/// An answer: status and JSON body (none for 204).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(body),
        }
    }
    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
        }
    }
    /// An error: `code` in the body, `http` as the HTTP status.
    fn error(http: u16, code: u16, message: impl Into<String>) -> Reply {
        Reply {
            status: http,
            body: Some(json!({"status": code, "message": message.into()})),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = match self.body {
            Some(b) => (status, axum::Json(b)).into_response(),
            None => status.into_response(),
        };
        if self.status == 503 {
            r.headers_mut()
                .insert("Retry-After", HeaderValue::from_static("1"));
        }
        r
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// The admin keys and peers of one copy, or why it cannot be read.
fn read_admin(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let st = inspect(path, false);
    if st.health != Health::Ok {
        return Err(format!("{}: {}", st.health, st.message));
    }
    Ok(st.admin)
}

fn peers_of(admin: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    admin
        .get("sys.peers")
        .map(|v| split_list(&String::from_utf8_lossy(v)))
        .unwrap_or_default()
}

fn status_of(admin: &BTreeMap<String, Vec<u8>>) -> u64 {
    admin
        .get("sys.status")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Copies the base at `from` over `to` (SQLite's backup into a new file, then a rename).
fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".copying");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let src = schema::open_read(from).map_err(|e| e.to_string())?;
    let mut dst =
        rusqlite::Connection::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    rusqlite::backup::Backup::new(&src, &mut dst)
        .and_then(|b| b.run_to_completion(256, std::time::Duration::ZERO, None))
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), tmp.display()))?;
    drop(dst);
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))
}

/// Writes admin keys (None deletes) in one transaction.
fn write_admin(path: &Path, values: &[(String, Option<Vec<u8>>)]) -> Result<(), String> {
    let c = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tx = c
        .unchecked_transaction()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for (k, v) in values {
        match v {
            Some(v) => schema::admin_set(&tx, k, v),
            None => schema::admin_delete(&tx, k),
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    tx.commit().map_err(|e| format!("{}: {e}", path.display()))
}

/// The parsed query of a request.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl SdsProxy {
    /// A proxy over `config`'s volumes; meta1 is loaded from its file or built from the
    /// `sys.peers` of the bases found on the volumes.
    pub fn new(config: SdsConfig) -> Result<SdsProxy, String> {
        let p = SdsProxy {
            config,
            state: Mutex::new(State::default()),
        };
        let from_file = match &p.config.meta1 {
            Some(f) if f.exists() => Some(p.load_meta1(f)?),
            _ => None,
        };
        let meta1 = match from_file {
            Some(m) => m,
            None => p.scan_meta1()?,
        };
        if let Some(f) = &p.config.meta1 {
            if !f.exists() {
                save_meta1(f, &meta1)?;
            }
        }
        p.lock().meta1 = meta1;
        Ok(p)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load_meta1(&self, f: &Path) -> Result<BTreeMap<String, Reference>, String> {
        let text = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        serde_json::from_slice(&text).map_err(|e| {
            format!(
                "{}: not a meta1 store (JSON CID -> reference): {e}",
                f.display()
            )
        })
    }

    fn scan_meta1(&self) -> Result<BTreeMap<String, Reference>, String> {
        let mut out = BTreeMap::new();
        for s in &self.config.services {
            let bases = BaseName::list(&s.volume).map_err(|e| e.to_string())?;
            for b in bases {
                if out.contains_key(&b.cid) {
                    continue;
                }
                let Ok(admin) = read_admin(&b.path_in(&s.volume)) else {
                    continue;
                };
                let text = |k: &str| {
                    admin
                        .get(k)
                        .map(|v| String::from_utf8_lossy(v).to_string())
                        .unwrap_or_default()
                };
                out.insert(
                    b.cid.clone(),
                    Reference {
                        account: text("sys.account"),
                        reference: text("sys.user.name"),
                        meta2: Some(peers_of(&admin).join(",")),
                    },
                );
            }
        }
        Ok(out)
    }

    /// meta1 as it is now (the file is read again: another proxy may have changed it).
    fn meta1(&self, st: &mut State) -> Result<(), Reply> {
        if let Some(f) = &self.config.meta1 {
            st.meta1 = self.load_meta1(f).map_err(|e| Reply::error(500, 500, e))?;
        }
        Ok(())
    }

    fn save(&self, st: &State) -> Result<(), Reply> {
        if let Some(f) = &self.config.meta1 {
            save_meta1(f, &st.meta1).map_err(|e| Reply::error(500, 500, e))?;
        }
        Ok(())
    }

    fn volume(&self, address: &str) -> Option<&Path> {
        self.config
            .services
            .iter()
            .find(|s| s.address == address)
            .map(|s| s.volume.as_path())
    }

    /// Every request so far (test hook).
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Queues `status` as the next answer of `route` (test hook).
    pub fn inject_fault(&self, route: &str, status: u16) {
        self.lock()
            .faults
            .entry(route.to_string())
            .or_default()
            .push_back(status);
    }

    /// Answers one request. `path` is the URI path, `query` its query string.
    pub fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Reply {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segs.first() == Some(&"pump") {
            return self.hook(method, &segs[1..], body);
        }
        if segs.first() != Some(&"v3.0") || segs.len() < 3 {
            return Reply::error(404, 404, format!("{path}: no such route"));
        }
        let (ns, route) = if segs[1] == "cache" {
            (None, segs[1..].join("/"))
        } else {
            (Some(segs[1]), segs[2..].join("/"))
        };
        {
            let mut st = self.lock();
            st.requests.push(Recorded {
                method: method.to_string(),
                route: route.clone(),
                query: query.to_string(),
                body: String::from_utf8_lossy(body).to_string(),
            });
            if let Some(s) = st.faults.get_mut(&route).and_then(|q| q.pop_front()) {
                return Reply::error(
                    s,
                    s,
                    format!("{route}: status {s} injected by the test hook"),
                );
            }
        }
        if let Some(ns) = ns {
            if ns != self.config.ns {
                return Reply::error(400, 400, format!("namespace {ns} not managed"));
            }
        }
        let q = Query::parse(query);
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return Reply::error(400, 400, format!("{route}: bad JSON body: {e}")),
            }
        };
        let r = match (method, route.as_str()) {
            ("POST", "cache/flush/low" | "cache/flush/high") => {
                self.lock().cache.clear();
                Ok(Reply::no_content())
            }
            ("GET", "conscience/list") => Ok(self.conscience()),
            ("GET", "reference/show") => self.reference_show(&q),
            ("POST", "reference/unlink") => self.reference_unlink(&q),
            ("POST", "reference/force") => self.reference_force(&q, &body),
            ("POST", "container/set_properties") => self.container_set_properties(&q, &body),
            ("POST", r) if r.starts_with("admin/") => self.admin(&r["admin/".len()..], &q, &body),
            _ => Err(Reply::error(
                404,
                404,
                format!("{method} {route}: no such route"),
            )),
        };
        r.unwrap_or_else(|e| e)
    }

    fn hook(&self, method: &str, segs: &[&str], body: &[u8]) -> Reply {
        match (method, segs) {
            ("GET", ["requests"]) => Reply::ok(json!(self.requests())),
            ("POST", ["faults"]) => {
                let q = Query::parse(&String::from_utf8_lossy(body));
                let (Some(route), Some(status)) = (
                    q.get("route"),
                    q.get("status").and_then(|s| s.parse::<u16>().ok()),
                ) else {
                    return Reply::error(400, 400, "faults: give route=R&status=N");
                };
                self.inject_fault(route, status);
                Reply::no_content()
            }
            _ => Reply::error(404, 404, "no such test hook"),
        }
    }

    fn conscience(&self) -> Reply {
        Reply::ok(Value::Array(
            self.config
                .services
                .iter()
                .map(|s| {
                    json!({"addr": s.address, "score": 100, "type": "meta2",
                        "tags": {"tag.up": true, "tag.vol": s.volume.display().to_string()}})
                })
                .collect(),
        ))
    }

    /// The CID a request names (`cid=`, or `acct=` and `ref=`).
    fn cid(q: &Query) -> Result<String, Reply> {
        if let Some(c) = q.get("cid") {
            return BaseName::parse(&format!("{c}.1"))
                .map(|b| b.cid)
                .map_err(|e| Reply::error(400, 400, e.to_string()));
        }
        match (q.get("acct"), q.get("ref")) {
            (Some(a), Some(r)) if !a.is_empty() && !r.is_empty() => Ok(pump_meta2::cid(a, r)),
            _ => Err(Reply::error(400, 400, "give acct and ref, or cid")),
        }
    }

    /// The reference's meta2 services as the cache has them (filled from meta1 when absent).
    fn resolve(&self, st: &mut State, cid: &str) -> Result<Vec<String>, Reply> {
        if let Some(p) = st.cache.get(cid) {
            return Ok(p.clone());
        }
        self.meta1(st)?;
        let peers = st
            .meta1
            .get(cid)
            .and_then(|r| r.meta2.as_deref())
            .map(split_list)
            .unwrap_or_default();
        if peers.is_empty() {
            return Err(Reply::error(
                404,
                406,
                format!("reference {cid}: no meta2 service linked"),
            ));
        }
        st.cache.insert(cid.to_string(), peers.clone());
        Ok(peers)
    }

    fn reference_show(&self, q: &Query) -> Result<Reply, Reply> {
        let cid = Self::cid(q)?;
        let mut st = self.lock();
        self.meta1(&mut st)?;
        if !st.meta1.contains_key(&cid) {
            return Err(Reply::error(
                404,
                406,
                format!("reference {cid}: not found"),
            ));
        }
        let srv = match self.resolve(&mut st, &cid) {
            Ok(p) => vec![json!({"seq": 1, "type": "meta2", "host": p.join(","), "args": ""})],
            Err(_) => Vec::new(),
        };
        Ok(Reply::ok(json!({"dir": [], "srv": srv})))
    }

    fn reference_unlink(&self, q: &Query) -> Result<Reply, Reply> {
        let cid = Self::cid(q)?;
        let mut st = self.lock();
        self.meta1(&mut st)?;
        let Some(r) = st.meta1.get_mut(&cid) else {
            return Err(Reply::error(
                404,
                406,
                format!("reference {cid}: not found"),
            ));
        };
        r.meta2 = None;
        self.save(&st)?;
        Ok(Reply::no_content())
    }

    fn reference_force(&self, q: &Query, body: &Value) -> Result<Reply, Reply> {
        let cid = Self::cid(q)?;
        let host = body.get("host").and_then(Value::as_str).unwrap_or("");
        if body.get("type").and_then(Value::as_str) != Some("meta2") || host.is_empty() {
            return Err(Reply::error(
                400,
                400,
                "force: body {\"seq\": 1, \"type\": \"meta2\", \"host\": \"a,b,c\", \"args\": \"\"}",
            ));
        }
        for a in split_list(host) {
            if self.volume(&a).is_none() {
                return Err(Reply::error(
                    400,
                    400,
                    format!("force: {a} is not a meta2 service of {}", self.config.ns),
                ));
            }
        }
        let mut st = self.lock();
        self.meta1(&mut st)?;
        let replace = q.get("replace") == Some("yes");
        let (account, reference) = (
            q.get("acct").unwrap_or("").to_string(),
            q.get("ref").unwrap_or("").to_string(),
        );
        let entry = st.meta1.entry(cid.clone()).or_insert(Reference {
            account,
            reference,
            meta2: None,
        });
        if entry.meta2.is_some() && !replace {
            return Err(Reply::error(
                403,
                403,
                format!("reference {cid}: a meta2 entry exists (replace=yes to replace it)"),
            ));
        }
        entry.meta2 = Some(split_list(host).join(","));
        self.save(&st)?;
        Ok(Reply::no_content())
    }

    /// The file of `base` at `address`, if the service is known.
    fn path(&self, address: &str, base: &BaseName) -> Option<PathBuf> {
        self.volume(address).map(|v| base.path_in(v))
    }

    /// Whether `address` manages `base`: its copy reads and lists it in `sys.peers`.
    fn manages(&self, address: &str, base: &BaseName) -> Result<BTreeMap<String, Vec<u8>>, u16> {
        let path = self.path(address, base).ok_or(503u16)?;
        let admin = read_admin(&path).map_err(|_| 431u16)?;
        if peers_of(&admin).iter().any(|p| p == address) {
            Ok(admin)
        } else {
            Err(431)
        }
    }

    /// The election of `base` as `address` sees it, started or restarted when needed.
    fn election(
        &self,
        st: &mut State,
        base: &BaseName,
        address: &str,
    ) -> Option<(String, Vec<String>)> {
        let admin = self.manages(address, base).ok()?;
        let peers = peers_of(&admin);
        let key = base.to_string();
        let current = st.elections.get(&key).map(|e| e.peers == peers);
        if current != Some(true) {
            let master = peers
                .iter()
                .find(|p| self.manages(p, base).is_ok())?
                .clone();
            let ms = now_ms();
            let restart = current.is_some();
            let log = peers
                .iter()
                .map(|p| {
                    let mut lines = Vec::new();
                    if restart {
                        lines.push(format!("{ms}:MASTER:PEERS_CHANGED:NONE"));
                    }
                    lines.push(format!("{ms}:NONE:START:PEERING"));
                    lines.push(format!("{ms}:PEERING:GETPEERS_DONE:CANDIDATE"));
                    if *p == master {
                        lines.push(format!("{ms}:CANDIDATE:VOTES_OK:MASTER"));
                    } else {
                        lines.push(format!("{ms}:CANDIDATE:MASTER_FOUND:SLAVE"));
                    }
                    (p.clone(), lines)
                })
                .collect();
            st.elections
                .insert(key.clone(), Election { peers, master, log });
        }
        st.elections
            .get(&key)
            .map(|e| (e.master.clone(), e.peers.clone()))
    }

    /// The services an admin call goes to: `service_id`, or the cached reference.
    fn targets(&self, st: &mut State, q: &Query, cid: &str) -> Result<Vec<String>, Reply> {
        match q.get("service_id") {
            Some(s) if !s.is_empty() => Ok(split_list(s)),
            _ => self.resolve(st, cid),
        }
    }

    fn admin(&self, action: &str, q: &Query, body: &Value) -> Result<Reply, Reply> {
        let cid = Self::cid(q)?;
        if q.get("type").is_some_and(|t| t != "meta2") {
            return Err(Reply::error(400, 400, "type: only meta2"));
        }
        let base = BaseName { cid, seq: 1 };
        let mut st = self.lock();
        let targets = self.targets(&mut st, q, &base.cid)?;
        match action {
            "ping" | "has" | "status" | "sync" | "leave" | "debug" => {
                let mut out = Map::new();
                for t in &targets {
                    let (code, message, b) = self.fan_out_one(&mut st, action, &base, t);
                    out.insert(
                        t.clone(),
                        json!({"status": {"status": code, "message": message}, "body": b}),
                    );
                }
                Ok(Reply::ok(Value::Object(out)))
            }
            "freeze" | "enable" | "disable" => self.set_status(&base, &targets, action),
            "set_properties" => self.set_properties(&base, &targets, body, false),
            "get_properties" => {
                let t = targets.first().cloned().unwrap_or_default();
                let admin = self
                    .manages(&t, &base)
                    .map_err(|c| Reply::error(404, c, format!("{t}: base not managed")))?;
                let (mut props, mut sys) = (Map::new(), Map::new());
                for (k, v) in admin {
                    let v = Value::String(String::from_utf8_lossy(&v).to_string());
                    match k.strip_prefix("user.") {
                        Some(u) => props.insert(u.to_string(), v),
                        None => sys.insert(k, v),
                    };
                }
                Ok(Reply::ok(json!({"properties": props, "system": sys})))
            }
            "copy" => {
                let to = body.get("to").and_then(Value::as_str).unwrap_or("");
                let from = body.get("from").and_then(Value::as_str).unwrap_or("");
                let (Some(dst), Some(src)) = (self.path(to, &base), self.path(from, &base)) else {
                    return Err(Reply::error(
                        400,
                        400,
                        format!("copy: to {to:?} and from {from:?} must be meta2 services"),
                    ));
                };
                read_admin(&src).map_err(|e| {
                    Reply::error(404, 431, format!("{from}: base not managed: {e}"))
                })?;
                copy_file(&src, &dst).map_err(|e| Reply::error(500, 500, e))?;
                Ok(Reply::no_content())
            }
            _ => Err(Reply::error(
                404,
                404,
                format!("admin/{action}: no such route"),
            )),
        }
    }

    fn fan_out_one(
        &self,
        st: &mut State,
        action: &str,
        base: &BaseName,
        t: &str,
    ) -> (u16, String, Value) {
        let Some(path) = self.path(t, base) else {
            return (503, format!("{t}: connection refused"), Value::Null);
        };
        let not_managed = (431, "base not managed".to_string(), Value::Null);
        match action {
            "leave" => {
                st.elections.remove(&base.to_string());
                (200, "OK".into(), Value::Null)
            }
            "debug" => {
                let key = base.to_string();
                let b = match st
                    .elections
                    .get(&key)
                    .filter(|e| e.peers.iter().any(|p| p == t))
                {
                    Some(e) => json!({
                        "local": t,
                        "master": e.master,
                        "base": key,
                        "peers": e.peers.iter().filter(|p| *p != t).collect::<Vec<_>>(),
                        "log": e.log.get(t).cloned().unwrap_or_default(),
                    }),
                    None => Value::Null,
                };
                (200, "OK".into(), b)
            }
            "has" => match self.manages(t, base) {
                Ok(_) => (200, "OK".into(), json!(path.display().to_string())),
                Err(_) => not_managed,
            },
            "ping" | "status" => match self.election(st, base, t) {
                None => not_managed,
                Some((master, _)) if action == "ping" || master == t => {
                    (200, "OK".into(), Value::Null)
                }
                Some((master, _)) => (303, master, Value::Null),
            },
            "sync" => {
                // A slave resyncs from the master; the election is found through any peer.
                let peers: Vec<String> = match self.manages(t, base) {
                    Ok(a) => peers_of(&a),
                    Err(_) => {
                        if self.meta1(st).is_err() {
                            return (500, "meta1 store unreadable".into(), Value::Null);
                        }
                        let reference = st.meta1.get(&base.cid).and_then(|r| r.meta2.clone());
                        reference.map(|r| split_list(&r)).unwrap_or_default()
                    }
                };
                let mut found = None;
                for p in &peers {
                    found = self.election(st, base, p);
                    if found.is_some() {
                        break;
                    }
                }
                let Some((master, members)) = found else {
                    return (
                        503,
                        "no election: no peer manages the base".into(),
                        Value::Null,
                    );
                };
                if master == t {
                    return (301, "not SLAVE".into(), Value::Null);
                }
                if !members.iter().any(|p| p == t) {
                    return not_managed;
                }
                let Some(src) = self.path(&master, base) else {
                    return (503, format!("{master}: connection refused"), Value::Null);
                };
                match copy_file(&src, &path) {
                    Ok(()) => (200, "OK".into(), Value::Null),
                    Err(e) => (500, e, Value::Null),
                }
            }
            _ => (404, format!("admin/{action}: no such route"), Value::Null),
        }
    }

    fn set_status(
        &self,
        base: &BaseName,
        targets: &[String],
        action: &str,
    ) -> Result<Reply, Reply> {
        let want = match action {
            "freeze" => STATUS_FROZEN,
            "disable" => STATUS_DISABLED,
            _ => 0,
        };
        let mut paths = Vec::new();
        let mut already = 0;
        for t in targets {
            let admin = self.manages(t, base).map_err(|c| {
                Reply::error(
                    if c == 431 { 404 } else { c },
                    c,
                    format!("{t}: base not managed"),
                )
            })?;
            if status_of(&admin) == want {
                already += 1;
            }
            paths.push(self.path(t, base).unwrap_or_default());
        }
        if already == targets.len() {
            return Err(match action {
                "freeze" => Reply::error(436, 436, "base already frozen"),
                "enable" => Reply::error(439, 439, "base already enabled"),
                _ => Reply::error(400, 400, "base already disabled"),
            });
        }
        for p in &paths {
            write_admin(
                p,
                &[("sys.status".into(), Some(want.to_string().into_bytes()))],
            )
            .map_err(|e| Reply::error(500, 500, e))?;
        }
        Ok(Reply::ok(json!({})))
    }

    /// Writes properties in every target's copy, with the same `version:main.admin` bump
    /// (as replication does). `container` = a user write, refused on a frozen base.
    fn set_properties(
        &self,
        base: &BaseName,
        targets: &[String],
        body: &Value,
        container: bool,
    ) -> Result<Reply, Reply> {
        let mut values: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        if let Some(p) = body.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                values.push((format!("user.{k}"), Some(text(v).into_bytes())));
            }
        }
        if let Some(s) = body.get("system").and_then(Value::as_object) {
            for (k, v) in s {
                values.push((k.clone(), Some(text(v).into_bytes())));
            }
        }
        let mut paths = Vec::new();
        let mut admin_n = 0;
        for t in targets {
            let path = self
                .path(t, base)
                .ok_or_else(|| Reply::error(503, 503, format!("{t}: connection refused")))?;
            // A repair rewrites sys.peers on copies that do not list the service yet.
            let admin = if container {
                self.manages(t, base)
                    .map_err(|_| Reply::error(404, 431, format!("{t}: base not managed")))?
            } else {
                read_admin(&path)
                    .map_err(|e| Reply::error(404, 431, format!("{t}: base not managed: {e}")))?
            };
            if container && status_of(&admin) != 0 {
                return Err(Reply::error(503, 503, format!("{t}: base frozen")));
            }
            let n = admin
                .get(&schema::version_key("admin"))
                .and_then(|v| schema::parse_version(v))
                .unwrap_or(0);
            admin_n = admin_n.max(n);
            paths.push(path);
        }
        values.push((
            schema::version_key("admin"),
            Some(format!("{}:{}", admin_n + 1, now_ms() * 1000).into_bytes()),
        ));
        for p in &paths {
            write_admin(p, &values).map_err(|e| Reply::error(500, 500, e))?;
        }
        Ok(if container {
            Reply::no_content()
        } else {
            Reply::ok(json!({}))
        })
    }

    fn container_set_properties(&self, q: &Query, body: &Value) -> Result<Reply, Reply> {
        let cid = Self::cid(q)?;
        let base = BaseName { cid, seq: 1 };
        let targets = {
            let mut st = self.lock();
            self.resolve(&mut st, &base.cid)?
        };
        if body.get("system").is_some() {
            return Err(Reply::error(
                400,
                400,
                "container properties: no system keys",
            ));
        }
        self.set_properties(&base, &targets, body, true)
    }
}

fn save_meta1(f: &Path, m: &BTreeMap<String, Reference>) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
    let mut tmp = f.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, f).map_err(|e| format!("{}: {e}", f.display()))
}

/// The routes: every request goes to [`SdsProxy::handle`] on a blocking thread (the work is
/// SQLite on local files).
pub fn router(proxy: Arc<SdsProxy>) -> Router {
    Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let proxy = proxy.clone();
        async move {
            let path = uri.path().to_string();
            let query = uri.query().unwrap_or("").to_string();
            tokio::task::spawn_blocking(move || proxy.handle(method.as_str(), &path, &query, &body))
                .await
                .unwrap_or_else(|e| Reply::error(500, 500, format!("handler failed: {e}")))
        }
    })
}

/// Binds `addr` and serves the proxy in the background; returns the bound address.
pub async fn serve(proxy: Arc<SdsProxy>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    crate::rest::serve_app(router(proxy), addr, "SDS proxy").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump_meta2::generate::{write_base, BaseSpec};

    const A: &str = "127.0.0.1:6120";
    const B: &str = "127.0.0.2:6120";
    const C: &str = "127.0.0.3:6120";
    const D: &str = "127.0.0.4:6120";
    const Q: &str = "acct=acct&ref=c1&type=meta2";

    /// Services A, B, C holding the base of acct/c1, and D with an empty volume.
    fn proxy(dir: &Path, meta1: Option<PathBuf>) -> SdsProxy {
        let spec = BaseSpec {
            ns: "OPENIO".into(),
            account: "acct".into(),
            container: "c1".into(),
            peers: vec![A.into(), B.into(), C.into()],
            aliases: 3,
        };
        let services = [A, B, C, D]
            .iter()
            .map(|a| {
                let volume = dir.join(a.replace([':', '.'], "_"));
                std::fs::create_dir_all(&volume).unwrap();
                if *a != D {
                    write_base(&volume, &spec).unwrap();
                }
                Meta2Service {
                    address: a.to_string(),
                    volume,
                }
            })
            .collect();
        SdsProxy::new(SdsConfig {
            ns: "OPENIO".into(),
            services,
            meta1,
        })
        .unwrap()
    }

    fn post(p: &SdsProxy, route: &str, query: &str, body: Value) -> Reply {
        let b = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        p.handle("POST", &format!("/v3.0/OPENIO/{route}"), query, &b)
    }

    fn hosts(p: &SdsProxy) -> String {
        let r = p.handle("GET", "/v3.0/OPENIO/reference/show", Q, b"");
        assert_eq!(r.status, 200, "{r:?}");
        r.body.unwrap()["srv"][0]["host"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn statuses(r: &Reply) -> BTreeMap<String, (u64, String)> {
        r.body
            .as_ref()
            .unwrap()
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (
                        v["status"]["status"].as_u64().unwrap(),
                        v["status"]["message"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn meta1_is_built_from_the_volumes_and_the_cache_stays_stale_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let p = proxy(dir.path(), None);
        assert_eq!(hosts(&p), format!("{A},{B},{C}"));
        let force = json!({"seq": 1, "type": "meta2", "host": format!("{B},{C},{D}"), "args": ""});
        assert_eq!(post(&p, "reference/force", Q, force.clone()).status, 403);
        let r = post(&p, "reference/force", &format!("{Q}&replace=yes"), force);
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(hosts(&p), format!("{A},{B},{C}"), "the cache answers");
        assert_eq!(
            p.handle("POST", "/v3.0/cache/flush/low", "", b"").status,
            204
        );
        assert_eq!(hosts(&p), format!("{B},{C},{D}"));
    }

    #[test]
    fn a_shared_meta1_file_is_seen_by_another_proxy_after_its_flush() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meta1.json");
        let p1 = proxy(dir.path(), Some(file.clone()));
        let p2 = SdsProxy::new(p1.config.clone()).unwrap();
        assert_eq!(hosts(&p2), format!("{A},{B},{C}"));
        assert_eq!(post(&p1, "reference/unlink", Q, Value::Null).status, 204);
        assert_eq!(hosts(&p2), format!("{A},{B},{C}"));
        p2.handle("POST", "/v3.0/cache/flush/high", "", b"");
        let r = p2.handle("GET", "/v3.0/OPENIO/reference/show", Q, b"");
        assert_eq!(r.body.unwrap()["srv"], json!([]));
    }

    #[test]
    fn election_has_one_master_the_slaves_point_to_it_and_leave_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = proxy(dir.path(), None);
        let s = statuses(&post(&p, "admin/status", Q, Value::Null));
        assert_eq!(s[A], (200, "OK".into()));
        assert_eq!(s[B], (303, A.into()));
        assert_eq!(s[C], (303, A.into()));
        let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
        assert_eq!(d[B]["body"]["master"], json!(A));
        assert_eq!(d[B]["body"]["peers"], json!([A, C]));
        assert!(d[A]["body"]["log"][2]
            .as_str()
            .unwrap()
            .ends_with(":MASTER"));
        post(&p, "admin/leave", Q, Value::Null);
        let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
        assert_eq!(d[A]["body"], Value::Null);
        let r = post(&p, "admin/has", &format!("{Q}&service_id={D}"), Value::Null);
        assert_eq!(statuses(&r)[D].0, 431);
    }

    #[test]
    fn freeze_and_enable_answer_436_and_439_when_already_done() {
        let dir = tempfile::tempdir().unwrap();
        let p = proxy(dir.path(), None);
        assert_eq!(post(&p, "admin/enable", Q, Value::Null).status, 439);
        assert_eq!(post(&p, "admin/freeze", Q, Value::Null).status, 200);
        assert_eq!(post(&p, "admin/freeze", Q, Value::Null).status, 436);
        let r = post(
            &p,
            "container/set_properties",
            Q,
            json!({"properties": {"k": "v"}}),
        );
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(post(&p, "admin/enable", Q, Value::Null).status, 200);
        let r = post(
            &p,
            "container/set_properties",
            Q,
            json!({"properties": {"k": "v"}}),
        );
        assert_eq!(r.status, 204, "{r:?}");
        let props = post(&p, "admin/get_properties", Q, Value::Null)
            .body
            .unwrap();
        assert_eq!(props["properties"]["k"], json!("v"));
    }

    #[test]
    fn sync_refills_a_missing_slave_and_the_master_answers_301() {
        let dir = tempfile::tempdir().unwrap();
        let p = proxy(dir.path(), None);
        let c_path = p.path(C, &BaseName::of("acct", "c1")).unwrap();
        std::fs::remove_file(&c_path).unwrap();
        assert_eq!(statuses(&post(&p, "admin/has", Q, Value::Null))[C].0, 431);
        let s = statuses(&post(&p, "admin/sync", Q, Value::Null));
        assert_eq!(s[A], (301, "not SLAVE".into()));
        assert_eq!(s[C].0, 200);
        assert_eq!(statuses(&post(&p, "admin/has", Q, Value::Null))[C].0, 200);
    }

    #[test]
    fn copy_then_set_properties_makes_the_new_service_manage_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let p = proxy(dir.path(), None);
        let r = post(&p, "admin/copy", Q, json!({"to": D, "from": A}));
        assert_eq!(r.status, 204, "{r:?}");
        let sid = format!("{Q}&service_id={B},{C},{D}");
        assert_eq!(
            statuses(&post(&p, "admin/has", &sid, Value::Null))[D].0,
            431
        );
        let body = json!({"properties": {}, "system": {"sys.peers": format!("{B},{C},{D}")}});
        assert_eq!(post(&p, "admin/set_properties", &sid, body).status, 200);
        let s = statuses(&post(&p, "admin/status", &sid, Value::Null));
        assert_eq!(s[B], (200, "OK".into()));
        assert_eq!(s[D], (303, B.into()));
    }

    #[test]
    fn an_injected_fault_answers_once_and_requests_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let p = proxy(dir.path(), None);
        p.handle("POST", "/pump/faults", "", b"route=admin/freeze&status=503");
        assert_eq!(post(&p, "admin/freeze", Q, Value::Null).status, 503);
        assert_eq!(post(&p, "admin/freeze", Q, Value::Null).status, 200);
        let routes: Vec<String> = p.requests().into_iter().map(|r| r.route).collect();
        assert_eq!(routes, ["admin/freeze", "admin/freeze"]);
    }
}
