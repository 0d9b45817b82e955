//! meta2 repairs in a running OpenIO SDS namespace: the proxy's routes around the transfer.
//!
//! ```text
//! move   conscience/list (every address must be a meta2 service; nothing sent before)
//!        flush the caches of every proxy, reference/show, admin/has (every copy there)
//!        admin/leave, admin/freeze, transfer (the pump where both volumes are reachable,
//!        admin/copy otherwise), admin/set_properties sys.peers (identical in every new copy),
//!        admin/enable, reference/force replace=yes, flush the caches, admin/ping,
//!        admin/status (one master, the rest slaves), admin/debug (only the new peers),
//!        container/set_properties (a property, so that the change replicates)
//! sync   flush, reference/show, admin/has (+ the files where reachable), admin/status, then
//!        per bad copy admin/sync (admin/copy from a good copy when sync cannot), then the
//!        same checks again
//! check  reference/show, admin/has, admin/status, admin/debug (+ the files where reachable)
//! ```
//!
//! Every step is printed as it runs, with the peers' answers in the table form of `openio
//! election sync`. `--dry-run` sends only the reads (conscience/list, reference/show,
//! admin/has) and prints every other request exactly as it would be sent. A step that fails
//! stops the move; what was done is undone in reverse (the old `sys.peers` written back, the
//! old reference forced back, the base enabled again on its old peers, a copy the pump made
//! removed), and the last lines say in which state the base is and what to run next.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use pump_client::error::with_causes;
use pump_meta2::{BaseName, CopyReport, Health, Peer};
use serde_json::{json, Value};

