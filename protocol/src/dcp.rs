//! Typed DCP messages.
//!
//! ```text
//! OPEN            extras 8:  u32 seqno | u32 flags (0x01 PRODUCER, 0x04 INCLUDE_XATTRS, 0x08 NO_VALUE); key: name
//! CONTROL         key: setting name, value: setting value
//! STREAM_REQ      extras 48: u32 flags | u32 reserved | u64 start | u64 end | u64 vbucket_uuid
//!                            | u64 snap_start | u64 snap_end
//!                 reply OK: value = failover log, (u64 uuid, u64 seqno) pairs newest first
//!                 reply ROLLBACK (0x23): value = u64 seqno
//! SNAPSHOT_MARKER extras 20: u64 start | u64 end | u32 type (0x01 memory, 0x02 disk)
//! MUTATION        extras 31: u64 by_seqno | u64 rev_seqno | u32 flags | u32 expiration
//!                            | u32 lock_time | u16 nmeta | u8 nru; key; value then nmeta bytes
//! DELETION,       extras 18: u64 by_seqno | u64 rev_seqno | u16 nmeta; key; value then nmeta bytes
//! EXPIRATION
//! STREAM_END      extras 4:  u32 reason (0 ok, 1 closed, 2 state changed, 3 disconnected, 4 slow)
//! SET_VBUCKET_STATE extras 1: u8 state
//! NOOP            a request from the producer; the consumer answers it (0x81, same opaque)
//! BUFFER_ACK      extras 4:  u32 bytes processed
//! SYSTEM_EVENT    extras 13: u64 by_seqno | u32 event | u8 version; key; value
//!                 (a collection or scope created or dropped: crate::collections)
//! STREAM_REQ's value: the collections filter (JSON, crate::collections::StreamFilter)
//! ```
//!
//! On a connection that negotiated COLLECTIONS (HELLO) every item key starts with its LEB128
//! collection id (crate::collections::split_key).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::header::{Magic, HEADER_LEN};
use crate::opcode::{Opcode, Status};
use crate::packet::Packet;
use crate::vbucket::VbucketState;

/// DCP_OPEN flags.
pub mod open_flags {
    pub const PRODUCER: u32 = 0x01;
    pub const INCLUDE_XATTRS: u32 = 0x04;
    pub const NO_VALUE: u32 = 0x08;
}

/// SNAPSHOT_MARKER types.
pub mod snapshot_type {
    pub const MEMORY: u32 = 0x01;
    pub const DISK: u32 = 0x02;
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEndReason {
    Ok,
    Closed,
    StateChanged,
    Disconnected,
    TooSlow,
    Other(u32),
}

impl StreamEndReason {
    /// The wire value.
    pub fn value(self) -> u32 {
        match self {
            StreamEndReason::Ok => 0,
            StreamEndReason::Closed => 1,
            StreamEndReason::StateChanged => 2,
            StreamEndReason::Disconnected => 3,
            StreamEndReason::TooSlow => 4,
            StreamEndReason::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => StreamEndReason::Ok,
            1 => StreamEndReason::Closed,
            2 => StreamEndReason::StateChanged,
            3 => StreamEndReason::Disconnected,
            4 => StreamEndReason::TooSlow,
            v => StreamEndReason::Other(v),
        }
    }
}

/// One failover log entry: the vbucket's uuid from `seqno` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverEntry {
    pub uuid: u64,
    pub seqno: u64,
}

/// Encodes a failover log (newest first) as a reply value.
pub fn encode_failover_log(log: &[FailoverEntry]) -> Bytes {
    let mut b = BytesMut::with_capacity(log.len() * 16);
    for e in log {
        b.put_u64(e.uuid);
        b.put_u64(e.seqno);
    }
    b.freeze()
}

/// Decodes a failover log.
pub fn decode_failover_log(mut v: &[u8]) -> Result<Vec<FailoverEntry>, ProtocolError> {
    if !v.len().is_multiple_of(16) {
        return Err(ProtocolError::malformed(
            "failover log",
            format!("{} bytes is not a multiple of 16", v.len()),
        ));
    }
    let mut out = Vec::with_capacity(v.len() / 16);
    while v.has_remaining() {
        out.push(FailoverEntry {
            uuid: v.get_u64(),
            seqno: v.get_u64(),
        });
    }
    Ok(out)
}

