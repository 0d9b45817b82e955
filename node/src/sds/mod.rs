//! A reference OpenIO SDS proxy (oio-proxy) over local meta2 volumes, for the tests and demos
//! of the meta2 repairs that go through a proxy, and for OpenIO's own client and CLI
//! (`pump node --sds NS --oio-version 7|9 --meta2 ADDRESS=VOLUME ...`).
//!
//! ```text
//! POST /v3.0/cache/flush/low[?type=T]           204: forget the reference -> services cache
//! POST /v3.0/cache/flush/high                   204: forget meta0/meta1 (nothing cached here)
//! GET  /v3.0/cache/status                       {"csm0": {count,max,ttl}, "meta1": {count,max,ttl}}
//! GET  /v3.0/NS/conscience/list?type=meta2      [{"addr","id","score","tags"}]   400 no type, 404 (453) other type
//! GET  /v3.0/NS/reference/show?REF[&type=T]     {"dir","srv": one entry per service,"cid","account","name"}
//! POST /v3.0/NS/reference/get_properties?REF    ["k"] | null -> {"cid","properties"}
//! POST /v3.0/NS/reference/force?REF&type=T[&replace=yes]  {"seq","type","host","args"}  204 | 403 (455)
//! POST /v3.0/NS/reference/unlink?REF&type=T     204
//! POST /v3.0/NS/admin/{ping,has,status,sync,leave,debug}?REF&type=meta2[&service_id=a,b]
//!                                               200 {"ADDR": {"status": {"status","message"}, "body"}}
//! POST /v3.0/NS/admin/{freeze,enable,disable,vacuum,set_properties,del_properties}?REF&type=meta2
//!                                               to the master: 200 {} (set/del_properties: 204 in 9)
//!                                               with service_id: to that service, not redirected
//! POST /v3.0/NS/admin/get_properties?REF&type=meta2   {"properties", "system"}
//! POST /v3.0/NS/admin/copy?REF&type=meta2       {"to","from"}: 204 | {"to"}: the master pushes, 200 {}
//! POST /v3.0/NS/admin/remove?REF&type=meta2&service_id=a[,b]  200 {"a": {.., "body": {"deleted"}}}
//! POST /v3.0/NS/container/set_properties?REF    {"properties"}: 204 | 503 (436) frozen
//!      REF = acct=A&ref=C or cid=CID; anything else: 404 {"status":404,"message":"No handler found"}
//!
//! test hooks (only with --test-hooks)
//! POST /pump/faults   route=admin/copy&status=503[&peer=ADDR]   the next call of the route answers
//!                     it (for one peer, inside the fan-out body, with peer=)
//! POST /pump/member   base=CID.seq&peer=ADDR&master=ADDR       that member follows another master
//! GET  /pump/requests every request so far: method, route, query, body, the status answered and
//!                     whether it was refused as a real proxy refuses it (400, 403, 404, 405)
//! ```
//!
//! The two dialects (`--oio-version`) are those of oio-sds 7.x and of 9.0 and later (read in
//! oio-sds's proxy/ and sqliterepo/; see the README): from 9.0 a call that goes to the master
//! (freeze, enable, disable, vacuum, set/get/del_properties) takes at most one `service_id` (400
//! "Only one service can be requested"), where 7.x sends it to each service named and answers
//! 200 with one status per service; from 9.0 set_properties and del_properties answer 204 and
//! drop the per-service statuses; 7.x requires `to` in admin/copy.
//!
//! The services are emulated as sqliterepo does (sqliterepo/ and sqlx/ of oio-sds): a service
//! sees a base's peers in its copy's `sys.peers` when they list it, else in meta1, else it does
//! not manage the base (431). Each service that is asked about a base becomes a member of its
//! election, with the peers it sees and the lowest of them that manages the base as its master;
//! a member is restarted when the peers it sees change and dropped by `leave`. A call that goes
//! to the master is redirected there (303) unless `service_id` names the service; the master
//! applies it and replicates it to the copies of the peers it sees. meta1 (CID -> services) is
//! kept in memory or in a JSON file shared by several proxies (`--meta1 FILE`); the proxy
//! caches it (the low cache) until a flush or until its own force/unlink of that reference.
//! The elections are also served read-only as ZooKeeper nodes (`zk.rs`), so that `openio
//! election check` can list them.

mod directory;
mod sqlx;
pub mod zk;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

pub use directory::Reference;

/// One meta2 service the proxy emulates: its address and its volume.
#[derive(Debug, Clone)]
pub struct Meta2Service {
    pub address: String,
    pub volume: PathBuf,
}

