//! Helpers shared by the end-to-end tests: run the pump binary, read what it wrote (CSV, backup
//! directories), and a real memcached started on a free port and stopped by its pid.

#![allow(dead_code)]

pub mod faults;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `pump ARGS` and returns its output.
pub fn pump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(args)
        .output()
        .expect("run pump")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Debian's memcached, started by a test: `memcached -l 127.0.0.1 -p PORT -U 0 ARGS`, killed by
/// its pid when dropped.
pub struct Memcached {
    pub port: u16,
    /// The address it listens on: 127.0.0.1, or ::1 for the IPv6 test.
    host: &'static str,
    child: Option<Child>,
}

impl Memcached {
    /// Starts one on a free port (another, if a parallel test took that one first).
    pub fn start(args: &[&str]) -> Memcached {
        for _ in 0..5 {
            if let Some(m) = Memcached::try_start(free_port(), args, &[]) {
                return m;
            }
        }
        panic!("memcached did not start on any of 5 free ports");
    }

    /// Starts one on `port` with extra environment variables; waits until it answers VERSION.
    pub fn start_with(port: u16, args: &[&str], env: &[(&str, &str)]) -> Memcached {
        Memcached::try_start(port, args, env)
            .unwrap_or_else(|| panic!("memcached did not start on port {port}"))
    }

    /// Starts one listening on the IPv6 loopback `::1` only.
    pub fn start_ipv6(args: &[&str]) -> Memcached {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("[::1]:0")
                .and_then(|l| l.local_addr())
                .expect("bind [::1]:0")
                .port();
            if let Some(m) = Memcached::try_start_on("::1", port, args, &[]) {
                return m;
            }
        }
        panic!("memcached did not start on [::1]");
    }

    /// Starts one; `None` when it exits at once (the port is taken).
    fn try_start(port: u16, args: &[&str], env: &[(&str, &str)]) -> Option<Memcached> {
        Memcached::try_start_on("127.0.0.1", port, args, env)
    }

    fn try_start_on(
        host: &'static str,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Memcached> {
        let mut cmd = Command::new("memcached");
        cmd.args(["-l", host, "-p", &port.to_string(), "-U", "0"]);
        // memcached refuses to run as root without -u.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("start memcached (Debian package memcached)");
        let mut m = Memcached {
            port,
            host,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Exited: it could not listen. Answering while exited would be someone else's.
            if m.exited() {
                return None;
            }
            // A binary VERSION: answered with or without SASL, and before any text command.
            if let Ok(mut s) = TcpStream::connect((host, port)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut req = [0u8; 24];
                req[0] = 0x80;
                req[1] = 0x0b;
                let mut head = [0u8; 24];
                if s.write_all(&req).is_ok() && s.read_exact(&mut head).is_ok() && head[0] == 0x81 {
                    // Still alive after answering: the answer was ours.
                    std::thread::sleep(Duration::from_millis(20));
                    return (!m.exited()).then_some(m);
                }
            }
            assert!(
                Instant::now() < deadline,
                "memcached on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => false,
            _ => {
                self.child = None;
                true
            }
        }
    }

    /// `127.0.0.1:PORT` (`[::1]:PORT` for one on IPv6).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `memcached://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcached://{}", self.addr())
    }

    /// Kills it (by its pid) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A text-protocol connection with timeouts.
    pub fn text(&self) -> AsciiClient {
        AsciiClient::connect(&self.addr())
    }

    /// The values of `keys` as a third-party client (memcache-async, text protocol) reads
    /// them; a key memcached does not hold is absent. It sees no flags or expiry: those are
    /// read with [`AsciiClient`].
    pub fn third_party_values(
        &self,
        keys: &[String],
    ) -> std::collections::HashMap<String, Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
            // It writes a request in many small pieces: without this, Nagle's algorithm holds
            // each back for the server's delayed ACK (40 ms a request).
            s.set_nodelay(true).unwrap();
            let mut client = memcache_async::ascii::Protocol::new(s);
            let mut all = std::collections::HashMap::new();
            for chunk in keys.chunks(100) {
                let got = tokio::time::timeout(Duration::from_secs(10), client.get_multi(chunk))
                    .await
                    .expect("memcache-async answered in time")
                    .expect("memcache-async read the keys");
                all.extend(got);
            }
            all
        })
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal client of memcached's text protocol, independent of the pump's binary-protocol
/// code: what the tests read back with.
pub struct AsciiClient {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// One item as `mg KEY t f v` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub flags: u32,
    /// Seconds left; -1 for none.
    pub ttl: i64,
}

