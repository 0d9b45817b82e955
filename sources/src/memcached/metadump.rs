//! The key listing of a memcached: `lru_crawler metadump hash` on a text connection (the
//! crawler walks the hash table, so an item that moves between LRU queues during the walk is
//! not missed); `lru_crawler metadump all` (the LRU queues) on a memcached older than the hash
//! walk, which answers `BADCLASS` to it.
//!
//! ```text
//! > lru_crawler metadump hash\r\n
//! < key=a%25b exp=-1 la=1795392107 cas=1 fetch=no cls=1 size=68\n
//! < key=c exp=2000000000 la=1795392107 cas=2 fetch=no cls=1 size=65\n
//! < END\r\n
//! ```
//!
//! Keys are URL-encoded; `exp` is an absolute Unix time, -1 for none. memcached refuses other
//! commands pipelined with a metadump, hence a connection of its own; it answers `BUSY` while
//! another crawl runs.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One listed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Bytes,
    /// Absolute Unix time; 0 for none.
    pub expiry: u32,
}

/// Parses one `key=... exp=...` line; `None` when the line is not one.
pub fn parse_line(line: &[u8]) -> Option<Listed> {
    let (key, expiry) = fields(line)?;
    let key: Vec<u8> = percent_encoding::percent_decode(key).collect();
    Some(Listed {
        key: key.into(),
        expiry,
    })
}

/// The URL-encoded key and the expiry of a `key=... exp=...` line.
fn fields(line: &[u8]) -> Option<(&[u8], u32)> {
    let mut key = None;
    let mut expiry = None;
    for field in line.split(|b| b.is_ascii_whitespace()) {
        if let Some(k) = field.strip_prefix(b"key=") {
            key = Some(k);
        } else if let Some(e) = field.strip_prefix(b"exp=") {
            let e: i64 = std::str::from_utf8(e).ok()?.parse().ok()?;
            expiry = Some(u32::try_from(e).unwrap_or(0));
        }
    }
    Some((key?, expiry?))
}

/// A running metadump.
pub struct Metadump {
    reader: BufReader<TcpStream>,
    peer: String,
    timeout: Duration,
    line: Vec<u8>,
    /// The key line read by start().
    first: Option<Listed>,
    done: bool,
    /// `curr_items` before the listing began.
    pub items_before: u64,
    /// What was listed: the hash table, or the LRU queues (an older memcached).
    pub walk: Walk,
}

/// What a metadump walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The hash table: every item once, whatever the LRU does meanwhile.
    Hash,
    /// The LRU queues: an item moving between them during the walk can be left out.
    Lru,
}

impl Walk {
    fn command(self) -> &'static [u8] {
        match self {
            Walk::Hash => b"lru_crawler metadump hash\r\n",
            Walk::Lru => b"lru_crawler metadump all\r\n",
        }
    }
}

impl Metadump {
    /// Connects and starts the crawl, waiting while another crawl is running.
    pub async fn start(addr: &str, timeout: Duration) -> Result<Metadump, String> {
        let mut walk = Walk::Hash;
        for _ in 0..100 {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| format!("{addr}: no connection within {timeout:?}"))?
                .map_err(|e| format!("{addr}: cannot connect: {e}"))?;
            let mut m = Metadump {
                reader: BufReader::with_capacity(256 * 1024, stream),
                peer: addr.to_string(),
                timeout,
                line: Vec::with_capacity(512),
                first: None,
                done: false,
                items_before: 0,
                walk,
            };
            m.items_before = m.curr_items().await?;
            m.reader
                .get_mut()
                .write_all(walk.command())
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            m.read_line().await?;
            let first = String::from_utf8_lossy(m.current()).into_owned();
            if first.starts_with("BADCLASS") && walk == Walk::Hash {
                // A memcached without the hash walk: the LRU queues, on a new connection.
                walk = Walk::Lru;
                continue;
            }
            if first.starts_with("BUSY") {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if first == "END" {
                m.done = true;
                return Ok(m);
            }
            if first.starts_with("key=") {
                m.first =
                    Some(parse_line(first.as_bytes()).ok_or_else(|| {
                        format!("{addr}: metadump: cannot read the line {first:?}")
                    })?);
                return Ok(m);
            }
            return Err(format!(
                "{addr}: `{}` answered {first:?}: cannot list the keys (a memcached started with -S has no text protocol; one started with -o no_lru_crawler has no crawler)",
                String::from_utf8_lossy(walk.command()).trim_end()
            ));
        }
        Err(format!("{addr}: the LRU crawler stayed busy for 10 s"))
    }

