//! The listing, drained as fast as memcached writes it into an unlinked file, and read back
//! by the fetching side at its own pace.
//!
//! ```text
//! metadump ──(task: reads every line at once)──▶ unlinked temp file, one record a key:
//!     key length: u16 LE │ expiry: u32 LE │ key bytes
//! fetching side ◀── records up to the length published on a watch channel (whole records)
//! ```
//!
//! Why: memcached's hash walk holds the item lock of the bucket it is at while it waits for
//! room to write the listing, and a GET of a key under that lock waits for the walk. A source
//! that read the listing only between its GET rounds deadlocked once the listing outgrew the
//! socket buffers: the walk waited for the source to read, the source for its GETs, the GETs
//! for the walk (issue 15's bench stopped at 1 M items). The listing is now read whatever the
//! fetching side does; memory stays flat (the file holds the keys: about 20 bytes a key, on
//! disk, freed when the pass ends, the file being unlinked from the start).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use bytes::{Buf, BytesMut};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::metadump::{Listed, Metadump};

/// Keys the draining task reads from the metadump between two writes to the file.
const CHUNK_KEYS: usize = 4096;
/// Bytes the fetching side reads from the file at once.
const READ_BYTES: usize = 256 * 1024;
/// A record's head: the key length (u16) and the expiry (u32).
const HEAD: usize = 6;

/// How far the draining task got: bytes of whole records in the file, and how it ended.
#[derive(Debug, Clone, Default)]
struct Progress {
    written: u64,
    /// `Some(Ok)` once the listing's END was read; `Some(Err)` when the listing failed.
    end: Option<Result<(), String>>,
}

/// One pass's listing: drained by a task into an unlinked file, read back in rounds.
pub struct Spool {
    file: File,
    progress: watch::Receiver<Progress>,
    /// The next byte of the file to read.
    offset: u64,
    /// Bytes read from the file, not yet cut into keys.
    pending: BytesMut,
    task: JoinHandle<()>,
    peer: String,
}

impl Drop for Spool {
    fn drop(&mut self) {
        // A fetch that failed stops the listing too.
        self.task.abort();
    }
}

