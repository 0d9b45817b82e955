//! Typed TAP messages (Couchbase 1.x to 4.x).
//!
//! ```text
//! TAP_CONNECT   extras: u32 flags | key: name | value: option data of each set flag, lowest bit first
//!               BACKFILL u64 since | LIST_VBUCKETS u16 n, n × u16 | CHECKPOINT u16 n, n × (u16 vb, u64 id)
//! TAP message   extras: u16 engine_specific_len | u16 tap_flags | u8 ttl | 3 reserved
//!               MUTATION adds u32 item_flags | u32 item_expiry (16 bytes in all)
//!               body: extras | engine-specific bytes (not in extlen) | key | value
//! ```
//!
//! A message with the ACK tap flag must be answered with a response of the same opcode and
//! opaque, status 0 ([`TapMessage::ack_reply`]). Item flags: a message without
//! NETWORK_BYTE_ORDER carries them byte-swapped (old servers wrote host order);
//! [`TapMessage::fixed_item_flags`] undoes that.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::header::{Header, Magic, HEADER_LEN};
use crate::opcode::{Opcode, Status};
use crate::packet::Packet;
use crate::vbucket::VbucketState;

/// TAP_CONNECT flags.
pub mod connect_flags {
    pub const BACKFILL: u32 = 0x01;
    pub const DUMP: u32 = 0x02;
    pub const LIST_VBUCKETS: u32 = 0x04;
    pub const TAKEOVER_VBUCKETS: u32 = 0x08;
    pub const SUPPORT_ACK: u32 = 0x10;
    pub const REQUEST_KEYS_ONLY: u32 = 0x20;
    pub const CHECKPOINT: u32 = 0x40;
    pub const REGISTERED_CLIENT: u32 = 0x80;
    pub const FIX_FLAG_BYTEORDER: u32 = 0x100;
}

/// Flags of each TAP message (the `tap_flags` extras field).
pub mod message_flags {
    /// The receiver must answer with an ack.
    pub const ACK: u16 = 0x01;
    /// The value was left out (REQUEST_KEYS_ONLY).
    pub const NO_VALUE: u16 = 0x02;
    /// Item flags are in network byte order.
    pub const NETWORK_BYTE_ORDER: u16 = 0x04;
}

/// A TAP_CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TapConnect {
    /// The connection name (the key).
    pub name: Bytes,
    /// [`connect_flags`]; the option fields below set their own bits when encoded.
    pub flags: u32,
    /// BACKFILL: send items changed since this time (0 = everything).
    pub backfill_since: Option<u64>,
    /// LIST_VBUCKETS: only these vbuckets.
    pub vbuckets: Option<Vec<u16>>,
    /// CHECKPOINT: (vbucket, checkpoint id) to start from.
    pub checkpoints: Option<Vec<(u16, u64)>>,
    pub opaque: u32,
}

impl TapConnect {
    /// The flags as sent: `flags` plus the bits implied by the option fields.
    pub fn wire_flags(&self) -> u32 {
        let mut f = self.flags;
        if self.backfill_since.is_some() {
            f |= connect_flags::BACKFILL;
        }
        if self.vbuckets.is_some() {
            f |= connect_flags::LIST_VBUCKETS;
        }
        if self.checkpoints.is_some() {
            f |= connect_flags::CHECKPOINT;
        }
        f
    }