use super::meta2::{check_base, Executor, FileExecutor, Step, StreamCopy};
use crate::failure::Failure;

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
    /// the container, by account and name or by CID.
    pub fn new(
        urls: Vec<String>,
        ns: String,
        container: Container,
        dry_run: bool,
    ) -> Result<Proxies, Failure> {
        if urls.is_empty() {
            return Err(Failure::Usage("give at least one --proxy URL".into()));
        }
        let mut urls_ok = Vec::new();
        for u in urls {
            let rest = u
                .strip_prefix("http://")
                .ok_or_else(|| Failure::Usage(format!("--proxy {u}: expected http://HOST:PORT")))?;
            let hostport = rest.trim_end_matches('/');
            pump_meta2::parse_address(hostport)
                .map_err(|e| Failure::Usage(format!("--proxy {u}: {e}")))?;
            urls_ok.push(format!("http://{hostport}"));
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

    /// An admin call on the container's base, to `peers` (or the reference's, as the proxy
    /// resolves it, when empty).
    fn admin(&self, action: &str, peers: &[String], body: Option<Value>) -> Call {
        let mut q = format!("{}&type=meta2", self.target);
        if !peers.is_empty() {
            q.push_str(&format!("&service_id={}", peers.join(",")));
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

    fn force(&self, peers: &[String]) -> Call {
        self.call(
            "POST",
            "reference/force",
            &format!("{}&replace=yes", self.target),
            Some(json!({"seq": 1, "type": "meta2", "host": peers.join(","), "args": ""})),
        )
    }

    /// Sends one request; a network error or a status >= 300 is an error naming the request.
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

    /// reference/show: the meta2 services of the reference.
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
                peers.extend(
                    s["host"]
                        .as_str()
                        .unwrap_or_default()
                        .split(',')
                        .filter(|h| !h.is_empty())
                        .map(str::to_string),
                );
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

    /// A fan-out admin call; the peers' answers.
    async fn fan_out(
        &mut self,
        title: &str,
        action: &str,
        peers: &[String],
    ) -> Result<Option<Vec<PeerAnswer>>, String> {
        self.title(title);
        let c = self.p.admin(action, peers, None);
        Ok(self.send(&c).await?.map(|a| peer_answers(&a)))
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

/// Every admin/debug body is an election naming only `want`.
fn debug_ok(debug: &[PeerAnswer], want: &[String]) -> Result<(), String> {
    for a in debug {
        if a.body.is_null() {
            return Err(format!("{}: no election", a.peer));
        }
        let mut named: Vec<String> = a.body["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        named.extend(a.body["local"].as_str().map(str::to_string));
        named.extend(a.body["master"].as_str().map(str::to_string));
        if let Some(stray) = named.iter().find(|p| !want.contains(p)) {
            return Err(format!(
                "{}: the election names {stray}, not one of {}",
                a.peer,
                want.join(",")
            ));
        }
    }
    Ok(())
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
    copied_by_pump: bool,
    copied_by_proxy: bool,
    peers_written: bool,
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
    let missing: Vec<String> = has
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| format!("{}: {} {}", a.peer, a.status, a.message))
        .collect();
    if !missing.is_empty() {
        return Err(Failure::Failed(format!(
            "{}: a copy is not there ({}); nothing was changed: run `{}` first",
            m.base,
            missing.join("; "),
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
    println!("undoing what was done:");
    let mut undo_failed = Vec::new();
    let mut undo_calls = Vec::new();
    if done.forced {
        undo_calls.push(("force the old reference back", p.force(&old)));
    }
    if done.peers_written {
        let body = json!({"properties": {}, "system": {"sys.peers": old.join(",")}});
        undo_calls.push((
            "write the old sys.peers back",
            p.admin("set_properties", &old, Some(body)),
        ));
    }
    if done.frozen {
        undo_calls.push((
            "enable the base on its old peers",
            p.admin("enable", &old, None),
        ));
    }
    for c in p.flushes() {
        undo_calls.push(("flush the caches", c));
    }
    for (what, c) in &undo_calls {
        if let Err(e) = s.send(c).await {
            // 439: the base is enabled already, which is what the undo wants.
            if !e.contains("(439 ") {
                println!("    {e}");
                undo_failed.push(format!("{what}: {e}"));
            }
        }
    }
    if done.copied_by_pump {
        if let Some(f) = files.as_mut() {
            let errors = f.undo().await;
            if errors.is_empty() {
                println!("    removed the copy the pump made on {}", m.to);
            }
            for e in errors {
                undo_failed.push(format!("remove the new copy on {}: {e}", m.to));
            }
        }
    }
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
        if done.copied_by_proxy {
            msg.push_str(&format!(
                " (the copy admin/copy made on {} is left there, unreferenced)",
                m.to
            ));
        }
        msg.push_str(&format!(
            "; fix the cause, check with `{}`, then run the same move again",
            p.hint("check")
        ));
    } else {
        msg.push_str(&format!(
            "the undo failed ({}): the base may be frozen or half-moved; see `{}` and finish \
             by hand (admin/enable, reference/force with the old peers {})",
            undo_failed.join("; "),
            p.hint("check"),
            old.join(",")
        ));
    }
    Err(Failure::Failed(msg))
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
    s.fan_out("the peers leave the election (admin/leave)", "leave", old)
        .await?;
    s.title("freeze the base on every peer (admin/freeze)");
    let c = p.admin("freeze", old, None);
    s.send(&c).await?;
    done.frozen = true;
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
            let body = json!({"to": m.to, "from": m.from});
            let c = p.admin("copy", &[], Some(body));
            s.send(&c).await?;
        }
    }
    s.title("write the same sys.peers in every new copy (admin/set_properties)");
    let body = json!({"properties": {}, "system": {"sys.peers": new.join(",")}});
    done.peers_written = true;
    let c = p.admin("set_properties", new, Some(body));
    s.send(&c).await?;
    s.title("enable the base on its new peers (admin/enable)");
    let c = p.admin("enable", new, None);
    s.send(&c).await?;
    s.title("force the reference to the new peers (reference/force, replace)");
    done.forced = true;
    let c = p.force(new);
    s.send(&c).await?;
    s.flush("the reference changed").await?;
    let ping = s
        .fan_out("ping the base where the proxy now resolves it", "ping", &[])
        .await?;
    if let Some(ping) = ping {
        if let Some(a) = ping.iter().find(|a| a.status != 200) {
            return Err(format!("ping: {}: {} {}", a.peer, a.status, a.message));
        }
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
            let c = p.admin("copy", &[], Some(json!({"to": b, "from": source})));
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

    #[test]
    fn debug_refuses_an_election_naming_an_old_peer() {
        let want = vec!["a:1".to_string(), "b:1".to_string()];
        let old = answer(
            "a:1",
            200,
            "OK",
            json!({"local": "a:1", "master": "a:1", "peers": ["c:1"]}),
        );
        assert!(debug_ok(&[old], &want).unwrap_err().contains("c:1"));
        assert!(debug_ok(&[answer("a:1", 200, "OK", Value::Null)], &want).is_err());
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
        assert!(Proxies::new(vec!["127.0.0.1:6000".into()], "NS".into(), c(), false).is_err());
        assert!(Proxies::new(
            vec!["http://127.0.0.1:99999".into()],
            "NS".into(),
            c(),
            false
        )
        .is_err());
        assert!(Proxies::new(vec!["http://127.0.0.1:6000".into()], "".into(), c(), false).is_err());
        let p = Proxies::new(
            vec!["http://127.0.0.1:6000/".into()],
            "NS".into(),
            c(),
            true,
        )
        .unwrap();
        let call = p.admin("freeze", &["x:1".into()], None);
        assert_eq!(
            call.to_string(),
            "POST http://127.0.0.1:6000/v3.0/NS/admin/freeze?acct=a&ref=c&type=meta2&service_id=x:1"
        );
    }
}
