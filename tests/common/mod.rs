//! Helpers shared by the end-to-end tests: run the pump binary, read what it wrote (CSV, backup
//! directories), and a real memcached started on a free port and stopped by its pid.

#![allow(dead_code)]

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

    /// Starts one; `None` when it exits at once (the port is taken).
    fn try_start(port: u16, args: &[&str], env: &[(&str, &str)]) -> Option<Memcached> {
        let mut cmd = Command::new("memcached");
        cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
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
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Exited: it could not listen. Answering while exited would be someone else's.
            if m.exited() {
                return None;
            }
            // A binary VERSION: answered with or without SASL, and before any text command.
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
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

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
