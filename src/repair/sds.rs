//! meta2 repairs in a running OpenIO SDS namespace: the proxy's routes around the transfer.
//!
//! ```text
//! move   conscience/list (every address must be a meta2 service; nothing sent before)
//!        flush the caches of every proxy, reference/show type=meta2, admin/has (every copy
//!        there), admin/leave, admin/freeze (to the master), admin/set_properties sys.peers (to the
//!        master: it replicates to the old peers' copies), the transfer (the pump where both
//!        volumes are reachable, admin/copy otherwise: the new copy carries the new peers),
//!        admin/get_properties on each new peer (its copy lists the new peers),
//!        admin/status on the new peers (one master), admin/enable (to that master, one
//!        service_id), reference/force type=meta2 replace=yes, flush the caches, admin/ping,
//!        admin/status, admin/debug (only the new peers), container/set_properties
//! sync   flush, reference/show, admin/has (+ the files where reachable), admin/status, then
//!        per bad copy admin/sync (admin/copy from a good copy when sync cannot), then the
//!        same checks again
//! check  reference/show, admin/has, admin/status, admin/debug (+ the files where reachable)
//! ```
//!
//! Every request is one that oio-proxy accepts in both dialects (oio-sds 7.x, and 9.0 and
//! later, where a call that goes to the master takes at most one `service_id`): calls that
//! every peer answers (has, status, ping, leave, debug, sync) name the peers; freeze, enable
//! and set_properties go to the master, without `service_id` or with the master's alone; every
//! reference call carries `type=meta2`. A fan-out answer is 200 whatever each peer said, so each
//! peer's status inside it is checked. Where the answers differ, the dialect is detected from
//! them (set_properties through the master answers 204 from 9.0 on, 200 `{}` in 7.x) and
//! checked against `--proxy-version` when it is given.
//!
//! Every step is printed as it runs, with the peers' answers in the table form of `openio
//! election sync`. `--dry-run` sends only the reads (conscience/list, reference/show,
//! admin/has) and prints every other request exactly as it would be sent.
//! A step that fails stops the move; what was done is undone in reverse (the old reference
//! forced back, the caches flushed, the old `sys.peers` written back through the master, the
//! base enabled again on its old peers, the copy made removed), and the last lines say in which
//! state the base is and what to run next.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use pump_client::error::with_causes;
use pump_meta2::{BaseName, CopyReport, Health, Peer};
use serde_json::{json, Value};

use super::meta2::{check_base, Executor, FileExecutor, Step, StreamCopy};
use crate::failure::Failure;

/// The dialect of the proxies: what a request may carry and what its answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// oio-sds 7.x: a call to the master takes a list of services and answers 200 with one
    /// status per service; set_properties through the master answers 200 `{}`.
    V7,
    /// oio-sds 9.0 and later: a call to the master takes at most one service (400 "Only one
    /// service can be requested"); set_properties answers 204 without per-service statuses.
    V9,
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Dialect, String> {
        match s.split('.').next().unwrap_or("") {
            "7" => Ok(Dialect::V7),
            "8" | "9" | "10" | "11" | "12" => Ok(Dialect::V9),
            _ => Err(format!(
                "{s:?}: expected the oio-sds version of the proxies, 7 or 9 (9 for 9.0 and later)"
            )),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::V7 => "oio-sds 7.x",
            Dialect::V9 => "oio-sds 9.0 or later",
        })
    }
}

/// The proxies of a namespace and the container a command is about.
pub struct Proxies {
    http: reqwest::Client,
    urls: Vec<String>,
    ns: String,
    /// `acct=A&ref=C` or `cid=CID`.
    target: String,
    /// The arguments naming the proxies and the container, for the commands printed as hints.
    args: String,
    /// Send only the reads; print the rest.
    pub dry_run: bool,
    /// Told with --proxy-version, or detected from an answer.
    dialect: std::sync::Mutex<Option<Dialect>>,
}

/// One request, printed exactly as it is sent.
#[derive(Debug, Clone)]
pub struct Call {
    method: &'static str,
    url: String,
    route: String,
    body: Option<Value>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)?;
        if let Some(b) = &self.body {
            write!(f, " {b}")?;
        }
        Ok(())
    }
}

/// Routes that change nothing: sent even in a dry run.
fn is_read(route: &str) -> bool {
    matches!(
        route,
        "conscience/list"
            | "reference/show"
            | "admin/has"
            | "admin/ping"
            | "admin/status"
            | "admin/debug"
            | "admin/get_properties"
    )
}

/// A proxy's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// One peer's entry in a fan-out answer.
#[derive(Debug, Clone)]
struct PeerAnswer {
    peer: String,
    status: u64,
    message: String,
    body: Value,
}

