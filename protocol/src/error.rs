//! The protocol crate's error type.

use thiserror::Error;

/// What can be wrong with bytes read from the wire.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The first byte of a frame was neither 0x80 (request) nor 0x81 (response).
    #[error("bad magic byte 0x{0:02x}: the stream is not memcached binary protocol or lost sync")]
    BadMagic(u8),
    /// A frame declared a body larger than the configured maximum.
    #[error("frame declares a body of {declared} bytes, above the maximum of {max}")]
    TooLarge { declared: u32, max: u32 },
    /// extras + key lengths exceed the declared body length.
    #[error("frame declares extras {extlen} + key {keylen} bytes but a body of only {body}")]
    BadLengths { extlen: u8, keylen: u16, body: u32 },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// A typed message was asked of a packet that does not have its shape.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A SASL exchange that cannot go on (never holds a password or key).
    #[error("SASL: {0}")]
    Sasl(String),
    /// An I/O error from the transport.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Malformed`].
    pub fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        ProtocolError::Malformed {
            what,
            reason: reason.into(),
        }
    }
}
