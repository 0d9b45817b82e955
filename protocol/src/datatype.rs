//! The datatype byte and the value layouts it announces: JSON, snappy, xattrs.
//!
//! ```text
//! datatype bits: 0x01 JSON | 0x02 SNAPPY (the whole value is raw snappy) | 0x04 XATTR
//! XATTR value:   u32 xattr_len | xattr_len bytes of pairs | document body
//!                pair: u32 pair_len | key | 0x00 | value | 0x00      (pair_len counts key..0x00)
//! SNAPPY|XATTR:  the snappy blob holds both, the xattrs first
//! ```
//!
//! Snappy is the raw format (no framing), through the `snap` crate. A compressed value is
//! checked against a size limit from its header before anything is allocated for it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// No bit: raw bytes.
pub const RAW: u8 = 0x00;
/// The document is JSON.
pub const JSON: u8 = 0x01;
/// The value is snappy-compressed.
pub const SNAPPY: u8 = 0x02;
/// The value starts with an xattr section.
pub const XATTR: u8 = 0x04;
/// Every defined bit.
pub const ALL: u8 = JSON | SNAPPY | XATTR;

/// True when `datatype` has no undefined bit.
pub fn is_valid(datatype: u8) -> bool {
    datatype & !ALL == 0
}

/// The bits as kv_engine's logs name them ("raw", "json,snappy", ...).
pub fn name(datatype: u8) -> String {
    if datatype == RAW {
        return "raw".into();
    }
    let mut parts = Vec::new();
    for (bit, name) in [(JSON, "json"), (SNAPPY, "snappy"), (XATTR, "xattr")] {
        if datatype & bit != 0 {
            parts.push(name.to_string());
        }
    }
    if datatype & !ALL != 0 {
        parts.push(format!("0x{:02x}", datatype & !ALL));
    }
    parts.join(",")
}

/// Snappy-compresses `value` (raw format).
pub fn compress(value: &[u8]) -> Bytes {
    let mut out = vec![0u8; snap::raw::max_compress_len(value.len())];
    match snap::raw::Encoder::new().compress(value, &mut out) {
        Ok(n) => {
            out.truncate(n);
            Bytes::from(out)
        }
        // Only an input above 2^32 - 1 bytes fails; frames are far smaller.
        Err(_) => Bytes::copy_from_slice(value),
    }
}

/// The length a snappy value says it decompresses to.
pub fn decompressed_len(value: &[u8]) -> Result<usize, ProtocolError> {
    snap::raw::decompress_len(value)
        .map_err(|e| ProtocolError::malformed("snappy value", e.to_string()))
}

