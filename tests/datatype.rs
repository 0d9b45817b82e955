//! Values with their datatype through the pump: snappy-compressed documents and documents with
//! xattrs go from a cluster into a backup and from the backup into another cluster byte for
//! byte, datatype included; exported to `csv:` or a plain `memcached://` they come out
//! decompressed (and, for memcached, as the document body alone).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{csv_rows, data_files, transfer_ok, KvClient, LocalCluster, Memcached};
use pump_protocol::datatype::{build_xattrs, compress, JSON, SNAPPY, XATTR};
use pump_protocol::hello::{hello_request, Feature};
use pump_protocol::meta::WithMeta;
use pump_protocol::{vbucket_of, Opcode, Packet, Status};

const SRC: &[&str] = &["-u", "U", "-p", "P"];
const DEST: &[&str] = &["-U", "U", "-P", "P"];

/// A compressible JSON document.
fn doc(i: usize) -> Vec<u8> {
    let rows: Vec<String> = (0..40)
        .map(|j| format!("{{\"row\":{j},\"doc\":{i},\"text\":\"the same words again\"}}"))
        .collect();
    format!("{{\"id\":{i},\"rows\":[{}]}}", rows.join(",")).into_bytes()
}

/// A document with xattrs: the xattr section, then the body.
fn with_xattrs(i: usize) -> Vec<u8> {
    let sync = format!("{{\"rev\":\"{i}-abc\",\"sequence\":{i}}}");
    let mut v =
        build_xattrs(&[(b"_sync", sync.as_bytes()), (b"meta", b"{\"by\":\"test\"}")]).to_vec();
    v.extend_from_slice(&doc(i));
    v
}

/// Writes 50 snappy-compressed documents (SET with SNAPPY) and 50 with xattrs, 25 of those
/// compressed too (SET_WITH_META with XATTR), into the node that owns each vbucket.
fn load(c: &LocalCluster) {
    let map = c.map();
    let mut clients: Vec<KvClient> = c
        .nodes
        .iter()
        .map(|n| {
            let mut k = KvClient::connect(&n.kv, Some(("U", "P")));
            let r = k.request(hello_request(
                "datatype-test",
                &[
                    Feature::Snappy,
                    Feature::Json,
                    Feature::Xattr,
                    Feature::Xerror,
                ],
            ));
            assert_eq!(r.status(), Status::Success);
            k
        })
        .collect();
    for i in 0..100 {
        let key = format!("dt-{i:03}");
        let vb = vbucket_of(key.as_bytes(), map.len() as u16);
        let owner = map[vb as usize][0] as usize;
        let p = if i < 50 {
            Packet::request(Opcode::Set)
                .with_extras(vec![0, 0, 0, 7, 0, 0, 0, 0])
                .with_value(compress(&doc(i)))
                .with_datatype(SNAPPY | JSON)
        } else {
            let m = WithMeta {
                flags: 9,
                expiry: 0,
                rev_seqno: 3,
                cas: 1_000_000 + i as u64,
                options: 0,
                nmeta: 0,
            };
            let (e, n) = m.to_array();
            let (value, dt) = if i < 75 {
                (bytes::Bytes::from(with_xattrs(i)), XATTR | JSON)
            } else {
                (compress(&with_xattrs(i)), XATTR | SNAPPY | JSON)
            };
            Packet::request(Opcode::SetWithMeta)
                .with_extras(e[..n].to_vec())
                .with_value(value)
                .with_datatype(dt)
        };
        let r = clients[owner].request(p.with_vbucket(vb).with_key(key.into_bytes()));
        assert_eq!(r.status(), Status::Success);
    }
}

/// key -> (dtype, value bytes, flags, cas) of every row of a backup's data files.
fn backup_rows(dir: &Path) -> BTreeMap<Vec<u8>, (i64, Vec<u8>, i64, String)> {
    let mut out = BTreeMap::new();
    for f in data_files(dir) {
        let db = rusqlite::Connection::open(&f).unwrap();
        let mut q = db
            .prepare("SELECT key, dtype, val, flg, cas FROM cbb_msg")
            .unwrap();
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                ))
            })
            .unwrap();
        for r in rows {
            let (k, v) = r.unwrap();
            out.insert(k, v);
        }
    }
    out
}

