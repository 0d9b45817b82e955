//! `meta2:PATH`: builds a new meta2 base from the messages of a `meta2:` source (encoding in
//! [`pump_meta2::codec`]).
//!
//! The base is built under `PATH.pump-tmp` (page_size 4096, no journal: the file is ours
//! until renamed), on its own thread fed by a channel, in one big transaction with one
//! prepared INSERT per table; indexes and triggers are created after the rows. When the
//! source ends Complete the transaction commits, `quick_check` must answer ok and every
//! table must hold as many rows as were received; the file is synced, then linked to PATH
//! (never over an existing file: PATH must not exist) and the temporary name removed.
//! Any other end removes the temporary file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pump::{
    BatchWriter, Delivery, Error, Message, Options, Sink, SinkKind, SourceEnd, Spec, WriterSink,
};
use pump_meta2::codec::{decode_refs, decode_schema, SCHEMA_FLAG};
use pump_meta2::schema::{self, quote};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use tokio::sync::oneshot;

/// The `meta2:` sink kind.
pub struct Meta2Kind;

impl SinkKind for Meta2Kind {
    fn name(&self) -> &'static str {
        "meta2"
    }
    fn syntax(&self) -> &'static str {
        "meta2:PATH (a new meta2 base; PATH must not exist)"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("meta2")
    }
    fn open(&self, spec: &Spec, _options: &Options) -> Result<Box<dyn Sink>, Error> {
        if spec.body().is_empty() {
            return Err(Error::usage(format!("{spec}: expected meta2:PATH")));
        }
        let path = PathBuf::from(spec.body());
        if path.exists() {
            return Err(Error::usage(format!(
                "{spec}: {} exists; a meta2 sink writes a new base only",
                path.display()
            )));
        }
        Ok(Box::new(meta2_sink(path)))
    }
}

/// A sink building the base at `path`.
pub fn meta2_sink(path: PathBuf) -> WriterSink<Meta2Writer> {
    WriterSink(Meta2Writer { path, thread: None })
}

enum Cmd {
    Write(Vec<Message>, oneshot::Sender<Result<usize, String>>),
    Finish(SourceEnd, oneshot::Sender<Result<(), String>>),
}

/// Feeds the SQLite thread.
pub struct Meta2Writer {
    path: PathBuf,
    thread: Option<std::sync::mpsc::SyncSender<Cmd>>,
}

impl Meta2Writer {
    fn spec(&self) -> String {
        format!("meta2:{}", self.path.display())
    }

    fn sender(&mut self) -> Result<&std::sync::mpsc::SyncSender<Cmd>, Error> {
        if self.thread.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Cmd>(2);
            let path = self.path.clone();
            std::thread::spawn(move || builder_thread(path, rx));
            self.thread = Some(tx);
        }
        self.thread
            .as_ref()
            .ok_or_else(|| Error::sink(self.spec(), "the SQLite thread is gone"))
    }
}

#[async_trait]
impl BatchWriter for Meta2Writer {
    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        let spec = self.spec();
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Cmd::Write(messages, tx))
            .map_err(|_| Error::sink(&spec, "the SQLite thread is gone"))?;
        let n = rx
            .await
            .map_err(|_| Error::sink(&spec, "the SQLite thread stopped"))?
            .map_err(|e| Error::sink(&spec, e))?;
        Ok(Delivery::all(n))
    }

    async fn finish(&mut self, end: SourceEnd) -> Result<(), Error> {
        let spec = self.spec();
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Cmd::Finish(end, tx))
            .map_err(|_| Error::sink(&spec, "the SQLite thread is gone"))?;
        rx.await
            .map_err(|_| Error::sink(&spec, "the SQLite thread stopped"))?
            .map_err(|e| Error::sink(&spec, e))
    }
}

struct TableState {
    name: String,
    insert: String,
    ncols: usize,
    rowid: bool,
    later: Vec<String>,
    rows: u64,
}

