//! `meta2:PATH`: builds a new meta2 base from the messages of a `meta2:` source (encoding in
//! [`pump_meta2::codec`]).
//!
//! The base is written under `PATH.pump-tmp` on its own thread fed by a queue (a batch is
//! confirmed once the thread has applied it; an error of the thread rejects that batch and
//! fails the next write or the finish). It is
//! not built through `INSERT`: its pages are written directly (`pages.rs`, on
//! [`pump_formats::sqlite_build`]), at the source's page size and with its user_version and
//! application_id (its base message). Each table's statements run first on an in-memory SQLite,
//! which gives the layout to write (sqlite_schema's rows, each index's columns and orders).
//! Rows go to the table's b-tree as they come (in key order: a table with a primary key gets
//! new rowids in that order). At the table's end message its indexes are sorted, each on a thread
//! of its own, and written between the next batches. Each end message carries the source's row
//! count and digest of the table. A table whose layout the writer does not know is kept (its
//! rows in an unlinked file beside the base, `spill.rs`, not in memory) and inserted by
//! SQLite once the file is written, as are the indexes it cannot order (written empty, then
//! `REINDEX`). So the memory of the sink is bounded whatever the tables. When the source ends Complete and before anything is renamed: the
//! file must pass `quick_check`, every table's digest read back from the file (with the
//! statements its sqlite_master holds, rows in the order stored:
//! [`pump_meta2::check::digest_private`]) must equal the source's, and the file is synced to
//! disk; for a big base the three run at once on their own threads. Only then is it given its
//! final mode and owner (a new file's, or those [`Meta2Writer::with_perms`] gives: the copy
//! it replaces, or its source), linked to PATH (never over an existing file: PATH must not
//! exist), the temporary name removed and the directory synced. The temporary file is
//! created private (mode 0600, never through a planted file or symlink). Any other end
//! removes the temporary file.
//!
//! | `-x` key | meaning |
//! |---|---|
//! | sort_memory | bytes (`64M`, `1G`, ...) a table's index keys may hold before the biggest index is sorted into a run on disk (256 MiB; `runs.rs`) |

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pump::{
    BatchWriter, Delivery, Error, Message, Op, Options, Payload, Sink, SinkKind, SourceEnd, Spec,
    WriterSink,
};
use pump_meta2::check::{digest_private, digest_stored};
use pump_meta2::codec::{
    control, decode_base, decode_refs_into, decode_schema, decode_table_end, BaseHeader, PAYLOAD,
};
use pump_meta2::schema::{self, Table};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use tokio::sync::oneshot;

mod pages;
mod raw;
mod runs;
mod spill;
use pages::{PagedTable, SortMemory};
use pump_formats::sqlite_build::{is_page_size, FileBuilder};
use raw::RawInsert;
use spill::Spill;

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
    fn takes(&self, payload: Payload) -> bool {
        payload == Payload::Format(PAYLOAD)
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error> {
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
        let sort_memory = options
            .extra
            .size("sort_memory", DEFAULT_SORT_MEMORY as u64)?
            .try_into()
            .map_err(|_| Error::usage("-x sort_memory: too big for this machine"))?;
        Ok(Box::new(WriterSink(
            meta2_sink(path).0.with_sort_memory(sort_memory),
        )))
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["sort_memory"]
    }
}

/// The bytes of index keys a table may hold in memory before they are sorted in runs on
/// disk (`-x sort_memory`); sorting them takes about as much again.
pub const DEFAULT_SORT_MEMORY: usize = 256 << 20;

/// A sink building the base at `path`.
pub fn meta2_sink(path: PathBuf) -> WriterSink<Meta2Writer> {
    meta2_sink_with(path, true)
}

/// [`meta2_sink`]; with `sync_dir` false the directory is not synced after the link, for a
/// caller building many bases that syncs each directory once at the end
/// ([`pump_meta2::files::sync_paths`]).
pub fn meta2_sink_with(path: PathBuf, sync_dir: bool) -> WriterSink<Meta2Writer> {
    WriterSink(Meta2Writer {
        path,
        sync_dir,
        sort_memory: DEFAULT_SORT_MEMORY,
        perms: None,
        thread: None,
    })
}

enum Cmd {
    /// A batch, and who learns that it was applied.
    Write(Vec<Message>, Applied),
    Finish(SourceEnd, oneshot::Sender<Result<(), String>>),
}

/// Who learns that a batch was applied: its ack (confirmed by the thread once the batch is
/// in the file being built; dropped, which rejects it, when it fails), or a caller waiting.
enum Applied {
    Ack(pump::Ack),
    Reply(oneshot::Sender<Result<(), String>>),
}

