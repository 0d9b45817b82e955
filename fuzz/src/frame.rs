//! The memcached binary codec ([`PacketCodec`]) on requests and responses.
//!
//! ```text
//! input     1 to 4 frames (any opcode, extras, key, value, status, cas, opaque), encoded,
//!           then damaged by edits; or plain random bytes
//! checks    decoding never panics; the same stream fed whole or split at any byte gives the
//!           same frames and the same end; each frame decoded re-encodes to exactly the bytes
//!           it came from; undamaged frames come back equal; a body longer than the maximum
//!           is refused before any memory is reserved for it; a frame cut at the end is an
//!           error at EOF
//! ```

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump_protocol::{Magic, Opcode, Packet, PacketCodec, ProtocolError, HEADER_LEN};
use tokio_util::codec::{Decoder, Encoder};

use crate::mutate::{apply, edits, Edit};

/// A frame with any field, of either direction.
pub fn packet() -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        prop_oneof![any::<u8>(), 0x40u8..0x60],
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..48),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(request, opcode, datatype, vbs, opaque, cas, extras, key, value)| Packet {
                magic: if request {
                    Magic::Request
                } else {
                    Magic::Response
                },
                opcode: Opcode::from(opcode),
                datatype,
                vbucket_or_status: vbs,
                opaque,
                cas,
                extras: extras.into(),
                key: key.into(),
                value: value.into(),
            },
        )
}

/// What a case decodes.
#[derive(Debug, Clone)]
pub enum Input {
    /// Frames encoded, then edited; the codec's maximum body; where to split the stream.
    Frames {
        frames: Vec<Packet>,
        edits: Vec<Edit>,
        max_body: u32,
        split: usize,
    },
    /// Any bytes.
    Raw { bytes: Vec<u8>, split: usize },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (
            prop::collection::vec(packet(), 1..4),
            edits(6),
            prop_oneof![Just(pump_protocol::DEFAULT_MAX_BODY), 0u32..512],
            any::<usize>()
        )
            .prop_map(|(frames, edits, max_body, split)| Input::Frames {
                frames,
                edits,
                max_body,
                split
            }),
        1 => (prop::collection::vec(any::<u8>(), 0..200), any::<usize>())
            .prop_map(|(bytes, split)| Input::Raw { bytes, split }),
    ]
}

/// How a stream ended: every frame decoded, what was left, or the error.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Leftover(usize),
    Error(String),
}

/// The frames of a stream, each with the bytes it came from, and how the stream ended.
type Decoded = (Vec<(Packet, Vec<u8>)>, End);

/// Decodes `bytes` fed in two parts (at `split`): the frames with the bytes each came from,
/// and how the stream ended. Checks the codec's memory bound on the way.
fn decode(bytes: &[u8], split: usize, max_body: u32) -> Result<Decoded, String> {
    let mut codec = PacketCodec::with_max_body(max_body);
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    let split = split % (bytes.len() + 1);
    let bound = HEADER_LEN + max_body as usize + bytes.len();
    for part in [&bytes[..split], &bytes[split..]] {
        src.extend_from_slice(part);
        loop {
            let before = src.clone();
            match codec.decode(&mut src) {
                Ok(Some(p)) => {
                    let used = before.len() - src.len();
                    out.push((p, before[..used].to_vec()));
                }
                Ok(None) => {
                    if src.capacity() > bound.max(64 << 10) {
                        return Err(format!(
                            "the codec reserved {} bytes for a stream of {} (maximum body {max_body})",
                            src.capacity(),
                            bytes.len()
                        ));
                    }
                    break;
                }
                Err(e) => return Ok((out, End::Error(e.to_string()))),
            }
        }
    }
    let end = match codec.decode_eof(&mut src) {
        Ok(None) if src.is_empty() => End::Clean,
        Ok(None) => End::Leftover(src.len()),
        Ok(Some(p)) => return Err(format!("decode_eof found a frame decode missed: {p:?}")),
        Err(ProtocolError::Truncated(n)) => End::Leftover(n),
        Err(e) => End::Error(e.to_string()),
    };
    Ok((out, end))
}

fn check(input: &Input) -> Result<(), String> {
    let (bytes, split, max_body, sent) = match input {
        Input::Frames {
            frames,
            edits,
            max_body,
            split,
        } => {
            let mut b = BytesMut::new();
            for f in frames {
                let mut codec = PacketCodec::default();
                codec.encode(f, &mut b).map_err(|e| e.to_string())?;
            }
            let sent = edits.is_empty().then_some(frames);
            (apply(&b, edits, None), *split, *max_body, sent)
        }
        Input::Raw { bytes, split } => {
            (bytes.clone(), *split, pump_protocol::DEFAULT_MAX_BODY, None)
        }
    };
    let (whole, whole_end) = decode(&bytes, 0, max_body)?;
    let (parts, parts_end) = decode(&bytes, split, max_body)?;
    if whole.len() != parts.len() || whole_end != parts_end {
        return Err(format!(
            "fed whole: {} frames, {whole_end:?}; split at {split}: {} frames, {parts_end:?}",
            whole.len(),
            parts.len()
        ));
    }
    for ((a, wire), (b, _)) in whole.iter().zip(&parts) {
        if a != b {
            return Err(format!("whole and split decode differ: {a:?} / {b:?}"));
        }
        if a.to_bytes()[..] != wire[..] {
            return Err(format!("{a:?} re-encodes to other bytes than it came from"));
        }
    }
    if let Some(frames) = sent {
        let fits = frames
            .iter()
            .all(|f| f.wire_len() - HEADER_LEN <= max_body as usize);
        if fits {
            let got: Vec<&Packet> = whole.iter().map(|(p, _)| p).collect();
            let want: Vec<&Packet> = frames.iter().collect();
            if got != want || whole_end != End::Clean {
                return Err(format!(
                    "undamaged frames came back as {got:?}, {whole_end:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    crate::check_all(runner, input(), check)
}