struct Builder {
    path: PathBuf,
    tmp: PathBuf,
    conn: Option<Connection>,
    tables: HashMap<u16, TableState>,
    order: Vec<u16>,
}

fn insert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    t: &mut TableState,
    m: &Message,
) -> Result<(), String> {
    let mut cells = decode_refs(&m.value).map_err(|e| format!("table {}: {e}", t.name))?;
    if cells.len() != t.ncols {
        return Err(format!(
            "table {}: a row of {} columns, the table has {}",
            t.name,
            cells.len(),
            t.ncols
        ));
    }
    if t.rowid {
        let key = decode_refs(&m.key).map_err(|e| format!("table {}: key: {e}", t.name))?;
        match key.as_slice() {
            [k @ ValueRef::Integer(_)] => cells.insert(0, *k),
            _ => return Err(format!("table {}: the key is not a rowid", t.name)),
        }
    }
    stmt.execute(rusqlite::params_from_iter(
        cells.into_iter().map(ToSqlOutput::Borrowed),
    ))
    .map_err(|e| format!("table {}: {e}", t.name))?;
    t.rows += 1;
    Ok(())
}

fn builder_thread(path: PathBuf, rx: std::sync::mpsc::Receiver<Cmd>) {
    let tmp = tmp_path(&path);
    let mut b = Builder {
        path,
        tmp,
        conn: None,
        tables: HashMap::new(),
        order: Vec::new(),
    };
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Write(msgs, reply) => {
                let n = msgs.len();
                let r = b.write(msgs).map(|_| n);
                if r.is_err() {
                    b.abandon();
                    let _ = reply.send(r);
                    return;
                }
                let _ = reply.send(r);
            }
            Cmd::Finish(end, reply) => {
                let r = if end == SourceEnd::Complete {
                    b.commit()
                } else {
                    b.abandon();
                    Ok(())
                };
                if r.is_err() {
                    b.abandon();
                }
                let _ = reply.send(r);
                return;
            }
        }
    }
    b.abandon();
}

/// The temporary name a base is built under.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pump-tmp");
    PathBuf::from(s)
}

