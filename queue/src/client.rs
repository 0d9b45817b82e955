//! One connection to beanstalkd and the commands pump sends on it.
//!
//! ```text
//! Client::connect(addr, timeout)
//!   use / watch / ignore           which tube put and peek-ready use; which tubes reserve takes from
//!   put                            -> job id
//!   reserve(wait)                  reserve-with-timeout: a job, TIMED_OUT or DEADLINE_SOON
//!   touch / release / bury / delete  on a job this connection reserved
//!   peek / peek-ready / peek-buried / peek-delayed / kick-job / stats-job / stats-tube / stats
//!   pipeline(commands)             many commands written at once, their replies read in order
//! ```
//!
//! Every write and every read waits at most the client's timeout (a reserve: its own wait on
//! top of that). A connection that timed out, broke or read a garbled reply is not used again:
//! every later call fails at once with the same error, and the caller opens a new one. A job
//! belongs to the connection that reserved it: when that connection closes, the server puts the
//! job back in its tube at once.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::error::Error;
use crate::frame::{yaml_dict, yaml_list, Codec, Command, Job, Reply, Tube};

/// What a reserve gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// A job, now held by this connection for its time to run.
    Job(Job),
    /// No job became ready within the wait.
    TimedOut,
    /// A job this connection holds is within a second of its time to run.
    DeadlineSoon,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Ready,
    Delayed,
    Reserved,
    Buried,
}

/// `stats-job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStats {
    pub id: u64,
    pub tube: String,
    pub state: JobState,
    pub pri: u32,
    pub age: u64,
    pub ttr: u64,
    /// Seconds until a reserved job times out or a delayed one becomes ready.
    pub time_left: u64,
    pub reserves: u64,
    pub timeouts: u64,
    pub releases: u64,
    pub buries: u64,
    pub kicks: u64,
}

/// `stats-tube`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TubeStats {
    pub ready: u64,
    pub reserved: u64,
    pub delayed: u64,
    pub buried: u64,
    /// Jobs ever put in the tube.
    pub total: u64,
    /// Connections waiting in a reserve on it.
    pub waiting: u64,
    /// Connections watching it.
    pub watching: u64,
}

/// `stats`: the few figures pump reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub version: String,
    /// The largest job body the server takes (`beanstalkd -z`, 65,535 by default).
    pub max_job_size: usize,
    /// Jobs ever created.
    pub total_jobs: u64,
    pub current_connections: u64,
    /// `touch` commands ever answered.
    pub touches: u64,
    /// Reserved jobs that ran out of time.
    pub timeouts: u64,
}

