//! `pump info BACKUP` and `pump examine BACKUP KEY`: what a backup directory holds.
//!
//! ```text
//! info     per run (root/run, bucket, node): complete | incomplete | another tool's, mode,
//!          started, finished, source, the run it diffs against, mutations, deletions, bytes,
//!          data files, vbuckets and seqno ranges (per vbucket with --json), rollbacks,
//!          collections (none yet: the place is kept for them)
//! examine  every row of KEY in every run, in restore order: op, vbucket, seqno, rev seqno,
//!          cas, flags, expiry, datatype, value; which one a restore of the backup applies last
//! ```
//!
//! Data files are opened read-only. A run written by pump is described from its records
//! (`pump_formats::run`); another tool's run, or an incomplete one, is counted from its files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use pump_formats::bfd;
use pump_formats::run::{self, NodeRun, RunState, VbSummary};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use super::{print_out, Failure};

/// `pump info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The backup directory.
    pub backup: PathBuf,
    /// Only this bucket.
    #[arg(short = 'b', long = "bucket")]
    pub bucket: Option<String>,
    /// One JSON object on standard output.
    #[arg(long)]
    pub json: bool,
}

/// `pump examine`.
#[derive(Debug, Args)]
pub struct ExamineArgs {
    /// The backup directory.
    pub backup: PathBuf,
    /// The key.
    pub key: String,
    /// Only this bucket.
    #[arg(short = 'b', long = "bucket")]
    pub bucket: Option<String>,
    /// One JSON object on standard output.
    #[arg(long)]
    pub json: bool,
}

fn runs_of(backup: &Path, bucket: Option<&str>) -> Result<Vec<NodeRun>, Failure> {
    if !backup.is_dir() {
        return Err(Failure::Usage(format!(
            "{}: no such backup directory",
            backup.display()
        )));
    }
    let runs: Vec<NodeRun> = run::list_node_runs(backup)
        .map_err(Failure::Failed)?
        .into_iter()
        .filter(|r| bucket.is_none_or(|b| r.bucket == b))
        .collect();
    if runs.is_empty() {
        return Err(Failure::Failed(format!(
            "{}: no backup run found{} (expected <timestamp>/<timestamp>-full/bucket-*/node-*)",
            backup.display(),
            bucket
                .map(|b| format!(" of bucket {b:?}"))
                .unwrap_or_default()
        )));
    }
    Ok(runs)
}

/// What the rows of a run's data files hold, counted from the files.
#[derive(Debug, Default)]
struct Counted {
    mutations: u64,
    deletions: u64,
    bytes: u64,
    files: Vec<(String, Result<u64, String>)>,
    vbuckets: BTreeMap<u16, VbSummary>,
}

fn open_read_only(path: &Path) -> Result<Connection, String> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

fn count_files(node_dir: &Path) -> Result<Counted, String> {
    let mut c = Counted::default();
    for (_, path) in run::run_data_files(node_dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let counted = (|| -> Result<u64, String> {
            let db = open_read_only(&path)?;
            let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
            let mut st = db
                .prepare("SELECT vbucket_id, cmd, seqno, length(key) + length(val) FROM cbb_msg")
                .or_else(|_| {
                    db.prepare("SELECT vbucket_id, cmd, 0, length(key) + length(val) FROM cbb_msg")
                })
                .map_err(err)?;
            let mut rows = st.query([]).map_err(err)?;
            let mut n = 0u64;
            while let Some(r) = rows.next().map_err(err)? {
                let vb: i64 = r.get(0).map_err(err)?;
                let cmd: i64 = r.get(1).map_err(err)?;
                let seqno: Option<i64> = r.get(2).map_err(err)?;
                let bytes: Option<i64> = r.get(3).map_err(err)?;
                let removal = !matches!(cmd, bfd::cmd::DCP_MUTATION | bfd::cmd::TAP_MUTATION);
                if removal {
                    c.deletions += 1;
                } else {
                    c.mutations += 1;
                }
                c.bytes += bytes.unwrap_or(0).max(0) as u64;
                c.vbuckets
                    .entry(u16::try_from(vb).unwrap_or(u16::MAX))
                    .or_default()
                    .add(removal, seqno.unwrap_or(0).max(0) as u64);
                n += 1;
            }
            Ok(n)
        })();
        c.files.push((name, counted));
    }
    Ok(c)
}

