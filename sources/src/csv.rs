//! `csv:FILE`: rows of a CSV file with a header naming its columns, as cbtransfer writes
//! them (`id,flags,expiration,cas,value,rev,vbid,dtype`, see `pump_formats::csv`).
//!
//! `id` is required; every other column is optional. `value` and `rev` may be Python bytes
//! literals (`b'...'`) or plain text. A row without `vbid`, or with cbtransfer's 65535
//! ("unknown"), gets the CRC32 hash of its key over `-x num_vbuckets`. A malformed line (a
//! wrong number of fields, a bad number, a bad literal) fails the run naming the file and line.
//!
//! Collections: `scope` and `collection` columns (as the `csv:` sink writes them when the
//! source had collections) put each row in its collection; empty cells, or no such columns,
//! mean the default collection. The file's collections become the run's manifest (ids given
//! in the order they first appear, from 8), published before the batch that first holds each,
//! so that a `couchbase://` sink creates them by name. A bad name, one column without the
//! other, or a collection without its scope fails the run naming the line.

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::BytesMut;
use pump::pipeline::Context;
use pump::{
    BatchLimits, BatchSender, Error, Message, Options, RunCollections, Source, SourceKind, Spec,
};
use pump_formats::{bfd, csv as format};
use pump_protocol::collections::{self as coll, Collection, Manifest, Scope};
use tokio::sync::mpsc;

use crate::file::forward_from_thread;

/// The `csv:` kind.
pub struct CsvKind;

impl SourceKind for CsvKind {
    fn name(&self) -> &'static str {
        "csv"
    }
    fn syntax(&self) -> &'static str {
        "csv:FILE"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("csv")
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let path = PathBuf::from(spec.body());
        if !path.is_file() {
            return Err(Error::source(spec, "no such file"));
        }
        Ok(Box::new(CsvSource {
            path,
            num_vbuckets: options.extra.num_vbuckets,
        }))
    }
}

/// Reads a CSV file.
pub struct CsvSource {
    path: PathBuf,
    num_vbuckets: u16,
}

impl CsvSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf, num_vbuckets: u16) -> Self {
        CsvSource { path, num_vbuckets }
    }
}

#[async_trait]
impl Source for CsvSource {
    async fn run(self: Box<Self>, out: BatchSender, ctx: Context) -> Result<(), Error> {
        let spec = format!("csv:{}", self.path.display());
        let limits = ctx.options.batch_limits();
        let run = ctx.collections.clone();
        forward_from_thread(&spec, &out, move |tx| {
            read(&self.path, self.num_vbuckets, limits, &run, &tx)
        })
        .await
    }
}

/// Which field of a record holds each column.
#[derive(Default)]
struct Columns {
    id: usize,
    flags: Option<usize>,
    expiration: Option<usize>,
    cas: Option<usize>,
    value: Option<usize>,
    rev: Option<usize>,
    vbid: Option<usize>,
    dtype: Option<usize>,
    /// `scope` and `collection`, both or neither.
    paths: Option<(usize, usize)>,
}

/// The collections a file's rows name, as a manifest the run shares.
struct FileCollections<'a> {
    manifest: Manifest,
    run: &'a RunCollections,
}

