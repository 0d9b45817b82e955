//! TAP: TAP_CONNECT (flags and their option data) and the producer's messages.
//!
//! ```text
//! input     TAP frames (opcodes 0x40-0x47, extras of the sizes TAP uses or any, an
//!           engine-specific length that may lie, keys, values, connect option data),
//!           encoded, damaged by edits, decoded by the codec
//! checks    no panic; a message or connect accepted re-encodes and decodes to itself
//! ```

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump_protocol::tap::{TapConnect, TapMessage};
use pump_protocol::{Magic, Opcode, Packet, PacketCodec};
use tokio_util::codec::{Decoder, Encoder};

use crate::mutate::{apply, edits, Edit};

/// A TAP-shaped request: extras of 4 (connect), 8 or 16 bytes (or any), the first u16 of
/// the extras an engine-specific length that fits or not, and option data for a connect.
fn tap_packet() -> impl Strategy<Value = Packet> {
    (
        0x40u8..0x48,
        prop_oneof![Just(4usize), Just(8), Just(16), 0usize..24],
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(op, nextras, es_len, vb, opaque, extras, key, value)| {
            let mut ex = BytesMut::new();
            ex.put_u16(es_len % 48);
            ex.extend_from_slice(&extras);
            ex.resize(nextras, 0);
            if op == 0x40 {
                ex.truncate(4);
            }
            Packet {
                magic: Magic::Request,
                opcode: Opcode::from(op),
                datatype: 0,
                vbucket_or_status: vb,
                opaque,
                cas: 0,
                extras: ex.freeze(),
                key: key.into(),
                value: value.into(),
            }
        })
}

/// A valid TAP_CONNECT with every option.
fn connect() -> impl Strategy<Value = Packet> {
    (
        prop::collection::vec(any::<u8>(), 0..20),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(prop::collection::vec(any::<u16>(), 0..8)),
        proptest::option::of(prop::collection::vec((any::<u16>(), any::<u64>()), 0..4)),
        any::<u32>(),
    )
        .prop_map(
            |(name, flags, backfill_since, vbuckets, checkpoints, opaque)| {
                TapConnect {
                    name: name.into(),
                    flags,
                    backfill_since,
                    vbuckets,
                    checkpoints,
                    opaque,
                }
                .to_packet()
            },
        )
}

/// Input: frames, then edits over their bytes.
pub type Input = (Vec<Packet>, Vec<Edit>);

fn input() -> impl Strategy<Value = Input> {
    (
        prop::collection::vec(prop_oneof![3 => tap_packet(), 1 => connect()], 1..4),
        edits(4),
    )
}

/// Every frame of `bytes`, as far as the codec reads.
pub fn frames(bytes: &[u8]) -> Vec<Packet> {
    let mut codec = PacketCodec::default();
    let mut src = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(p)) = codec.decode(&mut src) {
        out.push(p);
    }
    out
}

fn encode(frames: &[Packet]) -> Result<Vec<u8>, String> {
    let mut b = BytesMut::new();
    for f in frames {
        PacketCodec::default()
            .encode(f, &mut b)
            .map_err(|e| e.to_string())?;
    }
    Ok(b.to_vec())
}

fn check((sent, edits): &Input) -> Result<(), String> {
    let bytes = apply(&encode(sent)?, edits, None);
    for p in frames(&bytes) {
        if p.opcode == Opcode::TapConnect {
            if let Ok(c) = TapConnect::from_packet(&p) {
                let again = frames(&encode(&[c.to_packet()])?);
                let back = again.first().map(TapConnect::from_packet);
                if back.as_ref().map(|r| r.as_ref().ok()) != Some(Some(&c)) {
                    return Err(format!("{c:?} decodes back as {back:?}"));
                }
            }
            continue;
        }
        if let Ok(m) = TapMessage::from_packet(&p) {
            let mut b = BytesMut::new();
            m.encode(&mut b);
            let again = frames(&b);
            let back = again.first().map(TapMessage::from_packet);
            if back.as_ref().map(|r| r.as_ref().ok()) != Some(Some(&m)) {
                return Err(format!("{m:?} decodes back as {back:?}"));
            }
            // What a consumer does with a message: never a panic.
            let _ = m.fixed_item_flags();
            let _ = m.vbucket_state();
            let _ = m.ack_reply();
        }
    }
    Ok(())
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    crate::check_all(runner, input(), check)
}