    /// True when `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.wire_flags() & flag != 0
    }

    /// Encodes the request.
    pub fn to_packet(&self) -> Packet {
        let flags = self.wire_flags();
        let mut v = BytesMut::new();
        if flags & connect_flags::BACKFILL != 0 {
            v.put_u64(self.backfill_since.unwrap_or(0));
        }
        if flags & connect_flags::LIST_VBUCKETS != 0 {
            let vbs = self.vbuckets.as_deref().unwrap_or(&[]);
            v.put_u16(vbs.len() as u16);
            vbs.iter().for_each(|vb| v.put_u16(*vb));
        }
        if flags & connect_flags::CHECKPOINT != 0 {
            let cps = self.checkpoints.as_deref().unwrap_or(&[]);
            v.put_u16(cps.len() as u16);
            for (vb, id) in cps {
                v.put_u16(*vb);
                v.put_u64(*id);
            }
        }
        Packet::request(Opcode::TapConnect)
            .with_opaque(self.opaque)
            .with_extras(flags.to_be_bytes().to_vec())
            .with_key(self.name.clone())
            .with_value(v.freeze())
    }

    /// Decodes a TAP_CONNECT request; the option data must match the flags exactly.
    pub fn from_packet(p: &Packet) -> Result<TapConnect, ProtocolError> {
        const WHAT: &str = "TAP_CONNECT";
        if p.opcode != Opcode::TapConnect {
            return Err(ProtocolError::malformed(
                WHAT,
                format!("opcode {:?}", p.opcode),
            ));
        }
        let flags = match p.extras.len() {
            0 => 0,
            4 => (&p.extras[..]).get_u32(),
            n => {
                return Err(ProtocolError::malformed(
                    WHAT,
                    format!("{n} bytes of extras, expected 4"),
                ))
            }
        };
        let mut v = &p.value[..];
        let short =
            |field: &str| ProtocolError::malformed(WHAT, format!("value too short for {field}"));
        let mut c = TapConnect {
            name: p.key.clone(),
            flags,
            opaque: p.opaque,
            ..TapConnect::default()
        };
        if flags & connect_flags::BACKFILL != 0 {
            if v.len() < 8 {
                return Err(short("BACKFILL"));
            }
            c.backfill_since = Some(v.get_u64());
        }
        if flags & connect_flags::LIST_VBUCKETS != 0 {
            if v.len() < 2 {
                return Err(short("LIST_VBUCKETS"));
            }
            let n = v.get_u16() as usize;
            if v.len() < n * 2 {
                return Err(short("LIST_VBUCKETS ids"));
            }
            c.vbuckets = Some((0..n).map(|_| v.get_u16()).collect());
        }
        if flags & connect_flags::CHECKPOINT != 0 {
            if v.len() < 2 {
                return Err(short("CHECKPOINT"));
            }
            let n = v.get_u16() as usize;
            if v.len() < n * 10 {
                return Err(short("CHECKPOINT ids"));
            }
            c.checkpoints = Some((0..n).map(|_| (v.get_u16(), v.get_u64())).collect());
        }
        if !v.is_empty() {
            return Err(ProtocolError::malformed(
                WHAT,
                format!("{} bytes of option data left over", v.len()),
            ));
        }
        Ok(c)
    }
}

/// What a TAP message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TapKind {
    Mutation,
    Delete,
    Flush,
    Opaque,
    VbucketSet,
    CheckpointStart,
    CheckpointEnd,
}

impl TapKind {
    /// The opcode.
    pub fn opcode(self) -> Opcode {
        match self {
            TapKind::Mutation => Opcode::TapMutation,
            TapKind::Delete => Opcode::TapDelete,
            TapKind::Flush => Opcode::TapFlush,
            TapKind::Opaque => Opcode::TapOpaque,
            TapKind::VbucketSet => Opcode::TapVbucketSet,
            TapKind::CheckpointStart => Opcode::TapCheckpointStart,
            TapKind::CheckpointEnd => Opcode::TapCheckpointEnd,
        }
    }

    /// The kind of an opcode, if it is a TAP message.
    pub fn from_opcode(op: Opcode) -> Option<TapKind> {
        Some(match op {
            Opcode::TapMutation => TapKind::Mutation,
            Opcode::TapDelete => TapKind::Delete,
            Opcode::TapFlush => TapKind::Flush,
            Opcode::TapOpaque => TapKind::Opaque,
            Opcode::TapVbucketSet => TapKind::VbucketSet,
            Opcode::TapCheckpointStart => TapKind::CheckpointStart,
            Opcode::TapCheckpointEnd => TapKind::CheckpointEnd,
            _ => return None,
        })
    }
}