impl FileCollections<'_> {
    /// The id of `scope.collection`: 0 for empty cells or the default collection, the next
    /// free id for one not seen yet (published before it is used).
    fn id_of(&mut self, scope: &[u8], collection: &[u8]) -> Result<u32, String> {
        if scope.is_empty() && collection.is_empty() {
            return Ok(0);
        }
        let text = |b: &[u8], what: &str| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| format!("{what} {:?} is not UTF-8", String::from_utf8_lossy(b)))
        };
        let (scope, collection) = (text(scope, "scope")?, text(collection, "collection")?);
        if scope.is_empty() || collection.is_empty() {
            return Err(format!(
                "scope {scope:?} and collection {collection:?}: give both or neither"
            ));
        }
        if let Some(id) = self.manifest.id_of(&scope, &collection) {
            return Ok(id);
        }
        for (what, name) in [("scope", &scope), ("collection", &collection)] {
            if let Some(e) = coll::name_error(name, false) {
                return Err(format!("{what}: {e}"));
            }
        }
        if collection == coll::DEFAULT_NAME {
            return Err(format!(
                "collection _default in scope {scope:?}: only scope _default holds it"
            ));
        }
        if self.manifest.scope(&scope).is_none() {
            let uid = self.manifest.next_id();
            self.manifest.scopes.push(Scope {
                name: scope.clone(),
                uid,
                collections: Vec::new(),
            });
        }
        let uid = self.manifest.next_id();
        if let Some(s) = self.manifest.scopes.iter_mut().find(|s| s.name == scope) {
            s.collections.push(Collection {
                name: collection,
                uid,
                max_ttl: None,
            });
        }
        self.manifest.uid += 1;
        self.run.publish(self.manifest.clone());
        Ok(uid)
    }
}

/// The line a record starts on, from its byte offset (read again from the file, only for an
/// error). The csv crate's own line number is one short in a file of CRLF lines: a record's
/// start is taken at the `\n` of the line before, which it has not counted yet.
fn line_of(path: &Path, position: Option<&::csv::Position>) -> u64 {
    use std::io::Read;
    let Some(p) = position else { return 0 };
    let Ok(mut f) = std::fs::File::open(path) else {
        return p.line();
    };
    let (mut at, end) = (0u64, p.byte());
    let (mut lines, mut chunk) = (1u64, vec![0u8; 1 << 16]);
    while at <= end {
        let Ok(n) = f.read(&mut chunk) else {
            return p.line();
        };
        if n == 0 {
            break;
        }
        for &b in &chunk[..n] {
            // The byte at the record's offset counts only when it ends the line before.
            if at > end {
                break;
            }
            if b == b'\n' {
                lines += 1;
            }
            at += 1;
        }
    }
    lines
}

