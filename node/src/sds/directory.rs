//! The directory side of the reference proxy: meta1 (CID -> meta2 services), the proxy's low
//! cache of it, the conscience's list of services and the `reference/*` and `cache/*` routes.
//!
//! ```text
//! meta1 file  {"<CID>": {"account": A, "reference": C, "meta2": "a,b,c" | null}, ...}
//! show        {"dir": [{"seq":1,"type":"meta1","host":PROXY,"args":""}],
//!              "srv": [{"seq":1,"type":"meta2","host":"a","args":""}, ...],   one per service
//!              "cid": CID, "account": A | null, "name": C | null}          (from the query)
//! ```
//!
//! `reference/show` with `type` answers from the low cache (filled from meta1 on a miss), as
//! oio-proxy's resolver does; without `type` it asks meta1. `reference/force` and `unlink`
//! drop the reference from this proxy's cache (other proxies keep theirs until flushed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pump_meta2::BaseName;
use serde_json::{json, Value};

use super::{split_list, Container, Query, Reply, SdsConfig, SdsProxy};

/// One reference in meta1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub account: String,
    pub reference: String,
    /// The meta2 services, `a,b,c`; None once unlinked.
    pub meta2: Option<String>,
}

/// meta1 and the proxy's cache of it.
#[derive(Default)]
pub(super) struct Directory {
    meta1: BTreeMap<String, Reference>,
    file: Option<PathBuf>,
    /// The low cache: CID -> meta2 services.
    cache: BTreeMap<String, Vec<String>>,
}

impl Directory {
    /// meta1 from its file, or from the `sys.peers` of the bases on the volumes.
    pub(super) fn load(config: &SdsConfig) -> Result<Directory, String> {
        let mut d = Directory {
            file: config.meta1.clone(),
            ..Directory::default()
        };
        match &config.meta1 {
            Some(f) if f.exists() => d.meta1 = load_meta1(f)?,
            _ => {
                d.meta1 = scan_meta1(config)?;
                if let Some(f) = &config.meta1 {
                    save_meta1(f, &d.meta1)?;
                }
            }
        }
        Ok(d)
    }

    /// meta1 as it is now (the file is read again: another proxy may have changed it).
    pub(super) fn refresh(&mut self) -> Result<(), Reply> {
        if let Some(f) = &self.file {
            self.meta1 = load_meta1(f).map_err(|e| Reply::error(500, e))?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), Reply> {
        if let Some(f) = &self.file {
            save_meta1(f, &self.meta1).map_err(|e| Reply::error(500, e))?;
        }
        Ok(())
    }

    /// The meta2 services meta1 links to `cid` (read now, no cache).
    pub(super) fn linked(&mut self, cid: &str) -> Vec<String> {
        if self.refresh().is_err() {
            return Vec::new();
        }
        self.meta1
            .get(cid)
            .and_then(|r| r.meta2.as_deref())
            .map(split_list)
            .unwrap_or_default()
    }

    /// The reference's meta2 services as the cache has them (filled from meta1 when absent).
    pub(super) fn resolve(&mut self, cid: &str) -> Result<Vec<String>, Reply> {
        if let Some(p) = self.cache.get(cid) {
            return Ok(p.clone());
        }
        self.refresh()?;
        let Some(r) = self.meta1.get(cid) else {
            return Err(Reply::error(
                406,
                format!("Directory error: reference {cid} not found"),
            ));
        };
        let peers = r.meta2.as_deref().map(split_list).unwrap_or_default();
        if peers.is_empty() {
            return Err(Reply::error(
                454,
                format!("Directory error: no meta2 service linked to {cid}"),
            ));
        }
        self.cache.insert(cid.to_string(), peers.clone());
        Ok(peers)
    }

    pub(super) fn cache_route(&mut self, route: &str, q: &Query) -> Reply {
        match route {
            "cache/flush/low" => {
                // `type` flushes that type only; only meta2 is cached here.
                if q.get("type").is_none_or(|t| t == "meta2") {
                    self.cache.clear();
                }
                Reply::no_content()
            }
            "cache/flush/high" => Reply::no_content(),
            _ => Reply::ok(json!({
                "csm0": {"count": 0, "max": 0, "ttl": 0},
                "meta1": {"count": self.cache.len(), "max": 0, "ttl": 0},
            })),
        }
    }
}

fn load_meta1(f: &Path) -> Result<BTreeMap<String, Reference>, String> {
    let text = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
    serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: not a meta1 store (JSON CID -> reference): {e}",
            f.display()
        )
    })
}

fn save_meta1(f: &Path, m: &BTreeMap<String, Reference>) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
    let mut tmp = f.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    pump_files::write_replacing(&tmp, f, &text).map_err(|e| format!("{}: {e}", f.display()))
}

/// meta1 built from the bases found on the volumes: each base's `sys.peers`, account and name.
fn scan_meta1(config: &SdsConfig) -> Result<BTreeMap<String, Reference>, String> {
    let mut out = BTreeMap::new();
    for s in &config.services {
        let bases = BaseName::list(&s.volume).map_err(|e| e.to_string())?;
        for b in bases {
            if out.contains_key(&b.cid) {
                continue;
            }
            let Ok(admin) = super::sqlx::read_admin(&b.path_in(&s.volume)) else {
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
                    meta2: Some(split_list(&text("sys.peers")).join(",")),
                },
            );
        }
    }
    Ok(out)
}

