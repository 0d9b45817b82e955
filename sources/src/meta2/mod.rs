//! `meta2:PATH`: every table of a meta2 base (the known ones and any other), as messages.
//!
//! The encoding (schema message first per table, then one message per row, table id =
//! vbucket, key = primary key cells, value = every column's cells) is documented in
//! [`pump_meta2::codec`]. The base is read on its own thread, in one read transaction (a
//! consistent snapshot), with one prepared statement per table; the file is never written.

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use pump::pipeline::Context;
use pump::{BatchSender, Error, Message, Options, Source, SourceKind, Spec};
use pump_meta2::codec::{encode_cells, encode_schema, put_cell, SCHEMA_FLAG};
use pump_meta2::schema;

/// The `meta2:` source kind.
pub struct Meta2Kind;

impl SourceKind for Meta2Kind {
    fn name(&self) -> &'static str {
        "meta2"
    }
    fn syntax(&self) -> &'static str {
        "meta2:PATH (a meta2 base file)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("meta2")
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error> {
        let path = config(spec)?;
        Ok(Box::new(Meta2Source {
            path,
            spec: spec.to_string(),
            batch: options.extra.batch_max_size.max(1),
        }))
    }
}

/// The path of a `meta2:PATH` spec.
pub fn config(spec: &Spec) -> Result<PathBuf, Error> {
    if spec.body().is_empty() {
        return Err(Error::usage(format!("{spec}: expected meta2:PATH")));
    }
    Ok(PathBuf::from(spec.body()))
}

/// Reads one base.
pub struct Meta2Source {
    path: PathBuf,
    spec: String,
    batch: usize,
}

impl Meta2Source {
    /// A source reading `path`, `batch` rows per batch.
    pub fn new(path: PathBuf, batch: usize) -> Meta2Source {
        Meta2Source {
            spec: format!("meta2:{}", path.display()),
            path,
            batch: batch.max(1),
        }
    }
}

#[async_trait]
impl Source for Meta2Source {
    async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
        if !self.path.is_file() {
            return Err(Error::source(&self.spec, "no such base file"));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Message>, String>>(4);
        let stats = out.stats().clone();
        let path = self.path.clone();
        let batch = self.batch;
        let reader = tokio::task::spawn_blocking(move || {
            if let Err(e) = read_base(&path, batch, &tx, &stats) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut result = Ok(());
        while let Some(msgs) = rx.recv().await {
            match msgs {
                Ok(m) => {
                    if let Err(e) = out.send_messages(m).await {
                        result = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(Error::source(&self.spec, e));
                    break;
                }
            }
        }
        drop(rx);
        let _ = reader.await;
        result
    }
}

fn read_base(
    path: &std::path::Path,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<Message>, String>>,
    stats: &pump::Stats,
) -> Result<(), String> {
    let conn = schema::open_read(path).map_err(|e| e.to_string())?;
    // The whole read is one transaction: its shared lock keeps every SQLite writer off the
    // file, so reading it through a memory map is safe (and spares a copy per page).
    conn.execute_batch("PRAGMA cache_size=-262144; PRAGMA mmap_size=4294967296; BEGIN")
        .map_err(|e| e.to_string())?;
    let tables = schema::tables(&conn).map_err(|e| e.to_string())?;
    // Every table's count in one statement, for the progress bar.
    let counts: Vec<String> = tables
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {})", schema::quote(&t.name)))
        .collect();
    let rows: i64 = if counts.is_empty() {
        0
    } else {
        conn.query_row(&format!("SELECT {}", counts.join(" + ")), [], |r| r.get(0))
            .map_err(|e| e.to_string())?
    };
    let expected = tables.len() as u64 + rows as u64;
    stats.set_expected(expected);
    let mut msgs = Vec::with_capacity(batch);
    let flush = |msgs: &mut Vec<Message>| -> Result<(), String> {
        if msgs.is_empty() {
            return Ok(());
        }
        let m = std::mem::replace(msgs, Vec::with_capacity(batch));
        tx.blocking_send(Ok(m))
            .map_err(|_| "the pump stopped reading".to_string())
    };
    for t in &tables {
        let mut schema_msg = Message::mutation(
            Bytes::from(t.name.clone().into_bytes()),
            Bytes::from(encode_schema(&t.statements)),
        );
        schema_msg.vbucket = t.id;
        schema_msg.flags = SCHEMA_FLAG;
        msgs.push(schema_msg);
        let mut stmt = conn
            .prepare(&t.select_sql())
            .map_err(|e| format!("table {}: {e}", t.name))?;
        let rowid = t.pk.is_empty();
        let pk = t.pk_positions();
        let ncols = t.columns.len();
        let mut rows = stmt
            .query([])
            .map_err(|e| format!("table {}: {e}", t.name))?;
        while let Some(r) = rows.next().map_err(|e| format!("table {}: {e}", t.name))? {
            let off = usize::from(rowid);
            let get = |i: usize| r.get_ref(i).map_err(|e| format!("table {}: {e}", t.name));
            let key = if rowid {
                encode_cells(std::iter::once(get(0)?))
            } else {
                let mut k = Vec::with_capacity(2 + pk.len() * 24);
                k.extend_from_slice(&(pk.len() as u16).to_be_bytes());
                for &i in &pk {
                    put_cell(&mut k, get(i + off)?);
                }
                k
            };
            let mut value = Vec::with_capacity(2 + ncols * 24);
            value.extend_from_slice(&(ncols as u16).to_be_bytes());
            for i in 0..ncols {
                put_cell(&mut value, get(i + off)?);
            }
            let mut m = Message::mutation(Bytes::from(key), Bytes::from(value));
            m.vbucket = t.id;
            msgs.push(m);
            if msgs.len() >= batch {
                flush(&mut msgs)?;
            }
        }
    }
    flush(&mut msgs)
}
