//! Values as the node keeps them and as each connection sees them.
//!
//! ```text
//! in  (SET, ADD, REPLACE, APPEND...): datatype bits must be ones the connection negotiated
//!     (JSON, SNAPPY; XATTR only through the with-meta and replication paths), a snappy value
//!     must decompress, JSON is decided here (the client's bit is not trusted). A snappy value
//!     is kept compressed unless it saves less than 1/6 (Couchbase's min_compression_ratio 1.2).
//! out (GET, TAP, DCP): SNAPPY as stored to a connection that negotiated it, decompressed for
//!     the others; xattrs only where asked for (DCP INCLUDE_XATTRS), the body alone otherwise.
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use pump_protocol::datatype::{self, JSON, SNAPPY, XATTR};
use pump_protocol::Status;

/// The largest document body the node stores (Couchbase's default item size limit).
pub const MAX_ITEM: usize = 20 * 1024 * 1024;

/// Below this ratio of decompressed to compressed size, a snappy value is stored decompressed.
const MIN_COMPRESSION_RATIO: f64 = 1.2;

/// True when `v` is one JSON value (Couchbase checks each document itself).
pub fn is_json(v: &[u8]) -> bool {
    let first = v.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
        }
        _ => false,
    }
}

/// Why an input value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: Status,
    pub reason: String,
}

fn refused(status: Status, reason: impl Into<String>) -> Refused {
    Refused {
        status,
        reason: reason.into(),
    }
}

/// Checks a client's value: `allowed` are the datatype bits this command takes, `enabled` the
/// bits the connection negotiated. Returns the datatype and bytes to store.
pub fn accept(
    datatype: u8,
    value: &Bytes,
    allowed: u8,
    enabled: u8,
) -> Result<(u8, Bytes), Refused> {
    if !datatype::is_valid(datatype) || datatype & !allowed != 0 {
        return Err(refused(
            Status::Einval,
            format!("datatype {} is not valid here", datatype::name(datatype)),
        ));
    }
    if datatype & !enabled != 0 {
        return Err(refused(
            Status::Einval,
            format!(
                "datatype ({}) not enabled for the connection",
                datatype::name(datatype & !enabled)
            ),
        ));
    }
    let (inflated, store_compressed) = if datatype & SNAPPY != 0 {
        let n = datatype::decompressed_len(value)
            .map_err(|e| refused(Status::Einval, e.to_string()))?;
        if n > MAX_ITEM {
            return Err(refused(Status::E2big, format!("{n} bytes decompressed")));
        }
        let inflated = datatype::decompress(value, MAX_ITEM)
            .map_err(|e| refused(Status::Einval, e.to_string()))?;
        let ratio = inflated.len() as f64 / value.len().max(1) as f64;
        (inflated, ratio >= MIN_COMPRESSION_RATIO)
    } else {
        (value.clone(), false)
    };
    let body = if datatype & XATTR != 0 {
        let (_, body) = datatype::split_xattrs(&inflated)
            .map_err(|e| refused(Status::XattrEinval, e.to_string()))?;
        body
    } else {
        inflated.clone()
    };
    let json = if is_json(&body) { JSON } else { 0 };
    let kept = datatype & XATTR;
    if store_compressed {
        Ok((kept | SNAPPY | json, value.clone()))
    } else {
        Ok((kept | json, inflated))
    }
}

/// The value of a stored item as a connection sees it: kept compressed only for `snappy`,
/// with its xattrs only for `xattrs`. A stored value that cannot be read (never written so)
/// goes out as stored.
pub fn present(datatype: u8, value: &Bytes, snappy: bool, xattrs: bool) -> (u8, Bytes) {
    let strip = datatype & XATTR != 0 && !xattrs;
    let inflate = datatype & SNAPPY != 0 && (!snappy || strip);
    if !inflate && !strip {
        return (datatype, value.clone());
    }
    let r = if strip {
        datatype::body_only(datatype, value, MAX_ITEM)
    } else {
        datatype::inflate(datatype, value, MAX_ITEM)
    };
    r.unwrap_or_else(|_| (datatype, value.clone()))
}