/// Appends the records of `keys` to `out`.
fn encode(keys: &[Listed], out: &mut Vec<u8>) -> Result<(), String> {
    for k in keys {
        let len = u16::try_from(k.key.len())
            .map_err(|_| format!("metadump: a key of {} bytes", k.key.len()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&k.expiry.to_le_bytes());
        out.extend_from_slice(&k.key);
    }
    Ok(())
}

/// Reads the whole listing of `dump` into `file`, publishing each whole chunk's end.
async fn drain(mut dump: Metadump, mut file: File, tx: watch::Sender<Progress>, peer: String) {
    let mut written = 0u64;
    let mut buf = Vec::with_capacity(CHUNK_KEYS * 32);
    let end = loop {
        let keys = match dump.next_keys(CHUNK_KEYS).await {
            Ok(keys) => keys,
            Err(e) => break Err(e),
        };
        if keys.is_empty() {
            break Ok(());
        }
        buf.clear();
        if let Err(e) = encode(&keys, &mut buf) {
            break Err(format!("{peer}: {e}"));
        }
        // The page cache takes a chunk in microseconds: no need for a blocking pool here.
        if let Err(e) = file.write_all(&buf) {
            break Err(format!(
                "{peer}: cannot write the listing to a temporary file: {e}"
            ));
        }
        written += buf.len() as u64;
        tx.send_modify(|p| p.written = written);
    };
    tx.send_modify(|p| p.end = Some(end));
}

/// The next whole record of `pending`, taken out of it, if it holds one.
fn take_one(pending: &mut BytesMut) -> Option<Listed> {
    let head = pending.get(..HEAD)?;
    let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let expiry = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
    if pending.len() < HEAD + len {
        return None;
    }
    pending.advance(HEAD);
    let key = pending.split_to(len).freeze();
    Some(Listed { key, expiry })
}

impl Spool {
    /// Starts draining `dump` into a new unlinked file in the temporary directory.
    pub fn start(dump: Metadump, peer: &str) -> Result<Spool, String> {
        let file = tempfile::tempfile().map_err(|e| {
            format!(
                "{peer}: cannot create a temporary file for the listing in {}: {e}",
                std::env::temp_dir().display()
            )
        })?;
        let writer = file
            .try_clone()
            .map_err(|e| format!("{peer}: cannot reopen the listing's temporary file: {e}"))?;
        let (tx, progress) = watch::channel(Progress::default());
        let task = tokio::spawn(drain(dump, writer, tx, peer.to_string()));
        Ok(Spool {
            file,
            progress,
            offset: 0,
            pending: BytesMut::new(),
            task,
            peer: peer.to_string(),
        })
    }

    /// Up to `n` more keys, as soon as at least one is listed; an empty list once the listing
    /// is over.
    pub async fn next_keys(&mut self, n: usize) -> Result<Vec<Listed>, String> {
        let mut out = Vec::with_capacity(n.min(CHUNK_KEYS));
        loop {
            while out.len() < n {
                match take_one(&mut self.pending) {
                    Some(k) => out.push(k),
                    None => break,
                }
            }
            if out.len() == n {
                return Ok(out);
            }
            let (written, end) = {
                let p = self.progress.borrow_and_update();
                (p.written, p.end.clone())
            };
            if self.offset < written {
                let want = (written - self.offset).min(READ_BYTES as u64) as usize;
                let mut chunk = vec![0u8; want];
                self.file
                    .read_exact_at(&mut chunk, self.offset)
                    .map_err(|e| {
                        format!(
                            "{}: cannot read the listing back from its temporary file: {e}",
                            self.peer
                        )
                    })?;
                self.offset += want as u64;
                self.pending.extend_from_slice(&chunk);
                continue;
            }
            match end {
                Some(Err(e)) => return Err(e),
                // Records are written whole: bytes left over mean a torn file.
                Some(Ok(())) if !self.pending.is_empty() => {
                    return Err(format!(
                        "{}: the listing's temporary file ends inside a record",
                        self.peer
                    ))
                }
                Some(Ok(())) => return Ok(out),
                None if !out.is_empty() => return Ok(out),
                None => {
                    if self.progress.changed().await.is_err() {
                        return Err(format!("{}: the listing stopped before its end", self.peer));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records come back as listed, a record cut between two reads included; a key too long
    /// for a record is an error, not a truncation.
    #[test]
    fn records_come_back_as_listed_across_reads() {
        let keys = vec![
            Listed {
                key: bytes::Bytes::from_static(b"a%b c"),
                expiry: 0,
            },
            Listed {
                key: bytes::Bytes::from(vec![b'k'; 250]),
                expiry: 2_000_000_000,
            },
            Listed {
                key: bytes::Bytes::from_static(b"z"),
                expiry: 7,
            },
        ];
        let mut buf = Vec::new();
        encode(&keys, &mut buf).unwrap();
        assert_eq!(buf.len(), 3 * HEAD + 5 + 250 + 1);
        // The second record arrives in two reads.
        let cut = HEAD + 5 + HEAD + 100;
        let mut pending = BytesMut::from(&buf[..cut]);
        let mut got = Vec::new();
        while let Some(k) = take_one(&mut pending) {
            got.push(k);
        }
        assert_eq!(got.len(), 1);
        pending.extend_from_slice(&buf[cut..]);
        while let Some(k) = take_one(&mut pending) {
            got.push(k);
        }
        assert_eq!(got, keys);
        assert!(pending.is_empty());
        let too_long = [Listed {
            key: bytes::Bytes::from(vec![b'k'; 70_000]),
            expiry: 0,
        }];
        assert!(encode(&too_long, &mut Vec::new()).is_err());
    }
}