/// One connection.
#[derive(Debug)]
pub struct Client {
    addr: String,
    io: Framed<TcpStream, Codec>,
    timeout: Duration,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`); every later wait is bounded by `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, Error> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {}s", timeout.as_secs_f64()),
                    ),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(Client {
            addr: addr.to_string(),
            io: Framed::new(stream, Codec::default()),
            timeout,
            broken: None,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn lost(&mut self, command: &str, message: String) -> Error {
        self.broken = Some(message.clone());
        Error::Connection {
            addr: self.addr.clone(),
            command: command.to_string(),
            message,
        }
    }

    fn check(&self, command: &str) -> Result<(), Error> {
        match &self.broken {
            Some(m) => Err(Error::Connection {
                addr: self.addr.clone(),
                command: command.to_string(),
                message: format!("the connection is unusable since: {m}"),
            }),
            None => Ok(()),
        }
    }

    async fn write(&mut self, cmds: Vec<Command>, what: &str) -> Result<(), Error> {
        self.check(what)?;
        let sent = async {
            for c in cmds {
                self.io.feed(c).await?;
            }
            self.io.flush().await
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.lost(what, e.to_string())),
            Err(_) => Err(self.lost(
                what,
                format!("could not send within {}s", self.timeout.as_secs_f64()),
            )),
        }
    }

    async fn read(&mut self, what: &str, extra: Duration) -> Result<Reply, Error> {
        let wait = self.timeout + extra;
        match tokio::time::timeout(wait, self.io.next()).await {
            Ok(Some(Ok(r))) => Ok(r),
            Ok(Some(Err(e))) => Err(self.lost(what, e.to_string())),
            Ok(None) => Err(self.lost(what, "the server closed the connection".into())),
            Err(_) => Err(self.lost(what, format!("no answer within {}s", wait.as_secs_f64()))),
        }
    }

    /// Sends one command and reads its reply (a server error reply is [`Error::Refused`]).
    async fn call(&mut self, cmd: Command, extra: Duration) -> Result<(Reply, String), Error> {
        let what = cmd.to_string();
        self.write(vec![cmd], &what).await?;
        match self.read(&what, extra).await? {
            Reply::Error(e) => Err(self.refused(&what, e.word())),
            r => Ok((r, what)),
        }
    }

    fn refused(&self, command: &str, reply: impl std::fmt::Display) -> Error {
        Error::Refused {
            addr: self.addr.clone(),
            command: command.to_string(),
            reply: reply.to_string(),
        }
    }

    /// Writes every command, then reads their replies in order (server errors included, as
    /// replies). Sent 256 at a time, so that neither side's buffers fill while the other
    /// waits.
    pub async fn pipeline(&mut self, cmds: Vec<Command>) -> Result<Vec<Reply>, Error> {
        let mut out = Vec::with_capacity(cmds.len());
        let mut cmds = cmds.into_iter().peekable();
        while cmds.peek().is_some() {
            let chunk: Vec<Command> = cmds.by_ref().take(256).collect();
            let names: Vec<String> = chunk.iter().map(|c| c.to_string()).collect();
            self.write(chunk, &names[0]).await?;
            for n in &names {
                out.push(self.read(n, Duration::ZERO).await?);
            }
        }
        Ok(out)
    }

    /// `use`: later puts and peek-ready, peek-delayed, peek-buried and kick go to `tube`.
    pub async fn use_tube(&mut self, tube: &Tube) -> Result<(), Error> {
        match self
            .call(Command::Use(tube.clone()), Duration::ZERO)
            .await?
        {
            (Reply::Using(t), _) if t == tube.as_str() => Ok(()),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `watch`: reserve takes jobs from `tube` too. Returns how many tubes are watched.
    pub async fn watch(&mut self, tube: &Tube) -> Result<u64, Error> {
        match self
            .call(Command::Watch(tube.clone()), Duration::ZERO)
            .await?
        {
            (Reply::Watching(n), _) => Ok(n),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `ignore`: reserve no longer takes jobs from `tube`.
    pub async fn ignore(&mut self, tube: &Tube) -> Result<u64, Error> {
        match self
            .call(Command::Ignore(tube.clone()), Duration::ZERO)
            .await?
        {
            (Reply::Watching(n), _) => Ok(n),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `put` into the used tube: returns the new job's id.
    pub async fn put(
        &mut self,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: impl Into<Bytes>,
    ) -> Result<u64, Error> {
        let cmd = Command::Put {
            pri,
            delay,
            ttr,
            body: body.into(),
        };
        match self.call(cmd, Duration::ZERO).await? {
            (Reply::Inserted(id), _) => Ok(id),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `reserve-with-timeout`: waits up to `wait` (whole seconds) for a job of a watched tube.
    pub async fn reserve(&mut self, wait: Duration) -> Result<Reservation, Error> {
        let secs = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX);
        let extra = Duration::from_secs(u64::from(secs));
        match self.call(Command::ReserveWithTimeout(secs), extra).await? {
            (Reply::Reserved(job), _) => Ok(Reservation::Job(job)),
            (Reply::TimedOut, _) => Ok(Reservation::TimedOut),
            (Reply::DeadlineSoon, _) => Ok(Reservation::DeadlineSoon),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `reserve-job`: reserves job `id` whatever its state but reserved; `None` when there is
    /// no such job or another connection holds it.
    pub async fn reserve_job(&mut self, id: u64) -> Result<Option<Job>, Error> {
        match self.call(Command::ReserveJob(id), Duration::ZERO).await? {
            (Reply::Reserved(job), _) => Ok(Some(job)),
            (Reply::NotFound, _) => Ok(None),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    async fn expect(&mut self, cmd: Command, ok: Reply) -> Result<(), Error> {
        match self.call(cmd, Duration::ZERO).await? {
            (r, _) if r == ok => Ok(()),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `delete`: a job this connection reserved, or any job not reserved by another.
    pub async fn delete(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Command::Delete(id), Reply::Deleted).await
    }

    /// `release`: gives a reserved job back, ready after `delay` seconds.
    pub async fn release(&mut self, id: u64, pri: u32, delay: u32) -> Result<(), Error> {
        self.expect(Command::Release { id, pri, delay }, Reply::Released)
            .await
    }

    /// `bury`: sets a reserved job aside until it is kicked.
    pub async fn bury(&mut self, id: u64, pri: u32) -> Result<(), Error> {
        self.expect(Command::Bury { id, pri }, Reply::Buried).await
    }

    /// `touch`: this connection still works on the job: its time to run starts again.
    pub async fn touch(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Command::Touch(id), Reply::Touched).await
    }

    /// `kick-job`: a buried or delayed job becomes ready; false when it is neither.
    pub async fn kick_job(&mut self, id: u64) -> Result<bool, Error> {
        match self.call(Command::KickJob(id), Duration::ZERO).await? {
            (Reply::Kicked(_), _) => Ok(true),
            (Reply::NotFound, _) => Ok(false),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    async fn peek_with(&mut self, cmd: Command) -> Result<Option<Job>, Error> {
        match self.call(cmd, Duration::ZERO).await? {
            (Reply::Found(job), _) => Ok(Some(job)),
            (Reply::NotFound, _) => Ok(None),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `peek`: job `id` in whatever state, without reserving it.
    pub async fn peek(&mut self, id: u64) -> Result<Option<Job>, Error> {
        self.peek_with(Command::Peek(id)).await
    }

    /// `peek-ready`: the used tube's next ready job (lowest priority value, then oldest).
    pub async fn peek_ready(&mut self) -> Result<Option<Job>, Error> {
        self.peek_with(Command::PeekReady).await
    }

    /// `peek-buried`: the used tube's first buried job.
    pub async fn peek_buried(&mut self) -> Result<Option<Job>, Error> {
        self.peek_with(Command::PeekBuried).await
    }

    /// `peek-delayed`: the used tube's delayed job with the least delay left.
    pub async fn peek_delayed(&mut self) -> Result<Option<Job>, Error> {
        self.peek_with(Command::PeekDelayed).await
    }

    async fn ok_body(&mut self, cmd: Command) -> Result<Option<Bytes>, Error> {
        match self.call(cmd, Duration::ZERO).await? {
            (Reply::Ok(body), _) => Ok(Some(body)),
            (Reply::NotFound, _) => Ok(None),
            (r, what) => Err(self.refused(&what, r)),
        }
    }

    /// `stats-job`: `None` when there is no such job (deleted, or never made).
    pub async fn stats_job(&mut self, id: u64) -> Result<Option<JobStats>, Error> {
        let what = format!("stats-job {id}");
        match self.ok_body(Command::StatsJob(id)).await? {
            Some(body) => parse_job_stats(&body)
                .map(Some)
                .map_err(|m| self.refused(&what, m)),
            None => Ok(None),
        }
    }

    /// `stats-tube`: `None` when the tube does not exist (no job in it and nobody uses it).
    pub async fn stats_tube(&mut self, tube: &Tube) -> Result<Option<TubeStats>, Error> {
        Ok(self
            .ok_body(Command::StatsTube(tube.clone()))
            .await?
            .map(|b| parse_tube_stats(&b)))
    }

    /// `stats`.
    pub async fn stats(&mut self) -> Result<ServerStats, Error> {
        let body = self.ok_body(Command::Stats).await?.unwrap_or_default();
        let d = yaml_dict(&body);
        let num = |k: &str| {
            field(&d, k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ServerStats {
            version: field(&d, "version").unwrap_or_default().to_string(),
            max_job_size: usize::try_from(num("max-job-size")).unwrap_or(usize::MAX),
            total_jobs: num("total-jobs"),
            current_connections: num("current-connections"),
            touches: num("cmd-touch"),
            timeouts: num("job-timeouts"),
        })
    }

    /// `list-tubes`.
    pub async fn list_tubes(&mut self) -> Result<Vec<String>, Error> {
        let body = self.ok_body(Command::ListTubes).await?.unwrap_or_default();
        Ok(yaml_list(&body))
    }
}

fn field<'a>(d: &'a [(String, String)], key: &str) -> Option<&'a str> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Reads a `stats-job` body.
pub fn parse_job_stats(body: &[u8]) -> Result<JobStats, String> {
    let d = yaml_dict(body);
    let num = |k: &str| {
        field(&d, k)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("stats-job without a numeric {k:?}"))
    };
    let state = match field(&d, "state") {
        Some("ready") => JobState::Ready,
        Some("delayed") => JobState::Delayed,
        Some("reserved") => JobState::Reserved,
        Some("buried") => JobState::Buried,
        other => return Err(format!("stats-job with state {other:?}")),
    };
    Ok(JobStats {
        id: num("id")?,
        tube: field(&d, "tube").unwrap_or_default().to_string(),
        state,
        pri: u32::try_from(num("pri")?).map_err(|_| "stats-job: pri over 2^32".to_string())?,
        age: num("age")?,
        ttr: num("ttr")?,
        // Negative for a job that timed out and is ready again.
        time_left: field(&d, "time-left")
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v.max(0) as u64)
            .ok_or_else(|| "stats-job without a numeric \"time-left\"".to_string())?,
        reserves: num("reserves")?,
        timeouts: num("timeouts")?,
        releases: num("releases")?,
        buries: num("buries")?,
        kicks: num("kicks")?,
    })
}

/// Reads a `stats-tube` body (absent figures are 0).
pub fn parse_tube_stats(body: &[u8]) -> TubeStats {
    let d = yaml_dict(body);
    let num = |k: &str| {
        field(&d, k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    TubeStats {
        ready: num("current-jobs-ready"),
        reserved: num("current-jobs-reserved"),
        delayed: num("current-jobs-delayed"),
        buried: num("current-jobs-buried"),
        total: num("total-jobs"),
        waiting: num("current-waiting"),
        watching: num("current-watching"),
    }
}
