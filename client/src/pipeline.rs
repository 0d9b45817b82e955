//! Pipelined writes: many quiet requests, then a NOOP as the batch's barrier.
//!
//! ```text
//! caller:  WriteBatch::push(...) x N     (request i carries opaque i)
//!          Pipeline::send(batch) -> PendingReplies   (waits only for room in the pipeline)
//! wire:    SETQ#0 SETQ#1 ... SETQ#N-1 NOOP | next batch ... (up to `depth` batches in flight)
//! peer:    answers only the failed quiet requests (opaque = index), then the NOOP
//! result:  WriteReplies { count, failures: [(index, status)] }: every other index succeeded
//! ```
//!
//! Replies keep request order, so the first NOOP answer closes the oldest batch in flight.
//! A non-quiet request works too: its success answer is simply not a failure.
//! One writer task and one reader task own the connection's halves; a broken connection fails
//! every batch in flight with an error naming the peer.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use pump_protocol::packet::encode_request;
use pump_protocol::{Magic, Opcode, Status};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::{Connection, Next, ReadHalf, WriteHalf};
use crate::error::ClientError;

/// Requests to write as one pipelined batch; request `i` is sent with opaque `i`.
#[derive(Debug, Default)]
pub struct WriteBatch {
    buf: BytesMut,
    count: u32,
}

impl WriteBatch {
    /// An empty batch with room for `bytes` of encoded requests.
    pub fn with_capacity(bytes: usize) -> WriteBatch {
        WriteBatch {
            buf: BytesMut::with_capacity(bytes),
            count: 0,
        }
    }

    /// Appends one request; returns its index (its opaque).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        opcode: Opcode,
        vbucket: u16,
        cas: u64,
        datatype: u8,
        extras: &[u8],
        key: &[u8],
        value: &[u8],
    ) -> u32 {
        let i = self.count;
        encode_request(
            &mut self.buf,
            opcode,
            vbucket,
            i,
            cas,
            datatype,
            extras,
            key,
            value,
        );
        self.count += 1;
        i
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded bytes so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
}

/// What the peer said about a batch: the failed requests; every other one succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReplies {
    pub count: u32,
    /// (request index, status), in request order.
    pub failures: Vec<(u32, Status)>,
}

impl WriteReplies {
    /// The status of request `i`.
    pub fn status(&self, i: u32) -> Status {
        self.failures
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(Status::Success, |(_, s)| *s)
    }
}

type Reply = oneshot::Sender<Result<WriteReplies, ClientError>>;

struct Job {
    batch: WriteBatch,
    reply: Reply,
}

struct InFlight {
    count: u32,
    reply: Reply,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The answer to one batch, once its barrier is answered.
pub struct PendingReplies {
    rx: oneshot::Receiver<Result<WriteReplies, ClientError>>,
    peer: Arc<str>,
}

impl PendingReplies {
    /// Waits for the batch's replies.
    pub async fn wait(self) -> Result<WriteReplies, ClientError> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Closed {
                peer: self.peer.to_string(),
                what: "waiting for a batch's replies".into(),
            }),
        }
    }
}

/// A connection driven as a write pipeline (see the module docs).
pub struct Pipeline {
    jobs: mpsc::Sender<Job>,
    peer: Arc<str>,
}

impl Pipeline {
    /// Takes over `conn` (already authenticated, bucket selected) with at most `depth`
    /// batches in flight.
    pub fn start(conn: Connection, depth: usize) -> Pipeline {
        let peer: Arc<str> = Arc::from(conn.peer());
        let (read, write) = conn.into_split();
        let (jobs, job_rx) = mpsc::channel::<Job>(depth.max(1));
        let (inflight_tx, inflight_rx) = mpsc::unbounded_channel::<InFlight>();
        let permits = Arc::new(Semaphore::new(depth.max(1)));
        tokio::spawn(write_loop(write, job_rx, inflight_tx, permits));
        tokio::spawn(read_loop(read, inflight_rx));
        Pipeline { jobs, peer }
    }

    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Queues a batch; returns once it is queued (not answered).
    pub async fn send(&self, batch: WriteBatch) -> Result<PendingReplies, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job { batch, reply: tx })
            .await
            .map_err(|_| ClientError::Closed {
                peer: self.peer.to_string(),
                what: "queueing a batch".into(),
            })?;
        Ok(PendingReplies {
            rx,
            peer: self.peer.clone(),
        })
    }

    /// Sends a batch and waits for its replies.
    pub async fn write(&self, batch: WriteBatch) -> Result<WriteReplies, ClientError> {
        self.send(batch).await?.wait().await
    }
}