/// A STREAM_REQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamRequest {
    pub vbucket: u16,
    pub opaque: u32,
    pub flags: u32,
    pub start: u64,
    pub end: u64,
    pub vbucket_uuid: u64,
    pub snap_start: u64,
    pub snap_end: u64,
}

/// The answer to a STREAM_REQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamReqReply {
    /// Accepted; the vbucket's failover log, newest first.
    Ok(Vec<FailoverEntry>),
    /// The consumer must roll back to this seqno and ask again.
    Rollback(u64),
    /// Refused with another status.
    Err(Status),
}

impl StreamReqReply {
    /// Encodes the reply to `req`.
    pub fn to_packet(&self, opaque: u32) -> Packet {
        let base = Packet {
            magic: Magic::Response,
            opaque,
            ..Packet::request(Opcode::DcpStreamReq)
        };
        match self {
            StreamReqReply::Ok(log) => base
                .with_status(Status::Success)
                .with_value(encode_failover_log(log)),
            StreamReqReply::Rollback(seqno) => base
                .with_status(Status::Rollback)
                .with_value(Bytes::copy_from_slice(&seqno.to_be_bytes())),
            StreamReqReply::Err(s) => base.with_status(*s),
        }
    }

    /// Decodes a STREAM_REQ response.
    pub fn from_packet(p: &Packet) -> Result<StreamReqReply, ProtocolError> {
        match p.status() {
            Status::Success => Ok(StreamReqReply::Ok(decode_failover_log(&p.value)?)),
            Status::Rollback => {
                if p.value.len() != 8 {
                    return Err(ProtocolError::malformed(
                        "STREAM_REQ rollback",
                        format!("value of {} bytes, expected 8", p.value.len()),
                    ));
                }
                Ok(StreamReqReply::Rollback((&p.value[..]).get_u64()))
            }
            s => Ok(StreamReqReply::Err(s)),
        }
    }
}

/// A DCP MUTATION, DELETION or EXPIRATION.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DcpItem {
    pub vbucket: u16,
    pub opaque: u32,
    pub cas: u64,
    pub datatype: u8,
    pub by_seqno: u64,
    pub rev_seqno: u64,
    /// MUTATION only.
    pub flags: u32,
    /// MUTATION only.
    pub expiration: u32,
    /// MUTATION only.
    pub lock_time: u32,
    /// MUTATION only.
    pub nru: u8,
    pub key: Bytes,
    pub value: Bytes,
    /// Extended metadata (the `nmeta` bytes after the value).
    pub meta: Bytes,
}

/// Every DCP message this crate types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcpMessage {
    Open {
        opaque: u32,
        name: Bytes,
        seqno: u32,
        flags: u32,
    },
    Control {
        opaque: u32,
        key: Bytes,
        value: Bytes,
    },
    StreamReq(StreamRequest),
    CloseStream {
        opaque: u32,
        vbucket: u16,
    },
    GetFailoverLog {
        opaque: u32,
        vbucket: u16,
    },
    SnapshotMarker {
        opaque: u32,
        vbucket: u16,
        start: u64,
        end: u64,
        kind: u32,
    },
    Mutation(DcpItem),
    Deletion(DcpItem),
    Expiration(DcpItem),
    StreamEnd {
        opaque: u32,
        vbucket: u16,
        reason: StreamEndReason,
    },
    SetVbucketState {
        opaque: u32,
        vbucket: u16,
        state: VbucketState,
    },
    Noop {
        opaque: u32,
    },
    BufferAck {
        opaque: u32,
        bytes: u32,
    },
    /// A collection or scope event; `event`, `version`, `key` and `value` as
    /// [`crate::collections::SystemEvent::decode`] reads them.
    SystemEvent {
        opaque: u32,
        vbucket: u16,
        by_seqno: u64,
        event: u32,
        version: u8,
        key: Bytes,
        value: Bytes,
    },
}

fn need(what: &'static str, extras: &[u8], n: usize) -> Result<(), ProtocolError> {
    if extras.len() != n {
        return Err(ProtocolError::malformed(
            what,
            format!("{} bytes of extras, expected {n}", extras.len()),
        ));
    }
    Ok(())
}