impl AsciiClient {
    pub fn connect(addr: &str) -> AsciiClient {
        let s = TcpStream::connect(addr).expect("connect to memcached");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        AsciiClient {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r
            .read_line(&mut l)
            .expect("read a line from memcached");
        l.trim_end().to_string()
    }

    /// `set KEY FLAGS EXPTIME BYTES`.
    pub fn set(&mut self, key: &str, flags: u32, exptime: u64, value: &[u8]) {
        write!(self.w, "set {key} {flags} {exptime} {}\r\n", value.len()).unwrap();
        self.w.write_all(value).unwrap();
        self.w.write_all(b"\r\n").unwrap();
        assert_eq!(self.line(), "STORED", "set {key}");
    }

    /// Every key's item (None when absent), with `mg` pipelined 500 at a time.
    pub fn get_many(&mut self, keys: &[String]) -> Vec<Option<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut req = String::new();
            for k in chunk {
                req.push_str(&format!("mg {k} t f v\r\n"));
            }
            self.w.write_all(req.as_bytes()).unwrap();
            for k in chunk {
                let head = self.line();
                if head == "EN" {
                    out.push(None);
                    continue;
                }
                let mut parts = head.split(' ');
                assert_eq!(parts.next(), Some("VA"), "mg {k}: {head}");
                let len: usize = parts.next().unwrap().parse().unwrap();
                let (mut flags, mut ttl) = (0, 0);
                for p in parts {
                    if let Some(f) = p.strip_prefix('f') {
                        flags = f.parse().unwrap();
                    } else if let Some(t) = p.strip_prefix('t') {
                        ttl = t.parse().unwrap();
                    }
                }
                let mut value = vec![0u8; len + 2];
                self.r.read_exact(&mut value).unwrap();
                value.truncate(len);
                out.push(Some(Item { value, flags, ttl }));
            }
        }
        out
    }

    /// One `stats` counter.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.w.write_all(b"stats\r\n").unwrap();
        let mut found = None;
        loop {
            let l = self.line();
            if l == "END" {
                break;
            }
            let mut p = l.split(' ');
            if p.nth(1) == Some(name) {
                found = p.next().and_then(|v| v.parse().ok());
            }
        }
        found.unwrap_or_else(|| panic!("no stat {name}"))
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// gen:'s value of `size` bytes: `0123456789...`.
pub fn gen_value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'0' + (i % 10) as u8).collect()
}

/// Runs `pump transfer SOURCE SINK EXTRA... -q`, asserting success.
pub fn transfer_ok(source: &str, sink: &str, extra: &[&str]) {
    let mut args = vec!["transfer", source, sink];
    args.extend_from_slice(extra);
    args.push("-q");
    let out = pump(&args);
    assert!(
        out.status.success(),
        "pump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rows of a CSV file, header first.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .expect("the csv file opens");
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Every file under `dir` whose name satisfies `pred`, sorted.
pub fn files_named(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(pred) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The data files under a backup directory.
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, &|n| n.starts_with("data-") && n.ends_with(".cbb"))
}

/// A local cluster of reference nodes (`pump cluster up ... --kv-port 0 --rest-port 0`), killed
/// by its pid when dropped.
pub struct LocalCluster {
    child: Child,
    /// `Authorization: Basic ...\r\n` when the cluster was started with --user/--password.
    auth_header: String,
    /// `-u USER -p PASSWORD` for the pump's commands, when it was.
    credentials: Vec<String>,
    /// Per node: KV address, REST address, otpNode name, spare or not.
    pub nodes: Vec<ClusterNode>,
    /// With `--tls`: the certificate the cluster wrote for clients to trust.
    pub cert: Option<PathBuf>,
}

/// One node as `pump cluster up` prints it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub kv: String,
    pub rest: String,
    pub otp: String,
    pub spare: bool,
    /// With `--tls`: the TLS KV and the HTTPS REST addresses.
    pub kvs: Option<String>,
    pub https: Option<String>,
}

