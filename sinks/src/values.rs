//! A message's value in the form a sink can take it.
//!
//! ```text
//! datatype SNAPPY  -> decompressed, unless the sink takes snappy (a node that agreed to it)
//! datatype XATTR   -> the document body alone, unless the sink keeps xattrs (a backup, CSV)
//! datatype JSON    -> kept only for a sink that takes the JSON bit
//! ```
//!
//! A value that does not decompress (or whose xattr section is corrupt) is passed on as it is,
//! datatype included: the destination refuses it and the key is reported, nothing is guessed.

use bytes::Bytes;
use pump_protocol::datatype::{self, JSON, SNAPPY, XATTR};

/// The largest value a sink decompresses (Couchbase's item size limit).
pub const MAX_VALUE: usize = 20 * 1024 * 1024;

/// What a sink takes of the datatype bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takes {
    pub snappy: bool,
    pub xattrs: bool,
    pub json: bool,
}

impl Takes {
    /// A sink with no datatype (a plain memcached): the body, uncompressed.
    pub const BODY: Takes = Takes {
        snappy: false,
        xattrs: false,
        json: false,
    };
    /// A file that keeps the datatype column (CSV, stdout): uncompressed, xattrs kept.
    pub const UNCOMPRESSED: Takes = Takes {
        snappy: false,
        xattrs: true,
        json: true,
    };
}

/// The datatype and value of a message as a sink that `takes` these bits writes them.
pub fn shaped(dt: u8, value: &Bytes, takes: Takes) -> (u8, Bytes) {
    let strip = dt & XATTR != 0 && !takes.xattrs;
    let inflate = dt & SNAPPY != 0 && (!takes.snappy || strip);
    let (mut dt, v) = if strip {
        match datatype::body_only(dt, value, MAX_VALUE) {
            Ok(x) => x,
            Err(_) => return (dt, value.clone()),
        }
    } else if inflate {
        match datatype::inflate(dt, value, MAX_VALUE) {
            Ok(x) => x,
            Err(_) => return (dt, value.clone()),
        }
    } else {
        (dt, value.clone())
    };
    if !takes.json {
        dt &= !JSON;
    }
    (dt, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn each_sink_gets_what_it_can_take() {
        let section = datatype::build_xattrs(&[(b"_s", b"1")]);
        let mut full = BytesMut::from(&section[..]);
        full.put_slice(b"{\"a\":1}");
        let full = full.freeze();
        let packed = datatype::compress(&full);
        let dt = SNAPPY | XATTR | JSON;
        assert_eq!(
            shaped(dt, &packed, Takes::BODY),
            (0, Bytes::from_static(b"{\"a\":1}"))
        );
        assert_eq!(
            shaped(dt, &packed, Takes::UNCOMPRESSED),
            (XATTR | JSON, full.clone())
        );
        let node = Takes {
            snappy: true,
            xattrs: false,
            json: true,
        };
        assert_eq!(
            shaped(dt, &packed, node),
            (JSON, Bytes::from_static(b"{\"a\":1}"))
        );
        let plain = datatype::compress(b"{\"b\":2}");
        assert_eq!(
            shaped(SNAPPY | JSON, &plain, node),
            (SNAPPY | JSON, plain.clone())
        );
        // A corrupt value goes on as it is, for the destination to refuse.
        let bad = Bytes::from_static(b"\x40nope");
        assert_eq!(shaped(SNAPPY, &bad, Takes::BODY), (SNAPPY, bad.clone()));
    }
}