fn split_meta(
    what: &'static str,
    value: &Bytes,
    nmeta: u16,
) -> Result<(Bytes, Bytes), ProtocolError> {
    let n = nmeta as usize;
    if n > value.len() {
        return Err(ProtocolError::malformed(
            what,
            format!("nmeta {n} is longer than the {} value bytes", value.len()),
        ));
    }
    let at = value.len() - n;
    Ok((value.slice(..at), value.slice(at..)))
}

impl DcpMessage {
    /// Decodes a request packet as a DCP message.
    pub fn from_packet(p: &Packet) -> Result<DcpMessage, ProtocolError> {
        let ex = &p.extras[..];
        let mut e = ex;
        let opaque = p.opaque;
        let vbucket = p.vbucket();
        Ok(match p.opcode {
            Opcode::DcpOpen => {
                need("DCP_OPEN", ex, 8)?;
                DcpMessage::Open {
                    opaque,
                    name: p.key.clone(),
                    seqno: e.get_u32(),
                    flags: e.get_u32(),
                }
            }
            Opcode::DcpControl => DcpMessage::Control {
                opaque,
                key: p.key.clone(),
                value: p.value.clone(),
            },
            Opcode::DcpStreamReq => {
                need("DCP_STREAM_REQ", ex, 48)?;
                let flags = e.get_u32();
                e.advance(4);
                DcpMessage::StreamReq(StreamRequest {
                    vbucket,
                    opaque,
                    flags,
                    start: e.get_u64(),
                    end: e.get_u64(),
                    vbucket_uuid: e.get_u64(),
                    snap_start: e.get_u64(),
                    snap_end: e.get_u64(),
                })
            }
            Opcode::DcpCloseStream => DcpMessage::CloseStream { opaque, vbucket },
            Opcode::DcpGetFailoverLog => DcpMessage::GetFailoverLog { opaque, vbucket },
            Opcode::DcpSnapshotMarker => {
                need("DCP_SNAPSHOT_MARKER", ex, 20)?;
                DcpMessage::SnapshotMarker {
                    opaque,
                    vbucket,
                    start: e.get_u64(),
                    end: e.get_u64(),
                    kind: e.get_u32(),
                }
            }
            Opcode::DcpMutation => {
                need("DCP_MUTATION", ex, 31)?;
                let by_seqno = e.get_u64();
                let rev_seqno = e.get_u64();
                let flags = e.get_u32();
                let expiration = e.get_u32();
                let lock_time = e.get_u32();
                let nmeta = e.get_u16();
                let nru = e.get_u8();
                let (value, meta) = split_meta("DCP_MUTATION", &p.value, nmeta)?;
                DcpMessage::Mutation(DcpItem {
                    vbucket,
                    opaque,
                    cas: p.cas,
                    datatype: p.datatype,
                    by_seqno,
                    rev_seqno,
                    flags,
                    expiration,
                    lock_time,
                    nru,
                    key: p.key.clone(),
                    value,
                    meta,
                })
            }
            Opcode::DcpDeletion | Opcode::DcpExpiration => {
                let what = if p.opcode == Opcode::DcpDeletion {
                    "DCP_DELETION"
                } else {
                    "DCP_EXPIRATION"
                };
                need(what, ex, 18)?;
                let by_seqno = e.get_u64();
                let rev_seqno = e.get_u64();
                let nmeta = e.get_u16();
                let (value, meta) = split_meta(what, &p.value, nmeta)?;
                let item = DcpItem {
                    vbucket,
                    opaque,
                    cas: p.cas,
                    datatype: p.datatype,
                    by_seqno,
                    rev_seqno,
                    key: p.key.clone(),
                    value,
                    meta,
                    ..DcpItem::default()
                };
                if p.opcode == Opcode::DcpDeletion {
                    DcpMessage::Deletion(item)
                } else {
                    DcpMessage::Expiration(item)
                }
            }
            Opcode::DcpStreamEnd => {
                need("DCP_STREAM_END", ex, 4)?;
                DcpMessage::StreamEnd {
                    opaque,
                    vbucket,
                    reason: StreamEndReason::from_u32(e.get_u32()),
                }
            }
            Opcode::DcpSetVbucketState => {
                need("DCP_SET_VBUCKET_STATE", ex, 1)?;
                let s = e.get_u8();
                let state = VbucketState::from_u32(u32::from(s)).ok_or_else(|| {
                    ProtocolError::malformed("DCP_SET_VBUCKET_STATE", format!("state {s}"))
                })?;
                DcpMessage::SetVbucketState {
                    opaque,
                    vbucket,
                    state,
                }
            }
            Opcode::DcpNoop => DcpMessage::Noop { opaque },
            Opcode::DcpSystemEvent => {
                need("DCP_SYSTEM_EVENT", ex, 13)?;
                DcpMessage::SystemEvent {
                    opaque,
                    vbucket,
                    by_seqno: e.get_u64(),
                    event: e.get_u32(),
                    version: e.get_u8(),
                    key: p.key.clone(),
                    value: p.value.clone(),
                }
            }
            Opcode::DcpBufferAck => {
                need("DCP_BUFFER_ACK", ex, 4)?;
                DcpMessage::BufferAck {
                    opaque,
                    bytes: e.get_u32(),
                }
            }
            other => {
                return Err(ProtocolError::malformed(
                    "DCP message",
                    format!("opcode {other:?} is not a DCP request"),
                ))
            }
        })
    }