fn read(
    path: &Path,
    num_vbuckets: u16,
    limits: BatchLimits,
    run: &RunCollections,
    tx: &mpsc::Sender<Vec<Message>>,
) -> Result<(), String> {
    let file = path.display();
    let mut r = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| format!("{file}: {e}"))?;
    let header = r
        .byte_headers()
        .map_err(|e| format!("{file}: line 1: {e}"))?
        .clone();
    let find = |name: &str| header.iter().position(|h| h == name.as_bytes());
    let cols = Columns {
        id: find("id").ok_or_else(|| {
            format!(
                "{file}: line 1: no 'id' column in the header (expected {})",
                format::COLUMNS.join(",")
            )
        })?,
        flags: find("flags"),
        expiration: find("expiration"),
        cas: find("cas"),
        value: find("value"),
        rev: find("rev"),
        vbid: find("vbid"),
        dtype: find("dtype"),
        paths: match (find("scope"), find("collection")) {
            (Some(s), Some(c)) => Some((s, c)),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{file}: line 1: a 'scope' column without 'collection' or the other way round (give both or neither)"
                ))
            }
        },
    };
    let mut collections = FileCollections {
        manifest: Manifest::default(),
        run,
    };
    if cols.paths.is_some() {
        // A file that names collections: the run knows them from the start (the default
        // one), and each new one as its first row comes.
        run.publish(Manifest::default());
    }
    let mut record = ::csv::ByteRecord::new();
    let mut buf = BytesMut::new();
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        let more = r.read_byte_record(&mut record).map_err(|e| {
            let line = line_of(path, e.position());
            match e.kind() {
                ::csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => {
                    format!("{file}: line {line}: {len} fields where the header has {expected_len}")
                }
                _ => format!("{file}: line {line}: {e}"),
            }
        })?;
        if !more {
            break;
        }
        let position = record.position().cloned();
        let bad =
            |what: String| format!("{file}: line {}: {what}", line_of(path, position.as_ref()));
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or(b"");
        let number = |name: &str, i: Option<usize>| -> Result<u64, String> {
            let f = field(i);
            if f.is_empty() {
                return Ok(0);
            }
            std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "{name} {:?} is not a number",
                        String::from_utf8_lossy(f)
                    ))
                })
        };
        let key_bytes = field(Some(cols.id));
        if key_bytes.is_empty() {
            return Err(bad("empty id".into()));
        }
        let flags = u32::try_from(number("flags", cols.flags)?)
            .map_err(|_| bad("flags above 32 bits".into()))?;
        let expiry = u32::try_from(number("expiration", cols.expiration)?)
            .map_err(|_| bad("expiration above 32 bits".into()))?;
        let cas = number("cas", cols.cas)?;
        let dtype = u8::try_from(number("dtype", cols.dtype)?)
            .map_err(|_| bad("dtype above 255".into()))?;
        let vbid = number("vbid", cols.vbid)?;
        let vbucket = if cols.vbid.is_none()
            || field(cols.vbid).is_empty()
            || vbid == u64::from(format::UNKNOWN_VBUCKET)
        {
            pump_protocol::vbucket_of(key_bytes, num_vbuckets)
        } else {
            u16::try_from(vbid).map_err(|_| bad(format!("vbid {vbid} is not 0-65535")))?
        };
        let value =
            format::read_bytes_field(field(cols.value)).map_err(|e| bad(format!("value: {e}")))?;
        let rev =
            format::read_bytes_field(field(cols.rev)).map_err(|e| bad(format!("rev: {e}")))?;
        let (rev_seqno, meta) = bfd::parse_meta_column(&rev);
        let collection = match cols.paths {
            Some((s, c)) => collections
                .id_of(field(Some(s)), field(Some(c)))
                .map_err(bad)?,
            None => 0,
        };
        let k0 = buf.len();
        buf.extend_from_slice(key_bytes);
        let v0 = buf.len();
        buf.extend_from_slice(&value);
        let m0 = buf.len();
        buf.extend_from_slice(meta.unwrap_or(b""));
        let end = buf.len();
        batch.push((
            Message {
                vbucket,
                flags,
                expiry,
                cas,
                rev_seqno,
                datatype: dtype,
                collection,
                ..Message::default()
            },
            k0..v0,
            v0..m0,
            m0..end,
        ));
        let full = batch.len() >= limits.max_items || buf.len() >= limits.max_bytes;
        if full && tx.blocking_send(slice_out(&mut batch, &mut buf)).is_err() {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(slice_out(&mut batch, &mut buf));
    }
    Ok(())
}

/// A pending row: the message without its bytes, and where key, value and meta sit in the
/// batch buffer.
type Pending = (Message, Range<usize>, Range<usize>, Range<usize>);