/// Which oio-proxy the reference answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OioVersion {
    /// oio-sds 7.x (checked against 7.3.0).
    V7,
    /// oio-sds 9.0 and later (checked against 9.0.0 and the 2026 HEAD).
    #[default]
    V9,
}

impl FromStr for OioVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<OioVersion, String> {
        match s.split('.').next().unwrap_or("") {
            "7" => Ok(OioVersion::V7),
            "9" | "10" | "11" | "12" => Ok(OioVersion::V9),
            _ => Err(format!(
                "{s:?}: the reference proxy answers as oio-sds 7 or 9 (9 and later)"
            )),
        }
    }
}

impl std::fmt::Display for OioVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OioVersion::V7 => "7",
            OioVersion::V9 => "9",
        })
    }
}

/// What the proxy serves.
#[derive(Debug, Clone)]
pub struct SdsConfig {
    pub ns: String,
    pub services: Vec<Meta2Service>,
    /// The meta1 store as a JSON file (created from the volumes when absent).
    pub meta1: Option<PathBuf>,
    /// The dialect.
    pub version: OioVersion,
    /// Serve the `/pump/*` test hooks.
    pub test_hooks: bool,
}

impl SdsConfig {
    /// A configuration for `ns` over `services`, meta1 in memory, oio-sds 9, no test hooks.
    pub fn new(ns: impl Into<String>, services: Vec<Meta2Service>) -> SdsConfig {
        SdsConfig {
            ns: ns.into(),
            services,
            meta1: None,
            version: OioVersion::V9,
            test_hooks: false,
        }
    }
}

/// A request as the proxy saw it, and what it answered (for tests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    pub method: String,
    /// `admin/freeze`, `reference/show`, `cache/flush/low`, ...
    pub route: String,
    pub query: String,
    pub body: String,
    /// The HTTP status answered.
    pub status: u16,
    /// Refused as a real proxy refuses it: a malformed or unknown request (400, 403, 404 for
    /// a route that does not exist, 405), not an answer about the state of the base.
    pub refused: bool,
    /// Why, when refused.
    pub reason: String,
}

/// A fault queued by the test hook.
#[derive(Debug, Clone)]
struct Fault {
    status: u16,
    /// Inside the fan-out body, for this peer only.
    peer: Option<String>,
}

/// The proxy's mutable state.
#[derive(Default)]
struct State {
    directory: directory::Directory,
    elections: sqlx::Elections,
    faults: HashMap<String, VecDeque<Fault>>,
    requests: Vec<Recorded>,
}

/// The proxy: its configuration and its state.
pub struct SdsProxy {
    config: SdsConfig,
    state: Mutex<State>,
    /// The ZooKeeper address the debug bodies name (set by [`serve`]).
    zk_server: Mutex<String>,
}

/// An answer: status and JSON body (none for 204).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    /// A refusal of the request itself (see [`Recorded::refused`]).
    refused: bool,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(body),
            refused: false,
        }
    }
    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
            refused: false,
        }
    }
    /// An error about the base or a service: `code` in the body, the HTTP status as oio-proxy's
    /// `_reply_common_error` maps it (431 and the other "not found" codes -> 404, 436 and the
    /// network codes -> 503, 400 -> 400, 403 -> 403, anything else -> 500).
    fn error(code: u16, message: impl Into<String>) -> Reply {
        let http = match code {
            406 | 409 | 420 | 431 | 454 | 418 | 453 => 404,
            400 | 480 => 400,
            403 | 440 | 441 => 403,
            433 | 421 | 424 => 409,
            2..=10 | 305 | 436 | 503 | 504 | 509 | 511 | 481 => 503,
            _ => 500,
        };
        Reply {
            status: http,
            body: Some(json!({"status": code, "message": message.into()})),
            refused: false,
        }
    }
    /// A refusal of the request (400 "Bad request" unless `code` says otherwise).
    fn refuse(code: u16, message: impl Into<String>) -> Reply {
        let mut r = Reply::error(code, message);
        r.refused = true;
        r
    }
    /// oio-proxy's answer to a route it does not have.
    fn no_handler() -> Reply {
        Reply {
            status: 404,
            body: Some(json!({"status": 404, "message": "No handler found"})),
            refused: true,
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

/// The parsed query of a request.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    /// A parameter, when given and not empty (oio-proxy's `OPT()` ignores empty values).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
    /// A flag as oio-proxy reads one: yes, true, on, 1.
    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "yes" | "true" | "on" | "1" | "enable" | "enabled"
            )
        })
    }
}