fn peer_answers(a: &Answer) -> Vec<PeerAnswer> {
    a.body
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.get("status").is_some_and(Value::is_object))
                .map(|(peer, v)| PeerAnswer {
                    peer: peer.clone(),
                    status: v["status"]["status"].as_u64().unwrap_or(0),
                    message: v["status"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    body: v["body"].clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every peer of a fan-out answer answered `want`; else an error naming each one that did not.
fn all_answered(what: &str, answers: &[PeerAnswer], want: u64) -> Result<(), String> {
    let bad: Vec<String> = answers
        .iter()
        .filter(|a| a.status != want)
        .map(|a| format!("{}: {} {}", a.peer, a.status, a.message))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {}", bad.join("; ")))
    }
}

/// The answers as `openio election sync` prints them.
fn table(rows: &[(String, String, String)]) -> String {
    let w = |f: &dyn Fn(&(String, String, String)) -> usize, head: usize| {
        rows.iter().map(f).max().unwrap_or(0).max(head)
    };
    let (w0, w1, w2) = (
        w(&|r| r.0.len(), 2),
        w(&|r| r.1.len(), 6),
        w(&|r| r.2.len(), 7),
    );
    let line = format!(
        "+{}+{}+{}+",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 2),
        "-".repeat(w2 + 2)
    );
    let mut out = vec![
        line.clone(),
        format!("| {:<w0$} | {:<w1$} | {:<w2$} |", "Id", "Status", "Message"),
        line.clone(),
    ];
    for r in rows {
        out.push(format!("| {:<w0$} | {:>w1$} | {:<w2$} |", r.0, r.1, r.2));
    }
    out.push(line);
    out.iter().map(|l| format!("    {l}\n")).collect()
}

fn print_peer_table(answers: &[PeerAnswer]) {
    let rows: Vec<(String, String, String)> = answers
        .iter()
        .map(|a| (a.peer.clone(), a.status.to_string(), a.message.clone()))
        .collect();
    print!("{}", table(&rows));
}

impl Proxies {
    /// `urls` (`http://HOST:PORT`, the first one is driven, all are flushed), the namespace and
    /// the container, by account and name or by CID; `dialect` when told, else detected.
    pub fn new(
        urls: Vec<String>,
        ns: String,
        container: Container,
        dry_run: bool,
        dialect: Option<Dialect>,
    ) -> Result<Proxies, Failure> {
        if urls.is_empty() {
            return Err(Failure::Usage("give at least one --proxy URL".into()));
        }
        let mut urls_ok = Vec::new();
        for u in urls {
            if !u.starts_with("http://") {
                return Err(Failure::Usage(format!(
                    "--proxy {}: expected http://HOST:PORT",
                    pump::spec::redact(&u)
                )));
            }
            // The one REST normaliser (pump::spec::RestUrl); the proxy takes no credentials.
            let rest = pump::spec::RestUrl::parse(&u)
                .map_err(|e| Failure::Usage(format!("--proxy: {e}")))?;
            urls_ok.push(rest.base().to_string());
        }
        if ns.is_empty() {
            return Err(Failure::Usage("--ns: empty namespace".into()));
        }
        let mut args: String = urls_ok.iter().map(|u| format!("--proxy {u} ")).collect();
        args.push_str(&format!("--ns {ns} "));
        let target = match &container {
            Container::Named { account, name } => {
                args.push_str(&format!("--account {account} --container {name}"));
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("acct", account)
                    .append_pair("ref", name)
                    .finish()
            }
            Container::Cid(b) => {
                args.push_str(&b.to_string());
                format!("cid={}", b.cid)
            }
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Failure::Failed(format!("HTTP client: {e}")))?;
        Ok(Proxies {
            http,
            urls: urls_ok,
            ns,
            target,
            args,
            dry_run,
            dialect: std::sync::Mutex::new(dialect),
        })
    }

    fn call(&self, method: &'static str, route: &str, query: &str, body: Option<Value>) -> Call {
        let mut url = if route.starts_with("cache/") {
            format!("{}/v3.0/{route}", self.urls[0])
        } else {
            format!("{}/v3.0/{}/{route}", self.urls[0], self.ns)
        };
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        Call {
            method,
            url,
            route: route.to_string(),
            body,
        }
    }

    /// A call every peer answers (has, status, ping, leave, debug, sync), to `peers` (or the
    /// reference's, as the proxy resolves it, when empty).
    fn fan_out(&self, action: &str, peers: &[String]) -> Call {
        let mut q = format!("{}&type=meta2", self.target);
        if !peers.is_empty() {
            q.push_str(&format!("&service_id={}", peers.join(",")));
        }
        self.call("POST", &format!("admin/{action}"), &q, None)
    }

    /// A call that goes to the master (freeze, enable, set_properties, get_properties, copy,
    /// remove): to the master the proxy finds, or to the one service named, never to a list.
    fn one(&self, action: &str, service: Option<&str>, body: Option<Value>) -> Call {
        let mut q = format!("{}&type=meta2", self.target);
        if let Some(s) = service {
            q.push_str(&format!("&service_id={s}"));
        }
        self.call("POST", &format!("admin/{action}"), &q, body)
    }

    fn flushes(&self) -> Vec<Call> {
        let mut out = Vec::new();
        for u in &self.urls {
            for level in ["low", "high"] {
                out.push(Call {
                    method: "POST",
                    url: format!("{u}/v3.0/cache/flush/{level}"),
                    route: format!("cache/flush/{level}"),
                    body: None,
                });
            }
        }
        out
    }

    /// reference/force of the meta2 services (`type=meta2` in the query, which oio-proxy
    /// requires, and in the body).
    fn force(&self, peers: &[String]) -> Call {
        self.call(
            "POST",
            "reference/force",
            &format!("{}&type=meta2&replace=yes", self.target),
            Some(json!({"seq": 1, "type": "meta2", "host": peers.join(","), "args": ""})),
        )
    }

    /// Sends one request; a network error or a status >= 300 is an error naming the request,
    /// the HTTP status and the code and message oio-proxy put in the body.
    async fn send(&self, c: &Call) -> Result<Answer, String> {
        let mut r = match c.method {
            "GET" => self.http.get(&c.url),
            _ => self.http.post(&c.url),
        };
        if c.route.starts_with("admin/") {
            r = r.header("x-oio-admin", "1");
        }
        if let Some(b) = &c.body {
            r = r.json(b);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| format!("{c}: {}", with_causes(&e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{c}: {}", with_causes(&e)))?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 300 {
            let message = body["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            let code = body["status"].as_u64().unwrap_or(status as u64);
            return Err(format!("{c}: {status} ({code} {message})"));
        }
        Ok(Answer { status, body })
    }

    /// A command line for the hints: `pump meta2 CMD <the proxies and the container>`.
    fn hint(&self, cmd: &str) -> String {
        format!("pump meta2 {cmd} {}", self.args)
    }
}

/// The container a command is about.
pub enum Container {
    Named { account: String, name: String },
    Cid(BaseName),
}

/// Numbers and prints the steps as they run.
struct Steps<'a> {
    p: &'a Proxies,
    n: usize,
    /// A dry run skipped a change: the reads after it would not see what they check.
    skipped: bool,
}

impl<'a> Steps<'a> {
    fn new(p: &'a Proxies) -> Steps<'a> {
        Steps {
            p,
            n: 0,
            skipped: false,
        }
    }

    fn title(&mut self, title: &str) {
        self.n += 1;
        println!("[{}] {title}", self.n);
    }

    /// Sends `c` (or, in a dry run, prints it when it changes something); prints the answer,
    /// as a table for fan-out calls. `Ok(None)`: not sent (dry run).
    async fn send(&mut self, c: &Call) -> Result<Option<Answer>, String> {
        if self.p.dry_run && (self.skipped || !is_read(&c.route)) {
            // A cache flush skipped changes nothing the reads after it check.
            self.skipped |= !c.route.starts_with("cache/");
            println!("    would send: {c}");
            return Ok(None);
        }
        println!("    {c}");
        let a = self.p.send(c).await?;
        let peers = peer_answers(&a);
        if c.route.starts_with("admin/") && !peers.is_empty() {
            print_peer_table(&peers);
        } else {
            println!("    -> {}", a.status);
        }
        Ok(Some(a))
    }

    async fn flush(&mut self, why: &str) -> Result<(), String> {
        self.title(&format!("flush the caches of every proxy ({why})"));
        for c in self.p.flushes() {
            self.send(&c).await?;
        }
        Ok(())
    }

    /// reference/show: the meta2 services of the reference (one `srv` entry per service; an
    /// entry naming several, as older meta1 wrote them, is split).
    async fn reference(&mut self) -> Result<Vec<String>, String> {
        self.title("read the reference's meta2 services (meta1)");
        let c = self.p.call(
            "GET",
            "reference/show",
            &format!("{}&type=meta2", self.p.target),
            None,
        );
        let a = self.send(&c).await?.ok_or("reference/show not sent")?;
        let mut peers = Vec::new();
        for s in a.body["srv"].as_array().into_iter().flatten() {
            if s["type"].as_str() == Some("meta2") {
                for h in s["host"].as_str().unwrap_or_default().split(',') {
                    if !h.is_empty() && !peers.iter().any(|p| p == h) {
                        peers.push(h.to_string());
                    }
                }
            }
        }
        if peers.is_empty() {
            return Err(format!(
                "{c}: the reference has no meta2 service (unlinked?): force it back with \
                 reference/force before any repair"
            ));
        }
        peers.sort();
        println!("    meta2 services: {}", peers.join(","));
        Ok(peers)
    }

    /// The dialect an answer to set_properties through the master shows (204 from 9.0 on,
    /// 200 `{}` in 7.x), checked against the one told with --proxy-version.
    fn dialect_of(&mut self, a: &Answer) -> Result<(), String> {
        let seen = if a.status == 204 {
            Dialect::V9
        } else {
            Dialect::V7
        };
        let mut d = self.p.dialect.lock().unwrap_or_else(|e| e.into_inner());
        match *d {
            Some(told) if told != seen => Err(format!(
                "admin/set_properties answered {} as {seen} does, not as --proxy-version said \
                 ({told}): check the proxies' version",
                a.status
            )),
            Some(_) => Ok(()),
            None => {
                println!("    the proxy answers as {seen}");
                *d = Some(seen);
                Ok(())
            }
        }
    }

    /// A fan-out admin call; the peers' answers.
    async fn fan_out(
        &mut self,
        title: &str,
        action: &str,
        peers: &[String],
    ) -> Result<Option<Vec<PeerAnswer>>, String> {
        self.title(title);
        let c = self.p.fan_out(action, peers);
        Ok(self.send(&c).await?.map(|a| peer_answers(&a)))
    }

    /// A call to the master (`service` names it, or the proxy finds it); an answer that carries
    /// per-service statuses must say 200 for each.
    async fn through_master(
        &mut self,
        title: &str,
        action: &str,
        service: Option<&str>,
        body: Option<Value>,
    ) -> Result<(), String> {
        self.title(title);
        let c = self.p.one(action, service, body);
        if let Some(a) = self.send(&c).await? {
            all_answered(&format!("{c}"), &peer_answers(&a), 200)?;
        }
        Ok(())
    }
}

/// Whether an election is sound: the answering peers are `want`, one master answers 200,
/// every other peer 303 naming it. The master, or why not.
fn election_ok(status: &[PeerAnswer], want: &[String]) -> Result<String, String> {
    let mut got: Vec<String> = status.iter().map(|a| a.peer.clone()).collect();
    got.sort();
    if got != want {
        return Err(format!(
            "the proxy resolves the base to {} instead of {}",
            got.join(","),
            want.join(",")
        ));
    }
    let masters: Vec<&PeerAnswer> = status.iter().filter(|a| a.status == 200).collect();
    let [master] = masters.as_slice() else {
        return Err(format!("{} masters instead of one", masters.len()));
    };
    for a in status.iter().filter(|a| a.status != 200) {
        if a.status != 303 || a.message != master.peer {
            return Err(format!(
                "{}: {} {} (a slave answers 303 naming the master {})",
                a.peer, a.status, a.message, master.peer
            ));
        }
    }
    Ok(master.peer.clone())
}

/// Every admin/debug body is an election whose local service is the peer asked and whose
/// master and peers are all among `want` (the body as sqliterepo gives it: `local` and
/// `master` objects with a `url`, `peers` a list).
fn debug_ok(debug: &[PeerAnswer], want: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    for a in debug {
        if a.status != 200 {
            errors.push(format!("{}: debug {} {}", a.peer, a.status, a.message));
            continue;
        }
        if !a.body.is_object() {
            errors.push(format!("{}: no election", a.peer));
            continue;
        }
        let url = |k: &str| a.body[k]["url"].as_str().map(str::to_string);
        let Some(local) = url("local") else {
            errors.push(format!("{}: the election has no local.url", a.peer));
            continue;
        };
        if local != a.peer {
            errors.push(format!(
                "{}: the election's local service is {local}",
                a.peer
            ));
        }
        let mut named: Vec<String> = a.body["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        match url("master") {
            Some(m) if !m.is_empty() => named.push(m),
            _ => errors.push(format!("{}: the election has no master", a.peer)),
        }
        if let Some(stray) = named.iter().find(|p| !want.contains(p)) {
            errors.push(format!(
                "{}: the election names {stray}, not one of {}",
                a.peer,
                want.join(",")
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// What a move through the proxy needs.
pub struct ProxyMove {
    pub base: BaseName,
    pub from: String,
    pub to: String,
    /// Volumes reachable from here, by address (`--peer` and `--to ADDRESS=VOLUME`).
    pub volumes: BTreeMap<String, PathBuf>,
    /// How the copy streams when both volumes are reachable.
    pub stream: StreamCopy,
}

/// What a move has done so far, for the undo.
#[derive(Default)]
struct Done {
    frozen: bool,
    peers_written: bool,
    copied_by_pump: bool,
    copied_by_proxy: bool,
    forced: bool,
}

/// Moves the copy of `m.base` on `m.from` to `m.to` through the proxies.
pub async fn move_base(p: &Proxies, m: &ProxyMove) -> Result<(), Failure> {
    let mut s = Steps::new(p);
    // Nothing that changes state is sent before every address is known to the conscience.
    s.title("check every address against the conscience");
    let c = p.call("GET", "conscience/list", "type=meta2", None);
    let a = s
        .send(&c)
        .await
        .map_err(Failure::Failed)?
        .ok_or_else(|| Failure::Failed("conscience/list not sent".into()))?;
    let known: Vec<String> = a
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["addr"].as_str().map(str::to_string))
        .collect();
    let mut given = vec![("--from", &m.from), ("--to", &m.to)];
    given.extend(m.volumes.keys().map(|a| ("--peer", a)));
    for (opt, addr) in given {
        if !known.contains(addr) {
            return Err(Failure::Usage(format!(
                "{opt} {addr}: not a meta2 service of {} (conscience/list: {}); nothing was changed",
                p.ns,
                known.join(", ")
            )));
        }
    }
    println!("    {} meta2 services, every address known", known.len());
    if m.from == m.to {
        return Err(Failure::Usage(format!(
            "--from and --to are both {}",
            m.from
        )));
    }
    s.flush("so that meta1 is read, not a stale cache")
        .await
        .map_err(Failure::Failed)?;
    let old = s.reference().await.map_err(Failure::Failed)?;
    if !old.contains(&m.from) {
        return Err(Failure::Usage(format!(
            "--from {}: not a meta2 service of the reference ({}); nothing was changed",
            m.from,
            old.join(",")
        )));
    }
    if old.contains(&m.to) {
        return Err(Failure::Usage(format!(
            "--to {}: already a meta2 service of the reference ({}); nothing was changed",
            m.to,
            old.join(",")
        )));
    }
    let has = s
        .fan_out("every copy is there (admin/has)", "has", &old)
        .await
        .map_err(Failure::Failed)?
        .unwrap_or_default();
    if let Err(e) = all_answered("admin/has", &has, 200) {
        return Err(Failure::Failed(format!(
            "{}: a copy is not there ({e}); nothing was changed: run `{}` first",
            m.base,
            p.hint("sync")
        )));
    }
    if let Some(v) = m.volumes.get(&m.to) {
        let target = m.base.path_in(v);
        if target.exists() {
            return Err(Failure::Usage(format!(
                "--to {}: {} exists (a leftover copy?): set it aside first; nothing was changed",
                m.to,
                target.display()
            )));
        }
    }
    let mut new: Vec<String> = old.iter().filter(|a| **a != m.from).cloned().collect();
    new.push(m.to.clone());
    new.sort();
    let pump_copy = match (m.volumes.get(&m.from), m.volumes.get(&m.to)) {
        (Some(f), Some(t)) => Some(vec![
            Peer {
                address: m.from.clone(),
                volume: f.clone(),
            },
            Peer {
                address: m.to.clone(),
                volume: t.clone(),
            },
        ]),
        _ => None,
    };
    let mut done = Done::default();
    let mut files = pump_copy
        .as_ref()
        .map(|peers| FileExecutor::new(m.base.clone(), peers).with_stream(m.stream));
    let r = change(&mut s, m, &old, &new, &mut done, files.as_mut()).await;
    let Err(e) = r else {
        if let Some(f) = files.as_mut() {
            f.forget();
        }
        if p.dry_run {
            println!("dry run: nothing was changed");
        } else {
            println!(
                "{}: moved from {} to {}; the reference is {}; {}'s copy is left frozen, \
                 outside the reference",
                m.base,
                m.from,
                m.to,
                new.join(","),
                m.from
            );
        }
        return Ok(());
    };
    println!("FAILED: {e}");
    let undo_failed = undo(&mut s, m, &old, &done, files.as_mut()).await;
    let mut msg = format!(
        "{}: the move from {} to {} failed: {e}; ",
        m.base, m.from, m.to
    );
    if !done.frozen {
        msg.push_str(&format!(
            "nothing was changed (the peers {} only left the election, which restarts on the \
             next request); check with `{}`, then run the same move again",
            old.join(","),
            p.hint("check")
        ));
    } else if undo_failed.is_empty() {
        msg.push_str(&format!(
            "every step was undone: the base is enabled on its old peers {} and the reference \
             names them",
            old.join(",")
        ));
        msg.push_str(&format!(
            "; fix the cause, check with `{}`, then run the same move again",
            p.hint("check")
        ));
    } else {
        msg.push_str(&format!(
            "the undo failed ({}): the base may be frozen or half-moved; see `{}` and finish \
             by hand (reference/force type=meta2 with the old peers {}, admin/set_properties \
             sys.peers and admin/enable through the master)",
            undo_failed.join("; "),
            p.hint("check"),
            old.join(",")
        ));
    }
    Err(Failure::Failed(msg))
}

/// Undoes what `done` says, in reverse; the undo steps that failed.
async fn undo(
    s: &mut Steps<'_>,
    m: &ProxyMove,
    old: &[String],
    done: &Done,
    files: Option<&mut FileExecutor>,
) -> Vec<String> {
    let p = s.p;
    println!("undoing what was done:");
    let mut failed = Vec::new();
    let mut calls: Vec<(&str, Call, Option<u64>)> = Vec::new();
    if done.forced {
        calls.push(("force the old reference back", p.force(old), None));
    }
    // The proxies must resolve the old peers before the master is asked for anything.
    for c in p.flushes() {
        calls.push(("flush the caches", c, None));
    }
    if done.peers_written {
        let body = json!({"system": {"sys.peers": old.join(",")}});
        calls.push((
            "write the old sys.peers back (through the master)",
            p.one("set_properties", None, Some(body)),
            None,
        ));
    }
    if done.frozen {
        // 439: the base is enabled already, which is what the undo wants.
        calls.push((
            "enable the base on its old peers (through the master)",
            p.one("enable", None, None),
            Some(439),
        ));
    }
    if done.copied_by_proxy {
        calls.push((
            "remove the copy admin/copy made",
            p.one("remove", Some(&m.to), None),
            None,
        ));
    }
    for (what, c, tolerated) in &calls {
        match s.p.send(c).await {
            Ok(a) => {
                println!("    {what}: {c} -> {}", a.status);
                if let Err(e) = all_answered(&format!("{c}"), &peer_answers(&a), 200) {
                    println!("    {e}");
                    failed.push(format!("{what}: {e}"));
                }
            }
            Err(e) if tolerated.is_some_and(|t| e.contains(&format!("({t} "))) => {
                println!("    {what}: {c} -> already done");
            }
            Err(e) => {
                println!("    {what}: {e}");
                failed.push(format!("{what}: {e}"));
            }
        }
    }
    if done.copied_by_pump {
        if let Some(f) = files {
            let errors = f.undo().await;
            if errors.is_empty() {
                println!("    removed the copy the pump made on {}", m.to);
            }
            for e in errors {
                failed.push(format!("remove the new copy on {}: {e}", m.to));
            }
        }
    }
    failed
}

/// The steps of a move that change state; `done` says how far they went.
async fn change(
    s: &mut Steps<'_>,
    m: &ProxyMove,
    old: &[String],
    new: &[String],
    done: &mut Done,
    files: Option<&mut FileExecutor>,
) -> Result<(), String> {
    let p = s.p;
    let left = s
        .fan_out("the peers leave the election (admin/leave)", "leave", old)
        .await?;
    if let Some(left) = left {
        all_answered("admin/leave", &left, 200)?;
    }
    s.through_master(
        "freeze the base through its master, which replicates it (admin/freeze)",
        "freeze",
        None,
        None,
    )
    .await?;
    done.frozen = true;
    // The master writes the new peers and replicates them to the old peers' copies; the copy
    // is taken after, so that it carries them too (the new service is in no election yet).
    s.title(&format!(
        "write sys.peers {} through the master (admin/set_properties)",
        new.join(",")
    ));
    done.peers_written = true;
    let body = json!({"system": {"sys.peers": new.join(",")}});
    let c = p.one("set_properties", None, Some(body));
    if let Some(a) = s.send(&c).await? {
        all_answered(&format!("{c}"), &peer_answers(&a), 200)?;
        s.dialect_of(&a)?;
    }
    match files {
        Some(f) => {
            let step = Step::Copy {
                from: m.from.clone(),
                to: m.to.clone(),
            };
            s.title(&format!(
                "transfer with the pump: {step} (both volumes are reachable from here)"
            ));
            if p.dry_run {
                println!("    would run: {step}");
            } else {
                done.copied_by_pump = true;
                f.execute(&step).await?;
                println!("    -> done");
            }
        }
        None => {
            s.title(&format!(
                "transfer by the proxy: {} pulls the base from {} (admin/copy)",
                m.to, m.from
            ));
            done.copied_by_proxy = true;
            let c = p.one("copy", None, Some(json!({"to": m.to, "from": m.from})));
            s.send(&c).await?;
        }
    }
    for peer in new {
        s.title(&format!(
            "{peer}'s copy lists the new peers (admin/get_properties)"
        ));
        let c = p.one("get_properties", Some(peer), None);
        if let Some(a) = s.send(&c).await? {
            let got = a.body["system"]["sys.peers"].as_str().unwrap_or_default();
            if got != new.join(",") {
                return Err(format!(
                    "{peer}: sys.peers is {got:?}, not {:?}",
                    new.join(",")
                ));
            }
            println!("    sys.peers {got}");
        }
    }
    let status = s
        .fan_out(
            "the new peers elect one master (admin/status)",
            "status",
            new,
        )
        .await?;
    let master = match status {
        Some(st) => Some(election_ok(&st, new)?),
        None => None,
    };
    // In a dry run the status was not sent: the request names the master it would find.
    let master = master.unwrap_or_else(|| "<the master admin/status finds>".into());
    s.through_master(
        &format!("enable the base through the new master {master} (admin/enable)"),
        "enable",
        Some(&master),
        None,
    )
    .await?;
    s.title("force the reference to the new peers (reference/force, type=meta2, replace)");
    done.forced = true;
    let c = p.force(new);
    s.send(&c).await?;
    s.flush("the reference changed").await?;
    let ping = s
        .fan_out("ping the base where the proxy now resolves it", "ping", &[])
        .await?;
    if let Some(ping) = ping {
        all_answered("admin/ping", &ping, 200)?;
    }
    let status = s
        .fan_out("one master, the rest slaves (admin/status)", "status", &[])
        .await?;
    if let Some(status) = status {
        let master = election_ok(&status, new)?;
        println!("    master {master}");
    }
    let debug = s
        .fan_out(
            "the election names only the new peers (admin/debug)",
            "debug",
            &[],
        )
        .await?;
    if let Some(debug) = debug {
        debug_ok(&debug, new)?;
        println!("    every election names only {}", new.join(","));
    }
    s.title("set a container property so that the change replicates");
    let stamp = format!("{}->{}", m.from, m.to);
    let c = p.call(
        "POST",
        "container/set_properties",
        &p.target,
        Some(json!({"properties": {"pump.moved": stamp}})),
    );
    s.send(&c).await?;
    if !p.dry_run {
        let peers: Vec<Peer> = new
            .iter()
            .filter_map(|a| {
                Some(Peer {
                    address: a.clone(),
                    volume: m.volumes.get(a)?.clone(),
                })
            })
            .collect();
        if !peers.is_empty() {
            verify_files(s, &m.base, &peers)?;
        }
    }
    Ok(())
}

/// The volumes given with `--peer` that hold a copy of the base: those of its `peers`.
fn reachable(volumes: &[Peer], peers: &[String]) -> Vec<Peer> {
    volumes
        .iter()
        .filter(|v| peers.contains(&v.address))
        .cloned()
        .collect()
}

/// Inspects the copies reachable from here and prints them as a table (nothing, no step,
/// when none is reachable).
fn inspect_files(
    s: &mut Steps<'_>,
    title: &str,
    base: &BaseName,
    peers: &[Peer],
    full: bool,
) -> Vec<CopyReport> {
    if peers.is_empty() {
        return Vec::new();
    }
    s.title(title);
    let reports = check_base(base, peers, full);
    let rows: Vec<(String, String, String)> = reports
        .iter()
        .map(|r| (r.address.clone(), r.health.to_string(), r.message.clone()))
        .collect();
    print!("{}", table(&rows));
    reports
}

/// `pump meta2 check` on the copies reachable from here.
fn verify_files(s: &mut Steps<'_>, base: &BaseName, peers: &[Peer]) -> Result<(), String> {
    let reports = inspect_files(
        s,
        "check the copies reachable from here (files)",
        base,
        peers,
        false,
    );
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.health != Health::Ok)
        .map(|r| format!("{}: {}", r.address, r.health))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("copies not ok: {}", bad.join(", ")))
    }
}

/// admin/has and admin/status on `peers`: what is wrong (a copy not there, an election
/// without one master and its slaves).
async fn has_and_election(s: &mut Steps<'_>, peers: &[String]) -> Result<Vec<String>, String> {
    let mut errors = Vec::new();
    let has = s
        .fan_out("every copy is there (admin/has)", "has", peers)
        .await?
        .unwrap_or_default();
    for a in has.iter().filter(|a| a.status != 200) {
        errors.push(format!(
            "{}: not there ({} {})",
            a.peer, a.status, a.message
        ));
    }
    let st = s
        .fan_out(
            "one master, the rest slaves (admin/status)",
            "status",
            peers,
        )
        .await?
        .unwrap_or_default();
    if let Err(e) = election_ok(&st, peers) {
        errors.push(e);
    }
    Ok(errors)
}

/// Refills every bad copy through the proxy (admin/sync, admin/copy when sync cannot), then
/// verifies. `from`: the copy to refill from (admin/copy from it instead of admin/sync).
pub async fn sync(
    p: &Proxies,
    base: &BaseName,
    volumes: &[Peer],
    from: Option<&str>,
) -> Result<(), Failure> {
    let mut s = Steps::new(p);
    let failed = |e: String| Failure::Failed(e);
    s.flush("so that meta1 is read, not a stale cache")
        .await
        .map_err(failed)?;
    let peers = s.reference().await.map_err(failed)?;
    if let Some(f) = from {
        if !peers.iter().any(|p| p == f) {
            return Err(Failure::Usage(format!(
                "--from {f}: not a meta2 service of the reference ({})",
                peers.join(",")
            )));
        }
    }
    let reachable = reachable(volumes, &peers);
    let has = s
        .fan_out("which copies are there (admin/has)", "has", &peers)
        .await
        .map_err(failed)?
        .unwrap_or_default();
    let mut bad: Vec<String> = has
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| a.peer.clone())
        .collect();
    let reports = inspect_files(
        &mut s,
        "inspect the copies reachable from here (files)",
        base,
        &reachable,
        false,
    );
    for r in reports {
        if r.health != Health::Ok && r.health != Health::Frozen && !bad.contains(&r.address) {
            bad.push(r.address);
        }
    }
    bad.sort();
    let good: Vec<String> = peers.iter().filter(|a| !bad.contains(a)).cloned().collect();
    let Some(first_good) = good.first().cloned() else {
        return Err(Failure::Failed(format!(
            "{base}: no sound copy on any of {}: nothing to sync from",
            peers.join(",")
        )));
    };
    if bad.is_empty() {
        println!("{base}: every copy is there and sound; nothing to do");
        return Ok(());
    }
    println!("    to refill: {}", bad.join(","));
    let master = if from.is_none() {
        let st = s
            .fan_out("find the master (admin/status)", "status", &good)
            .await
            .map_err(failed)?;
        st.and_then(|st| st.into_iter().find(|a| a.status == 200).map(|a| a.peer))
    } else {
        None
    };
    let source = from.map(str::to_string).or(master).unwrap_or(first_good);
    let mut errors = Vec::new();
    for b in &bad {
        let synced = if from.is_none() {
            let r = s
                .fan_out(
                    &format!("resync {b} from the master (admin/sync)"),
                    "sync",
                    std::slice::from_ref(b),
                )
                .await;
            match r {
                Ok(Some(a)) => a.iter().all(|a| a.status == 200),
                Ok(None) => true,
                Err(e) => {
                    println!("    {e}");
                    false
                }
            }
        } else {
            false
        };
        if !synced {
            s.title(&format!("{b} pulls the base from {source} (admin/copy)"));
            let c = p.one("copy", None, Some(json!({"to": b, "from": source})));
            if let Err(e) = s.send(&c).await {
                errors.push(format!("{b}: {e}"));
            }
        }
    }
    if p.dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    errors.extend(has_and_election(&mut s, &peers).await.map_err(failed)?);
    if let Err(e) = verify_files(&mut s, base, &reachable) {
        errors.push(e);
    }
    conclude(
        &errors,
        format!("{base}: {} refilled; every copy is there", bad.join(",")),
        format!("{base}: the sync did not repair everything"),
        format!("run `{}` to see the copies", p.hint("check")),
    )
}

/// Prints `ok` when there are no `errors`; else fails with `what: the errors; advice`.
fn conclude(errors: &[String], ok: String, what: String, advice: String) -> Result<(), Failure> {
    if errors.is_empty() {
        println!("{ok}");
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "{what}: {}; {advice}",
            errors.join("; ")
        )))
    }
}

/// The base as the proxy and the reachable files show it.
pub async fn check(
    p: &Proxies,
    base: &BaseName,
    volumes: &[Peer],
    full: bool,
) -> Result<(), Failure> {
    let mut s = Steps::new(p);
    let failed = |e: String| Failure::Failed(e);
    let peers = s.reference().await.map_err(failed)?;
    let mut errors = has_and_election(&mut s, &peers).await.map_err(failed)?;
    let debug = s
        .fan_out(
            "the election as each peer sees it (admin/debug)",
            "debug",
            &peers,
        )
        .await
        .map_err(failed)?
        .unwrap_or_default();
    if let Err(e) = debug_ok(&debug, &peers) {
        errors.push(e);
    }
    let reachable = reachable(volumes, &peers);
    let reports = inspect_files(
        &mut s,
        "inspect the copies reachable from here (files)",
        base,
        &reachable,
        full,
    );
    for r in reports.iter().filter(|r| r.health != Health::Ok) {
        errors.push(format!("{}: {}: {}", r.address, r.health, r.message));
    }
    conclude(
        &errors,
        format!("{base}: ok on {}", peers.join(",")),
        base.to_string(),
        format!("`{}` refills the bad copies", p.hint("sync")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(peer: &str, status: u64, message: &str, body: Value) -> PeerAnswer {
        PeerAnswer {
            peer: peer.into(),
            status,
            message: message.into(),
            body,
        }
    }

    #[test]
    fn an_election_needs_one_master_and_slaves_naming_it() {
        let want = vec!["a:1".to_string(), "b:1".to_string()];
        let good = [
            answer("a:1", 200, "OK", Value::Null),
            answer("b:1", 303, "a:1", Value::Null),
        ];
        assert_eq!(election_ok(&good, &want).unwrap(), "a:1");
        let two = [
            answer("a:1", 200, "OK", Value::Null),
            answer("b:1", 200, "OK", Value::Null),
        ];
        assert!(election_ok(&two, &want).unwrap_err().contains("2 masters"));
        let stale = [
            answer("a:1", 200, "OK", Value::Null),
            answer("c:1", 303, "a:1", Value::Null),
        ];
        assert!(election_ok(&stale, &want).unwrap_err().contains("resolves"));
    }

    fn election(local: &str, master: &str, peers: &[&str]) -> Value {
        json!({"local": {"id": 1, "url": local, "state": "SLAVE"},
            "master": {"id": 2, "url": master},
            "base": {"name": "X.1", "type": "meta2", "zk": "/z", "zk_server": "h:1"},
            "peers": peers})
    }

    #[test]
    fn debug_reads_local_and_master_as_objects_and_refuses_a_stray() {
        let want = vec!["a:1".to_string(), "b:1".to_string()];
        let good = answer("a:1", 200, "OK", election("a:1", "b:1", &["b:1"]));
        assert!(debug_ok(&[good], &want).is_ok());
        let old_peer = answer("a:1", 200, "OK", election("a:1", "a:1", &["c:1"]));
        assert!(debug_ok(&[old_peer], &want)
            .unwrap_err()
            .contains("names c:1"));
        // A stale master that only `master.url` names.
        let stale = answer("a:1", 200, "OK", election("a:1", "c:1", &["b:1"]));
        assert!(debug_ok(&[stale], &want).unwrap_err().contains("names c:1"));
        let other = answer("a:1", 200, "OK", election("b:1", "b:1", &[]));
        assert!(debug_ok(&[other], &want)
            .unwrap_err()
            .contains("local service is b:1"));
        // The strings an older reference gave are not an election.
        let strings = answer("a:1", 200, "OK", json!({"local": "a:1", "master": "c:1"}));
        assert!(debug_ok(&[strings], &want).is_err());
        assert!(debug_ok(&[answer("a:1", 200, "OK", Value::Null)], &want).is_err());
    }

    #[test]
    fn a_fan_out_answer_is_checked_peer_by_peer() {
        let a = Answer {
            status: 200,
            body: json!({"a:1": {"status": {"status": 200, "message": "OK"}, "body": ""},
                "b:1": {"status": {"status": 303, "message": "a:1"}, "body": ""}}),
        };
        let e = all_answered("enable", &peer_answers(&a), 200).unwrap_err();
        assert_eq!(e, "enable: b:1: 303 a:1");
        // A master-routed answer ({} or 204) has no peer to check.
        let empty = Answer {
            status: 200,
            body: json!({}),
        };
        assert!(all_answered("freeze", &peer_answers(&empty), 200).is_ok());
    }

    #[test]
    fn the_dialect_is_7_or_9_and_later() {
        assert_eq!("7".parse::<Dialect>().unwrap(), Dialect::V7);
        assert_eq!("7.3.0".parse::<Dialect>().unwrap(), Dialect::V7);
        assert_eq!("9".parse::<Dialect>().unwrap(), Dialect::V9);
        assert_eq!("11.2".parse::<Dialect>().unwrap(), Dialect::V9);
        assert!("6".parse::<Dialect>().is_err());
    }

    #[test]
    fn the_table_has_the_election_sync_columns() {
        let t = table(&[("127.0.0.1:6000".into(), "200".into(), "OK".into())]);
        let lines: Vec<&str> = t.lines().map(str::trim).collect();
        assert_eq!(lines[1], "| Id             | Status | Message |");
        assert_eq!(lines[3], "| 127.0.0.1:6000 |    200 | OK      |");
        assert_eq!(lines[0], lines[4]);
    }

    #[test]
    fn proxy_urls_and_namespaces_are_validated() {
        let c = || Container::Named {
            account: "a".into(),
            name: "c".into(),
        };
        let new = |u: &str, ns: &str| Proxies::new(vec![u.into()], ns.into(), c(), false, None);
        assert!(new("127.0.0.1:6000", "NS").is_err());
        assert!(new("http://127.0.0.1:99999", "NS").is_err());
        assert!(new("http://127.0.0.1:6000", "").is_err());
        let p = new("http://127.0.0.1:6000/", "NS").unwrap();
        let call = p.one("freeze", None, None);
        assert_eq!(
            call.to_string(),
            "POST http://127.0.0.1:6000/v3.0/NS/admin/freeze?acct=a&ref=c&type=meta2"
        );
        let call = p.one("enable", Some("x:1"), None);
        assert!(call.to_string().ends_with("type=meta2&service_id=x:1"));
        let call = p.force(&["x:1".into(), "y:1".into()]);
        assert!(call
            .to_string()
            .contains("/reference/force?acct=a&ref=c&type=meta2&replace=yes"));
    }
}