/// One run as JSON.
fn describe(r: &NodeRun) -> Result<Value, Failure> {
    let state = RunState::of(&r.node_dir).map_err(Failure::Failed)?;
    let mut v = json!({
        "root": r.root,
        "run": r.run,
        "kind": r.kind.name(),
        "bucket": r.bucket,
        "node": r.node,
        "path": r.node_dir.display().to_string(),
        // Collections come with issue 16: the field is kept for them.
        "collections": Value::Null,
    });
    let (record, counted): (Option<run::RunRecord>, Counted) = match state {
        RunState::Complete { record, completion } => {
            v["state"] = json!("complete");
            v["finished"] = json!(completion.finished);
            v["expirations"] = json!(completion.expirations);
            v["rollbacks"] = json!(completion
                .rollbacks
                .iter()
                .map(|r| json!({"vbucket": r.vbucket, "seqno": r.seqno, "before_file": r.before_file}))
                .collect::<Vec<_>>());
            let c = Counted {
                mutations: completion.mutations,
                deletions: completion.deletions,
                bytes: completion.bytes,
                files: completion
                    .files
                    .iter()
                    .map(|f| (f.name.clone(), Ok(f.rows)))
                    .collect(),
                vbuckets: completion
                    .vbuckets
                    .iter()
                    .filter_map(|(k, s)| k.parse().ok().map(|vb| (vb, *s)))
                    .collect(),
            };
            (record, c)
        }
        RunState::Incomplete { record } => {
            v["state"] = json!("incomplete");
            (
                Some(record),
                count_files(&r.node_dir).map_err(Failure::Failed)?,
            )
        }
        RunState::Foreign { partial } => {
            v["state"] = json!(if partial { "incomplete" } else { "complete" });
            v["written_by"] = json!("another tool (no pump-run.json)");
            (None, count_files(&r.node_dir).map_err(Failure::Failed)?)
        }
    };
    if let Some(rec) = &record {
        v["mode"] = json!(rec.mode.name());
        v["started"] = json!(rec.started);
        v["source"] = json!(rec.source);
        v["base"] = json!(rec.base);
        v["attempts"] = json!(rec.attempts.len());
        v["tool"] = json!(rec.tool);
    }
    v["mutations"] = json!(counted.mutations);
    v["deletions"] = json!(counted.deletions);
    v["bytes"] = json!(counted.bytes);
    v["files"] = counted
        .files
        .iter()
        .map(|(name, rows)| match rows {
            Ok(n) => json!({"name": name, "rows": n}),
            Err(e) => json!({"name": name, "error": e}),
        })
        .collect();
    let (first, last) = counted.vbuckets.values().fold((0u64, 0u64), |(f, l), s| {
        let f = match (f, s.first_seqno) {
            (0, x) => x,
            (f, 0) => f,
            (f, x) => f.min(x),
        };
        (f, l.max(s.last_seqno))
    });
    v["vbucket_count"] = json!(counted.vbuckets.len());
    v["seqnos"] = json!([first, last]);
    v["vbuckets"] = counted
        .vbuckets
        .iter()
        .map(|(vb, s)| {
            (
                vb.to_string(),
                json!({
                    "mutations": s.mutations,
                    "deletions": s.deletions,
                    "seqnos": [s.first_seqno, s.last_seqno],
                }),
            )
        })
        .collect::<serde_json::Map<String, Value>>()
        .into();
    Ok(v)
}