async fn write_loop(
    mut write: WriteHalf,
    mut jobs: mpsc::Receiver<Job>,
    inflight: mpsc::UnboundedSender<InFlight>,
    permits: Arc<Semaphore>,
) {
    while let Some(Job { mut batch, reply }) = jobs.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        encode_request(
            &mut batch.buf,
            Opcode::Noop,
            0,
            batch.count,
            0,
            0,
            &[],
            &[],
            &[],
        );
        let count = batch.count;
        let r = write.send_bytes(&batch.buf, "sending a batch").await;
        match r {
            Ok(()) => {
                if inflight
                    .send(InFlight {
                        count,
                        reply,
                        _permit: permit,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        }
    }
    write.shutdown().await;
}

async fn read_loop(mut read: ReadHalf, mut inflight: mpsc::UnboundedReceiver<InFlight>) {
    let mut failed: Option<String> = None;
    let mut queue: VecDeque<InFlight> = VecDeque::new();
    while let Some(job) = inflight.recv().await {
        if let Some(why) = &failed {
            let _ = job.reply.send(Err(ClientError::Unexpected {
                peer: read.peer().to_string(),
                message: why.clone(),
            }));
            continue;
        }
        queue.push_back(job);
        while let Some(job) = queue.pop_front() {
            match read_batch(&mut read, job.count).await {
                Ok(r) => {
                    let _ = job.reply.send(Ok(r));
                }
                Err(e) => {
                    failed = Some(format!("connection unusable after an earlier error: {e}"));
                    let _ = job.reply.send(Err(e));
                    while let Ok(j) = inflight.try_recv() {
                        queue.push_back(j);
                    }
                    for j in queue.drain(..) {
                        let _ = j.reply.send(Err(ClientError::Unexpected {
                            peer: read.peer().to_string(),
                            message: failed.clone().unwrap_or_default(),
                        }));
                    }
                }
            }
        }
    }
}

async fn read_batch(read: &mut ReadHalf, count: u32) -> Result<WriteReplies, ClientError> {
    let mut replies = WriteReplies {
        count,
        failures: Vec::new(),
    };
    let what = "waiting for a batch's replies";
    loop {
        let p = match read.recv_within(read.timeout(), what).await? {
            Next::Packet(p) => p,
            Next::Eof => {
                return Err(ClientError::Closed {
                    peer: read.peer().to_string(),
                    what: what.into(),
                })
            }
            Next::Idle => return Err(read.timeout_error(what)),
        };
        if p.magic != Magic::Response {
            return Err(ClientError::Unexpected {
                peer: read.peer().to_string(),
                message: format!("a request ({:?}) where replies were expected", p.opcode),
            });
        }
        if p.opcode == Opcode::Noop {
            return Ok(replies);
        }
        if p.opaque >= count {
            return Err(ClientError::Unexpected {
                peer: read.peer().to_string(),
                message: format!(
                    "a reply with opaque {} to a batch of {count} requests",
                    p.opaque
                ),
            });
        }
        if p.status() != Status::Success {
            replies.failures.push((p.opaque, p.status()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use pump_protocol::{Packet, PacketCodec};
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    /// A peer that fails every request whose key starts with "bad" with ETMPFAIL and answers
    /// NOOPs; it records the frames it saw.
    async fn fake_peer() -> (String, tokio::task::JoinHandle<Vec<Packet>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut f = Framed::new(s, PacketCodec::default());
            let mut seen = Vec::new();
            while let Some(Ok(p)) = f.next().await {
                if p.opcode == Opcode::Noop {
                    f.send(Packet::response_to(&p, Status::Success))
                        .await
                        .unwrap();
                } else if p.key.starts_with(b"bad") {
                    f.send(Packet::response_to(&p, Status::Etmpfail))
                        .await
                        .unwrap();
                }
                seen.push(p);
            }
            seen
        });
        (addr, h)
    }

    #[tokio::test]
    async fn several_batches_in_flight_each_get_their_own_failures() {
        let (addr, peer) = fake_peer().await;
        let conn = Connection::connect(&addr, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let p = Pipeline::start(conn, 4);
        let mut pending = Vec::new();
        for b in 0..3 {
            let mut batch = WriteBatch::default();
            for i in 0..5 {
                let key = if i == b {
                    format!("bad{b}")
                } else {
                    format!("k{b}_{i}")
                };
                batch.push(Opcode::SetQ, 7, 0, 0, &[0; 8], key.as_bytes(), b"v");
            }
            pending.push(p.send(batch).await.unwrap());
        }
        for (b, pr) in pending.into_iter().enumerate() {
            let r = pr.wait().await.unwrap();
            assert_eq!(r.count, 5);
            assert_eq!(r.failures, vec![(b as u32, Status::Etmpfail)]);
            assert_eq!(r.status(b as u32), Status::Etmpfail);
            assert_eq!(r.status(4), Status::Success);
        }
        drop(p);
        let seen = peer.await.unwrap();
        assert_eq!(seen.len(), 18);
        assert_eq!(seen[5].opcode, Opcode::Noop);
        assert!(seen[..5]
            .iter()
            .all(|f| f.vbucket() == 7 && f.opcode == Opcode::SetQ));
        assert_eq!(seen[2].opaque, 2);
    }

    #[tokio::test]
    async fn a_peer_that_closes_fails_the_batch_naming_it() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        let conn = Connection::connect(&addr, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let p = Pipeline::start(conn, 2);
        let mut batch = WriteBatch::default();
        batch.push(Opcode::SetQ, 0, 0, 0, &[0; 8], b"k", b"v");
        let e = match p.send(batch).await {
            Ok(pending) => pending.wait().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