    /// `stats` -> `STAT curr_items N`, sent alone before the metadump.
    async fn curr_items(&mut self) -> Result<u64, String> {
        self.reader
            .get_mut()
            .write_all(b"stats\r\n")
            .await
            .map_err(|e| format!("{}: {e}", self.peer))?;
        let mut items = 0;
        loop {
            self.read_line().await?;
            let line = self.current();
            if line == b"END" {
                return Ok(items);
            }
            if let Some(n) = line.strip_prefix(b"STAT curr_items ") {
                items = std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            } else if !line.starts_with(b"STAT ") {
                return Err(format!(
                    "{}: `stats` answered {:?}: cannot list the keys (a memcached started with -S has no text protocol)",
                    self.peer,
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }

    /// Reads the next line into `self.line`.
    async fn read_line(&mut self) -> Result<(), String> {
        self.line.clear();
        // A line already buffered needs no timer.
        let n = match self.reader.read_until(b'\n', &mut self.line).now_or_never() {
            Some(r) => r,
            // What was read so far stays in `self.line`; the read goes on from there.
            None => {
                tokio::time::timeout(self.timeout, self.reader.read_until(b'\n', &mut self.line))
                    .await
                    .map_err(|_| {
                        format!(
                            "{}: metadump: no answer within {:?}",
                            self.peer, self.timeout
                        )
                    })?
            }
        }
        .map_err(|e| format!("{}: metadump: {e}", self.peer))?;
        if n == 0 {
            return Err(format!(
                "{}: the server closed the connection in the middle of the metadump",
                self.peer
            ));
        }
        Ok(())
    }

    /// The last line read, without its line end.
    fn current(&self) -> &[u8] {
        self.line.trim_ascii_end()
    }

    /// Up to `n` more keys; an empty list once the listing is over. The keys are decoded into
    /// one buffer and sliced out of it.
    pub async fn next_keys(&mut self, n: usize) -> Result<Vec<Listed>, String> {
        let mut buf = BytesMut::with_capacity(n * 24);
        let mut spans = Vec::with_capacity(n);
        // The line read by start() comes first.
        let first = self.first.take();
        while !self.done && spans.len() + usize::from(first.is_some()) < n {
            self.read_line().await?;
            let line = self.current();
            if line == b"END" {
                self.done = true;
            } else if line.starts_with(b"key=") {
                let (key, expiry) = fields(line).ok_or_else(|| {
                    format!(
                        "{}: metadump: cannot read the line {:?}",
                        self.peer,
                        String::from_utf8_lossy(line)
                    )
                })?;
                let k0 = buf.len();
                if key.contains(&b'%') {
                    buf.extend(percent_encoding::percent_decode(key));
                } else {
                    buf.put_slice(key);
                }
                spans.push((k0, buf.len(), expiry));
            } else if !line.is_empty() {
                return Err(format!(
                    "{}: metadump: unexpected {:?}",
                    self.peer,
                    String::from_utf8_lossy(line)
                ));
            }
        }
        let buf = buf.freeze();
        Ok(first
            .into_iter()
            .chain(spans.into_iter().map(|(k0, k1, expiry)| Listed {
                key: buf.slice(k0..k1),
                expiry,
            }))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_the_decoded_key_and_the_expiry() {
        let l =
            parse_line(b"key=a%25b%20c exp=-1 la=1795392107 cas=1 fetch=no cls=1 size=68").unwrap();
        assert_eq!((&l.key[..], l.expiry), (&b"a%b c"[..], 0));
        let l = parse_line(b"key=c exp=2000000000 la=1 cas=2 fetch=no cls=1 size=65").unwrap();
        assert_eq!(l.expiry, 2_000_000_000);
        assert_eq!(parse_line(b"END"), None);
    }
}
