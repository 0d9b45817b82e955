//! Debian's beanstalkd for tests: started on a free 127.0.0.1 port, stopped by its pid. Not
//! for production use.
//!
//! ```text
//! Beanstalkd::start()              beanstalkd -l 127.0.0.1 -p PORT
//! Beanstalkd::start_with_binlog(d) ... -b DIR: jobs survive a kill and a restart
//! .kill() / .restart()             SIGKILL by pid; start again on the same port and binlog
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One beanstalkd process.
pub struct Beanstalkd {
    pub port: u16,
    binlog: Option<PathBuf>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Beanstalkd {
    /// Starts one on a free port (another, if a parallel test took that one first).
    pub fn start() -> Beanstalkd {
        Beanstalkd::start_on_free_port(None)
    }

    /// Starts one that keeps its jobs in a binlog under `dir`.
    pub fn start_with_binlog(dir: &Path) -> Beanstalkd {
        Beanstalkd::start_on_free_port(Some(dir.to_path_buf()))
    }

    fn start_on_free_port(binlog: Option<PathBuf>) -> Beanstalkd {
        for _ in 0..5 {
            let mut b = Beanstalkd {
                port: free_port(),
                binlog: binlog.clone(),
                child: None,
            };
            if b.try_start() {
                return b;
            }
        }
        panic!("beanstalkd did not start on any of 5 free ports");
    }

    /// Starts the process; false when it exits at once (the port is taken).
    fn try_start(&mut self) -> bool {
        let mut cmd = Command::new("beanstalkd");
        cmd.args(["-l", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(dir) = &self.binlog {
            cmd.arg("-b").arg(dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run beanstalkd ({e}): install Debian's beanstalkd (scripts/test does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited() {
                return false;
            }
            if self.answers() {
                // Still alive after answering: the answer was ours.
                std::thread::sleep(Duration::from_millis(20));
                return !self.exited();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("beanstalkd on {} did not answer within 10 s", self.port);
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = [0u8; 3];
        s.write_all(b"stats\r\n").is_ok() && s.read_exact(&mut head).is_ok() && &head == b"OK "
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

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `beanstalk://127.0.0.1:PORT/TUBE`.
    pub fn url(&self, tube: &str) -> String {
        format!("beanstalk://{}/{tube}", self.addr())
    }

    /// Kills it (SIGKILL, by its pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (and binlog); waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "beanstalkd could not start again on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        self.kill();
    }
}