impl LocalCluster {
    /// Starts `pump cluster up --nodes N ARGS` on free ports; waits for every node's line.
    pub fn up(nodes: usize, spares: usize, args: &[&str]) -> LocalCluster {
        Self::up_env(nodes, spares, args, &[])
    }

    /// [`LocalCluster::up`] with `env` set for `pump cluster up`.
    pub fn up_env(
        nodes: usize,
        spares: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> LocalCluster {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
            .envs(env.iter().copied())
            .args(["cluster", "up", "--kv-port", "0", "--rest-port", "0"])
            .args([
                "--nodes",
                &nodes.to_string(),
                "--spares",
                &spares.to_string(),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pump cluster up");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut found = Vec::new();
        while found.len() < nodes + spares {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "pump cluster up exited"
            );
            // node 0 kv=127.0.0.1:12000 rest=127.0.0.1:9000 otp=n_0@127.0.0.1 [spare]
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                    .to_string()
            };
            let optional = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(str::to_string)
            };
            found.push(ClusterNode {
                kv: field("kv="),
                rest: field("rest="),
                otp: field("otp="),
                spare: line.trim_end().ends_with(" spare"),
                kvs: optional("kvs="),
                https: optional("https="),
            });
        }
        let flag = |name: &str| {
            args.iter()
                .position(|a| *a == name)
                .and_then(|i| args.get(i + 1))
                .map(|v| v.to_string())
        };
        let credentials = match (flag("--user"), flag("--password")) {
            (Some(u), Some(p)) => vec!["-u".to_string(), u, "-p".to_string(), p],
            _ => Vec::new(),
        };
        let auth_header = match (flag("--user"), flag("--password")) {
            (Some(u), Some(p)) => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                format!("Authorization: Basic {token}\r\n")
            }
            _ => String::new(),
        };
        let cert = found[0].kvs.is_some().then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let path = line
                .trim()
                .strip_prefix("tls cert=")
                .unwrap_or_else(|| panic!("no 'tls cert=' line: {line:?}"));
            PathBuf::from(path)
        });
        LocalCluster {
            child,
            nodes: found,
            cert,
            auth_header,
            credentials,
        }
    }

    /// The process id of `pump cluster up`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://REST` of node 0.
    pub fn url(&self) -> String {
        format!("http://{}", self.nodes[0].rest)
    }

    /// `couchbase://REST` of node 0.
    pub fn spec(&self) -> String {
        format!("couchbase://{}", self.nodes[0].rest)
    }

    /// GET `path` on node 0's REST port, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_with(&self.nodes[0].rest, "GET", path, "", &self.auth_header);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// POST a form to `path` on node 0's REST port: (status, body).
    pub fn post(&self, path: &str, form: &str) -> (u16, String) {
        http_with(&self.nodes[0].rest, "POST", path, form, &self.auth_header)
    }

    /// `method` `path` (with a form) on node 0's REST port, with the cluster's credentials:
    /// (status, body).
    pub fn rest(&self, method: &str, path: &str, form: &str) -> (u16, String) {
        http_with(&self.nodes[0].rest, method, path, form, &self.auth_header)
    }

    /// The bucket's missing vbuckets (GET vbucketsMissing).
    pub fn missing(&self) -> Vec<u64> {
        self.get("/pools/default/buckets/default/vbucketsMissing")
            .as_array()
            .expect("a list")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    }

    /// The vBucketMap rows.
    pub fn map(&self) -> Vec<Vec<i64>> {
        let b = self.get("/pools/default/buckets/default");
        b["vBucketServerMap"]["vBucketMap"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect()
            })
            .collect()
    }

    /// Fails node `i` over through `pump cluster failover`.
    pub fn failover(&self, i: usize) {
        let url = self.url();
        let mut args = vec!["cluster", "failover", &url, &self.nodes[i].otp];
        args.extend(self.credentials.iter().map(String::as_str));
        let out = pump(&args);
        assert!(out.status.success(), "failover: {}", stderr(&out));
    }

    /// Queues `status` as the next answer of `route` (the node's test hook).
    pub fn inject(&self, route: &str, status: u16) {
        let (s, body) = self.post("/pump/faults", &format!("route={route}&status={status}"));
        assert_eq!(s, 200, "inject {route}: {body}");
    }

    /// key -> (flags, expiry, value) of every item, read through the pump's CSV sink.
    pub fn contents(&self) -> std::collections::BTreeMap<String, (String, String, String)> {
        self.contents_with(&[])
    }

    /// [`LocalCluster::contents`] with more `pump transfer` arguments (`-u`, `-p`, ...).
    pub fn contents_with(
        &self,
        extra: &[&str],
    ) -> std::collections::BTreeMap<String, (String, String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("all.csv");
        transfer_ok(&self.spec(), &format!("csv:{}", csv.display()), extra);
        let rows = csv_rows(&csv);
        let head = &rows[0];
        let col = |name: &str| head.iter().position(|h| h == name).unwrap();
        let (id, flags, exp, value) = (col("id"), col("flags"), col("expiration"), col("value"));
        rows[1..]
            .iter()
            .map(|r| {
                (
                    r[id].clone(),
                    (r[flags].clone(), r[exp].clone(), r[value].clone()),
                )
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange (the tests' own client, independent of the pump's).
pub fn http(addr: &str, method: &str, path: &str, form: &str) -> (u16, String) {
    http_with(addr, method, path, form, "")
}

/// [`http`] with `headers` (each line ending in `\r\n`) added to the request.
pub fn http_with(addr: &str, method: &str, path: &str, form: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: keep only the chunk data.
    let body = if raw
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// A blocking binary-protocol connection to a node, for tests that read what a node counted.
pub struct KvClient {
    sock: TcpStream,
    buf: bytes::BytesMut,
    opaque: u32,
}

impl KvClient {
    /// Connects; with `auth`, SASL PLAIN and SELECT_BUCKET default.
    pub fn connect(addr: &str, auth: Option<(&str, &str)>) -> KvClient {
        let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut c = KvClient {
            sock,
            buf: bytes::BytesMut::new(),
            opaque: 0,
        };
        if let Some((u, p)) = auth {
            let r = c.request(pump_protocol::sasl::plain_auth(u, p));
            assert_eq!(r.status(), pump_protocol::Status::Success, "PLAIN as {u}");
            let r = c.request(
                pump_protocol::Packet::request(pump_protocol::Opcode::SelectBucket)
                    .with_key(&b"default"[..]),
            );
            assert_eq!(r.status(), pump_protocol::Status::Success, "SELECT_BUCKET");
        }
        c
    }

    /// Sends `p` and returns the first answer with its opaque.
    pub fn request(&mut self, p: pump_protocol::Packet) -> pump_protocol::Packet {
        self.opaque += 1;
        let opaque = self.opaque;
        self.sock
            .write_all(&p.with_opaque(opaque).to_bytes())
            .unwrap();
        loop {
            let r = self.recv();
            if r.opaque == opaque {
                return r;
            }
        }
    }

    /// The next frame.
    pub fn recv(&mut self) -> pump_protocol::Packet {
        use tokio_util::codec::Decoder;
        loop {
            if let Some(p) = pump_protocol::PacketCodec::default()
                .decode(&mut self.buf)
                .unwrap()
            {
                return p;
            }
            let mut chunk = [0u8; 65536];
            let n = self.sock.read(&mut chunk).expect("read a frame");
            assert!(n > 0, "the node closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Every STAT pair of the general group.
    pub fn stats(&mut self) -> std::collections::BTreeMap<String, String> {
        self.opaque += 1;
        let opaque = self.opaque;
        let p = pump_protocol::Packet::request(pump_protocol::Opcode::Stat).with_opaque(opaque);
        self.sock.write_all(&p.to_bytes()).unwrap();
        let mut out = std::collections::BTreeMap::new();
        loop {
            let r = self.recv();
            if r.opaque != opaque {
                continue;
            }
            if r.key.is_empty() {
                return out;
            }
            out.insert(
                String::from_utf8_lossy(&r.key).into_owned(),
                String::from_utf8_lossy(&r.value).into_owned(),
            );
        }
    }

    /// One numeric STAT.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.stats()
            .get(name)
            .unwrap_or_else(|| panic!("no stat {name}"))
            .parse()
            .unwrap()
    }
}

/// The Python interpreter of the virtual environment holding the official Couchbase SDK:
/// `PUMP_SDK_PYTHON`, else `target/py-sdk/bin/python` (what scripts/test creates).
pub fn sdk_python() -> PathBuf {
    let p = std::env::var_os("PUMP_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-sdk/bin/python"));
    assert!(
        p.exists(),
        "{}: no Python with the official Couchbase SDK; run scripts/test (it creates \
         target/py-sdk) or set PUMP_SDK_PYTHON",
        p.display()
    );
    p
}

/// Runs a script of tests/sdk with the SDK's Python: (success, stdout, stderr).
pub fn sdk_script(script: &str, args: &[&str]) -> (bool, String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new(sdk_python())
        .arg(&path)
        .args(args)
        .output()
        .expect("run the SDK script");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rows of a `csv:` export: (scope.collection, key) -> (value, vbid), the collection
/// `_default._default` when the file has no scope and collection columns.
pub type Export = std::collections::BTreeMap<(String, String), (String, u16)>;

pub fn export_file(csv: &Path) -> Export {
    let rows = csv_rows(csv);
    let head = &rows[0];
    let col = |name: &str| head.iter().position(|h| h == name);
    let (id, value, vbid) = (
        col("id").unwrap(),
        col("value").unwrap(),
        col("vbid").unwrap(),
    );
    let paths = col("scope").zip(col("collection"));
    rows[1..]
        .iter()
        .map(|r| {
            let place = match paths {
                Some((s, c)) => format!("{}.{}", r[s], r[c]),
                None => "_default._default".to_string(),
            };
            (
                (place, r[id].clone()),
                (r[value].clone(), r[vbid].parse().unwrap()),
            )
        })
        .collect()
}

/// Creates `scope.collection` on `c` over REST (the scope too, when it is new).
pub fn create_collection(c: &LocalCluster, scope: &str, collection: &str) {
    let base = "/pools/default/buckets/default/scopes";
    let (status, body) = c.rest("POST", base, &format!("name={scope}"));
    assert!(
        status == 200 || body.contains("already exists"),
        "{status} {body}"
    );
    let (status, body) = c.rest(
        "POST",
        &format!("{base}/{scope}/collections"),
        &format!("name={collection}"),
    );
    assert_eq!(status, 200, "{body}");
}

/// `items` gen: documents (keys PREFIX0...) into `scope.collection` of `c`.
pub fn load_into(c: &LocalCluster, items: usize, prefix: &str, scope: &str, collection: &str) {
    let gen = format!("gen:max-items={items},min-value-size=20,prefix={prefix}");
    let map = format!("default._default._default=default.{scope}.{collection}");
    let mut args = Vec::new();
    if (scope, collection) != ("_default", "_default") {
        args.extend(["--map-data", &map[..]]);
    }
    transfer_ok(&gen, &c.spec(), &args);
}

/// `pump transfer C csv:FILE EXTRA`, read back as an [`Export`].
pub fn export_cluster(c: &LocalCluster, extra: &[&str]) -> Export {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("all.csv");
    transfer_ok(&c.spec(), &format!("csv:{}", csv.display()), extra);
    export_file(&csv)
}