/// One TAP message (producer to consumer): MUTATION, DELETE, FLUSH, OPAQUE, VBUCKET_SET,
/// CHECKPOINT_START/END.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TapMessage {
    pub kind: Option<TapKind>,
    pub vbucket: u16,
    pub opaque: u32,
    pub cas: u64,
    pub datatype: u8,
    /// [`message_flags`].
    pub tap_flags: u16,
    pub ttl: u8,
    /// Item metadata sent between the extras and the key.
    pub engine_specific: Bytes,
    pub key: Bytes,
    pub value: Bytes,
    /// MUTATION only: the item flags exactly as on the wire (see [`TapMessage::fixed_item_flags`]).
    pub item_flags: u32,
    /// MUTATION only.
    pub item_expiry: u32,
}

impl TapMessage {
    /// A message of `kind` with everything else empty.
    pub fn new(kind: TapKind) -> TapMessage {
        TapMessage {
            kind: Some(kind),
            ttl: 255,
            ..TapMessage::default()
        }
    }

    /// The kind (MUTATION when unset).
    pub fn kind(&self) -> TapKind {
        self.kind.unwrap_or(TapKind::Mutation)
    }

    /// True when the receiver must answer with an ack.
    pub fn wants_ack(&self) -> bool {
        self.tap_flags & message_flags::ACK != 0
    }

    /// The item flags in host order: swapped back unless the message says NETWORK_BYTE_ORDER.
    pub fn fixed_item_flags(&self) -> u32 {
        if self.tap_flags & message_flags::NETWORK_BYTE_ORDER != 0 {
            self.item_flags
        } else {
            self.item_flags.swap_bytes()
        }
    }

    /// Sets item flags the way a producer sends them: in network order with the
    /// NETWORK_BYTE_ORDER flag when the consumer asked for FIX_FLAG_BYTEORDER, byte-swapped
    /// without it otherwise (as old servers did).
    pub fn set_item_flags(&mut self, flags: u32, fix_byteorder: bool) {
        if fix_byteorder {
            self.item_flags = flags;
            self.tap_flags |= message_flags::NETWORK_BYTE_ORDER;
        } else {
            self.item_flags = flags.swap_bytes();
            self.tap_flags &= !message_flags::NETWORK_BYTE_ORDER;
        }
    }

    /// VBUCKET_SET: the state carried in the value.
    pub fn vbucket_state(&self) -> Result<VbucketState, ProtocolError> {
        if self.value.len() != 4 {
            return Err(ProtocolError::malformed(
                "TAP_VBUCKET_SET",
                format!("value of {} bytes, expected 4", self.value.len()),
            ));
        }
        let v = (&self.value[..]).get_u32();
        VbucketState::from_u32(v)
            .ok_or_else(|| ProtocolError::malformed("TAP_VBUCKET_SET", format!("state {v}")))
    }

    /// A VBUCKET_SET message.
    pub fn vbucket_set(vbucket: u16, state: VbucketState) -> TapMessage {
        TapMessage {
            vbucket,
            value: Bytes::copy_from_slice(&(state as u32).to_be_bytes()),
            ..TapMessage::new(TapKind::VbucketSet)
        }
    }

    /// The ack a consumer answers with: same opcode and opaque, status 0.
    pub fn ack_reply(&self) -> Packet {
        Packet {
            magic: Magic::Response,
            opcode: self.kind().opcode(),
            datatype: 0,
            vbucket_or_status: Status::Success.value(),
            opaque: self.opaque,
            cas: 0,
            extras: Bytes::new(),
            key: Bytes::new(),
            value: Bytes::new(),
        }
    }

    /// Encodes straight into `out` (keylen counts the key alone, engine-specific bytes apart).
    pub fn encode(&self, out: &mut BytesMut) {
        TapFrame {
            kind: self.kind(),
            vbucket: self.vbucket,
            opaque: self.opaque,
            cas: self.cas,
            datatype: self.datatype,
            tap_flags: self.tap_flags,
            ttl: self.ttl,
            item_flags: self.item_flags,
            item_expiry: self.item_expiry,
            engine_specific: &self.engine_specific,
            key: &self.key,
            value: &self.value,
        }
        .encode(out);
    }

