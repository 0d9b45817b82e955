//! Persistence: a whole-bucket snapshot file, written atomically (temp file + rename).
//!
//! ```text
//! "PUMPNODE2" | u16 nvb | u32 len | the collections manifest (JSON) | per vbucket: u8 state
//!   | u64 high_seqno | u16 nfailover | nfailover × (u64 uuid, u64 seqno) | u32 nitems
//!   | nitems × item
//! item: u16 keylen | key (LEB128 collection id, then the key) | u32 vallen | value
//!   | u32 flags | u32 expiry | u64 cas | u64 by_seqno | u64 rev_seqno | u8 datatype | u8 deleted
//! "PUMPNODE1" (before collections): no manifest; every key is of the default collection
//! ```
//!
//! The node writes it every second while something changed and on a clean stop, so a node
//! restarted on the same directory keeps its items, seqnos and vbucket uuids.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write as _};
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pump_protocol::dcp::FailoverEntry;
use pump_protocol::VbucketState;

use pump_protocol::collections::Manifest;

use crate::store::{Bucket, Item, Vbucket};

const MAGIC: &[u8] = b"PUMPNODE2";
/// The snapshot of a node without collections: keys without their collection id.
const MAGIC_V1: &[u8] = b"PUMPNODE1";

/// Writes `bucket` to `path` (through `path.tmp`, renamed).
pub fn save(bucket: &Bucket, path: &Path) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let f = pump_files::replace_private(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(MAGIC)?;
    w.write_all(&bucket.num_vbuckets().to_be_bytes())?;
    let manifest = bucket.manifest().to_json().to_string();
    w.write_all(&(manifest.len() as u32).to_be_bytes())?;
    w.write_all(manifest.as_bytes())?;
    let mut buf = BytesMut::with_capacity(1 << 16);
    for vb in 0..bucket.num_vbuckets() {
        let Some(v) = bucket.vb(vb) else { continue };
        buf.put_u8(v.state as u8);
        buf.put_u64(v.high_seqno);
        buf.put_u16(v.failover.len() as u16);
        for e in &v.failover {
            buf.put_u64(e.uuid);
            buf.put_u64(e.seqno);
        }
        buf.put_u32(v.items.len() as u32);
        for (k, i) in &v.items {
            buf.put_u16(k.len() as u16);
            buf.put_slice(k);
            buf.put_u32(i.value.len() as u32);
            buf.put_slice(&i.value);
            buf.put_u32(i.flags);
            buf.put_u32(i.expiry);
            buf.put_u64(i.cas);
            buf.put_u64(i.by_seqno);
            buf.put_u64(i.rev_seqno);
            buf.put_u8(i.datatype);
            buf.put_u8(i.deleted as u8);
            if buf.len() > 1 << 20 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        drop(v);
        w.write_all(&buf)?;
        buf.clear();
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    pump_files::Perms::for_name(path).apply(&f)?;
    std::fs::rename(&tmp, path)
}

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: corrupt snapshot ({what})", path.display()),
    )
}

/// Reads a snapshot: its vbuckets and manifest; Ok(None) when the file does not exist.
pub fn load(path: &Path) -> io::Result<Option<(Vec<Vbucket>, Manifest)>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut all = Vec::new();
    f.read_to_end(&mut all)?;
    let mut b = Bytes::from(all);
    let need = |b: &Bytes, n: usize, what: &str| {
        if b.remaining() < n {
            Err(corrupt(path, what))
        } else {
            Ok(())
        }
    };
    need(&b, MAGIC.len() + 2, "header")?;
    let v1 = &b[..MAGIC.len()] == MAGIC_V1;
    if &b[..MAGIC.len()] != MAGIC && !v1 {
        return Err(corrupt(path, "magic"));
    }
    b.advance(MAGIC.len());
    let nvb = b.get_u16();
    let manifest = if v1 {
        Manifest::default()
    } else {
        need(&b, 4, "manifest")?;
        let n = b.get_u32() as usize;
        need(&b, n, "manifest")?;
        let text = b.split_to(n);
        Manifest::from_json(&text).map_err(|e| corrupt(path, &e.to_string()))?
    };
    let mut vbs = Vec::with_capacity(nvb as usize);
    for _ in 0..nvb {
        need(&b, 1 + 8 + 2, "vbucket")?;
        let state =
            VbucketState::from_u32(u32::from(b.get_u8())).ok_or_else(|| corrupt(path, "state"))?;
        let high_seqno = b.get_u64();
        let nf = b.get_u16() as usize;
        need(&b, nf * 16 + 4, "failover log")?;
        let failover = (0..nf)
            .map(|_| FailoverEntry {
                uuid: b.get_u64(),
                seqno: b.get_u64(),
            })
            .collect();
        let n = b.get_u32() as usize;
        let mut items = crate::store::ItemMap::with_capacity_and_hasher(n, Default::default());
        let mut by_seqno = BTreeMap::new();
        for _ in 0..n {
            need(&b, 2, "key")?;
            let kl = b.get_u16() as usize;
            need(&b, kl + 4, "key")?;
            let key = if v1 {
                crate::store::doc_key(0, &b.split_to(kl))
            } else {
                b.split_to(kl)
            };
            let vl = b.get_u32() as usize;
            need(&b, vl + 4 + 4 + 8 + 8 + 8 + 2, "item")?;
            let value = b.split_to(vl);
            let item = Item {
                value,
                flags: b.get_u32(),
                expiry: b.get_u32(),
                cas: b.get_u64(),
                by_seqno: b.get_u64(),
                rev_seqno: b.get_u64(),
                datatype: b.get_u8(),
                deleted: b.get_u8() != 0,
            };
            by_seqno.insert(item.by_seqno, key.clone());
            items.insert(key, item);
        }
        vbs.push(Vbucket {
            state,
            items,
            by_seqno,
            high_seqno,
            failover,
            replica: None,
        });
    }
    Ok(Some((vbs, manifest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Write, WriteMode, CLIENT_STATES};

    #[test]
    fn a_saved_bucket_loads_with_the_same_items_seqnos_and_uuids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default.snap");
        let b = Bucket::new("default", 8, VbucketState::Active);
        for i in 0..100u32 {
            let key = Bytes::from(format!("key{i}"));
            let vb = pump_protocol::vbucket_of(&key, 8);
            let key = crate::store::doc_key(0, &key);
            let w = Write {
                key,
                value: Bytes::from(vec![b'x'; i as usize]),
                flags: i,
                expiry: 0,
                datatype: 0,
                cas: 0,
                mode: WriteMode::Set,
            };
            b.write(vb, w, CLIENT_STATES).unwrap();
        }
        b.delete(
            pump_protocol::vbucket_of(b"key5", 8),
            crate::store::doc_key(0, b"key5"),
            0,
            CLIENT_STATES,
        )
        .unwrap();
        save(&b, &path).unwrap();
        let (vbs, manifest) = load(&path).unwrap().unwrap();
        assert_eq!(manifest, *b.manifest());
        let loaded = Bucket::from_parts("default", vbs, manifest);
        for vb in 0..8 {
            let (x, y) = (b.vb(vb).unwrap(), loaded.vb(vb).unwrap());
            assert_eq!(x.items, y.items);
            assert_eq!(x.by_seqno, y.by_seqno);
            assert_eq!(x.high_seqno, y.high_seqno);
            assert_eq!(x.failover, y.failover);
        }
    }
}
