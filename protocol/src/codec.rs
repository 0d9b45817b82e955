//! Framing for tokio: [`PacketCodec`] turns a byte stream into [`Packet`]s and back.
//!
//! `decode` answers `Ok(None)` while a frame is incomplete, `Err` when the stream is corrupt
//! (bad magic, lengths that do not add up, a body above the maximum) and checks the declared
//! length against the maximum *before* reserving memory for it. The body is taken with
//! `split_to(..).freeze()`, so extras, key and value are slices of one buffer.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::header::{Header, HEADER_LEN};
use crate::packet::Packet;

/// Default maximum body: 20 MiB, the largest item Couchbase accepts plus room for metadata.
pub const DEFAULT_MAX_BODY: u32 = 20 * 1024 * 1024 + 64 * 1024;

/// A tokio-util codec for memcached binary frames.
#[derive(Debug, Clone, Copy)]
pub struct PacketCodec {
    max_body: u32,
}

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec {
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

impl PacketCodec {
    /// A codec that rejects frames whose body is larger than `max_body` bytes.
    pub fn with_max_body(max_body: u32) -> Self {
        PacketCodec { max_body }
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, ProtocolError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = Header::parse(&src[..HEADER_LEN])?;
        if h.body_len > self.max_body {
            return Err(ProtocolError::TooLarge {
                declared: h.body_len,
                max: self.max_body,
            });
        }
        let frame_len = HEADER_LEN + h.body_len as usize;
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(h.body_len as usize).freeze();
        Ok(Some(Packet::from_parts(&h, body)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, ProtocolError> {
        match self.decode(src)? {
            Some(p) => Ok(Some(p)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated(src.len())),
        }
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.encode(&item, dst)
    }
}

impl Encoder<&Packet> for PacketCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: &Packet, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        if item.extras.len() > u8::MAX as usize || item.key.len() > u16::MAX as usize {
            return Err(ProtocolError::malformed(
                "packet",
                format!(
                    "extras {} / key {} bytes too long",
                    item.extras.len(),
                    item.key.len()
                ),
            ));
        }
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Magic, Opcode, Status};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn arb_packet() -> impl Strategy<Value = Packet> {
        (
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..2000),
        )
            .prop_map(|(req, op, dt, vb, opaque, cas, e, k, v)| Packet {
                magic: if req { Magic::Request } else { Magic::Response },
                opcode: Opcode::from(op),
                datatype: dt,
                vbucket_or_status: vb,
                opaque,
                cas,
                extras: Bytes::from(e),
                key: Bytes::from(k),
                value: Bytes::from(v),
            })
    }

    proptest! {
        #[test]
        fn any_packet_round_trips(p in arb_packet()) {
            let mut buf = BytesMut::new();
            PacketCodec::default().encode(&p, &mut buf).unwrap();
            prop_assert_eq!(buf.len(), p.wire_len());
            let got = PacketCodec::default().decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(got, p);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn several_frames_in_one_read_decode_in_order(ps in proptest::collection::vec(arb_packet(), 1..6)) {
            let mut buf = BytesMut::new();
            for p in &ps { p.encode(&mut buf); }
            let mut codec = PacketCodec::default();
            for p in &ps {
                prop_assert_eq!(&codec.decode(&mut buf).unwrap().unwrap(), p);
            }
            prop_assert!(codec.decode(&mut buf).unwrap().is_none());
        }
    }

    #[test]
    fn a_frame_split_at_every_offset_decodes_once_whole() {
        let p = Packet::request(Opcode::Set)
            .with_vbucket(528)
            .with_opaque(7)
            .with_cas(42)
            .with_extras(vec![0, 0, 0, 1, 0, 0, 0, 2])
            .with_key(&b"hello"[..])
            .with_value(&b"world of values"[..]);
        let wire = p.to_bytes();
        for cut in 0..wire.len() {
            let mut codec = PacketCodec::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
            buf.extend_from_slice(&wire[cut..]);
            assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), p, "cut at {cut}");
        }
    }

    #[test]
    fn a_truncated_frame_at_eof_is_an_error_and_a_clean_eof_is_not() {
        let wire = Packet::request(Opcode::Get).with_key(&b"k"[..]).to_bytes();
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(ProtocolError::Truncated(24))
        ));
        let mut empty = BytesMut::new();
        assert!(codec.decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn an_oversized_body_is_rejected_before_any_memory_is_reserved() {
        let mut h = BytesMut::new();
        Header {
            magic: Magic::Request,
            opcode: 1,
            key_len: 0,
            extras_len: 0,
            datatype: 0,
            vbucket_or_status: 0,
            body_len: u32::MAX,
            opaque: 0,
            cas: 0,
        }
        .write(&mut h);
        let cap = h.capacity();
        let err = PacketCodec::with_max_body(1024).decode(&mut h).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                declared: u32::MAX,
                max: 1024
            }
        ));
        assert_eq!(h.capacity(), cap);
    }

    #[test]
    fn bad_magic_and_inconsistent_lengths_are_corrupt_streams() {
        let mut buf = BytesMut::from(&[0x42u8; 24][..]);
        assert!(matches!(
            PacketCodec::default().decode(&mut buf),
            Err(ProtocolError::BadMagic(0x42))
        ));
        let mut wire = BytesMut::from(
            &Packet::request(Opcode::Get)
                .with_key(&b"abc"[..])
                .to_bytes()[..],
        );
        wire[11] = 1; // body_len = 1 < key_len 3
        assert!(matches!(
            PacketCodec::default().decode(&mut wire),
            Err(ProtocolError::BadLengths {
                keylen: 3,
                body: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_response_carries_its_status() {
        let req = Packet::request(Opcode::Noop).with_opaque(9);
        let res = Packet::response_to(&req, Status::Etmpfail);
        let mut buf = BytesMut::from(&res.to_bytes()[..]);
        let got = PacketCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(got.status(), Status::Etmpfail);
        assert_eq!(got.opaque, 9);
    }
}