fn srv_entries(services: &[String]) -> Vec<Value> {
    services
        .iter()
        .map(|h| json!({"seq": 1, "type": "meta2", "host": h, "args": ""}))
        .collect()
}

/// meta1's `{"seq","type","host","args"}` (meta1_service_url_load_json_object).
fn service_url(body: &Value) -> Result<(String, Vec<String>), Reply> {
    let bad = |why: &str| Reply::refuse(400, format!("Invalid service: {why}"));
    let Some(o) = body.as_object() else {
        return Err(bad("expected a JSON object"));
    };
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no type"))?;
    let host = o
        .get("host")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no host"))?;
    if o.get("seq").is_some_and(|s| !s.is_i64()) {
        return Err(bad("seq is not an integer"));
    }
    if o.get("args").is_some_and(|s| !s.is_string()) {
        return Err(bad("args is not a string"));
    }
    let hosts = split_list(host);
    if hosts.is_empty() {
        return Err(bad("empty host"));
    }
    for h in &hosts {
        pump_meta2::parse_address(h).map_err(|e| bad(&e.to_string()))?;
    }
    Ok((ty.to_string(), hosts))
}

impl SdsProxy {
    pub(super) fn conscience(&self, q: &Query) -> Reply {
        let Some(ty) = q.get("type") else {
            return Reply::refuse(400, "Missing type");
        };
        if ty != "meta2" && ty != "all" {
            // The reference namespace has meta2 services only.
            return Reply::error(453, format!("Conscience error: type {ty} not managed"));
        }
        Reply::ok(Value::Array(
            self.config
                .services
                .iter()
                .map(|s| {
                    json!({"addr": s.address, "id": s.address, "type": "meta2", "score": 100,
                        "local": false,
                        "tags": {"tag.up": true, "tag.service_id": s.address,
                            "tag.vol": s.volume.display().to_string()}})
                })
                .collect(),
        ))
    }

    pub(super) fn reference(&self, action: &str, q: &Query, body: &Value) -> Result<Reply, Reply> {
        let c = Container::of(q)?;
        let ty = q.get("type");
        let mut st = self.lock();
        let d = &mut st.directory;
        match action {
            "show" => {
                d.refresh()?;
                if !d.meta1.contains_key(&c.cid) {
                    return Err(Reply::error(406, "Reference not found"));
                }
                let srv = match ty {
                    // The resolver: the low cache, filled from meta1.
                    Some("meta2") => match d.resolve(&c.cid) {
                        Ok(p) => srv_entries(&p),
                        Err(_) => Vec::new(),
                    },
                    Some(_) => Vec::new(),
                    None => srv_entries(&d.linked(&c.cid)),
                };
                Ok(Reply::ok(json!({
                    "dir": [{"seq": 1, "type": "meta1", "host": self.zk_meta1(), "args": ""}],
                    "srv": srv,
                    "cid": c.cid,
                    "account": c.account,
                    "name": c.name,
                })))
            }
            "get_properties" => {
                if !(body.is_null()
                    || body
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string)))
                {
                    return Err(Reply::refuse(400, "Invalid/Unexpected JSON"));
                }
                d.refresh()?;
                if !d.meta1.contains_key(&c.cid) {
                    return Err(Reply::error(406, "META1 error: Reference not found"));
                }
                Ok(Reply::ok(json!({"cid": c.cid, "properties": {}})))
            }
            "force" | "unlink" => {
                let Some(ty) = ty else {
                    return Err(Reply::refuse(400, "No service type provided"));
                };
                let hosts = if action == "force" {
                    let (body_type, hosts) = service_url(body)?;
                    if body_type != "meta2" || ty != "meta2" {
                        return Err(Reply::error(
                            453,
                            format!("META1 error: type {body_type} not managed here (meta2 only)"),
                        ));
                    }
                    Some(hosts)
                } else {
                    None
                };
                d.refresh()?;
                let Some(entry) = d.meta1.get_mut(&c.cid) else {
                    return Err(Reply::error(406, "META1 error: Reference not found"));
                };
                match hosts {
                    Some(hosts) => {
                        if entry.meta2.is_some() && !q.flag("replace") {
                            let mut r = Reply::error(
                                455,
                                "META1 error: a meta2 service is already linked (replace=yes)",
                            );
                            r.status = 403;
                            return Err(r);
                        }
                        entry.meta2 = Some(hosts.join(","));
                    }
                    None => entry.meta2 = None,
                }
                d.save()?;
                // hc_decache_reference_service: this proxy forgets the reference.
                d.cache.remove(&c.cid);
                Ok(Reply::no_content())
            }
            _ => Err(Reply::no_handler()),
        }
    }

    /// The address given as meta1's in `reference/show`'s `dir` (the proxy's ZooKeeper port
    /// stands for it: the reference has no meta1 service of its own).
    fn zk_meta1(&self) -> String {
        self.zk_server()
    }
}