/// A new body for a document that held xattrs: the old xattrs first, then `value`, never
/// compressed (Couchbase keeps a document's xattrs across a full-body write).
pub fn keep_xattrs(old_dt: u8, old: &Bytes, new_dt: u8, new: &Bytes) -> (u8, Bytes) {
    let Ok((_, old_plain)) = datatype::inflate(old_dt, old, MAX_ITEM) else {
        return (new_dt, new.clone());
    };
    let Ok((section, _)) = datatype::split_xattrs(&old_plain) else {
        return (new_dt, new.clone());
    };
    let (dt, body) = datatype::inflate(new_dt, new, MAX_ITEM).unwrap_or((new_dt, new.clone()));
    let body = if dt & XATTR != 0 {
        datatype::split_xattrs(&body)
            .map(|(_, b)| b)
            .unwrap_or(body)
    } else {
        body
    };
    let mut b = BytesMut::with_capacity(section.len() + body.len());
    b.put_slice(&section);
    b.put_slice(&body);
    ((dt & JSON) | XATTR, b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_doc(n: usize) -> Bytes {
        let mut s = String::from("{\"items\":[");
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{{\"id\":{i},\"name\":\"item number {i}\"}}"));
        }
        s.push_str("]}");
        Bytes::from(s)
    }

    #[test]
    fn json_is_detected_whatever_the_client_says() {
        let all = JSON | SNAPPY | XATTR;
        assert_eq!(accept(0, &json_doc(2), all, all).unwrap().0, JSON);
        assert_eq!(
            accept(JSON, &Bytes::from_static(b"not json"), all, all)
                .unwrap()
                .0,
            0
        );
        assert_eq!(
            accept(0, &Bytes::from_static(b"0123456789"), all, all)
                .unwrap()
                .0,
            0
        );
        assert!(is_json(b" 12 "));
        assert!(!is_json(b""));
    }

    #[test]
    fn snappy_needs_the_feature_and_must_decompress() {
        let doc = json_doc(500);
        let c = datatype::compress(&doc);
        let e = accept(SNAPPY, &c, JSON | SNAPPY, JSON).unwrap_err();
        assert_eq!(e.status, Status::Einval);
        assert!(e.reason.contains("snappy"), "{}", e.reason);
        let (dt, v) = accept(SNAPPY | JSON, &c, JSON | SNAPPY, JSON | SNAPPY).unwrap();
        assert_eq!((dt, &v), (SNAPPY | JSON, &c));
        let bad = accept(
            SNAPPY,
            &Bytes::from_static(b"\x10garbage"),
            JSON | SNAPPY,
            SNAPPY,
        );
        assert_eq!(bad.unwrap_err().status, Status::Einval);
        // A value that barely compresses is stored decompressed.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let nc = datatype::compress(&noise);
        let (dt, v) = accept(SNAPPY, &nc, SNAPPY, SNAPPY).unwrap();
        assert_eq!(dt, 0);
        assert!(v[..] == noise[..], "stored decompressed");
        // XATTR is refused where it is not allowed.
        assert_eq!(
            accept(XATTR, &doc, JSON | SNAPPY, 7).unwrap_err().status,
            Status::Einval
        );
    }

    #[test]
    fn a_value_is_presented_as_each_connection_negotiated() {
        let doc = json_doc(200);
        let section = datatype::build_xattrs(&[(b"_sync", b"1")]);
        let mut full = BytesMut::from(&section[..]);
        full.put_slice(&doc);
        let full = full.freeze();
        let stored = datatype::compress(&full);
        let dt = SNAPPY | XATTR | JSON;
        assert_eq!(present(dt, &stored, true, true), (dt, stored.clone()));
        assert_eq!(
            present(dt, &stored, false, true),
            (XATTR | JSON, full.clone())
        );
        assert_eq!(present(dt, &stored, true, false), (JSON, doc.clone()));
        assert_eq!(present(JSON, &doc, false, false), (JSON, doc.clone()));
        let (kdt, kept) = keep_xattrs(dt, &stored, SNAPPY, &datatype::compress(b"new body"));
        assert_eq!(kdt, XATTR);
        assert_eq!(
            datatype::split_xattrs(&kept).unwrap(),
            (section, Bytes::from_static(b"new body"))
        );
    }
}
