//! Test helpers for the network sinks: a source that feeds given messages (optionally
//! awaiting each batch's confirmation and checking something at that moment), the fake
//! peer's plumbing, and a run helper.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use pump::pipeline::Context;
use pump::{Batch, BatchSender, Error, Message, Options, Sink, Source, Summary};
use pump_protocol::{Packet, PacketCodec};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Every network wait of a test.
pub const WAIT: Duration = Duration::from_secs(10);

type Check = Arc<dyn Fn() + Send + Sync>;

/// Sends `batches`; with `on_confirmed`, awaits each batch's ack and runs the check then.
pub struct Feed {
    pub batches: Vec<Vec<Message>>,
    pub on_confirmed: Option<Check>,
}

#[async_trait]
impl Source for Feed {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        for b in self.batches {
            match &self.on_confirmed {
                None => out.send(Batch::new(b)).await?,
                Some(check) => {
                    let (batch, acked) = Batch::with_ack(b);
                    out.send(batch).await?;
                    acked.await.expect("confirmed");
                    check();
                }
            }
        }
        Ok(())
    }
}

/// Runs `source` into `sink` with `options`, under a timeout.
pub async fn run(source: Feed, sink: Box<dyn Sink>, options: Options) -> Result<Summary, Error> {
    tokio::time::timeout(
        Duration::from_secs(30),
        pump::run(Box::new(source), sink, Context::new(options)),
    )
    .await
    .expect("the run finished in time")
}

/// A listener on 127.0.0.1 with a port the OS picks.
pub async fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// The fake peer's side of one connection.
pub struct Peer(pub Framed<TcpStream, PacketCodec>);

impl Peer {
    pub async fn accept(l: &TcpListener) -> Peer {
        let (s, _) = tokio::time::timeout(WAIT, l.accept())
            .await
            .expect("a connection in time")
            .unwrap();
        Peer(Framed::new(s, PacketCodec::default()))
    }
    /// The next frame, within [`WAIT`]; `None` when the pump closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.0.next())
            .await
            .expect("a frame in time")
            .map(|r| r.unwrap())
    }
    pub async fn send(&mut self, p: Packet) {
        self.0.send(p).await.unwrap();
    }
}