impl Builder {
    fn conn(&mut self) -> Result<&Connection, String> {
        if self.conn.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let _ = std::fs::remove_file(&self.tmp);
            let c =
                Connection::open(&self.tmp).map_err(|e| format!("{}: {e}", self.tmp.display()))?;
            c.execute_batch(
                "PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY; BEGIN",
            )
            .map_err(|e| format!("{}: {e}", self.tmp.display()))?;
            self.conn = Some(c);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| "no connection".to_string())
    }

    fn write(&mut self, msgs: Vec<Message>) -> Result<(), String> {
        self.conn()?;
        let mut i = 0;
        while i < msgs.len() {
            if msgs[i].flags == SCHEMA_FLAG {
                self.create(&msgs[i])?;
                i += 1;
                continue;
            }
            // A run of rows of one table: one prepared statement.
            let id = msgs[i].vbucket;
            let end = msgs[i..]
                .iter()
                .position(|m| m.vbucket != id || m.flags == SCHEMA_FLAG)
                .map_or(msgs.len(), |n| i + n);
            let Builder { conn, tables, .. } = self;
            let t = tables
                .get_mut(&id)
                .ok_or_else(|| format!("a row of table id {id} came before its schema"))?;
            let conn = conn.as_ref().ok_or("no connection")?;
            let mut stmt = conn
                .prepare_cached(&t.insert)
                .map_err(|e| format!("table {}: {e}", t.name))?;
            for m in &msgs[i..end] {
                insert(&mut stmt, t, m)?;
            }
            i = end;
        }
        Ok(())
    }

    fn create(&mut self, m: &Message) -> Result<(), String> {
        let name = String::from_utf8_lossy(&m.key).to_string();
        let statements = decode_schema(&m.value).map_err(|e| format!("table {name}: {e}"))?;
        let create = statements
            .first()
            .ok_or_else(|| format!("table {name}: an empty schema"))?;
        let conn = self.conn.as_ref().ok_or("no connection")?;
        conn.execute_batch(create)
            .map_err(|e| format!("table {name}: {e}"))?;
        let t = schema::table(conn, &name)
            .map_err(|e| format!("table {name}: {e}"))?
            .ok_or_else(|| format!("table {name}: its CREATE statement made no such table"))?;
        self.order.push(m.vbucket);
        self.tables.insert(
            m.vbucket,
            TableState {
                insert: t.insert_sql(),
                ncols: t.columns.len(),
                rowid: t.pk.is_empty(),
                later: statements[1..].to_vec(),
                name,
                rows: 0,
            },
        );
        Ok(())
    }

    fn commit(&mut self) -> Result<(), String> {
        self.conn()?;
        let tmp = self.tmp.display().to_string();
        let conn = self.conn.as_ref().ok_or("no connection")?;
        for id in &self.order {
            if let Some(t) = self.tables.get(id) {
                for s in &t.later {
                    conn.execute_batch(s).map_err(|e| format!("{tmp}: {e}"))?;
                }
            }
        }
        conn.execute_batch("COMMIT")
            .map_err(|e| format!("{tmp}: {e}"))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| format!("{tmp}: {e}"))?;
        if check != "ok" {
            return Err(format!("{tmp}: quick_check: {check}"));
        }
        for t in self.tables.values() {
            let n: i64 = conn
                .query_row(
                    &format!("SELECT count(*) FROM {}", quote(&t.name)),
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| format!("{tmp}: {e}"))?;
            if n as u64 != t.rows {
                return Err(format!(
                    "{tmp}: table {} holds {n} rows, {} were sent",
                    t.name, t.rows
                ));
            }
        }
        if let Some(c) = self.conn.take() {
            c.close().map_err(|(_, e)| format!("{tmp}: {e}"))?;
        }
        let f = std::fs::File::open(&self.tmp).map_err(|e| format!("{tmp}: {e}"))?;
        f.sync_all().map_err(|e| format!("{tmp}: {e}"))?;
        std::fs::hard_link(&self.tmp, &self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let _ = std::fs::remove_file(&self.tmp);
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    fn abandon(&mut self) {
        self.conn = None;
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pump_meta2::codec::{encode_cells, encode_schema};

    fn messages() -> Vec<Message> {
        let mut schema = Message::mutation(
            Bytes::from_static(b"t"),
            Bytes::from(encode_schema(&[
                "CREATE TABLE t (k TEXT PRIMARY KEY, v)".to_string()
            ])),
        );
        schema.flags = SCHEMA_FLAG;
        let row = Message::mutation(
            Bytes::from(encode_cells([ValueRef::Text(b"a")].into_iter())),
            Bytes::from(encode_cells(
                [ValueRef::Text(b"a"), ValueRef::Real(2.5)].into_iter(),
            )),
        );
        vec![schema, row]
    }

    #[tokio::test]
    async fn a_base_is_renamed_into_place_only_when_the_source_completes() {
        let d = tempfile::tempdir().unwrap();
        for (end, kept) in [
            (SourceEnd::Failed, false),
            (SourceEnd::Cancelled, false),
            (SourceEnd::Complete, true),
        ] {
            let path = d.path().join(format!("{end:?}.meta2"));
            let mut w = meta2_sink(path.clone()).0;
            w.write(messages()).await.unwrap();
            w.finish(end).await.unwrap();
            assert_eq!(path.exists(), kept, "{end:?}");
            assert!(!tmp_path(&path).exists(), "{end:?}: no temporary file left");
        }
    }

    #[tokio::test]
    async fn a_row_before_its_schema_fails_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x.meta2");
        let mut w = meta2_sink(path.clone()).0;
        let mut msgs = messages();
        msgs.remove(0);
        let e = w.write(msgs).await.unwrap_err();
        assert!(e.to_string().contains("before its schema"), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
    }
}