    /// Encodes the message as a request packet.
    pub fn to_packet(&self) -> Packet {
        let mut ex = BytesMut::new();
        let p = match self {
            DcpMessage::Open {
                opaque,
                name,
                seqno,
                flags,
            } => {
                ex.put_u32(*seqno);
                ex.put_u32(*flags);
                Packet::request(Opcode::DcpOpen)
                    .with_opaque(*opaque)
                    .with_key(name.clone())
            }
            DcpMessage::Control { opaque, key, value } => Packet::request(Opcode::DcpControl)
                .with_opaque(*opaque)
                .with_key(key.clone())
                .with_value(value.clone()),
            DcpMessage::StreamReq(r) => {
                ex.put_u32(r.flags);
                ex.put_u32(0);
                ex.put_u64(r.start);
                ex.put_u64(r.end);
                ex.put_u64(r.vbucket_uuid);
                ex.put_u64(r.snap_start);
                ex.put_u64(r.snap_end);
                Packet::request(Opcode::DcpStreamReq)
                    .with_opaque(r.opaque)
                    .with_vbucket(r.vbucket)
            }
            DcpMessage::CloseStream { opaque, vbucket } => Packet::request(Opcode::DcpCloseStream)
                .with_opaque(*opaque)
                .with_vbucket(*vbucket),
            DcpMessage::GetFailoverLog { opaque, vbucket } => {
                Packet::request(Opcode::DcpGetFailoverLog)
                    .with_opaque(*opaque)
                    .with_vbucket(*vbucket)
            }
            DcpMessage::SnapshotMarker {
                opaque,
                vbucket,
                start,
                end,
                kind,
            } => {
                ex.put_u64(*start);
                ex.put_u64(*end);
                ex.put_u32(*kind);
                Packet::request(Opcode::DcpSnapshotMarker)
                    .with_opaque(*opaque)
                    .with_vbucket(*vbucket)
            }
            DcpMessage::Mutation(i) => {
                ex.put_u64(i.by_seqno);
                ex.put_u64(i.rev_seqno);
                ex.put_u32(i.flags);
                ex.put_u32(i.expiration);
                ex.put_u32(i.lock_time);
                ex.put_u16(i.meta.len() as u16);
                ex.put_u8(i.nru);
                item_packet(Opcode::DcpMutation, i)
            }
            DcpMessage::Deletion(i) | DcpMessage::Expiration(i) => {
                ex.put_u64(i.by_seqno);
                ex.put_u64(i.rev_seqno);
                ex.put_u16(i.meta.len() as u16);
                let op = if matches!(self, DcpMessage::Deletion(_)) {
                    Opcode::DcpDeletion
                } else {
                    Opcode::DcpExpiration
                };
                item_packet(op, i)
            }
            DcpMessage::StreamEnd {
                opaque,
                vbucket,
                reason,
            } => {
                ex.put_u32(reason.value());
                Packet::request(Opcode::DcpStreamEnd)
                    .with_opaque(*opaque)
                    .with_vbucket(*vbucket)
            }
            DcpMessage::SetVbucketState {
                opaque,
                vbucket,
                state,
            } => {
                ex.put_u8(*state as u8);
                Packet::request(Opcode::DcpSetVbucketState)
                    .with_opaque(*opaque)
                    .with_vbucket(*vbucket)
            }
            DcpMessage::Noop { opaque } => Packet::request(Opcode::DcpNoop).with_opaque(*opaque),
            DcpMessage::BufferAck { opaque, bytes } => {
                ex.put_u32(*bytes);
                Packet::request(Opcode::DcpBufferAck).with_opaque(*opaque)
            }
            DcpMessage::SystemEvent {
                opaque,
                vbucket,
                by_seqno,
                event,
                version,
                key,
                value,
            } => {
                ex.put_u64(*by_seqno);
                ex.put_u32(*event);
                ex.put_u8(*version);
                Packet::request(Opcode::DcpSystemEvent)
                    .with_opaque(*opaque)
                    .with_vbucket(*vbucket)
                    .with_key(key.clone())
                    .with_value(value.clone())
            }
        };
        p.with_extras(ex.freeze())
    }

