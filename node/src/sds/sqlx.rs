//! The meta2 services behind the reference proxy, emulated over their volumes as sqliterepo
//! behaves, and the `admin/*` and `container/set_properties` routes.
//!
//! ```text
//! peers a service sees   its copy's sys.peers when they list it, else meta1's when they
//!                        list it, else none: 431 "Base not managed" (431 "Base not found"
//!                        when it has no copy and the call does not create one)
//! member                 (base, service) -> the peers it sees, its master (the lowest of
//!                        them holding a copy it manages), an id, a log (newest first)
//! debug body             {"local": {"id","url","state"}, "master": {"id","url"},
//!                         "base": {"name","type","zk","zk_server"}, "#": {...},
//!                         "peers": [the others], "log": ["ms:PRE:EVENT:POST", ...]}  | null
//! has body               "<path>:<mtime>"   (the file exists; nothing else is checked)
//! a write on the master  applied to its copy, then to the copies of the peers it sees,
//!                        with version:main.admin bumped once in all of them
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pump_meta2::schema::{self, STATUS_DISABLED, STATUS_FROZEN};
use pump_meta2::BaseName;
use serde_json::{json, Map, Value};

use super::{now_ms, split_list, Container, OioVersion, Query, Reply, SdsProxy, State};

/// Why a service does not do what it is asked: a status code and a message.
type Refusal = (u16, String);

/// Admin keys to write (None deletes).
type AdminValues = Vec<(String, Option<Vec<u8>>)>;

/// The admin table of a copy.
pub(super) fn read_admin(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let c = schema::open_read(path).map_err(|e| e.to_string())?;
    let mut stmt = c
        .prepare("SELECT k FROM admin")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let keys: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for k in keys {
        let v = schema::admin_get(&c, &k)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .unwrap_or_default();
        out.insert(k, v);
    }
    Ok(out)
}