/// Runs `pump info`.
pub fn info(args: InfoArgs) -> Result<(), Failure> {
    let runs = runs_of(&args.backup, args.bucket.as_deref())?;
    let described: Vec<Value> = runs.iter().map(describe).collect::<Result<_, _>>()?;
    if args.json {
        let v = json!({
            "backup": args.backup.display().to_string(),
            "runs": described,
        });
        return print_out(&format!("{v}\n"));
    }
    let mut out = format!("backup {}\n", args.backup.display());
    for v in &described {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let name = if s("run").is_empty() {
            "(2.x single run)".to_string()
        } else {
            format!("{}/{}", s("root"), s("run"))
        };
        out.push_str(&format!(
            "\n{name}  bucket {}  node {}  {}\n",
            s("bucket"),
            s("node"),
            s("state")
        ));
        if v.get("mode").is_some() {
            out.push_str(&format!(
                "  {} run of {}, started {}{}{}\n",
                s("mode"),
                s("source"),
                s("started"),
                v["finished"]
                    .as_str()
                    .map(|f| format!(", finished {f}"))
                    .unwrap_or_default(),
                v["base"]
                    .as_str()
                    .map(|b| format!(", changes since {b}"))
                    .unwrap_or_default()
            ));
            if n("attempts") > 1 {
                out.push_str(&format!("  resumed: {} attempts\n", n("attempts")));
            }
        } else {
            out.push_str(&format!("  {}\n", s("written_by")));
        }
        let files = v["files"].as_array().map(Vec::len).unwrap_or(0);
        out.push_str(&format!(
            "  {} mutations, {} deletions, {} bytes in {files} data file{}\n",
            n("mutations"),
            n("deletions"),
            n("bytes"),
            if files == 1 { "" } else { "s" }
        ));
        for f in v["files"].as_array().into_iter().flatten() {
            if let Some(e) = f["error"].as_str() {
                out.push_str(&format!("  unreadable: {e}\n"));
            }
        }
        let seq = &v["seqnos"];
        out.push_str(&format!(
            "  {} vbuckets, seqnos {} to {}\n",
            n("vbucket_count"),
            seq[0].as_u64().unwrap_or(0),
            seq[1].as_u64().unwrap_or(0)
        ));
        for r in v["rollbacks"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  vbucket {} rolled back to seqno {}: its rows past it in earlier runs are left out of a restore\n",
                r["vbucket"], r["seqno"]
            ));
        }
    }
    print_out(&out)
}

/// One row of a key.
fn version_json(r: &NodeRun, file: &str, row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let cmd: i64 = row.get(1)?;
    let value: Vec<u8> = row.get::<_, Option<Vec<u8>>>(8)?.unwrap_or_default();
    let meta: Vec<u8> = row.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default();
    let (rev, meta) = bfd::parse_meta_column(&meta);
    let cas: String = match row.get_ref(5)? {
        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        rusqlite::types::ValueRef::Integer(i) => (i as u64).to_string(),
        _ => String::new(),
    };
    let op = match cmd {
        bfd::cmd::DCP_MUTATION | bfd::cmd::TAP_MUTATION => "mutation",
        bfd::cmd::DCP_EXPIRATION => "expiration",
        _ => "deletion",
    };
    Ok(json!({
        "run": if r.run.is_empty() { String::new() } else { format!("{}/{}", r.root, r.run) },
        "node": r.node,
        "file": file,
        "row": row.get::<_, i64>(0)?,
        "op": op,
        "vbucket": row.get::<_, i64>(2)?,
        "seqno": row.get::<_, Option<i64>>(9)?.unwrap_or(0),
        "rev_seqno": rev,
        "meta_hex": meta.map(hex::encode),
        "cas": cas,
        "flags": row.get::<_, Option<i64>>(3)?.unwrap_or(0),
        "expiry": row.get::<_, Option<i64>>(4)?.unwrap_or(0),
        "datatype": row.get::<_, Option<i64>>(10)?.unwrap_or(0),
        "value_bytes": value.len(),
        "value": std::str::from_utf8(&value).ok(),
        "value_hex": std::str::from_utf8(&value).is_err().then(|| hex::encode(&value)),
    }))
}

