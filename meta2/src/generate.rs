//! Realistic bases (the reference schema, every admin key of a live SDS base, aliases with
//! their contents, chunks and properties) for tests and benches. Deterministic: the same
//! arguments give the same rows, so copies written on several volumes are identical.

use std::path::Path;

use rusqlite::{params, Connection};

use crate::base::BaseName;
use crate::schema::{version_key, REFERENCE_SCHEMA, REFERENCE_TABLES};
use crate::Error;

/// What to generate.
#[derive(Debug, Clone)]
pub struct BaseSpec {
    pub ns: String,
    pub account: String,
    pub container: String,
    /// Service addresses (sorted when written to `sys.peers`).
    pub peers: Vec<String>,
    pub aliases: usize,
}

impl BaseSpec {
    /// The base's name (seq 1).
    pub fn name(&self) -> BaseName {
        BaseName::of(&self.account, &self.container)
    }
}

/// Writes the base of `spec` on `volume` (creating its directory); returns its path.
/// Fails when the file exists.
pub fn write_base(volume: &Path, spec: &BaseSpec) -> Result<std::path::PathBuf, Error> {
    let name = spec.name();
    let path = name.path_in(volume);
    if path.exists() {
        return Err(Error::Usage(format!("{}: exists", path.display())));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("meta2.generating");
    let _ = std::fs::remove_file(&tmp);
    let mut conn = Connection::open(&tmp).map_err(|e| Error::sqlite(&tmp, e))?;
    fill(&mut conn, &name, spec).map_err(|e| Error::sqlite(&tmp, e))?;
    drop(conn);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

fn fill(conn: &mut Connection, name: &BaseName, spec: &BaseSpec) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")?;
    let tx = conn.transaction()?;
    for s in REFERENCE_SCHEMA {
        tx.execute(s, [])?;
    }
    let ctime: i64 = 1_700_000_000_000_000;
    let mut usage: i64 = 0;
    {
        let mut content = tx.prepare("INSERT INTO contents VALUES (?1, ?2, ?3, ?4, ?4, 'application/octet-stream', 'ec/algo=liberasurecode_rs_vand,k=6,m=3', 'EC')")?;
        let mut chunk = tx.prepare("INSERT INTO chunks VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        let mut alias = tx.prepare("INSERT INTO aliases VALUES (?1, ?2, ?3, 0, ?4, ?4)")?;
        let mut prop = tx.prepare("INSERT INTO properties VALUES (?1, ?2, 'user.origin', ?3)")?;
        for i in 0..spec.aliases {
            let id = crate::base::cid(&name.cid, &i.to_string());
            let id_bytes = hex::decode(&id[..32]).unwrap_or_default();
            let hash = hex::decode(&id[32..]).unwrap_or_default();
            let size = 1024 + (i as i64 * 37) % 100_000;
            usage += size;
            let t = ctime + i as i64;
            let a = format!("obj/{:06}", i);
            content.execute(params![id_bytes, hash, size, t])?;
            for p in 0..3 {
                chunk.execute(params![
                    format!("http://10.0.0.{}:6200/{}{:02}", p + 1, &id[..40], p),
                    id_bytes,
                    format!("0.{p}"),
                    hash,
                    size / 3,
                    t
                ])?;
            }
            alias.execute(params![a, t, id_bytes, t])?;
            prop.execute(params![a, t, format!("generated {i}").into_bytes()])?;
        }
    }
    let mut peers = spec.peers.clone();
    peers.sort();
    let n = spec.aliases as u64;
    let mut admin: Vec<(String, Vec<u8>)> = vec![
        ("schema_version".into(), b"1.8".to_vec()),
        ("sys.name".into(), name.to_string().into_bytes()),
        ("sys.type".into(), b"meta2".to_vec()),
        ("sys.peers".into(), peers.join(",").into_bytes()),
        ("sys.ns".into(), spec.ns.clone().into_bytes()),
        ("sys.account".into(), spec.account.clone().into_bytes()),
        ("sys.user.name".into(), spec.container.clone().into_bytes()),
        ("sys.m2.init".into(), b"1".to_vec()),
        ("sys.m2.ctime".into(), ctime.to_string().into_bytes()),
        ("sys.m2.usage".into(), usage.to_string().into_bytes()),
        ("sys.m2.objects".into(), n.to_string().into_bytes()),
        ("sys.m2.objects.damaged".into(), b"0".to_vec()),
        ("sys.m2.chunks.missing".into(), b"0".to_vec()),
    ];
    for t in REFERENCE_TABLES {
        let v = if *t == "admin" { 1 } else { 1 + n };
        admin.push((version_key(t), format!("{v}:{ctime}").into_bytes()));
    }
    {
        let mut stmt = tx.prepare("INSERT INTO admin (k, v) VALUES (?1, ?2)")?;
        for (k, v) in &admin {
            stmt.execute(params![k, v])?;
        }
    }
    tx.commit()
}

/// Damages `table` of the base at `path` the way a bad sector would, for tests: the type byte
/// of its root page is overwritten. The file keeps its length, its header and its other
/// tables (the admin keys still read); `quick_check` fails.
pub fn break_root_page(path: &Path, table: &str) -> Result<(), Error> {
    let (root, page_size): (i64, i64) = {
        let c = Connection::open(path).map_err(|e| Error::sqlite(path, e))?;
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| Error::sqlite(path, e))?;
        let page_size = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| Error::sqlite(path, e))?;
        (root, page_size)
    };
    if root <= 1 {
        return Err(Error::Usage(format!("{table}: on the first page")));
    }
    let mut bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    bytes[((root - 1) * page_size) as usize] = 0xA5;
    std::fs::write(path, &bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{digest, inspect, judge, Health};

    fn spec(peers: &[&str]) -> BaseSpec {
        BaseSpec {
            ns: "OPENIO".into(),
            account: "acct".into(),
            container: "c1".into(),
            peers: peers.iter().map(|s| s.to_string()).collect(),
            aliases: 20,
        }
    }

    #[test]
    fn generated_copies_are_identical_and_pass_check() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(&["127.0.0.2:6120", "127.0.0.1:6120"]);
        let a = write_base(&d.path().join("a"), &s).unwrap();
        let b = write_base(&d.path().join("b"), &s).unwrap();
        assert_eq!(digest(&a, &[]).unwrap(), digest(&b, &[]).unwrap());
        let st = inspect(&a, true);
        assert_eq!(st.health, Health::Ok, "{}", st.message);
        assert_eq!(st.peers, ["127.0.0.1:6120", "127.0.0.2:6120"]);
        let r = judge(&[
            ("127.0.0.1:6120".into(), st),
            ("127.0.0.2:6120".into(), inspect(&b, false)),
        ]);
        assert!(r.iter().all(|c| c.health == Health::Ok), "{r:?}");
    }
}