/// Writes admin keys (None deletes) and bumps `version:main.admin` to `admin_version`, in one
/// transaction.
fn write_admin(
    path: &Path,
    values: &[(String, Option<Vec<u8>>)],
    admin_version: &str,
) -> Result<(), String> {
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
    schema::admin_set(&tx, &schema::version_key("admin"), admin_version.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tx.commit().map_err(|e| format!("{}: {e}", path.display()))
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

fn admin_version(admin: &BTreeMap<String, Vec<u8>>) -> u64 {
    admin
        .get(&schema::version_key("admin"))
        .and_then(|v| schema::parse_version(v))
        .unwrap_or(0)
}

/// One service's member of a base's election.
#[derive(Debug, Clone)]
struct Member {
    /// The peers the service sees, itself included, sorted.
    view: Vec<String>,
    master: String,
    id: u64,
    /// Oldest first.
    log: Vec<String>,
}

/// The members of every election, by (base, service).
#[derive(Default)]
pub(super) struct Elections {
    members: BTreeMap<(String, String), Member>,
    next_id: u64,
}

/// The ZooKeeper parent node and node-name prefix of a base's election.
fn zk_key(ns: &str, base: &str) -> (String, String) {
    (
        format!("/hc/ns/{ns}/el/meta2/{}", &base[..2.min(base.len())]),
        base.to_string(),
    )
}

impl Elections {
    /// The elections as ZooKeeper nodes: parent -> [(name, service)], the master first.
    pub(super) fn zk_nodes(&self, ns: &str) -> BTreeMap<String, Vec<(String, String)>> {
        let mut by_base: BTreeMap<&str, Vec<(&String, &Member)>> = BTreeMap::new();
        for ((base, service), m) in &self.members {
            by_base.entry(base).or_default().push((service, m));
        }
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (base, mut members) in by_base {
            members.sort_by_key(|(s, m)| (m.master != **s, m.id));
            let (parent, prefix) = zk_key(ns, base);
            let nodes = out.entry(parent).or_default();
            for (i, (s, _)) in members.iter().enumerate() {
                nodes.push((format!("{prefix}-{:010}", i + 1), s.to_string()));
            }
        }
        out
    }

    /// Makes `peer`'s member follow `master` (test hook); false when there is no such member.
    pub(super) fn set_master(&mut self, base: &str, peer: &str, master: &str) -> bool {
        match self.members.get_mut(&(base.to_string(), peer.to_string())) {
            Some(m) => {
                m.master = master.to_string();
                true
            }
            None => false,
        }
    }
}

/// What a call that goes to the master does there.
enum Write {
    Status(&'static str),
    Vacuum,
    Properties(AdminValues),
}

impl SdsProxy {
    /// The file of `base` at `address`, if the service is known.
    fn path(&self, address: &str, base: &BaseName) -> Option<PathBuf> {
        self.config
            .services
            .iter()
            .find(|s| s.address == address)
            .map(|s| base.path_in(&s.volume))
    }

    /// The peers `service` sees for `base`, itself included, sorted. `create`: a call that
    /// creates the base (a resync) needs no copy.
    fn view(
        &self,
        st: &mut State,
        base: &BaseName,
        service: &str,
        create: bool,
    ) -> Result<Vec<String>, Refusal> {
        let Some(path) = self.path(service, base) else {
            return Err((2, format!("{service}: connection refused")));
        };
        let exists = path.exists();
        if !exists && !create {
            return Err((431, "Base not found".into()));
        }
        if exists {
            if let Ok(admin) = read_admin(&path) {
                let mut p = peers_of(&admin);
                if p.iter().any(|a| a == service) {
                    p.sort();
                    return Ok(p);
                }
            }
        }
        let mut m1 = st.directory.linked(&base.cid);
        if m1.iter().any(|a| a == service) {
            m1.sort();
            return Ok(m1);
        }
        Err((431, "Base not managed".into()))
    }

    /// The member of `service` in `base`'s election: started, or restarted when the peers it
    /// sees changed.
    fn member(
        &self,
        st: &mut State,
        base: &BaseName,
        service: &str,
        create: bool,
    ) -> Result<Member, Refusal> {
        let view = self.view(st, base, service, create)?;
        let key = (base.to_string(), service.to_string());
        let old = st.elections.members.get(&key).cloned();
        if let Some(m) = &old {
            if m.view == view {
                return Ok(m.clone());
            }
        }
        let mut master = None;
        for p in &view {
            if self.view(st, base, p, false).is_ok() {
                master = Some(p.clone());
                break;
            }
        }
        let Some(master) = master else {
            return Err((503, "Election failed: no peer holds the base".into()));
        };
        let ms = now_ms();
        let mut log = old.map(|m| m.log).unwrap_or_default();
        if let Some(last) = log.last().cloned() {
            let state = last.rsplit(':').next().unwrap_or("NONE").to_string();
            log.push(format!("{ms}:{state}:LEAVE_REQ:LEAVING"));
            log.push(format!("{ms}:LEAVING:LEAVE_OK:NONE"));
        }
        for l in [
            "NONE:NONE:PEERING",
            "PEERING:GETPEERS_DONE:CREATING",
            "CREATING:CREATE_OK:WATCHING",
            "WATCHING:EXISTS_OK:LISTING",
        ] {
            log.push(format!("{ms}:{l}"));
        }
        if master == service {
            log.push(format!("{ms}:LISTING:LIST_OK:CHECKING_SLAVES"));
            log.push(format!("{ms}:CHECKING_SLAVES:GETVERS_OK:MASTER"));
        } else {
            log.push(format!("{ms}:LISTING:LIST_OK:ASKING"));
            log.push(format!("{ms}:ASKING:MASTER_OK:CHECKING_MASTER"));
            log.push(format!("{ms}:CHECKING_MASTER:GETVERS_OK:SLAVE"));
        }
        st.elections.next_id += 1;
        let m = Member {
            view,
            master,
            id: st.elections.next_id,
            log,
        };
        st.elections.members.insert(key, m.clone());
        Ok(m)
    }

    fn debug_body(&self, st: &State, base: &BaseName, service: &str) -> Value {
        let key = (base.to_string(), service.to_string());
        let Some(m) = st.elections.members.get(&key) else {
            return Value::Null;
        };
        let master_id = st
            .elections
            .members
            .get(&(base.to_string(), m.master.clone()))
            .map(|mm| json!(mm.id))
            .unwrap_or(Value::Null);
        let (parent, prefix) = zk_key(&self.config.ns, &base.to_string());
        let state = if m.master == service {
            "MASTER"
        } else {
            "SLAVE"
        };
        json!({
            "local": {"id": m.id, "url": service, "state": state},
            "master": {"id": master_id, "url": m.master},
            "base": {"name": base.to_string(), "type": "meta2",
                "zk": format!("{parent}/{prefix}"), "zk_server": self.zk_server()},
            "#": {"refcount": 0, "pipefrom": 0, "getvers": 0,
                "seconds_since_last_access": 0, "seconds_since_last_status": 0},
            "peers": m.view.iter().filter(|p| *p != service).collect::<Vec<_>>(),
            "log": m.log.iter().rev().collect::<Vec<_>>(),
        })
    }

    /// One service's answer to a call that every service gets (RUN_ALL).
    fn run_one(
        &self,
        st: &mut State,
        action: &str,
        base: &BaseName,
        t: &str,
    ) -> (u16, String, Value) {
        let empty = || Value::String(String::new());
        let Some(path) = self.path(t, base) else {
            return (2, format!("{t}: connection refused"), empty());
        };
        match action {
            "has" => match std::fs::metadata(&path) {
                Ok(md) => {
                    let mtime = md
                        .modified()
                        .ok()
                        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    (
                        200,
                        "OK".into(),
                        json!(format!("{}:{mtime}", path.display())),
                    )
                }
                Err(_) => (431, "Base not found".into(), empty()),
            },
            "leave" => {
                st.elections
                    .members
                    .remove(&(base.to_string(), t.to_string()));
                (200, "OK".into(), empty())
            }
            "debug" => (200, "OK".into(), self.debug_body(st, base, t)),
            "ping" => match self.member(st, base, t, false) {
                Ok(_) => (200, "OK".into(), empty()),
                Err((c, m)) => (c, m, empty()),
            },
            "status" => match self.member(st, base, t, false) {
                Ok(m) if m.master == t => (200, "OK".into(), empty()),
                Ok(m) => (303, m.master, empty()),
                Err((c, m)) => (c, m, empty()),
            },
            "sync" => match self.member(st, base, t, true) {
                Ok(m) if m.master == t => (301, "not SLAVE".into(), empty()),
                Ok(m) => {
                    let Some(src) = self.path(&m.master, base) else {
                        return (2, format!("{}: connection refused", m.master), empty());
                    };
                    match copy_file(&src, &path) {
                        Ok(()) => (200, "OK".into(), empty()),
                        Err(e) => (500, e, empty()),
                    }
                }
                Err((c, m)) => (c, m, empty()),
            },
            _ => (404, format!("admin/{action}: no such action"), empty()),
        }
    }

    /// Applies `w` on `master` (the master of its own member) and replicates it to the copies
    /// of the peers it sees.
    fn apply(
        &self,
        st: &mut State,
        base: &BaseName,
        master: &str,
        w: &Write,
    ) -> Result<(), Refusal> {
        let m = self.member(st, base, master, false)?;
        let path = self
            .path(master, base)
            .ok_or_else(|| (2, format!("{master}: connection refused")))?;
        let admin = read_admin(&path).map_err(|e| (500, e))?;
        let values: AdminValues = match w {
            Write::Vacuum => return Ok(()),
            Write::Properties(v) => v.clone(),
            Write::Status(action) => {
                let now = status_of(&admin);
                let want = match *action {
                    "freeze" => STATUS_FROZEN,
                    "disable" => STATUS_DISABLED,
                    _ => 0,
                };
                match (*action, now) {
                    ("enable", 0) => return Err((439, "Already enabled".into())),
                    ("enable", _) => {}
                    (_, 0) => {}
                    (_, STATUS_FROZEN) => return Err((436, "Container frozen".into())),
                    _ => return Err((437, "Container disabled".into())),
                }
                vec![("sys.status".into(), Some(want.to_string().into_bytes()))]
            }
        };
        let mut targets = vec![path];
        for p in m.view.iter().filter(|p| *p != master) {
            if let Some(pp) = self.path(p, base).filter(|pp| pp.exists()) {
                targets.push(pp);
            }
        }
        let version = format!("{}:{}", admin_version(&admin) + 1, now_ms() * 1000);
        for t in &targets {
            write_admin(t, &values, &version).map_err(|e| (500, e))?;
        }
        Ok(())
    }

    /// A call that goes to the master, through the reference's services as the cache has them
    /// (a slave redirects there). `Err` is the reply.
    fn through_master(
        &self,
        st: &mut State,
        base: &BaseName,
        w: &Write,
        status_ok: impl Fn(&BaseName, &str) -> Result<(), Refusal>,
    ) -> Result<String, Reply> {
        let targets = st.directory.resolve(&base.cid)?;
        for t in &targets {
            match self.member(st, base, t, false) {
                Err((c, _)) if (2..=10).contains(&c) => continue,
                Err((c, m)) => return Err(Reply::error(c, m)),
                Ok(m) => {
                    status_ok(base, &m.master).map_err(|(c, msg)| Reply::error(c, msg))?;
                    self.apply(st, base, &m.master, w)
                        .map_err(|(c, msg)| Reply::error(c, msg))?;
                    return Ok(m.master);
                }
            }
        }
        Err(Reply::error(
            503,
            "No service replied (last error: (2) connection refused)",
        ))
    }

    fn fan_out_reply(answers: Vec<(String, (u16, String, Value))>) -> Reply {
        let mut out = Map::new();
        for (t, (code, message, body)) in answers {
            out.insert(
                t,
                json!({"status": {"status": code, "message": message}, "body": body}),
            );
        }
        Reply::ok(Value::Object(out))
    }

    /// `service_id`, checked for a call that runs on one service only (9.0 and later).
    fn specified(&self, q: &Query, multi: bool) -> Result<Option<Vec<String>>, Reply> {
        let Some(s) = q.get("service_id") else {
            return Ok(None);
        };
        let list = split_list(s);
        if !multi && self.config.version == OioVersion::V9 && list.len() > 1 {
            return Err(Reply::refuse(400, "Only one service can be requested"));
        }
        Ok(Some(list))
    }

    pub(super) fn admin(&self, action: &str, q: &Query, body: &Value) -> Result<Reply, Reply> {
        if action == "copy" {
            return self.copy(q, body);
        }
        let Some(ty) = q.get("type") else {
            return Err(Reply::refuse(400, "No service type"));
        };
        let c = Container::of(q)?;
        if ty != "meta2" {
            return Err(Reply::error(
                453,
                format!("type {ty}: the reference proxy serves meta2 bases only"),
            ));
        }
        let base = BaseName { cid: c.cid, seq: 1 };
        match action {
            "ping" | "has" | "status" | "sync" | "leave" | "debug" => {
                let specified = self.specified(q, true)?;
                let mut st = self.lock();
                let targets = match specified {
                    Some(s) => s,
                    None => st.directory.resolve(&base.cid)?,
                };
                let answers = targets
                    .iter()
                    .map(|t| (t.clone(), self.run_one(&mut st, action, &base, t)))
                    .collect();
                Ok(Self::fan_out_reply(answers))
            }
            "freeze" | "enable" | "disable" | "vacuum" => {
                let w = match action {
                    "vacuum" => Write::Vacuum,
                    "freeze" => Write::Status("freeze"),
                    "enable" => Write::Status("enable"),
                    _ => Write::Status("disable"),
                };
                self.to_master(q, &base, &w, false)
            }
            "set_properties" | "del_properties" => {
                let values = if action == "set_properties" {
                    usersys_properties(body)?
                } else {
                    let Some(names) = body.as_array().filter(|a| a.iter().all(Value::is_string))
                    else {
                        return Err(Reply::refuse(400, "Bad names"));
                    };
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|n| (format!("user.{n}"), None))
                        .collect()
                };
                self.to_master(q, &base, &Write::Properties(values), true)
            }
            "get_properties" => self.get_properties(q, &base),
            "remove" => {
                let Some(sids) = q.get("service_id").map(split_list) else {
                    return Err(Reply::refuse(400, "No service ID"));
                };
                let mut st = self.lock();
                let answers = sids
                    .iter()
                    .map(|t| {
                        let a = match self.path(t, &base) {
                            None => (2, format!("{t}: connection refused"), json!("")),
                            Some(p) => {
                                let deleted = std::fs::remove_file(&p).is_ok();
                                st.elections.members.remove(&(base.to_string(), t.clone()));
                                (200, "OK".into(), json!({"deleted": deleted}))
                            }
                        };
                        (t.clone(), a)
                    })
                    .collect();
                Ok(Self::fan_out_reply(answers))
            }
            _ => Err(Reply::no_handler()),
        }
    }

    /// freeze, enable, disable, vacuum, set/del_properties: to the master, or to the services
    /// `service_id` names (not redirected: a slave answers 303 and its master).
    fn to_master(
        &self,
        q: &Query,
        base: &BaseName,
        w: &Write,
        properties: bool,
    ) -> Result<Reply, Reply> {
        let specified = self.specified(q, false)?;
        let v9 = self.config.version == OioVersion::V9;
        let mut st = self.lock();
        let Some(sids) = specified else {
            self.through_master(&mut st, base, w, |_, _| Ok(()))?;
            return Ok(if properties && v9 {
                Reply::no_content()
            } else {
                Reply::ok(json!({}))
            });
        };
        let mut answers = Vec::new();
        for t in &sids {
            let a = match self.member(&mut st, base, t, false) {
                Err((c, _)) if v9 && (2..=10).contains(&c) => {
                    return Err(Reply::error(
                        503,
                        format!("No service replied (last error: ({c}) connection refused)"),
                    ))
                }
                Err((c, m)) => (c, m),
                Ok(m) if m.master != *t => (303, m.master),
                Ok(_) => match self.apply(&mut st, base, t, w) {
                    Ok(()) => (200, "OK".into()),
                    Err(e) => e,
                },
            };
            answers.push((t.clone(), (a.0, a.1, json!(""))));
        }
        if properties && v9 {
            // 9.0 and later answer 204 whatever each service said.
            return Ok(Reply::no_content());
        }
        Ok(Self::fan_out_reply(answers))
    }

    fn get_properties(&self, q: &Query, base: &BaseName) -> Result<Reply, Reply> {
        let specified = self.specified(q, false)?;
        let mut st = self.lock();
        let mut admin = None;
        match specified {
            Some(sids) => {
                // CLIENT_SPECIFIED: errors are dropped; no answer gives empty properties.
                for t in &sids {
                    if self.member(&mut st, base, t, false).is_ok() {
                        admin = self.path(t, base).and_then(|p| read_admin(&p).ok());
                        if admin.is_some() {
                            break;
                        }
                    }
                }
            }
            None => {
                for t in st.directory.resolve(&base.cid)? {
                    match self.member(&mut st, base, &t, false) {
                        Err((c, _)) if (2..=10).contains(&c) => continue,
                        Err((c, m)) => return Err(Reply::error(c, m)),
                        Ok(_) => {
                            let p = self.path(&t, base).unwrap_or_default();
                            admin = Some(read_admin(&p).map_err(|e| Reply::error(500, e))?);
                            break;
                        }
                    }
                }
            }
        }
        let (mut props, mut sys) = (Map::new(), Map::new());
        for (k, v) in admin.unwrap_or_default() {
            let v = Value::String(String::from_utf8_lossy(&v).to_string());
            match k.strip_prefix("user.") {
                Some(u) => props.insert(u.to_string(), v),
                None => sys.insert(k, v),
            };
        }
        Ok(Reply::ok(json!({"properties": props, "system": sys})))
    }

    fn copy(&self, q: &Query, body: &Value) -> Result<Reply, Reply> {
        let Some(o) = body.as_object() else {
            return Err(Reply::refuse(400, "Action argument must be an object"));
        };
        let v7 = self.config.version == OioVersion::V7;
        let field = |k: &str| -> Result<Option<&str>, Reply> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(Reply::refuse(
                    400,
                    format!("Invalid field [{k}]: not a string"),
                )),
            }
        };
        let to = field("to")?;
        let from = field("from")?;
        let local = !v7 && o.get("local").and_then(Value::as_i64).unwrap_or(0) != 0;
        if v7 && to.is_none() {
            return Err(Reply::refuse(400, "Missing field [to]"));
        }
        let valid = |a: Option<&str>| a.is_some_and(|a| pump_meta2::parse_address(a).is_ok());
        if !local && !valid(to) {
            return Err(Reply::refuse(400, "Invalid target URL"));
        }
        if from.is_some() && !valid(if v7 { to } else { from }) {
            return Err(Reply::refuse(400, "Invalid source URL"));
        }
        let Some(ty) = q.get("type") else {
            return Err(Reply::refuse(400, "No service type"));
        };
        let c = Container::of(q)?;
        if ty != "meta2" {
            return Err(Reply::error(
                453,
                format!("type {ty}: the reference proxy serves meta2 bases only"),
            ));
        }
        if local {
            return Err(Reply::error(
                501,
                "local copies (DB_LOCAL_COPY) are not emulated by the reference proxy",
            ));
        }
        let base = BaseName { cid: c.cid, seq: 1 };
        let to = to.unwrap_or_default();
        let Some(dst) = self.path(to, &base) else {
            return Err(Reply::error(2, format!("{to}: connection refused")));
        };
        match from {
            // DB_PIPEFROM on `to`.
            Some(from) => {
                let Some(src) = self.path(from, &base) else {
                    return Err(Reply::error(2, format!("{from}: connection refused")));
                };
                if !src.exists() {
                    return Err(Reply::error(431, format!("{from}: Base not found")));
                }
                copy_file(&src, &dst).map_err(|e| Reply::error(500, e))?;
                let mut st = self.lock();
                st.elections
                    .members
                    .remove(&(base.to_string(), to.to_string()));
                Ok(Reply::no_content())
            }
            // DB_PIPETO from the master.
            None => {
                let mut st = self.lock();
                let master = self.through_master(&mut st, &base, &Write::Vacuum, |_, _| Ok(()))?;
                let src = self.path(&master, &base).unwrap_or_default();
                copy_file(&src, &dst).map_err(|e| Reply::error(500, e))?;
                st.elections
                    .members
                    .remove(&(base.to_string(), to.to_string()));
                Ok(Reply::ok(json!({})))
            }
        }
    }

    /// `container/set_properties`: a user's write, to the master, refused on a frozen or
    /// disabled base.
    pub(super) fn container_set_properties(&self, q: &Query, body: &Value) -> Result<Reply, Reply> {
        let c = Container::of(q)?;
        let Some(props) = body.get("properties").and_then(Value::as_object) else {
            return Err(Reply::refuse(400, "No \"properties\" field"));
        };
        let mut values = Vec::new();
        for (k, v) in props {
            let Some(v) = v.as_str() else {
                return Err(Reply::refuse(400, format!("property {k}: not a string")));
            };
            values.push((format!("user.{k}"), Some(v.as_bytes().to_vec())));
        }
        let base = BaseName { cid: c.cid, seq: 1 };
        let mut st = self.lock();
        let check = |b: &BaseName, master: &str| -> Result<(), Refusal> {
            let p = self
                .path(master, b)
                .ok_or_else(|| (2, format!("{master}: connection refused")))?;
            let admin = read_admin(&p).map_err(|e| (500, e))?;
            match status_of(&admin) {
                0 => Ok(()),
                STATUS_FROZEN => Err((436, "Invalid status: frozen".into())),
                _ => Err((436, "Invalid status: disabled".into())),
            }
        };
        self.through_master(&mut st, &base, &Write::Properties(values), check)?;
        Ok(Reply::no_content())
    }
}

/// The body of `admin/set_properties` (KV_read_usersys_properties): `properties` become
/// `user.*` keys, `system` keys are written as given; string values only.
fn usersys_properties(body: &Value) -> Result<AdminValues, Reply> {
    if !body.is_null() && !body.is_object() {
        return Err(Reply::refuse(400, "Object argument expected"));
    }
    let mut out = Vec::new();
    for (section, prefix) in [("properties", "user."), ("system", "")] {
        match body.get(section) {
            None => {}
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    let Some(v) = v.as_str() else {
                        return Err(Reply::refuse(400, format!("Bad \"{section}\" field: {k}")));
                    };
                    out.push((format!("{prefix}{k}"), Some(v.as_bytes().to_vec())));
                }
            }
            _ => return Err(Reply::refuse(400, format!("Bad \"{section}\" field"))),
        }
    }
    if out.is_empty() {
        return Err(Reply::refuse(400, "No properties found in JSON object"));
    }
    Ok(out)
}
