//! beanstalkd's wire format (its `doc/protocol.txt`): command lines out, reply lines and
//! bodies in.
//!
//! ```text
//! client -> server   <command> [<arg> ...]\r\n                 one ASCII line
//!                    put <pri> <delay> <ttr> <bytes>\r\n<body>\r\n
//! server -> client   <WORD> [<arg> ...]\r\n                    one ASCII line, or
//!                    RESERVED <id> <bytes>\r\n<body>\r\n        a line and a body:
//!                    FOUND <id> <bytes>\r\n<body>\r\n           RESERVED, FOUND (peek)
//!                    OK <bytes>\r\n<yaml>\r\n                   and OK (stats, list-tubes)
//! ```
//!
//! Replies come in the order of the commands, one each. The decoder waits for a whole line
//! (at most [`MAX_LINE`] bytes) and then for the whole body, whose declared length is checked
//! against the codec's maximum before any memory is reserved for it; a line that is not a
//! reply, a number that is not one, or a body not followed by `\r\n` is a [`FrameError`].
//! The body is `split_to(n).freeze()` of the read buffer: no copy.
//!
//! Tube names follow the protocol: 1 to 200 bytes of `A-Z a-z 0-9 - + / ; . $ _ ( )`, not
//! starting with `-`; [`Tube::new`] checks them before any is sent.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The longest reply line the decoder waits for (`USING <200-byte tube>` is the longest).
pub const MAX_LINE: usize = 512;
/// The largest body the decoder accepts unless told otherwise (beanstalkd's own default job
/// limit is 65,535 bytes; `stats` and `list-tubes` answers are larger on a busy server).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// The longest tube name.
pub const MAX_TUBE: usize = 200;

/// A tube name the protocol accepts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tube(String);

impl Tube {
    /// Checks `name` against the protocol's rules.
    pub fn new(name: &str) -> Result<Tube, String> {
        if name.is_empty() || name.len() > MAX_TUBE {
            return Err(format!(
                "tube {name:?}: a tube name has 1 to {MAX_TUBE} bytes"
            ));
        }
        if name.starts_with('-') {
            return Err(format!("tube {name:?}: a tube name may not start with '-'"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-+/;.$_()".contains(*c)))
        {
            return Err(format!(
                "tube {name:?}: {c:?} is not allowed (letters, digits and - + / ; . $ _ ( ))"
            ));
        }
        Ok(Tube(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command, as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Use(Tube),
    Watch(Tube),
    Ignore(Tube),
    Put {
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
    },
    ReserveWithTimeout(u32),
    ReserveJob(u64),
    Delete(u64),
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
    Bury {
        id: u64,
        pri: u32,
    },
    Touch(u64),
    Peek(u64),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Kick(u32),
    KickJob(u64),
    StatsJob(u64),
    StatsTube(Tube),
    Stats,
    ListTubes,
}

impl fmt::Display for Command {
    /// The command line without its body, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Use(t) => write!(f, "use {t}"),
            Command::Watch(t) => write!(f, "watch {t}"),
            Command::Ignore(t) => write!(f, "ignore {t}"),
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => write!(f, "put {pri} {delay} {ttr} {}", body.len()),
            Command::ReserveWithTimeout(s) => write!(f, "reserve-with-timeout {s}"),
            Command::ReserveJob(id) => write!(f, "reserve-job {id}"),
            Command::Delete(id) => write!(f, "delete {id}"),
            Command::Release { id, pri, delay } => write!(f, "release {id} {pri} {delay}"),
            Command::Bury { id, pri } => write!(f, "bury {id} {pri}"),
            Command::Touch(id) => write!(f, "touch {id}"),
            Command::Peek(id) => write!(f, "peek {id}"),
            Command::PeekReady => f.write_str("peek-ready"),
            Command::PeekDelayed => f.write_str("peek-delayed"),
            Command::PeekBuried => f.write_str("peek-buried"),
            Command::Kick(n) => write!(f, "kick {n}"),
            Command::KickJob(id) => write!(f, "kick-job {id}"),
            Command::StatsJob(id) => write!(f, "stats-job {id}"),
            Command::StatsTube(t) => write!(f, "stats-tube {t}"),
            Command::Stats => f.write_str("stats"),
            Command::ListTubes => f.write_str("list-tubes"),
        }
    }
}

/// A job as the server hands it out (reserve, peek).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub body: Bytes,
}

/// An error the server answers to any command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    OutOfMemory,
    InternalError,
    Draining,
    BadFormat,
    UnknownCommand,
    ExpectedCrlf,
    JobTooBig,
}

impl ServerError {
    /// The reply word.
    pub fn word(self) -> &'static str {
        match self {
            ServerError::OutOfMemory => "OUT_OF_MEMORY",
            ServerError::InternalError => "INTERNAL_ERROR",
            ServerError::Draining => "DRAINING",
            ServerError::BadFormat => "BAD_FORMAT",
            ServerError::UnknownCommand => "UNKNOWN_COMMAND",
            ServerError::ExpectedCrlf => "EXPECTED_CRLF",
            ServerError::JobTooBig => "JOB_TOO_BIG",
        }
    }
}

/// A reply, as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `INSERTED <id>` (put).
    Inserted(u64),
    /// `BURIED <id>` (put: the server is out of memory and buried the new job).
    BuriedNew(u64),
    /// `BURIED` (bury; release when out of memory).
    Buried,
    /// `USING <tube>`.
    Using(String),
    /// `WATCHING <count>` (watch, ignore).
    Watching(u64),
    /// `RESERVED <id> <bytes>` and the body.
    Reserved(Job),
    /// `FOUND <id> <bytes>` and the body (peek).
    Found(Job),
    /// `OK <bytes>` and the YAML body (stats, stats-job, stats-tube, list-tubes).
    Ok(Bytes),
    Deleted,
    Released,
    Touched,
    /// `KICKED <count>` (kick) or `KICKED` (kick-job).
    Kicked(Option<u64>),
    NotFound,
    TimedOut,
    DeadlineSoon,
    NotIgnored,
    Error(ServerError),
}

