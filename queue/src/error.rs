//! This crate's error: every variant names the server (or the text) it is about.

use thiserror::Error;

/// An error talking to beanstalkd, or reading what pump keeps in it.
#[derive(Debug, Error)]
pub enum Error {
    /// The queue URL is not `beanstalk://HOST[:PORT][/TUBE]`, or a name is not a tube name.
    #[error("{0}")]
    Usage(String),
    /// No connection could be made.
    #[error("beanstalkd {addr}: cannot connect: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The connection broke, timed out or carried something that is not the protocol: the
    /// jobs this connection held are back in the queue (the server releases them), or will be
    /// after their time to run.
    #[error("beanstalkd {addr}: {message} (during {command})")]
    Connection {
        addr: String,
        command: String,
        message: String,
    },
    /// The server answered a command with something other than success: `NOT_FOUND` for a
    /// job this connection no longer holds, `JOB_TOO_BIG`, `DRAINING`, `OUT_OF_MEMORY`...
    #[error("beanstalkd {addr}: {command}: {reply}{}", hint(reply))]
    Refused {
        addr: String,
        command: String,
        reply: String,
    },
    /// A job body or record that is not what pump puts in the queue.
    #[error("{0}")]
    Body(String),
}

fn hint(reply: &str) -> &'static str {
    match reply {
        "NOT_FOUND" => " (no such job, or not held by this connection)",
        "JOB_TOO_BIG" => " (the body is over the server's max-job-size, beanstalkd -z)",
        "DRAINING" => " (the server is in drain mode and takes no new job)",
        "OUT_OF_MEMORY" => " (the server is out of memory)",
        _ => "",
    }
}

impl Error {
    /// True when the connection itself failed (connect, I/O, timeout, a garbled reply): open
    /// a new one.
    pub fn is_connection(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Connection { .. })
    }

    /// True for a `NOT_FOUND` reply.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Refused { reply, .. } if reply == "NOT_FOUND")
    }
}