/// Decompresses a raw snappy `value` of at most `max` bytes once decompressed.
pub fn decompress(value: &[u8], max: usize) -> Result<Bytes, ProtocolError> {
    let n = decompressed_len(value)?;
    if n > max {
        return Err(ProtocolError::malformed(
            "snappy value",
            format!("it decompresses to {n} bytes, above the maximum of {max}"),
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(value)
        .map(Bytes::from)
        .map_err(|e| ProtocolError::malformed("snappy value", e.to_string()))
}

/// The value without snappy: decompressed when `datatype` has SNAPPY (the bit cleared).
pub fn inflate(datatype: u8, value: &Bytes, max: usize) -> Result<(u8, Bytes), ProtocolError> {
    if datatype & SNAPPY == 0 {
        return Ok((datatype, value.clone()));
    }
    Ok((datatype & !SNAPPY, decompress(value, max)?))
}

/// Splits an (uncompressed) XATTR value into its xattr section (with its length prefix) and
/// the document body; checks the section's layout.
pub fn split_xattrs(value: &Bytes) -> Result<(Bytes, Bytes), ProtocolError> {
    let bad = |reason: String| ProtocolError::malformed("xattr value", reason);
    if value.len() < 4 {
        return Err(bad(format!(
            "{} bytes cannot hold the xattr length",
            value.len()
        )));
    }
    let len = u32::from_be_bytes([value[0], value[1], value[2], value[3]]) as usize;
    if len > value.len() - 4 {
        return Err(bad(format!(
            "xattr length {len} is past the {} bytes of the value",
            value.len() - 4
        )));
    }
    let section = value.slice(..4 + len);
    xattr_pairs(&section)?;
    Ok((section, value.slice(4 + len..)))
}

/// One xattr: key and value.
pub type XattrPair<'a> = (&'a [u8], &'a [u8]);

/// The (key, value) pairs of an xattr section (with its length prefix).
pub fn xattr_pairs(section: &[u8]) -> Result<Vec<XattrPair<'_>>, ProtocolError> {
    let bad = |reason: String| ProtocolError::malformed("xattr section", reason);
    if section.len() < 4 {
        return Err(bad("no length".into()));
    }
    let mut rest = &section[4..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad(format!(
                "{} stray bytes after the last pair",
                rest.len()
            )));
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if n > rest.len() - 4 || n < 3 {
            return Err(bad(format!(
                "a pair of {n} bytes in {} left",
                rest.len() - 4
            )));
        }
        let pair = &rest[4..4 + n];
        let nul = pair
            .iter()
            .position(|b| *b == 0)
            .filter(|i| *i > 0 && *i < n - 1)
            .ok_or_else(|| bad("a pair without its key's NUL".into()))?;
        if pair[n - 1] != 0 {
            return Err(bad("a pair whose value does not end with NUL".into()));
        }
        out.push((&pair[..nul], &pair[nul + 1..n - 1]));
        rest = &rest[4 + n..];
    }
    Ok(out)
}

/// Builds an xattr section (length prefix included) from pairs.
pub fn build_xattrs(pairs: &[XattrPair<'_>]) -> Bytes {
    let body: usize = pairs.iter().map(|(k, v)| 4 + k.len() + v.len() + 2).sum();
    let mut b = BytesMut::with_capacity(4 + body);
    b.put_u32(body as u32);
    for (k, v) in pairs {
        b.put_u32((k.len() + v.len() + 2) as u32);
        b.put_slice(k);
        b.put_u8(0);
        b.put_slice(v);
        b.put_u8(0);
    }
    b.freeze()
}

/// The document body alone: decompressed if needed and without its xattrs, as a client that
/// negotiated neither SNAPPY nor XATTR must see it. Returns the new datatype and value.
pub fn body_only(datatype: u8, value: &Bytes, max: usize) -> Result<(u8, Bytes), ProtocolError> {
    let (dt, v) = inflate(datatype, value, max)?;
    if dt & XATTR == 0 {
        return Ok((dt, v));
    }
    let (_, body) = split_xattrs(&v)?;
    Ok((dt & !XATTR, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_round_trips_and_a_bad_or_oversized_blob_is_refused() {
        let v = Bytes::from(vec![b'a'; 10_000]);
        let c = compress(&v);
        assert!(c.len() < 1000);
        assert_eq!(decompress(&c, 10_000).unwrap(), v);
        assert!(decompress(&c, 9_999)
            .unwrap_err()
            .to_string()
            .contains("above the maximum"));
        assert!(decompress(b"\xff\xff\xff\xff\x0fnot snappy", 1 << 20).is_err());
        assert_eq!(
            inflate(JSON | SNAPPY, &c, 1 << 20).unwrap(),
            (JSON, v.clone())
        );
        assert_eq!(inflate(JSON, &v, 1).unwrap(), (JSON, v));
    }

    #[test]
    fn xattrs_build_split_and_strip() {
        let section = build_xattrs(&[(b"_sync", b"{\"rev\":1}"), (b"meta", b"true")]);
        let mut value = BytesMut::from(&section[..]);
        value.put_slice(b"{\"body\":1}");
        let value = value.freeze();
        let (s, body) = split_xattrs(&value).unwrap();
        assert_eq!(s, section);
        assert_eq!(&body[..], b"{\"body\":1}");
        let pairs = xattr_pairs(&s).unwrap();
        assert_eq!(pairs[0], (&b"_sync"[..], &b"{\"rev\":1}"[..]));
        assert_eq!(pairs[1], (&b"meta"[..], &b"true"[..]));
        let compressed = compress(&value);
        assert_eq!(
            body_only(JSON | XATTR | SNAPPY, &compressed, 1 << 20).unwrap(),
            (JSON, body)
        );
    }

    #[test]
    fn a_corrupt_xattr_section_is_malformed_not_a_panic() {
        for bad in [
            &b"\x00\x00"[..],
            b"\x00\x00\x00\x09abc",
            b"\x00\x00\x00\x04\x00\x00\x00\x09",
            b"\x00\x00\x00\x07\x00\x00\x00\x03ab\x00",
            b"\x00\x00\x00\x08\x00\x00\x00\x04\x00ab\x00",
        ] {
            assert!(
                split_xattrs(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(name(JSON | SNAPPY), "json,snappy");
        assert!(!is_valid(0x08));
    }
}