impl fmt::Display for Reply {
    /// The reply line without its body, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Inserted(id) => write!(f, "INSERTED {id}"),
            Reply::BuriedNew(id) => write!(f, "BURIED {id}"),
            Reply::Buried => f.write_str("BURIED"),
            Reply::Using(t) => write!(f, "USING {t}"),
            Reply::Watching(n) => write!(f, "WATCHING {n}"),
            Reply::Reserved(j) => write!(f, "RESERVED {} {}", j.id, j.body.len()),
            Reply::Found(j) => write!(f, "FOUND {} {}", j.id, j.body.len()),
            Reply::Ok(b) => write!(f, "OK {}", b.len()),
            Reply::Deleted => f.write_str("DELETED"),
            Reply::Released => f.write_str("RELEASED"),
            Reply::Touched => f.write_str("TOUCHED"),
            Reply::Kicked(Some(n)) => write!(f, "KICKED {n}"),
            Reply::Kicked(None) => f.write_str("KICKED"),
            Reply::NotFound => f.write_str("NOT_FOUND"),
            Reply::TimedOut => f.write_str("TIMED_OUT"),
            Reply::DeadlineSoon => f.write_str("DEADLINE_SOON"),
            Reply::NotIgnored => f.write_str("NOT_IGNORED"),
            Reply::Error(e) => f.write_str(e.word()),
        }
    }
}

