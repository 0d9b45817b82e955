//! The 24-byte header that starts every frame.
//!
//! ```text
//!  0      1       2..4     4       5         6..8                 8..12       12..16  16..24
//! magic opcode  keylen  extlen datatype vbucket(req)/status(res) total_body  opaque   cas
//! ```

use bytes::{Buf, BufMut};

use crate::error::ProtocolError;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;

/// Whether a frame is a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// 0x80
    Request,
    /// 0x81
    Response,
}

impl Magic {
    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Magic::Request => 0x80,
            Magic::Response => 0x81,
        }
    }

    /// Parses the wire byte.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0x80 => Ok(Magic::Request),
            0x81 => Ok(Magic::Response),
            other => Err(ProtocolError::BadMagic(other)),
        }
    }
}

/// A decoded header. `vbucket_or_status` is the vbucket in a request and the status in a
/// response; use [`Header::vbucket`] and [`Header::status`] to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: Magic,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub datatype: u8,
    pub vbucket_or_status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    /// Reads a header from exactly [`HEADER_LEN`] bytes; checks the magic and that extras and
    /// key fit in the body.
    pub fn parse(mut b: &[u8]) -> Result<Header, ProtocolError> {
        debug_assert!(b.len() >= HEADER_LEN);
        let magic = Magic::from_byte(b.get_u8())?;
        let h = Header {
            magic,
            opcode: b.get_u8(),
            key_len: b.get_u16(),
            extras_len: b.get_u8(),
            datatype: b.get_u8(),
            vbucket_or_status: b.get_u16(),
            body_len: b.get_u32(),
            opaque: b.get_u32(),
            cas: b.get_u64(),
        };
        if u32::from(h.extras_len) + u32::from(h.key_len) > h.body_len {
            return Err(ProtocolError::BadLengths {
                extlen: h.extras_len,
                keylen: h.key_len,
                body: h.body_len,
            });
        }
        Ok(h)
    }

    /// Writes the 24 bytes, in one copy.
    pub fn write(&self, out: &mut impl BufMut) {
        out.put_slice(&self.to_array());
    }

    /// The 24 bytes.
    pub fn to_array(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.magic.byte();
        b[1] = self.opcode;
        b[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        b[4] = self.extras_len;
        b[5] = self.datatype;
        b[6..8].copy_from_slice(&self.vbucket_or_status.to_be_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        b[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        b[16..24].copy_from_slice(&self.cas.to_be_bytes());
        b
    }

    /// The vbucket of a request.
    pub fn vbucket(&self) -> u16 {
        self.vbucket_or_status
    }

    /// The status of a response.
    pub fn status(&self) -> crate::Status {
        crate::Status::from_u16(self.vbucket_or_status)
    }

    /// Length of the value: body minus extras and key.
    pub fn value_len(&self) -> usize {
        self.body_len as usize - self.extras_len as usize - self.key_len as usize
    }
}