/// Runs `pump examine`.
pub fn examine(args: ExamineArgs) -> Result<(), Failure> {
    let runs = runs_of(&args.backup, args.bucket.as_deref())?;
    let newest_root = runs
        .iter()
        .map(|r| r.root.clone())
        .max()
        .unwrap_or_default();
    let mut versions: Vec<Value> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for r in &runs {
        let state = RunState::of(&r.node_dir).map_err(Failure::Failed)?;
        for (_, path) in run::run_data_files(&r.node_dir).map_err(Failure::Failed)? {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let found = (|| -> Result<Vec<Value>, String> {
                let db = open_read_only(&path)?;
                let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
                let v: i64 = db
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .map_err(err)?;
                let version = bfd::Version::from_user_version(v).ok_or_else(|| {
                    format!(
                        "{}: user_version {v} is not a backup data file",
                        path.display()
                    )
                })?;
                let cols = match version {
                    bfd::Version::V2004 => {
                        "rowid, cmd, vbucket_id, flg, exp, cas, meta, key, val, 0, 0"
                    }
                    bfd::Version::V2014 | bfd::Version::V2015 => {
                        "rowid, cmd, vbucket_id, flg, exp, cas, meta, key, val, seqno, dtype"
                    }
                };
                let mut st = db
                    .prepare(&format!(
                        "SELECT {cols} FROM cbb_msg WHERE key = ?1 OR key = CAST(?1 AS TEXT) ORDER BY rowid"
                    ))
                    .map_err(err)?;
                let mut rows = st.query([args.key.as_bytes()]).map_err(err)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(err)? {
                    out.push(version_json(r, &file, row).map_err(err)?);
                }
                Ok(out)
            })();
            match found {
                Ok(mut v) => {
                    for x in &mut v {
                        x["run_complete"] = json!(state.is_complete());
                    }
                    versions.extend(v)
                }
                Err(e) => problems.push(e),
            }
        }
    }
    // A restore reads the newest root's complete runs in order: its last row there wins.
    let restored = versions.iter().rposition(|v| {
        v["run_complete"].as_bool() == Some(true)
            && v["run"]
                .as_str()
                .is_some_and(|r| r.is_empty() || r.starts_with(&newest_root))
    });
    if let Some(i) = restored {
        versions[i]["restored"] = json!(true);
    }
    if args.json {
        let v = json!({
            "backup": args.backup.display().to_string(),
            "key": args.key,
            "versions": versions,
            "unreadable": problems,
        });
        print_out(&format!("{v}\n"))?;
    } else {
        let mut out = format!(
            "key {:?} in {}: {} version{}\n",
            args.key,
            args.backup.display(),
            versions.len(),
            if versions.len() == 1 { "" } else { "s" }
        );
        for v in &versions {
            let value = match (v["value"].as_str(), v["value_hex"].as_str()) {
                (Some(t), _) if t.len() <= 120 => format!("{t:?}"),
                (Some(t), _) => format!(
                    "{:?}... ({} bytes)",
                    t.chars().take(120).collect::<String>(),
                    t.len()
                ),
                (None, Some(h)) => format!(
                    "hex {}{}",
                    &h[..h.len().min(120)],
                    if h.len() > 120 { "..." } else { "" }
                ),
                _ => String::new(),
            };
            out.push_str(&format!(
                "\n{} {} row {}{}{}\n  {} vbucket {} seqno {} rev {} cas {} flags {} expiry {} datatype {}\n  value {}\n",
                v["run"].as_str().unwrap_or(""),
                v["file"].as_str().unwrap_or(""),
                v["row"],
                if v["run_complete"].as_bool() == Some(false) { " (incomplete run)" } else { "" },
                if v["restored"].as_bool() == Some(true) { "  <- what a restore applies last" } else { "" },
                v["op"].as_str().unwrap_or(""),
                v["vbucket"],
                v["seqno"],
                v["rev_seqno"],
                v["cas"].as_str().unwrap_or(""),
                v["flags"],
                v["expiry"],
                v["datatype"],
                value,
            ));
        }
        for p in &problems {
            out.push_str(&format!("\nunreadable: {p}\n"));
        }
        print_out(&out)?;
    }
    if versions.is_empty() {
        return Err(Failure::Failed(format!(
            "key {:?} is in no data file of {}",
            args.key,
            args.backup.display()
        )));
    }
    Ok(())
}