    /// Bytes this message takes on the wire (what flow control counts).
    pub fn wire_len(&self) -> usize {
        self.to_packet().wire_len()
    }
}

fn item_packet(op: Opcode, i: &DcpItem) -> Packet {
    let value = if i.meta.is_empty() {
        i.value.clone()
    } else {
        let mut v = BytesMut::with_capacity(i.value.len() + i.meta.len());
        v.put_slice(&i.value);
        v.put_slice(&i.meta);
        v.freeze()
    };
    Packet::request(op)
        .with_opaque(i.opaque)
        .with_vbucket(i.vbucket)
        .with_cas(i.cas)
        .with_datatype(i.datatype)
        .with_key(i.key.clone())
        .with_value(value)
}

/// Bytes a DCP mutation of this key/value/meta takes on the wire: header + 31 + key + value +
/// meta. Producers use it for flow control without encoding twice.
pub fn mutation_wire_len(key: usize, value: usize, meta: usize) -> usize {
    HEADER_LEN + 31 + key + value + meta
}

/// The answer a consumer sends to a producer's NOOP.
pub fn noop_reply(opaque: u32) -> Packet {
    Packet {
        magic: Magic::Response,
        opaque,
        ..Packet::request(Opcode::DcpNoop)
    }
    .with_status(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PacketCodec;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    fn round_trip(m: &DcpMessage) -> DcpMessage {
        let mut buf = BytesMut::new();
        PacketCodec::default()
            .encode(m.to_packet(), &mut buf)
            .unwrap();
        assert_eq!(buf.len(), m.wire_len());
        let p = PacketCodec::default().decode(&mut buf).unwrap().unwrap();
        DcpMessage::from_packet(&p).unwrap()
    }

    #[test]
    fn every_control_message_round_trips() {
        let msgs = vec![
            DcpMessage::Open {
                opaque: 1,
                name: Bytes::from_static(b"pump"),
                seqno: 0,
                flags: open_flags::PRODUCER,
            },
            DcpMessage::Control {
                opaque: 2,
                key: Bytes::from_static(b"connection_buffer_size"),
                value: Bytes::from_static(b"4194304"),
            },
            DcpMessage::StreamReq(StreamRequest {
                vbucket: 5,
                opaque: 3,
                flags: 0,
                start: 10,
                end: u64::MAX,
                vbucket_uuid: 99,
                snap_start: 10,
                snap_end: 10,
            }),
            DcpMessage::CloseStream {
                opaque: 4,
                vbucket: 5,
            },
            DcpMessage::GetFailoverLog {
                opaque: 5,
                vbucket: 6,
            },
            DcpMessage::SnapshotMarker {
                opaque: 6,
                vbucket: 7,
                start: 1,
                end: 100,
                kind: snapshot_type::DISK,
            },
            DcpMessage::StreamEnd {
                opaque: 7,
                vbucket: 8,
                reason: StreamEndReason::StateChanged,
            },
            DcpMessage::SetVbucketState {
                opaque: 8,
                vbucket: 9,
                state: VbucketState::Replica,
            },
            DcpMessage::Noop { opaque: 9 },
            DcpMessage::BufferAck {
                opaque: 10,
                bytes: 123456,
            },
            DcpMessage::SystemEvent {
                opaque: 11,
                vbucket: 0x210,
                by_seqno: 4,
                event: 0,
                version: 1,
                key: Bytes::from_static(b"mycollection"),
                value: Bytes::from_static(&[
                    0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, 0x19, 0x40,
                ]),
            },
        ];
        for m in msgs {
            assert_eq!(round_trip(&m), m);
        }
    }

    #[test]
    fn a_system_event_is_the_69_bytes_of_the_documented_example() {
        let m = DcpMessage::SystemEvent {
            opaque: 0x1210,
            vbucket: 0x210,
            by_seqno: 4,
            event: 0,
            version: 1,
            key: Bytes::from_static(b"mycollection"),
            value: Bytes::from_static(&[
                0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, 0x19, 0x40,
            ]),
        };
        let mut buf = BytesMut::new();
        PacketCodec::default()
            .encode(m.to_packet(), &mut buf)
            .unwrap();
        assert_eq!(buf.len(), 69);
        assert_eq!(&buf[..8], &[0x80, 0x5f, 0x00, 0x0c, 0x0d, 0x00, 0x02, 0x10]);
        assert_eq!(&buf[24..37], &[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1]);
        assert!(DcpMessage::from_packet(
            &Packet::request(Opcode::DcpSystemEvent).with_extras(vec![0u8; 12])
        )
        .is_err());
    }

    #[test]
    fn stream_req_extras_are_48_bytes_in_spec_order() {
        let p = DcpMessage::StreamReq(StreamRequest {
            start: 1,
            end: 2,
            vbucket_uuid: 3,
            snap_start: 4,
            snap_end: 5,
            ..StreamRequest::default()
        })
        .to_packet();
        assert_eq!(p.extras.len(), 48);
        assert_eq!(&p.extras[8..16], &1u64.to_be_bytes());
        assert_eq!(&p.extras[40..48], &5u64.to_be_bytes());
    }

    #[test]
    fn stream_req_replies_carry_failover_log_or_rollback_seqno() {
        let log = vec![
            FailoverEntry {
                uuid: 7,
                seqno: 100,
            },
            FailoverEntry { uuid: 3, seqno: 0 },
        ];
        for reply in [
            StreamReqReply::Ok(log),
            StreamReqReply::Rollback(42),
            StreamReqReply::Err(Status::NotMyVbucket),
        ] {
            let p = reply.to_packet(11);
            assert_eq!(p.opaque, 11);
            assert_eq!(StreamReqReply::from_packet(&p).unwrap(), reply);
        }
        assert!(decode_failover_log(&[0; 15]).is_err());
    }

    #[test]
    fn wrong_extras_lengths_are_malformed() {
        let p = Packet::request(Opcode::DcpMutation).with_extras(vec![0u8; 18]);
        assert!(DcpMessage::from_packet(&p).is_err());
        let mut p = DcpMessage::Mutation(DcpItem {
            key: Bytes::from_static(b"k"),
            ..DcpItem::default()
        })
        .to_packet();
        let mut ex = p.extras.to_vec();
        ex[28..30].copy_from_slice(&100u16.to_be_bytes()); // nmeta past the value
        p.extras = ex.into();
        assert!(DcpMessage::from_packet(&p).is_err());
    }

    #[test]
    fn mutation_wire_len_matches_encoding() {
        let i = DcpItem {
            key: Bytes::from_static(b"key"),
            value: Bytes::from_static(b"value"),
            meta: Bytes::from_static(b"mm"),
            ..DcpItem::default()
        };
        assert_eq!(
            DcpMessage::Mutation(i).wire_len(),
            mutation_wire_len(3, 5, 2)
        );
    }

    proptest! {
        #[test]
        fn any_item_round_trips(
            which in 0..3u8, vb in any::<u16>(), opaque in any::<u32>(), cas in any::<u64>(), dt in any::<u8>(),
            by_seqno in any::<u64>(), rev in any::<u64>(), flags in any::<u32>(), exp in any::<u32>(), lock in any::<u32>(), nru in any::<u8>(),
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..512),
            meta in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut i = DcpItem { vbucket: vb, opaque, cas, datatype: dt, by_seqno, rev_seqno: rev, key: key.into(), value: value.into(), meta: meta.into(), ..DcpItem::default() };
            let m = match which {
                0 => { i.flags = flags; i.expiration = exp; i.lock_time = lock; i.nru = nru; DcpMessage::Mutation(i) }
                1 => DcpMessage::Deletion(i),
                _ => DcpMessage::Expiration(i),
            };
            prop_assert_eq!(round_trip(&m), m);
        }
    }
}