/// The SQLite thread: its queue and the first error it met (it stops at that error).
struct Worker {
    tx: tokio::sync::mpsc::Sender<Cmd>,
    failed: Arc<Mutex<Option<String>>>,
}

/// Feeds the SQLite thread. A batch is confirmed once the thread has applied it to the file
/// being built (its ack travels with it); nothing is renamed into place before `finish`, and
/// an error of the thread rejects its batch and fails the next write or the finish.
pub struct Meta2Writer {
    path: PathBuf,
    sync_dir: bool,
    /// [`DEFAULT_SORT_MEMORY`], or `-x sort_memory`.
    sort_memory: usize,
    /// The mode and owner the base gets before its final name (a new file's otherwise).
    perms: Option<pump_files::Perms>,
    thread: Option<Worker>,
}

impl Meta2Writer {
    /// The bytes a table's index keys may hold before the biggest index is sorted into a
    /// run on disk ([`DEFAULT_SORT_MEMORY`] otherwise).
    pub fn with_sort_memory(self, bytes: usize) -> Meta2Writer {
        Meta2Writer {
            sort_memory: bytes,
            ..self
        }
    }

    /// The base gets `perms` (mode, and owner and group when set) before it takes its name:
    /// a refilled copy those of the copy it replaces, or of its source.
    pub fn with_perms(self, perms: pump_files::Perms) -> Meta2Writer {
        Meta2Writer {
            perms: Some(perms),
            ..self
        }
    }

    /// The bytes a table's index keys may hold before a run is written.
    pub fn sort_memory(&self) -> usize {
        self.sort_memory
    }

    fn spec(&self) -> String {
        format!("meta2:{}", self.path.display())
    }

    fn worker(&mut self) -> &Worker {
        self.thread.get_or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Cmd>(4);
            let failed = Arc::new(Mutex::new(None));
            let path = self.path.clone();
            let f = failed.clone();
            let (sync_dir, sort_memory) = (self.sync_dir, self.sort_memory);
            let perms = self.perms.unwrap_or_else(pump_files::Perms::new_file);
            tokio::task::spawn_blocking(move || {
                builder_thread(path, sync_dir, sort_memory, perms, rx, f)
            });
            Worker { tx, failed }
        })
    }

    /// The error the SQLite thread stopped on.
    fn gone(&self) -> Error {
        let why = self
            .thread
            .as_ref()
            .and_then(|w| w.failed.lock().ok()?.clone())
            .unwrap_or_else(|| "the SQLite thread is gone".into());
        Error::sink(self.spec(), why)
    }
}

#[async_trait]
impl BatchWriter for Meta2Writer {
    /// Hands the batch and its ack to the SQLite thread, which confirms the ack once the
    /// batch is applied: the writer takes the next batch meanwhile.
    async fn write_acked(&mut self, messages: Vec<Message>, ack: pump::Ack) -> Result<(), Error> {
        let tx = self.worker().tx.clone();
        if tx
            .send(Cmd::Write(messages, Applied::Ack(ack)))
            .await
            .is_err()
        {
            return Err(self.gone());
        }
        Ok(())
    }

    async fn check(&mut self, _ctx: &pump::Context) -> Result<(), Error> {
        if self.path.exists() {
            return Err(Error::sink(
                self.spec(),
                "exists; a meta2 sink writes a new base only",
            ));
        }
        crate::writable::nearest_takes_files(crate::writable::parent_of(&self.path))
            .map_err(|e| Error::sink(self.spec(), e))
    }

    /// Writes a batch and returns once the SQLite thread has applied it.
    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        let n = messages.len();
        let tx = self.worker().tx.clone();
        let (reply, rx) = oneshot::channel();
        if tx
            .send(Cmd::Write(messages, Applied::Reply(reply)))
            .await
            .is_err()
        {
            return Err(self.gone());
        }
        match rx.await {
            Ok(Ok(())) => Ok(Delivery::all(n)),
            Ok(Err(e)) => Err(Error::sink(self.spec(), e)),
            Err(_) => Err(self.gone()),
        }
    }

    async fn finish(&mut self, end: SourceEnd) -> Result<(), Error> {
        let spec = self.spec();
        let (reply, rx) = oneshot::channel();
        let tx = self.worker().tx.clone();
        if tx.send(Cmd::Finish(end, reply)).await.is_err() {
            return Err(self.gone());
        }
        match rx.await {
            Ok(r) => r.map_err(|e| Error::sink(&spec, e)),
            Err(_) => Err(self.gone()),
        }
    }
}