    /// Decodes a TAP message from a request packet.
    pub fn from_packet(p: &Packet) -> Result<TapMessage, ProtocolError> {
        const WHAT: &str = "TAP message";
        let kind = TapKind::from_opcode(p.opcode).ok_or_else(|| {
            ProtocolError::malformed(WHAT, format!("opcode {:?} is not a TAP message", p.opcode))
        })?;
        let want = if kind == TapKind::Mutation { 16 } else { 8 };
        if p.extras.len() < 8 || (kind == TapKind::Mutation && p.extras.len() < want) {
            return Err(ProtocolError::malformed(
                WHAT,
                format!(
                    "{:?} with {} bytes of extras, expected {want}",
                    kind,
                    p.extras.len()
                ),
            ));
        }
        let mut ex = &p.extras[..];
        let es_len = ex.get_u16() as usize;
        let tap_flags = ex.get_u16();
        let ttl = ex.get_u8();
        ex.advance(3);
        let (item_flags, item_expiry) = if kind == TapKind::Mutation {
            (ex.get_u32(), ex.get_u32())
        } else {
            (0, 0)
        };
        // The decoder sliced `key` right after the extras; with engine-specific bytes the real
        // layout is es | key | value, so re-slice from key+value.
        let (engine_specific, key, value) = if es_len == 0 {
            (Bytes::new(), p.key.clone(), p.value.clone())
        } else {
            let keylen = p.key.len();
            if es_len + keylen > p.key.len() + p.value.len() {
                return Err(ProtocolError::malformed(
                    WHAT,
                    format!("engine-specific length {es_len} runs past the body"),
                ));
            }
            let mut tail = BytesMut::with_capacity(p.key.len() + p.value.len());
            tail.put_slice(&p.key);
            tail.put_slice(&p.value);
            let mut tail = tail.freeze();
            let es = tail.split_to(es_len);
            let key = tail.split_to(keylen);
            (es, key, tail)
        };
        Ok(TapMessage {
            kind: Some(kind),
            vbucket: p.vbucket(),
            opaque: p.opaque,
            cas: p.cas,
            datatype: p.datatype,
            tap_flags,
            ttl,
            engine_specific,
            key,
            value,
            item_flags,
            item_expiry,
        })
    }
}

