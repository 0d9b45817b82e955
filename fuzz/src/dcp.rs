//! DCP: the messages a producer sends and a consumer answers, stream-request replies and
//! failover logs.
//!
//! ```text
//! input     DCP frames (opcodes 0x50-0x5f, extras of the sizes DCP uses: 0, 4, 8, 18, 20,
//!           31, 48, or any; nmeta that fits or not; keys, values), requests and replies,
//!           encoded, damaged by edits, decoded by the codec
//! checks    no panic; a message, reply or failover log accepted re-encodes and decodes to
//!           itself
//! ```

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump_protocol::dcp::{decode_failover_log, encode_failover_log, DcpMessage, StreamReqReply};
use pump_protocol::{Magic, Opcode, Packet};

use crate::mutate::{apply, edits, Edit};
use crate::tap::frames;

fn dcp_packet() -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        0x50u8..0x60,
        prop_oneof![
            Just(0usize),
            Just(4),
            Just(8),
            Just(18),
            Just(20),
            Just(31),
            Just(48),
            0usize..56
        ],
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 56),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(
            |(request, op, nextras, vbs, opaque, cas, extras, key, value)| Packet {
                magic: if request {
                    Magic::Request
                } else {
                    Magic::Response
                },
                opcode: Opcode::from(op),
                datatype: 0,
                vbucket_or_status: if request { vbs } else { vbs % 0x30 },
                opaque,
                cas,
                extras: extras[..nextras].to_vec().into(),
                key: key.into(),
                value: value.into(),
            },
        )
}

/// Input: frames, then edits over their bytes.
pub type Input = (Vec<Packet>, Vec<Edit>);

fn input() -> impl Strategy<Value = Input> {
    (prop::collection::vec(dcp_packet(), 1..4), edits(4))
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    p.encode(&mut b);
    b.to_vec()
}

fn check((sent, edits): &Input) -> Result<(), String> {
    let bytes: Vec<u8> = sent.iter().flat_map(encode).collect();
    let bytes = apply(&bytes, edits, None);
    for p in frames(&bytes) {
        if p.magic == Magic::Request {
            if let Ok(m) = DcpMessage::from_packet(&p) {
                let back = frames(&encode(&m.to_packet()))
                    .first()
                    .map(DcpMessage::from_packet);
                if back.as_ref().map(|r| r.as_ref().ok()) != Some(Some(&m)) {
                    return Err(format!("{m:?} decodes back as {back:?}"));
                }
                let _ = m.wire_len();
            }
        } else if p.opcode == Opcode::DcpStreamReq {
            if let Ok(r) = StreamReqReply::from_packet(&p) {
                let back = frames(&encode(&r.to_packet(p.opaque)))
                    .first()
                    .map(StreamReqReply::from_packet);
                if back.as_ref().map(|r| r.as_ref().ok()) != Some(Some(&r)) {
                    return Err(format!("{r:?} decodes back as {back:?}"));
                }
            }
        }
        if let Ok(log) = decode_failover_log(&p.value) {
            let back = decode_failover_log(&encode_failover_log(&log));
            if back.as_ref().ok() != Some(&log) {
                return Err(format!("failover log {log:?} decodes back as {back:?}"));
            }
        }
    }
    Ok(())
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    crate::check_all(runner, input(), check)
}
