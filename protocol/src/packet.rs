//! A whole frame: the header plus extras, key and value, each a slice of one buffer.

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::{Header, Magic, HEADER_LEN};
use crate::opcode::{Opcode, Status};

/// One request or response. `extras`, `key` and `value` share the frame's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub magic: Magic,
    pub opcode: Opcode,
    pub datatype: u8,
    /// The vbucket of a request, the status of a response.
    pub vbucket_or_status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Bytes,
    pub key: Bytes,
    pub value: Bytes,
}

impl Packet {
    /// A request with empty extras, key and value.
    pub fn request(opcode: Opcode) -> Packet {
        Packet {
            magic: Magic::Request,
            opcode,
            datatype: 0,
            vbucket_or_status: 0,
            opaque: 0,
            cas: 0,
            extras: Bytes::new(),
            key: Bytes::new(),
            value: Bytes::new(),
        }
    }

    /// A response to `req`: same opcode and opaque, the given status.
    pub fn response_to(req: &Packet, status: Status) -> Packet {
        Packet {
            magic: Magic::Response,
            vbucket_or_status: status.value(),
            opaque: req.opaque,
            ..Packet::request(req.opcode)
        }
    }

    /// Builder: sets the vbucket (requests).
    pub fn with_vbucket(mut self, vb: u16) -> Self {
        self.vbucket_or_status = vb;
        self
    }
    /// Builder: sets the status (responses).
    pub fn with_status(mut self, s: Status) -> Self {
        self.vbucket_or_status = s.value();
        self
    }
    /// Builder: sets the opaque.
    pub fn with_opaque(mut self, opaque: u32) -> Self {
        self.opaque = opaque;
        self
    }
    /// Builder: sets the cas.
    pub fn with_cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }
    /// Builder: sets the datatype.
    pub fn with_datatype(mut self, datatype: u8) -> Self {
        self.datatype = datatype;
        self
    }
    /// Builder: sets the extras.
    pub fn with_extras(mut self, extras: impl Into<Bytes>) -> Self {
        self.extras = extras.into();
        self
    }
    /// Builder: sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = key.into();
        self
    }
    /// Builder: sets the value.
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = value.into();
        self
    }

    /// The status of a response.
    pub fn status(&self) -> Status {
        Status::from(self.vbucket_or_status)
    }

    /// The vbucket of a request.
    pub fn vbucket(&self) -> u16 {
        self.vbucket_or_status
    }

    /// Bytes this packet takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.extras.len() + self.key.len() + self.value.len()
    }

    /// The header this packet encodes with.
    pub fn header(&self) -> Header {
        Header {
            magic: self.magic,
            opcode: self.opcode.value(),
            key_len: self.key.len() as u16,
            extras_len: self.extras.len() as u8,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket_or_status,
            body_len: (self.extras.len() + self.key.len() + self.value.len()) as u32,
            opaque: self.opaque,
            cas: self.cas,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.wire_len());
        self.header().write(out);
        out.put_slice(&self.extras);
        out.put_slice(&self.key);
        out.put_slice(&self.value);
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Builds a packet from a parsed header and its body (extras + key + value), slicing
    /// without copying. The caller has checked `body.len() == header.body_len`.
    pub fn from_parts(h: &Header, body: Bytes) -> Packet {
        let e = h.extras_len as usize;
        let k = e + h.key_len as usize;
        Packet {
            magic: h.magic,
            opcode: Opcode::from(h.opcode),
            datatype: h.datatype,
            vbucket_or_status: h.vbucket_or_status,
            opaque: h.opaque,
            cas: h.cas,
            extras: body.slice(..e),
            key: body.slice(e..k),
            value: body.slice(k..),
        }
    }
}

/// Writes a request straight into `out` without building a [`Packet`]: the hot path of the
/// network sinks, which encode thousands of quiet writes per batch.
#[allow(clippy::too_many_arguments)]
pub fn encode_request(
    out: &mut BytesMut,
    opcode: Opcode,
    vbucket: u16,
    opaque: u32,
    cas: u64,
    datatype: u8,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let body = extras.len() + key.len() + value.len();
    out.reserve(HEADER_LEN + body);
    Header {
        magic: Magic::Request,
        opcode: opcode.value(),
        key_len: key.len() as u16,
        extras_len: extras.len() as u8,
        datatype,
        vbucket_or_status: vbucket,
        body_len: body as u32,
        opaque,
        cas,
    }
    .write(out);
    out.put_slice(extras);
    out.put_slice(key);
    out.put_slice(value);
}