/// `a,b,c` as a list, blanks dropped.
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The container a request names: `cid=`, or `acct=` and `ref=`.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    cid: String,
    account: Option<String>,
    name: Option<String>,
}

impl Container {
    fn of(q: &Query) -> Result<Container, Reply> {
        if let Some(c) = q.get("cid") {
            // The base name (CID.seq) is tolerated as a CID, as oio-proxy does.
            let hex = c.split('.').next().unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Reply::refuse(400, "Invalid oio url"));
            }
            return Ok(Container {
                cid: hex.to_ascii_uppercase(),
                account: q.get("acct").map(str::to_string),
                name: q.get("ref").map(str::to_string),
            });
        }
        match (q.get("acct"), q.get("ref")) {
            (Some(a), Some(r)) => Ok(Container {
                cid: pump_meta2::cid(a, r),
                account: Some(a.to_string()),
                name: Some(r.to_string()),
            }),
            _ => Err(Reply::refuse(
                400,
                "Invalid parameter: no container (acct and ref, or cid)",
            )),
        }
    }
}

impl SdsProxy {
    /// A proxy over `config`'s volumes; meta1 is loaded from its file or built from the
    /// `sys.peers` of the bases found on the volumes.
    pub fn new(config: SdsConfig) -> Result<SdsProxy, String> {
        let directory = directory::Directory::load(&config)?;
        Ok(SdsProxy {
            config,
            state: Mutex::new(State {
                directory,
                ..State::default()
            }),
            zk_server: Mutex::new("127.0.0.1:2181".into()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dialect.
    pub fn version(&self) -> OioVersion {
        self.config.version
    }

    /// Every request so far (test hook).
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Queues `status` as the next answer of `route`, for `peer` only when given (test hook).
    pub fn inject_fault(&self, route: &str, status: u16, peer: Option<&str>) {
        self.lock()
            .faults
            .entry(route.to_string())
            .or_default()
            .push_back(Fault {
                status,
                peer: peer.map(str::to_string),
            });
    }

    /// Sets the ZooKeeper address the debug bodies name.
    pub fn set_zk_server(&self, addr: &str) {
        *self.zk_server.lock().unwrap_or_else(|e| e.into_inner()) = addr.to_string();
    }

    fn zk_server(&self) -> String {
        self.zk_server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The elections as ZooKeeper would list them: per parent node, the children's names and
    /// data (the service address), the master first.
    pub fn zk_nodes(&self) -> BTreeMap<String, Vec<(String, String)>> {
        let st = self.lock();
        st.elections.zk_nodes(&self.config.ns)
    }

    /// Answers one request. `path` is the URI path, `query` its query string.
    pub fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Reply {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segs.first() == Some(&"pump") && self.config.test_hooks {
            return self.hook(method, &segs[1..], query, body);
        }
        if segs.first() != Some(&"v3.0") || segs.len() < 3 {
            return self.record(method, path, query, body, Reply::no_handler());
        }
        let (ns, route) = if segs[1] == "cache" {
            (None, segs[1..].join("/"))
        } else {
            (Some(segs[1]), segs[2..].join("/"))
        };
        let fault = {
            let mut st = self.lock();
            let f = st.faults.get_mut(&route).and_then(|q| q.pop_front());
            f
        };
        let reply = match fault {
            Some(Fault { status, peer: None }) => Reply::error(
                status,
                format!("{route}: status {status} injected by the test hook"),
            ),
            f => {
                let r = self.route(method, ns, &route, query, body);
                match f {
                    Some(Fault {
                        status,
                        peer: Some(p),
                    }) => inject_peer(r, &p, status),
                    _ => r,
                }
            }
        };
        self.record(method, &route, query, body, reply)
    }

    fn record(&self, method: &str, route: &str, query: &str, body: &[u8], r: Reply) -> Reply {
        let reason = if r.refused {
            r.body
                .as_ref()
                .and_then(|b| b["message"].as_str())
                .unwrap_or_default()
                .to_string()
        } else {
            String::new()
        };
        self.lock().requests.push(Recorded {
            method: method.to_string(),
            route: route.to_string(),
            query: query.to_string(),
            body: String::from_utf8_lossy(body).to_string(),
            status: r.status,
            refused: r.refused,
            reason,
        });
        r
    }

    fn route(
        &self,
        method: &str,
        ns: Option<&str>,
        route: &str,
        query: &str,
        body: &[u8],
    ) -> Reply {
        let known = ROUTES.iter().find(|(r, _)| *r == route);
        let Some((_, want)) = known else {
            return Reply::no_handler();
        };
        if *want != method {
            // oio-proxy matches the method with the path: another method has no handler.
            return Reply::no_handler();
        }
        if let Some(ns) = ns {
            if ns != self.config.ns {
                return Reply::refuse(403, format!("Namespace not managed: {ns}"));
            }
        }
        let q = Query::parse(query);
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return Reply::refuse(400, format!("Invalid JSON body: {e}")),
            }
        };
        let r = match route {
            "cache/flush/low" | "cache/flush/high" | "cache/status" => {
                let mut st = self.lock();
                Ok(st.directory.cache_route(route, &q))
            }
            "conscience/list" => Ok(self.conscience(&q)),
            r if r.starts_with("reference/") => self.reference(&r["reference/".len()..], &q, &body),
            r if r.starts_with("admin/") => self.admin(&r["admin/".len()..], &q, &body),
            "container/set_properties" => self.container_set_properties(&q, &body),
            _ => Err(Reply::no_handler()),
        };
        r.unwrap_or_else(|e| e)
    }

    fn hook(&self, method: &str, segs: &[&str], query: &str, body: &[u8]) -> Reply {
        let form = if body.is_empty() {
            Query::parse(query)
        } else {
            Query::parse(&String::from_utf8_lossy(body))
        };
        match (method, segs) {
            ("GET", ["requests"]) => Reply::ok(json!(self.requests())),
            ("POST", ["faults"]) => {
                let (Some(route), Some(status)) = (
                    form.get("route"),
                    form.get("status").and_then(|s| s.parse::<u16>().ok()),
                ) else {
                    return Reply::refuse(400, "faults: give route=R&status=N[&peer=ADDR]");
                };
                self.inject_fault(route, status, form.get("peer"));
                Reply::no_content()
            }
            ("POST", ["member"]) => {
                let (Some(base), Some(peer), Some(master)) =
                    (form.get("base"), form.get("peer"), form.get("master"))
                else {
                    return Reply::refuse(400, "member: give base=CID.seq&peer=ADDR&master=ADDR");
                };
                let mut st = self.lock();
                if st.elections.set_master(base, peer, master) {
                    Reply::no_content()
                } else {
                    Reply::refuse(404, format!("{peer} is not a member of {base}'s election"))
                }
            }
            _ => Reply::refuse(404, "no such test hook"),
        }
    }
}

/// The routes oio-proxy has that the reference serves, with their method.
const ROUTES: &[(&str, &str)] = &[
    ("cache/flush/low", "POST"),
    ("cache/flush/high", "POST"),
    ("cache/status", "GET"),
    ("conscience/list", "GET"),
    ("reference/show", "GET"),
    ("reference/get_properties", "POST"),
    ("reference/force", "POST"),
    ("reference/unlink", "POST"),
    ("admin/ping", "POST"),
    ("admin/has", "POST"),
    ("admin/status", "POST"),
    ("admin/sync", "POST"),
    ("admin/leave", "POST"),
    ("admin/debug", "POST"),
    ("admin/freeze", "POST"),
    ("admin/enable", "POST"),
    ("admin/disable", "POST"),
    ("admin/vacuum", "POST"),
    ("admin/copy", "POST"),
    ("admin/remove", "POST"),
    ("admin/get_properties", "POST"),
    ("admin/set_properties", "POST"),
    ("admin/del_properties", "POST"),
    ("container/set_properties", "POST"),
];

/// Replaces `peer`'s status inside a fan-out answer (test hook).
fn inject_peer(mut r: Reply, peer: &str, status: u16) -> Reply {
    if let Some(Value::Object(o)) = r.body.as_mut() {
        o.insert(
            peer.to_string(),
            json!({"status": {"status": status,
                "message": format!("status {status} injected by the test hook")},
                "body": ""}),
        );
    }
    r
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
                .unwrap_or_else(|e| Reply::error(500, format!("handler failed: {e}")))
        }
    })
}

/// Binds `addr` and serves the proxy in the background, with its read-only ZooKeeper on a port
/// of its own; returns the proxy's bound address and ZooKeeper's.
pub async fn serve(
    proxy: Arc<SdsProxy>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let zk = zk::serve(proxy.clone(), SocketAddr::new(addr.ip(), 0)).await?;
    proxy.set_zk_server(&zk.to_string());
    let bound = crate::rest::serve_app(router(proxy), addr, "SDS proxy").await?;
    Ok((bound, zk))
}

#[cfg(test)]
mod tests;