/// How a table's rows become the table: written as pages, or kept and inserted by SQLite
/// once the file is written.
enum Layout {
    Paged(Box<PagedTable>),
    BySqlite(Spill),
}

struct TableState {
    name: String,
    insert: String,
    /// CREATE TABLE, then its indexes and triggers.
    statements: Vec<String>,
    layout: Layout,
    /// The rows and digest the source sent in the table's end message, to compare with
    /// the built table's.
    expected: Option<(u64, String)>,
    columns: Vec<String>,
    pk: Vec<String>,
    rows: u64,
}

struct Builder {
    path: PathBuf,
    sync_dir: bool,
    perms: pump_files::Perms,
    /// The memory of each table's index keys, and where they go past it.
    sort: SortMemory,
    tmp: PathBuf,
    /// The source's page size and ids, from its base message.
    header: BaseHeader,
    /// An in-memory database the tables' statements run on, to read their layout.
    plan: Option<Connection>,
    file: Option<FileBuilder>,
    tables: HashMap<u16, TableState>,
    order: Vec<u16>,
}

/// Decodes a row into `cells`: the rowid first when the source sends it (a table without
/// primary key), then every column. Returns how many cells the key took (0 or 1).
fn decode_row<'a>(
    t: &TableState,
    m: &'a Message,
    cells: &mut Vec<ValueRef<'a>>,
) -> Result<usize, String> {
    cells.clear();
    if t.pk.is_empty() {
        decode_refs_into(&m.key, cells).map_err(|e| format!("table {}: key: {e}", t.name))?;
        if !matches!(cells.as_slice(), [ValueRef::Integer(_)]) {
            return Err(format!("table {}: the key is not a rowid", t.name));
        }
    }
    let key_cells = cells.len();
    decode_refs_into(&m.value, cells).map_err(|e| format!("table {}: {e}", t.name))?;
    if cells.len() - key_cells != t.columns.len() {
        return Err(format!(
            "table {}: a row of {} columns, the table has {}",
            t.name,
            cells.len() - key_cells,
            t.columns.len()
        ));
    }
    Ok(key_cells)
}