/// A TAP message with borrowed key and value: what a producer encodes from its store
/// without building a [`TapMessage`] (no allocation, no reference count touched).
#[derive(Debug, Clone, Copy)]
pub struct TapFrame<'a> {
    pub kind: TapKind,
    pub vbucket: u16,
    pub opaque: u32,
    pub cas: u64,
    pub datatype: u8,
    pub tap_flags: u16,
    pub ttl: u8,
    /// MUTATION only, as on the wire.
    pub item_flags: u32,
    /// MUTATION only.
    pub item_expiry: u32,
    pub engine_specific: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl TapFrame<'_> {
    /// Encodes straight into `out`: header, extras (16 for a MUTATION, 8 otherwise),
    /// engine-specific bytes, key, value.
    pub fn encode(&self, out: &mut BytesMut) {
        let extras = if self.kind == TapKind::Mutation {
            16
        } else {
            8
        };
        let body = extras + self.engine_specific.len() + self.key.len() + self.value.len();
        out.reserve(HEADER_LEN + body);
        Header {
            magic: Magic::Request,
            opcode: self.kind.opcode().value(),
            key_len: self.key.len() as u16,
            extras_len: extras as u8,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket,
            body_len: body as u32,
            opaque: self.opaque,
            cas: self.cas,
        }
        .write(out);
        out.put_u16(self.engine_specific.len() as u16);
        out.put_u16(self.tap_flags);
        out.put_u8(self.ttl);
        out.put_slice(&[0, 0, 0]);
        if self.kind == TapKind::Mutation {
            out.put_u32(self.item_flags);
            out.put_u32(self.item_expiry);
        }
        out.put_slice(self.engine_specific);
        out.put_slice(self.key);
        out.put_slice(self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PacketCodec;
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    fn through_the_wire(m: &TapMessage) -> TapMessage {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        let p = PacketCodec::default().decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        TapMessage::from_packet(&p).unwrap()
    }

    #[test]
    fn connect_option_data_follows_flag_bit_order() {
        let c = TapConnect {
            name: Bytes::from_static(b"pump"),
            flags: connect_flags::DUMP
                | connect_flags::SUPPORT_ACK
                | connect_flags::FIX_FLAG_BYTEORDER,
            backfill_since: Some(0),
            vbuckets: Some(vec![1, 2, 1023]),
            checkpoints: None,
            opaque: 0,
        };
        let p = c.to_packet();
        assert_eq!(
            &p.extras[..],
            &(0x1u32 | 0x2 | 0x4 | 0x10 | 0x100).to_be_bytes()
        );
        assert_eq!(
            &p.value[..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 0, 2, 0x03, 0xff]
        );
        let expected = TapConnect {
            flags: c.wire_flags(),
            ..c.clone()
        };
        assert_eq!(TapConnect::from_packet(&p).unwrap(), expected);
    }

    #[test]
    fn a_mutation_with_engine_specific_bytes_has_the_exact_layout_and_round_trips() {
        let m = TapMessage {
            vbucket: 7,
            opaque: 9,
            cas: 11,
            tap_flags: message_flags::ACK,
            engine_specific: Bytes::from_static(&[0xee, 0xee]),
            key: Bytes::from_static(b"k1"),
            value: Bytes::from_static(b"val"),
            item_flags: 0x0102_0304,
            item_expiry: 5,
            ..TapMessage::new(TapKind::Mutation)
        };
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x80, 0x41, 0, 2, 16, 0, 0, 7, 0, 0, 0, 23, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 11,
            0, 2, 0, 1, 255, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 5,
            0xee, 0xee, b'k', b'1', b'v', b'a', b'l',
        ];
        assert_eq!(&buf[..], want);
        assert_eq!(through_the_wire(&m), m);
    }

    #[test]
    fn connect_with_truncated_option_data_is_malformed() {
        let mut p = TapConnect {
            vbuckets: Some(vec![1, 2]),
            ..TapConnect::default()
        }
        .to_packet();
        p.value = p.value.slice(..3);
        assert!(TapConnect::from_packet(&p).is_err());
    }

    #[test]
    fn byte_order_fixup_round_trips_both_ways() {
        for fix in [true, false] {
            let mut m = TapMessage::new(TapKind::Mutation);
            m.set_item_flags(0x0102_0304, fix);
            let got = through_the_wire(&m);
            assert_eq!(got.fixed_item_flags(), 0x0102_0304, "fix={fix}");
            assert_eq!(got.item_flags == 0x0102_0304, fix);
        }
    }

    #[test]
    fn ack_reply_echoes_opcode_and_opaque() {
        let m = TapMessage {
            opaque: 77,
            tap_flags: message_flags::ACK,
            ..TapMessage::new(TapKind::Delete)
        };
        assert!(m.wants_ack());
        let r = m.ack_reply();
        assert_eq!(
            (r.magic, r.opcode, r.opaque, r.status()),
            (Magic::Response, Opcode::TapDelete, 77, Status::Success)
        );
    }

    #[test]
    fn vbucket_set_carries_its_state() {
        let got = through_the_wire(&TapMessage::vbucket_set(9, VbucketState::Replica));
        assert_eq!(
            (got.vbucket, got.vbucket_state().unwrap()),
            (9, VbucketState::Replica)
        );
    }

    #[test]
    fn short_extras_are_malformed() {
        let p = Packet::request(Opcode::TapMutation).with_extras(vec![0u8; 8]);
        assert!(TapMessage::from_packet(&p).is_err());
    }

    proptest! {
        #[test]
        fn any_tap_message_round_trips(
            kind in prop_oneof![Just(TapKind::Mutation), Just(TapKind::Delete), Just(TapKind::Opaque), Just(TapKind::CheckpointStart)],
            vb in any::<u16>(), opaque in any::<u32>(), cas in any::<u64>(), tap_flags in any::<u16>(),
            es in proptest::collection::vec(any::<u8>(), 0..12),
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..256),
            item_flags in any::<u32>(), item_expiry in any::<u32>(),
        ) {
            let mut m = TapMessage {
                vbucket: vb, opaque, cas, tap_flags, engine_specific: es.into(), key: key.into(), value: value.into(),
                ..TapMessage::new(kind)
            };
            if kind == TapKind::Mutation { m.item_flags = item_flags; m.item_expiry = item_expiry; }
            prop_assert_eq!(through_the_wire(&m), m);
        }
    }
}