#[test]
fn compressed_documents_and_xattrs_go_from_cluster_to_backup_to_cluster_byte_for_byte() {
    let args = ["--replicas", "1", "--user", "U", "--password", "P"];
    let (a, b) = (LocalCluster::up(2, 0, &args), LocalCluster::up(2, 0, &args));
    load(&a);
    let dir = tempfile::tempdir().unwrap();
    let (ba, bb) = (dir.path().join("a"), dir.path().join("b"));
    transfer_ok(&a.spec(), ba.to_str().unwrap(), SRC);
    let rows_a = backup_rows(&ba);
    assert_eq!(rows_a.len(), 100);
    // The backup holds the values as the node does: compressed, with their xattrs.
    let (dt, val, _, _) = &rows_a[&b"dt-000"[..].to_vec()];
    assert_eq!(
        (*dt, val),
        (i64::from(SNAPPY | JSON), &compress(&doc(0)).to_vec())
    );
    let (dt, val, _, cas) = &rows_a[&b"dt-080"[..].to_vec()];
    assert_eq!(
        (*dt, val),
        (
            i64::from(XATTR | SNAPPY | JSON),
            &compress(&with_xattrs(80)).to_vec()
        )
    );
    assert_eq!(cas, "1000080");
    transfer_ok(ba.to_str().unwrap(), &b.spec(), DEST);
    transfer_ok(&b.spec(), bb.to_str().unwrap(), SRC);
    let rows_b = backup_rows(&bb);
    // Every value, datatype, flags and cas as it was in the first cluster.
    let differ: Vec<String> = rows_a
        .iter()
        .filter(|(k, v)| rows_b.get(*k) != Some(v))
        .map(|(k, (dt, val, flags, cas))| {
            let b = rows_b.get(k);
            format!(
                "{}: dtype {dt} -> {:?}, {} bytes -> {:?}, flags {flags} -> {:?}, cas {cas} -> {:?}",
                String::from_utf8_lossy(k),
                b.map(|x| x.0),
                val.len(),
                b.map(|x| x.1.len()),
                b.map(|x| x.2),
                b.map(|x| &x.3)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of 100 differ:\n{}",
        differ.len(),
        differ[..differ.len().min(6)].join("\n")
    );
    assert_eq!(rows_a.len(), rows_b.len());
}

#[test]
fn exported_to_csv_or_memcached_values_come_out_decompressed() {
    let c = LocalCluster::up(2, 0, &["--user", "U", "--password", "P"]);
    load(&c);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("items.csv");
    transfer_ok(&c.spec(), &format!("csv:{}", csv.display()), SRC);
    let rows = csv_rows(&csv);
    let head = &rows[0];
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let row = |k: &str| rows.iter().find(|r| r[0] == k).unwrap().clone();
    let r = row("dt-001");
    assert_eq!(r[col("dtype")], JSON.to_string());
    assert!(
        r[col("value")].starts_with("b'{\"id\":1,\"rows\":["),
        "{}",
        r[col("value")]
    );
    let r = row("dt-090");
    assert_eq!(r[col("dtype")], (XATTR | JSON).to_string());
    assert!(r[col("value")].contains("_sync") && r[col("value")].contains("\"id\":90"));
    // A plain memcached gets each document's body, decompressed.
    let mc = Memcached::start(&[]);
    transfer_ok(&c.spec(), &mc.url(), SRC);
    let mut t = mc.text();
    let got = t.get_many(&["dt-002".to_string(), "dt-095".to_string()]);
    assert_eq!(got[0].as_ref().unwrap().value, doc(2));
    assert_eq!(got[1].as_ref().unwrap().value, doc(95));
}