fn builder_thread(
    path: PathBuf,
    sync_dir: bool,
    sort_memory: usize,
    perms: pump_files::Perms,
    mut rx: tokio::sync::mpsc::Receiver<Cmd>,
    failed: Arc<Mutex<Option<String>>>,
) {
    let tmp = tmp_path(&path);
    let sort = SortMemory {
        bytes: sort_memory,
        dir: tmp
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf(),
    };
    let mut b = Builder {
        path,
        sync_dir,
        perms,
        sort,
        tmp,
        header: BaseHeader::default(),
        plan: None,
        file: None,
        tables: HashMap::new(),
        order: Vec::new(),
    };
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Cmd::Write(msgs, applied) => {
                let n = msgs.len();
                match b.write(msgs) {
                    Ok(()) => match applied {
                        Applied::Ack(ack) => ack.confirm(Delivery::all(n)),
                        Applied::Reply(r) => {
                            let _ = r.send(Ok(()));
                        }
                    },
                    Err(e) => {
                        b.abandon();
                        if let Ok(mut f) = failed.lock() {
                            *f = Some(e.clone());
                        }
                        if let Applied::Reply(r) = applied {
                            let _ = r.send(Err(e));
                        }
                        return;
                    }
                }
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

/// `tables` in two groups of about as many rows each (the biggest first, each to the
/// lighter group).
fn split_by_rows(tables: &[Table], rows: &BTreeMap<String, u64>) -> [Vec<Table>; 2] {
    let mut sorted: Vec<&Table> = tables.iter().collect();
    sorted.sort_by_key(|t| std::cmp::Reverse(rows.get(&t.name).copied().unwrap_or(0)));
    let mut groups: [(u64, Vec<Table>); 2] = [(0, Vec::new()), (0, Vec::new())];
    for t in sorted {
        let g = if groups[0].0 <= groups[1].0 { 0 } else { 1 };
        groups[g].0 += rows.get(&t.name).copied().unwrap_or(0);
        groups[g].1.push(t.clone());
    }
    let [(_, a), (_, b)] = groups;
    [a, b]
}

/// From this many rows on, the built base is verified on parallel threads.
const PARALLEL_VERIFY_ROWS: u64 = 100_000;

/// The temporary name a base is built under.
pub use pump_meta2::copy::tmp_path;

impl Builder {
    /// The file being written and the in-memory database, made at the first table.
    fn start(&mut self) -> Result<(), String> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let _ = std::fs::remove_file(&self.tmp);
            let h = self.header;
            let mut file = FileBuilder::create(&self.tmp, h.page_size as usize)?;
            file.set_ids(h.user_version, h.application_id);
            self.file = Some(file);
        }
        if self.plan.is_none() {
            self.plan = Some(Connection::open_in_memory().map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    fn write(&mut self, msgs: Vec<Message>) -> Result<(), String> {
        let mut i = 0;
        if msgs
            .first()
            .is_some_and(|m| m.op == Op::Control(control::BASE))
        {
            self.base(&msgs[0])?;
            i = 1;
        }
        self.start()?;
        while i < msgs.len() {
            match msgs[i].op {
                Op::Control(control::BASE) => {
                    return Err(
                        "a base message after the base's first one or its first table".into(),
                    );
                }
                Op::Control(control::SCHEMA) => {
                    self.create(&msgs[i])?;
                    i += 1;
                    continue;
                }
                Op::Control(control::TABLE_END) => {}
                Op::Control(code) => {
                    return Err(format!("a control message of unknown code {code}"));
                }
                Op::Mutation => {}
                Op::Deletion | Op::Expiration => {
                    return Err(format!(
                        "a deletion of {:?} in table id {}: a base is built from rows only",
                        msgs[i].key_display(),
                        msgs[i].vbucket
                    ));
                }
            }
            if msgs[i].is_control() {
                let m = &msgs[i];
                let t = self.tables.get_mut(&m.vbucket).ok_or_else(|| {
                    format!("the end of table id {} came before its schema", m.vbucket)
                })?;
                let end =
                    decode_table_end(&m.value).map_err(|e| format!("table {}: {e}", t.name))?;
                t.expected = Some(end);
                if let Layout::Paged(p) = &mut t.layout {
                    let file = self.file.as_mut().ok_or("no file")?;
                    p.end(file).map_err(|e| format!("table {}: {e}", t.name))?;
                }
                i += 1;
                continue;
            }
            // A run of rows of one table.
            let id = msgs[i].vbucket;
            let end = msgs[i..]
                .iter()
                .position(|m| m.vbucket != id || m.op != Op::Mutation)
                .map_or(msgs.len(), |n| i + n);
            let t = self
                .tables
                .get_mut(&id)
                .ok_or_else(|| format!("a row of table id {id} came before its schema"))?;
            let file = self.file.as_mut().ok_or("no file")?;
            let mut cells = Vec::with_capacity(t.columns.len() + 1);
            for m in &msgs[i..end] {
                let key = decode_row(t, m, &mut cells)?;
                t.rows += 1;
                match &mut t.layout {
                    Layout::Paged(p) => {
                        let rowid = match cells.first() {
                            Some(ValueRef::Integer(r)) if key == 1 => Some(*r),
                            _ => None,
                        };
                        p.push(file, rowid, &mut cells[key..])
                            .map_err(|e| format!("table {}: {e}", t.name))?;
                    }
                    Layout::BySqlite(rows) => rows
                        .push(&m.key, &m.value)
                        .map_err(|e| format!("table {}: {e}", t.name))?,
                }
            }
            i = end;
        }
        // The indexes sorted meanwhile are written between batches.
        let file = self.file.as_mut().ok_or("no file")?;
        for t in self.tables.values_mut() {
            if let Layout::Paged(p) = &mut t.layout {
                p.write_indexes(file, false)
                    .map_err(|e| format!("table {}: {e}", t.name))?;
            }
        }
        Ok(())
    }

    /// Takes the source's page size and ids: before anything is written.
    fn base(&mut self, m: &Message) -> Result<(), String> {
        if self.file.is_some() {
            return Err("a base message after the base's first one or its first table".into());
        }
        let h = decode_base(&m.value).map_err(|e| e.to_string())?;
        if !is_page_size(h.page_size as usize) {
            return Err(format!(
                "the source's page size {} is not a power of two from 512 to 65536",
                h.page_size
            ));
        }
        self.header = h;
        Ok(())
    }

    fn create(&mut self, m: &Message) -> Result<(), String> {
        let name = String::from_utf8_lossy(&m.key).to_string();
        let statements = decode_schema(&m.value).map_err(|e| format!("table {name}: {e}"))?;
        let create = statements
            .first()
            .ok_or_else(|| format!("table {name}: an empty schema"))?;
        let conn = self.plan.as_ref().ok_or("no connection")?;
        conn.execute_batch(create)
            .map_err(|e| format!("table {name}: {e}"))?;
        let (columns, pk) =
            schema::columns(conn, &name).map_err(|e| format!("table {name}: {e}"))?;
        if columns.is_empty() {
            return Err(format!(
                "table {name}: its CREATE statement made no such table"
            ));
        }
        // Its indexes and triggers too, for their layout; one SQLite does not take here
        // (a trigger on a table still to come) leaves the whole table to SQLite.
        let later_ok = statements[1..]
            .iter()
            .all(|s| conn.execute_batch(s).is_ok());
        let layout = match pages::plan(conn, &name, &self.sort)? {
            Some(p) if later_ok => Layout::Paged(Box::new(p)),
            _ => Layout::BySqlite(Spill::new(&self.sort.dir)?),
        };
        let t = Table {
            id: m.vbucket,
            name: name.clone(),
            statements: Vec::new(),
            columns,
            pk,
        };
        self.order.push(m.vbucket);
        self.tables.insert(
            m.vbucket,
            TableState {
                insert: t.insert_sql(),
                statements,
                layout,
                expected: None,
                columns: t.columns,
                pk: t.pk,
                rows: 0,
                name,
            },
        );
        Ok(())
    }

    /// Writes the paged tables' last pages and sqlite_schema, then has SQLite add what it
    /// builds itself. Returns the connection to the finished file.
    fn assemble(&mut self) -> Result<Connection, String> {
        let tmp = self.tmp.display().to_string();
        let mut file = self.file.take().ok_or("no file")?;
        let mut rows = Vec::new();
        let mut sqlite_later = false;
        for id in &self.order {
            let Some(t) = self.tables.get_mut(id) else {
                continue;
            };
            match &mut t.layout {
                Layout::Paged(p) => {
                    rows.extend(
                        p.finish(&mut file)
                            .map_err(|e| format!("table {}: {e}", t.name))?,
                    );
                    sqlite_later |= !p.later().is_empty();
                }
                Layout::BySqlite(_) => sqlite_later = true,
            }
        }
        file.finish(&rows)?;
        // No SQLite mutex: the connection is this thread's only.
        let conn = Connection::open_with_flags(
            &self.tmp,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{tmp}: {e}"))?;
        if !sqlite_later {
            return Ok(conn);
        }
        conn.execute_batch(
            "PRAGMA foreign_keys=OFF; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-1048576; PRAGMA temp_store=MEMORY; PRAGMA threads=2; BEGIN",
        )
        .map_err(|e| format!("{tmp}: {e}"))?;
        for id in &self.order {
            let Some(t) = self.tables.get_mut(id) else {
                continue;
            };
            match &mut t.layout {
                Layout::Paged(p) => {
                    for s in &p.later() {
                        conn.execute_batch(s).map_err(|e| format!("{tmp}: {e}"))?;
                    }
                }
                Layout::BySqlite(spill) => {
                    let mut rows = spill.read_back()?;
                    let (create, later) = t.statements.split_first().ok_or("no statement")?;
                    conn.execute_batch(create)
                        .map_err(|e| format!("{tmp}: {e}"))?;
                    let later = later.to_vec();
                    let mut stmt = RawInsert::new(&conn, &t.insert)
                        .map_err(|e| format!("table {}: {e}", t.name))?;
                    while let Some(m) = rows.next_row()? {
                        let mut cells = Vec::with_capacity(t.columns.len() + 1);
                        decode_row(t, &m, &mut cells)?;
                        stmt.insert(&cells)
                            .map_err(|e| format!("table {}: {e}", t.name))?;
                    }
                    drop(stmt);
                    for s in &later {
                        conn.execute_batch(s).map_err(|e| format!("{tmp}: {e}"))?;
                    }
                }
            }
        }
        conn.execute_batch("COMMIT")
            .map_err(|e| format!("{tmp}: {e}"))?;
        Ok(conn)
    }

    fn commit(&mut self) -> Result<(), String> {
        if self.tables.is_empty() {
            return Err(format!(
                "{}: the source sent no table (no meta2 base): nothing was written",
                self.path.display()
            ));
        }
        let tmp = self.tmp.display().to_string();
        let mut sent = BTreeMap::new();
        for t in self.tables.values() {
            let Some((rows, digest)) = &t.expected else {
                return Err(format!(
                    "{tmp}: table {}: the source sent no end (rows and digest)",
                    t.name
                ));
            };
            if *rows != t.rows {
                return Err(format!(
                    "{tmp}: table {}: {} rows received, the source sent {rows}",
                    t.name, t.rows
                ));
            }
            sent.insert(t.name.clone(), digest.clone());
        }
        let conn = self.assemble()?;
        let states = std::mem::take(&mut self.tables);
        let rows: u64 = states.values().map(|t| t.rows).sum();
        let rows_of: BTreeMap<String, u64> =
            states.values().map(|t| (t.name.clone(), t.rows)).collect();
        // The built tables as the file's sqlite_master gives them (so a statement that did
        // not take is seen), with the columns read when each was created.
        let mut built_tables = schema::master(&conn).map_err(|e| format!("{tmp}: {e}"))?;
        for t in &mut built_tables {
            if let Some(s) = states.values().find(|s| s.name == t.name) {
                t.columns = s.columns.clone();
                t.pk = s.pk.clone();
            }
        }
        let sync = || std::fs::File::open(&self.tmp).and_then(|f| f.sync_all());
        let quick_check = || -> Result<String, String> {
            conn.query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(|e| format!("{tmp}: {e}"))
        };
        let (check, built, synced) = if rows >= PARALLEL_VERIFY_ROWS {
            // A big base: the checks at once, each on its own thread: the file reaches
            // the disk, its structure passes quick_check, and every table holds exactly
            // the rows the source sent (two threads).
            // The digests on two threads, the biggest tables spread between them.
            let halves = split_by_rows(&built_tables, &rows_of);
            std::thread::scope(|s| {
                let synced = s.spawn(sync);
                let built: Vec<_> = halves
                    .iter()
                    .map(|h| s.spawn(|| digest_private(&self.tmp, h)))
                    .collect();
                let check = quick_check();
                let mut digests = Ok(BTreeMap::new());
                for b in built {
                    let d = b
                        .join()
                        .unwrap_or_else(|_| Err(pump_meta2::Error::Usage("panicked".into())))
                        .map_err(|e| e.to_string());
                    digests = match (digests, d) {
                        (Ok(mut all), Ok(d)) => {
                            all.extend(d);
                            Ok(all)
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                }
                (
                    check,
                    digests,
                    synced
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked"))),
                )
            })
        } else {
            let check = quick_check();
            let built = digest_stored(&conn, &built_tables).map_err(|e| format!("{tmp}: {e}"));
            (check, built, sync())
        };
        let check = check?;
        if check != "ok" {
            return Err(format!("{tmp}: quick_check: {check}"));
        }
        let built = built?;
        if built != sent {
            return Err(format!(
                "{tmp}: the built base differs from the source in {:?}",
                pump_meta2::tables_differing(&sent, &built)
            ));
        }
        synced.map_err(|e| format!("{tmp}: {e}"))?;
        conn.close().map_err(|(_, e)| format!("{tmp}: {e}"))?;
        self.perms
            .apply_to(&self.tmp)
            .map_err(|e| format!("{tmp}: {e}"))?;
        std::fs::hard_link(&self.tmp, &self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let _ = std::fs::remove_file(&self.tmp);
        if self.sync_dir {
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
        Ok(())
    }

    fn abandon(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pump_meta2::check::TableDigest;
    use pump_meta2::codec::{encode_base, encode_cells, encode_schema, encode_table_end};

    /// A table's schema, one row and its end (with `rows` and the digest of that row).
    fn messages_ending_with(rows: u64) -> Vec<Message> {
        let mut msgs = table_messages(
            "CREATE TABLE t (k TEXT PRIMARY KEY, v)",
            &[(
                vec![ValueRef::Text(b"a")],
                vec![ValueRef::Text(b"a"), ValueRef::Real(2.5)],
            )],
            false,
        );
        // The end says `rows`, whatever came.
        let end = msgs.last_mut().unwrap();
        let (_, digest) = decode_table_end(&end.value).unwrap();
        end.value = Bytes::from(encode_table_end(rows, &digest));
        msgs
    }

    fn messages() -> Vec<Message> {
        messages_ending_with(1)
    }

    #[test]
    fn the_digest_threads_get_every_table_once_the_biggest_apart() {
        let table = |name: &str| Table {
            id: 0,
            name: name.into(),
            statements: Vec::new(),
            columns: Vec::new(),
            pk: Vec::new(),
        };
        let tables: Vec<Table> = ["admin", "contents", "chunks", "aliases", "properties"]
            .into_iter()
            .map(table)
            .collect();
        let rows: BTreeMap<String, u64> = [
            ("admin", 10),
            ("contents", 100),
            ("chunks", 300),
            ("aliases", 100),
            ("properties", 100),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let [a, b] = split_by_rows(&tables, &rows);
        let names = |g: &[Table]| -> Vec<String> { g.iter().map(|t| t.name.clone()).collect() };
        assert_eq!(names(&a), ["chunks", "admin"]);
        assert_eq!(names(&b), ["contents", "aliases", "properties"]);
    }

    #[tokio::test]
    async fn a_base_message_out_of_place_or_with_a_bad_page_size_fails_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let base = |page_size| {
            let h = BaseHeader {
                page_size,
                ..BaseHeader::default()
            };
            Message::control(control::BASE, Bytes::new(), Bytes::from(encode_base(&h)))
        };
        let after = |mut first: Vec<Message>| {
            first.extend(messages());
            first
        };
        let cases = [
            (
                "late",
                [messages(), vec![base(4096)]].concat(),
                "a base message after",
            ),
            (
                "twice",
                after(vec![base(4096), base(4096)]),
                "a base message after",
            ),
            ("size", after(vec![base(3000)]), "page size 3000 is not"),
        ];
        for (name, msgs, want) in cases {
            let path = d.path().join(format!("{name}.meta2"));
            let mut w = meta2_sink(path.clone()).0;
            let e = match w.write(msgs).await {
                Err(e) => e,
                Ok(_) => w.finish(SourceEnd::Complete).await.unwrap_err(),
            };
            assert!(e.to_string().contains(want), "{name}: {e}");
            assert!(!path.exists() && !tmp_path(&path).exists(), "{name}");
        }
    }

    #[tokio::test]
    async fn a_base_whose_rows_differ_from_the_source_end_is_not_renamed() {
        let d = tempfile::tempdir().unwrap();
        // The end says 2 rows, 1 came.
        let path = d.path().join("count.meta2");
        let mut w = meta2_sink(path.clone()).0;
        w.write(messages_ending_with(2)).await.unwrap();
        let e = w.finish(SourceEnd::Complete).await.unwrap_err();
        assert!(
            e.to_string().contains("1 rows received, the source sent 2"),
            "{e}"
        );
        assert!(!path.exists() && !tmp_path(&path).exists());
        // The row's value changed on the way: the digest read back differs from the end's.
        let path = d.path().join("digest.meta2");
        let mut w = meta2_sink(path.clone()).0;
        let mut msgs = messages();
        msgs[1].value = Bytes::from(encode_cells(
            [ValueRef::Text(b"a"), ValueRef::Real(2.0)].into_iter(),
        ));
        w.write(msgs).await.unwrap();
        let e = w.finish(SourceEnd::Complete).await.unwrap_err();
        assert!(
            e.to_string().contains("differs from the source in [\"t\"]"),
            "{e}"
        );
        assert!(!path.exists() && !tmp_path(&path).exists());
        // No end at all.
        let path = d.path().join("noend.meta2");
        let mut w = meta2_sink(path.clone()).0;
        let mut msgs = messages();
        msgs.pop();
        w.write(msgs).await.unwrap();
        let e = w.finish(SourceEnd::Complete).await.unwrap_err();
        assert!(e.to_string().contains("sent no end"), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
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
    async fn a_failed_batch_fails_every_later_write_and_the_finish() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("y.meta2");
        let mut w = meta2_sink(path.clone()).0;
        let mut bad = messages();
        bad.remove(0);
        let _ = w.write(bad).await;
        // Whatever is queued after, nothing is committed and the first error is reported.
        let mut later = Ok(Delivery::all(0));
        for _ in 0..3 {
            later = w.write(messages()).await;
            if later.is_err() {
                break;
            }
        }
        let e = match later {
            Err(e) => e,
            Ok(_) => w.finish(SourceEnd::Complete).await.unwrap_err(),
        };
        assert!(e.to_string().contains("before its schema"), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
    }

    /// A table's schema then its rows (key cells, value cells) and its end, with the
    /// digest of those rows.
    fn table_messages(
        create: &str,
        rows: &[(Vec<ValueRef<'_>>, Vec<ValueRef<'_>>)],
        rowid_key: bool,
    ) -> Vec<Message> {
        let statements = [create.to_string()];
        let schema = Message::control(
            control::SCHEMA,
            Bytes::from_static(b"t"),
            Bytes::from(encode_schema(&statements)),
        );
        let mut out = vec![schema];
        let mut digest = TableDigest::new(&statements);
        for (key, value) in rows {
            let m = Message::mutation(
                Bytes::from(encode_cells(key.iter().copied())),
                Bytes::from(encode_cells(value.iter().copied())),
            );
            if rowid_key {
                digest.update(&m.key[2..]);
            }
            digest.update(&m.value[2..]);
            out.push(m);
        }
        let end = Message::control(
            control::TABLE_END,
            Bytes::from_static(b"t"),
            Bytes::from(encode_table_end(rows.len() as u64, &digest.finish())),
        );
        out.push(end);
        out
    }

    /// Rows the pages cannot hold: two equal keys in a UNIQUE index, rowids not increasing,
    /// an INTEGER PRIMARY KEY that is not an integer. Each fails and leaves no file, the
    /// sorted runs' included.
    #[tokio::test]
    async fn rows_a_base_cannot_hold_fail_and_leave_nothing() {
        use ValueRef::{Integer, Text};
        let d = tempfile::tempdir().unwrap();
        let cases = [
            (
                "CREATE TABLE t (k TEXT PRIMARY KEY, v)",
                vec![
                    (
                        vec![Text(b"a".as_slice())],
                        vec![Text(b"a".as_slice()), Integer(1)],
                    ),
                    (
                        vec![Text(b"a".as_slice())],
                        vec![Text(b"a".as_slice()), Integer(2)],
                    ),
                ],
                false,
                "same key in a UNIQUE index",
            ),
            (
                "CREATE TABLE t (v)",
                vec![
                    (vec![Integer(5)], vec![Integer(1)]),
                    (vec![Integer(3)], vec![Integer(2)]),
                ],
                true,
                "rowid 3 after rowid 5",
            ),
            (
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v)",
                vec![(
                    vec![Text(b"x".as_slice())],
                    vec![Text(b"x".as_slice()), Integer(1)],
                )],
                false,
                "INTEGER PRIMARY KEY that is not an integer",
            ),
        ];
        // Each also with every key sorted into a run of its own on disk, merged at the end.
        for (i, (create, rows, rowid_key, want)) in cases.into_iter().enumerate() {
            for sort_memory in [DEFAULT_SORT_MEMORY, 1] {
                let path = d.path().join(format!("{i}-{sort_memory}.meta2"));
                let mut w = meta2_sink(path.clone()).0.with_sort_memory(sort_memory);
                let e = match w.write(table_messages(create, &rows, rowid_key)).await {
                    Err(e) => e,
                    Ok(_) => w.finish(SourceEnd::Complete).await.unwrap_err(),
                };
                assert!(e.to_string().contains(want), "{create}, {sort_memory}: {e}");
                assert!(!path.exists() && !tmp_path(&path).exists(), "{create}");
            }
        }
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "a file was left"
        );
    }

    /// A batch is confirmed only once the builder thread applied it: a batch it cannot apply
    /// is rejected (its source acknowledges nothing past it), where it used to be confirmed
    /// when queued.
    #[tokio::test]
    async fn a_batch_is_confirmed_once_applied_and_one_that_cannot_be_is_rejected() {
        use pump::{Batch, BatchSender, Context, Source};
        struct TwoBatches(Vec<Vec<Message>>, tokio::sync::mpsc::UnboundedSender<bool>);
        #[async_trait]
        impl Source for TwoBatches {
            async fn run(self: Box<Self>, out: BatchSender, _ctx: Context) -> Result<(), Error> {
                for b in self.0 {
                    let (batch, acked) = Batch::with_ack(b);
                    out.send(batch).await?;
                    let _ = self.1.send(acked.await.is_ok());
                }
                Ok(())
            }
        }
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("z.meta2");
        let good = messages();
        // A row of a table whose schema never came.
        let mut bad = vec![good[1].clone()];
        bad[0].vbucket = 9;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = pump::run(
            Box::new(TwoBatches(vec![good, bad], tx)),
            Box::new(meta2_sink(path.clone())),
            Context::new(Options::default()),
        )
        .await;
        assert_eq!(rx.recv().await, Some(true), "the good batch is confirmed");
        assert_eq!(rx.recv().await, Some(false), "the bad one is rejected");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("before its schema"), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
    }

    #[tokio::test]
    async fn a_source_that_sent_nothing_leaves_no_base() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("empty.meta2");
        let mut w = meta2_sink(path.clone()).0;
        let e = w.finish(SourceEnd::Complete).await.unwrap_err();
        assert!(e.to_string().contains("the source sent no table"), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
    }

    #[tokio::test]
    async fn a_row_before_its_schema_fails_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x.meta2");
        let mut w = meta2_sink(path.clone()).0;
        let mut msgs = messages();
        msgs.remove(0);
        // A batch is only queued by write: the SQLite thread's error comes with the next
        // write or with finish, which must not commit.
        let e = match w.write(msgs).await {
            Err(e) => e,
            Ok(_) => w.finish(SourceEnd::Complete).await.unwrap_err(),
        };
        assert!(e.to_string().contains("before its schema"), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
    }
}