/// A reply stream the decoder cannot read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("no end of line within {MAX_LINE} bytes: not a beanstalkd reply")]
    LineTooLong,
    #[error("not a beanstalkd reply: {0:?}")]
    Unknown(String),
    #[error("reply {line:?}: {what} is not a number")]
    BadNumber { line: String, what: &'static str },
    #[error("reply {line:?}: a body of {len} bytes is over the limit of {max}")]
    BodyTooLong {
        line: String,
        len: usize,
        max: usize,
    },
    #[error("reply {line:?}: the body is not followed by \\r\\n")]
    MissingCrlf { line: String },
    #[error("the connection closed in the middle of a reply ({0} bytes of it read)")]
    Truncated(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes [`Command`]s and decodes [`Reply`]s.
#[derive(Debug, Clone)]
pub struct Codec {
    max_body: usize,
    /// A reply line read whose body has not all arrived: (line length with CRLF, reply
    /// without its body, body length).
    pending: Option<(usize, Reply, usize)>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(DEFAULT_MAX_BODY)
    }
}

impl Codec {
    /// A codec that refuses bodies longer than `max_body`.
    pub fn new(max_body: usize) -> Codec {
        Codec {
            max_body,
            pending: None,
        }
    }
}

impl Encoder<Command> for Codec {
    type Error = FrameError;

    fn encode(&mut self, cmd: Command, dst: &mut BytesMut) -> Result<(), FrameError> {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(48);
        let _ = write!(line, "{cmd}");
        dst.reserve(line.len() + 2);
        dst.put_slice(line.as_bytes());
        dst.put_slice(b"\r\n");
        if let Command::Put { body, .. } = cmd {
            dst.reserve(body.len() + 2);
            dst.put_slice(&body);
            dst.put_slice(b"\r\n");
        }
        Ok(())
    }
}

impl Decoder for Codec {
    type Item = Reply;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, FrameError> {
        if self.pending.is_none() {
            let Some(end) = src.windows(2).take(MAX_LINE).position(|w| w == b"\r\n") else {
                if src.len() >= MAX_LINE {
                    return Err(FrameError::LineTooLong);
                }
                return Ok(None);
            };
            let line = std::str::from_utf8(&src[..end])
                .map_err(|_| FrameError::Unknown(String::from_utf8_lossy(&src[..end]).into()))?
                .to_string();
            let (reply, body) = parse_line(&line)?;
            if body > self.max_body {
                return Err(FrameError::BodyTooLong {
                    line,
                    len: body,
                    max: self.max_body,
                });
            }
            self.pending = Some((end + 2, reply, body));
        }
        let Some((line_len, _, body)) = &self.pending else {
            return Ok(None);
        };
        let (line_len, body) = (*line_len, *body);
        let has_body = matches!(
            self.pending,
            Some((_, Reply::Reserved(_) | Reply::Found(_) | Reply::Ok(_), _))
        );
        let need = if has_body {
            line_len + body + 2
        } else {
            line_len
        };
        if src.len() < need {
            src.reserve(need - src.len());
            return Ok(None);
        }
        let Some((_, reply, _)) = self.pending.take() else {
            return Ok(None);
        };
        if !has_body {
            src.advance(line_len);
            return Ok(Some(reply));
        }
        if &src[line_len + body..need] != b"\r\n" {
            let line = match &reply {
                Reply::Reserved(j) => format!("RESERVED {} {body}", j.id),
                Reply::Found(j) => format!("FOUND {} {body}", j.id),
                _ => format!("OK {body}"),
            };
            return Err(FrameError::MissingCrlf { line });
        }
        src.advance(line_len);
        let data = src.split_to(body).freeze();
        src.advance(2);
        Ok(Some(match reply {
            Reply::Reserved(j) => Reply::Reserved(Job {
                id: j.id,
                body: data,
            }),
            Reply::Found(j) => Reply::Found(Job {
                id: j.id,
                body: data,
            }),
            _ => Reply::Ok(data),
        }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, FrameError> {
        match self.decode(buf)? {
            Some(r) => Ok(Some(r)),
            None if buf.is_empty() && self.pending.is_none() => Ok(None),
            None => Err(FrameError::Truncated(buf.len())),
        }
    }
}

/// One reply line: the reply (a body-less placeholder for those with a body) and the body's
/// declared length (0 for replies without one).
fn parse_line(line: &str) -> Result<(Reply, usize), FrameError> {
    let mut words = line.split(' ');
    let word = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let number = |i: usize, what: &'static str| -> Result<u64, FrameError> {
        args.get(i)
            .and_then(|a| a.parse::<u64>().ok())
            .ok_or_else(|| FrameError::BadNumber {
                line: line.to_string(),
                what,
            })
    };
    let length = |i: usize| -> Result<usize, FrameError> {
        number(i, "the body length").and_then(|n| {
            usize::try_from(n).map_err(|_| FrameError::BadNumber {
                line: line.to_string(),
                what: "the body length",
            })
        })
    };
    let exact = |n: usize, reply: Reply| -> Result<(Reply, usize), FrameError> {
        if args.len() == n {
            Ok((reply, 0))
        } else {
            Err(FrameError::Unknown(line.to_string()))
        }
    };
    let empty = Bytes::new();
    match word {
        "INSERTED" => exact(1, Reply::Inserted(number(0, "the job id")?)),
        "BURIED" if args.is_empty() => Ok((Reply::Buried, 0)),
        "BURIED" => exact(1, Reply::BuriedNew(number(0, "the job id")?)),
        "USING" if args.len() == 1 && !args[0].is_empty() => {
            Ok((Reply::Using(args[0].to_string()), 0))
        }
        "WATCHING" => exact(1, Reply::Watching(number(0, "the count")?)),
        "RESERVED" | "FOUND" if args.len() == 2 => {
            let job = Job {
                id: number(0, "the job id")?,
                body: empty,
            };
            let reply = if word == "RESERVED" {
                Reply::Reserved(job)
            } else {
                Reply::Found(job)
            };
            Ok((reply, length(1)?))
        }
        "OK" if args.len() == 1 => Ok((Reply::Ok(empty), length(0)?)),
        "DELETED" => exact(0, Reply::Deleted),
        "RELEASED" => exact(0, Reply::Released),
        "TOUCHED" => exact(0, Reply::Touched),
        "KICKED" if args.is_empty() => Ok((Reply::Kicked(None), 0)),
        "KICKED" => exact(1, Reply::Kicked(Some(number(0, "the count")?))),
        "NOT_FOUND" => exact(0, Reply::NotFound),
        "TIMED_OUT" => exact(0, Reply::TimedOut),
        "DEADLINE_SOON" => exact(0, Reply::DeadlineSoon),
        "NOT_IGNORED" => exact(0, Reply::NotIgnored),
        "OUT_OF_MEMORY" => exact(0, Reply::Error(ServerError::OutOfMemory)),
        "INTERNAL_ERROR" => exact(0, Reply::Error(ServerError::InternalError)),
        "DRAINING" => exact(0, Reply::Error(ServerError::Draining)),
        "BAD_FORMAT" => exact(0, Reply::Error(ServerError::BadFormat)),
        "UNKNOWN_COMMAND" => exact(0, Reply::Error(ServerError::UnknownCommand)),
        "EXPECTED_CRLF" => exact(0, Reply::Error(ServerError::ExpectedCrlf)),
        "JOB_TOO_BIG" => exact(0, Reply::Error(ServerError::JobTooBig)),
        _ => Err(FrameError::Unknown(line.to_string())),
    }
}

/// The flat YAML dictionary beanstalkd sends for `stats`, `stats-job` and `stats-tube`
/// (`---` then `key: value` lines; string values may be quoted), as key-value pairs.
pub fn yaml_dict(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| *l != "---")
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// The flat YAML list beanstalkd sends for `list-tubes` (`---` then `- name` lines).
pub fn yaml_list(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Reply>, FrameError> {
        let mut c = Codec::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(r) = c.decode(&mut buf)? {
            out.push(r);
        }
        if let Some(r) = c.decode_eof(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    const STREAM: &[u8] = b"INSERTED 12\r\nRESERVED 12 5\r\nhe\r\no\r\nUSING jobs.x\r\nOK 9\r\n---\na: 1\n\r\nNOT_FOUND\r\nKICKED\r\nKICKED 3\r\nFOUND 7 0\r\n\r\nBURIED 9\r\nBURIED\r\n";

    fn expected() -> Vec<Reply> {
        vec![
            Reply::Inserted(12),
            Reply::Reserved(Job {
                id: 12,
                body: Bytes::from_static(b"he\r\no"),
            }),
            Reply::Using("jobs.x".into()),
            Reply::Ok(Bytes::from_static(b"---\na: 1\n")),
            Reply::NotFound,
            Reply::Kicked(None),
            Reply::Kicked(Some(3)),
            Reply::Found(Job {
                id: 7,
                body: Bytes::new(),
            }),
            Reply::BuriedNew(9),
            Reply::Buried,
        ]
    }

    #[test]
    fn several_replies_in_one_read_each_with_its_body() {
        assert_eq!(decode_all(STREAM).unwrap(), expected());
    }

    #[test]
    fn a_stream_split_at_every_offset_decodes_the_same() {
        for cut in 0..STREAM.len() {
            let mut c = Codec::default();
            let mut buf = BytesMut::from(&STREAM[..cut]);
            let mut out = Vec::new();
            while let Some(r) = c.decode(&mut buf).unwrap() {
                out.push(r);
            }
            buf.extend_from_slice(&STREAM[cut..]);
            while let Some(r) = c.decode(&mut buf).unwrap() {
                out.push(r);
            }
            assert_eq!(out, expected(), "cut at {cut}");
        }
    }

    #[test]
    fn a_reply_cut_short_at_eof_is_an_error_and_a_clean_end_is_not() {
        // The offsets where one reply ends and the next begins.
        let mut ends = vec![0];
        let (mut c, mut buf) = (Codec::default(), BytesMut::from(STREAM));
        while c.decode(&mut buf).unwrap().is_some() {
            ends.push(STREAM.len() - buf.len());
        }
        for cut in 0..=STREAM.len() {
            let r = decode_all(&STREAM[..cut]);
            if ends.contains(&cut) {
                assert_eq!(
                    r.unwrap().len(),
                    ends.iter().position(|e| *e == cut).unwrap()
                );
            } else {
                assert!(
                    matches!(r, Err(FrameError::Truncated(_))),
                    "cut at {cut}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_it_arrives() {
        let mut c = Codec::new(100);
        let mut buf = BytesMut::from(&b"RESERVED 1 101\r\n"[..]);
        let e = c.decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::BodyTooLong {
                    len: 101,
                    max: 100,
                    ..
                }
            ),
            "{e}"
        );
        let mut buf = BytesMut::from(&b"OK 99999999999999999999999\r\n"[..]);
        assert!(Codec::default().decode(&mut buf).is_err());
    }

    #[test]
    fn malformed_replies_are_errors_that_quote_them() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"INSERTED x\r\n",
            b"INSERTED\r\n",
            b"RESERVED 1\r\n",
            b"DELETED 4\r\n",
            b"RESERVED 1 2\r\nabXY",
            b"\xff\xfe\r\n",
        ] {
            let e = decode_all(bad).unwrap_err();
            assert!(!matches!(e, FrameError::Truncated(_)), "{bad:?}: {e}");
        }
        let e = decode_all(b"RESERVED 1 2\r\nabXY").unwrap_err().to_string();
        assert!(e.contains("not followed by"), "{e}");
        let e = decode_all(&[b'A'; MAX_LINE + 1]).unwrap_err();
        assert!(matches!(e, FrameError::LineTooLong), "{e}");
    }

    #[test]
    fn server_errors_are_replies() {
        assert_eq!(
            decode_all(b"JOB_TOO_BIG\r\nDRAINING\r\nBAD_FORMAT\r\n").unwrap(),
            vec![
                Reply::Error(ServerError::JobTooBig),
                Reply::Error(ServerError::Draining),
                Reply::Error(ServerError::BadFormat)
            ]
        );
    }

    #[test]
    fn commands_encode_as_the_protocol_spells_them() {
        let mut c = Codec::default();
        let mut buf = BytesMut::new();
        let tube = Tube::new("pump.r1").unwrap();
        for cmd in [
            Command::Use(tube.clone()),
            Command::Put {
                pri: 5,
                delay: 0,
                ttr: 60,
                body: Bytes::from_static(b"a\r\nb"),
            },
            Command::ReserveWithTimeout(3),
            Command::Release {
                id: 4,
                pri: 1,
                delay: 30,
            },
            Command::Bury { id: 4, pri: 2 },
            Command::Touch(4),
            Command::KickJob(4),
            Command::StatsTube(tube),
            Command::PeekReady,
        ] {
            c.encode(cmd, &mut buf).unwrap();
        }
        assert_eq!(
            &buf[..],
            &b"use pump.r1\r\nput 5 0 60 4\r\na\r\nb\r\nreserve-with-timeout 3\r\nrelease 4 1 30\r\nbury 4 2\r\ntouch 4\r\nkick-job 4\r\nstats-tube pump.r1\r\npeek-ready\r\n"[..]
        );
    }

    #[test]
    fn tube_names_follow_the_protocol() {
        for ok in ["pump", "a-b+c/d;e.f$g_h(i)", &"x".repeat(200)] {
            assert!(Tube::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "a:b", "é", &"x".repeat(201)] {
            assert!(Tube::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stats_yaml_reads_as_pairs_and_lists() {
        let d = yaml_dict(b"---\nid: 2\ntube: rec\nstate: ready\nversion: \"1.12\"\n");
        assert_eq!(d[0], ("id".into(), "2".into()));
        assert_eq!(d[3], ("version".into(), "1.12".into()));
        assert_eq!(
            yaml_list(b"---\n- default\n- pump\n"),
            vec!["default", "pump"]
        );
    }
}