/// Takes the pending rows as messages sliced out of one frozen buffer.
fn slice_out(batch: &mut Vec<Pending>, buf: &mut BytesMut) -> Vec<Message> {
    let bytes = buf.split().freeze();
    batch
        .drain(..)
        .map(|(m, k, v, meta)| Message {
            key: bytes.slice(k),
            value: bytes.slice(v),
            meta: bytes.slice(meta),
            ..m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(text: &str) -> Result<Vec<Message>, Error> {
        read_with(text, &Context::new(Options::default())).await
    }

    async fn read_with(text: &str, ctx: &Context) -> Result<Vec<Message>, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        let stats = std::sync::Arc::new(pump::Stats::default());
        let cancel = tokio_util::sync::CancellationToken::new();
        let (tx, rx) =
            pump::channel::bounded(1000, 1 << 30, pump::Filter::default(), stats, cancel);
        Box::new(CsvSource::new(path, 1024))
            .run(tx, ctx.clone())
            .await?;
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend(b.messages);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn cbtransfer_rows_and_plain_text_values_read_back() {
        let got = read_all(
            "id,flags,expiration,cas,value,rev,vbid,dtype\r\nhello,1,2,18446744073709551615,b'a\\nb',b'7',65535,1\r\nk2,0,0,0,plain,,3,0\r\n",
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].value[..], b"a\nb");
        assert_eq!((got[0].flags, got[0].expiry, got[0].cas), (1, 2, u64::MAX));
        assert_eq!(
            (got[0].vbucket, got[0].rev_seqno, got[0].datatype),
            (528, 7, 1)
        );
        assert_eq!((&got[1].value[..], got[1].vbucket), (&b"plain"[..], 3));
    }

    #[tokio::test]
    async fn scope_and_collection_columns_put_rows_in_their_collections_named_in_the_manifest() {
        let ctx = Context::new(Options::default());
        let got = read_with(
            "id,flags,expiration,cas,value,rev,vbid,dtype,scope,collection\r\n\
             a,0,0,0,1,,1,0,s1,c1\r\n\
             b,0,0,0,2,,1,0,,\r\n\
             c,0,0,0,3,,1,0,s1,c2\r\n\
             d,0,0,0,4,,1,0,_default,_default\r\n\
             e,0,0,0,5,,1,0,s2,c1\r\n\
             f,0,0,0,6,,1,0,s1,c1\r\n",
            &ctx,
        )
        .await
        .unwrap();
        let run = &ctx.collections;
        let names: Vec<(String, String)> = got
            .iter()
            .map(|m| {
                let p = run.path(m.collection).unwrap();
                (
                    String::from_utf8_lossy(&m.key).into_owned(),
                    format!("{}.{}", p.scope, p.collection),
                )
            })
            .collect();
        let want = [
            ("a", "s1.c1"),
            ("b", "_default._default"),
            ("c", "s1.c2"),
            ("d", "_default._default"),
            ("e", "s2.c1"),
            ("f", "s1.c1"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_string()))
            .collect();
        assert_eq!(names, want);
        assert_eq!(got[0].collection, got[5].collection);
        assert_ne!(got[0].collection, got[4].collection);
        let m = run.manifest().unwrap();
        assert!(m.check().is_ok(), "{m:?}");
        assert_eq!(m.collections().count(), 4);
        assert!(run.has_collections());
    }

    #[tokio::test]
    async fn bad_scope_and_collection_cells_are_errors_naming_the_line() {
        for (text, want) in [
            ("id,scope\nk,s1\n", "line 1"),
            ("id,scope,collection\nk,s1,c1\nk2,s1,\n", "line 3"),
            ("id,scope,collection\nk,s 1,c1\n", "line 2"),
            (
                "id,scope,collection\nk,s1,_default\n",
                "only scope _default",
            ),
            ("id,scope,collection\nk,s1,_c\n", "must not start with _"),
        ] {
            let err = read_all(text).await.unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[tokio::test]
    async fn a_malformed_line_is_an_error_naming_the_file_and_line() {
        let err = read_all("id,flags,value\nk1,0,v\nk2,zero,v\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in.csv") && err.contains("line 3") && err.contains("flags"),
            "{err}"
        );
        let err = read_all("id,flags,value\nk1,0,v\nk2,0\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = read_all("key,value\nk1,v\n").await.unwrap_err().to_string();
        assert!(err.contains("'id'"), "{err}");
        // CRLF lines, as cbtransfer writes them: the same line numbers.
        for (text, line) in [
            (
                "id,flags,value\r\nk1,0,v\r\nk2,zero,v\r\nk3,0,v\r\n",
                "line 3:",
            ),
            ("id,flags,value\r\nk1,0,v\r\nk2,0\r\n", "line 3:"),
            (
                "id,flags,value\r\nk1,0,v\r\nk2,0,v\r\nk3,0,v\r\nk4,x,v\r\n",
                "line 5:",
            ),
            // A record over two lines: the next one starts on line 4.
            ("id,flags,value\n\"k\n1\",0,v\nk2,zero,v\n", "line 4:"),
        ] {
            let err = read_all(text).await.unwrap_err().to_string();
            assert!(err.contains(line), "{text:?}: {err}");
        }
    }
}
