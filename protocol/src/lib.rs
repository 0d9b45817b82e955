//! The memcached binary protocol as Couchbase speaks it, with its TAP and DCP extensions.
//!
//! ```text
//! header.rs   the 24-byte header: magic, opcode, key/extras lengths, vbucket or status, ...
//! opcode.rs   Opcode and Status, every value the project uses
//! packet.rs   Packet: a header plus extras, key and value sliced from one buffer
//! codec.rs    PacketCodec: tokio-util Decoder/Encoder, body length checked before reserving
//! vbucket.rs  the CRC32 vbucket hash and vbucket states
//! tap.rs      typed TAP messages (TAP_CONNECT and its flags, MUTATION, ACK, byte-order fixup)
//! dcp.rs      typed DCP messages (OPEN, STREAM_REQ, SNAPSHOT_MARKER, MUTATION, BUFFER_ACK, ...)
//! hello.rs    HELLO features (Feature, FeatureSet), the request and the agreed subset
//! sasl.rs     SASL: PLAIN, SCRAM-SHA512/256/1 client and server (RFC 5802, RFC 7677)
//! error_map.rs GET_ERROR_MAP: every status's name, description and attributes, as JSON
//! datatype.rs the datatype bits, snappy (de)compression, the xattr section of a value
//! meta.rs     SET/ADD/DEL_WITH_META extras, revision-based conflict resolution, mutation tokens
//! ```
//!
//! Every multi-byte field is big-endian. Decoding never copies a key or value: they are
//! `Bytes` slices of the frame they arrived in.

pub mod codec;
pub mod datatype;
pub mod dcp;
pub mod error;
pub mod error_map;
pub mod header;
pub mod hello;
pub mod meta;
pub mod opcode;
pub mod packet;
pub mod sasl;
pub mod tap;
pub mod vbucket;

pub use codec::{PacketCodec, DEFAULT_MAX_BODY};
pub use error::ProtocolError;
pub use header::{Header, Magic, HEADER_LEN};
pub use hello::{Feature, FeatureSet};
pub use opcode::{Opcode, Status};
pub use packet::Packet;
pub use vbucket::{vbucket_of, VbucketState};
