//! One change travelling through the pump.

use bytes::Bytes;

/// What a message does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Op {
    /// Set the key to the value.
    #[default]
    Mutation,
    /// Remove the key.
    Deletion,
    /// The key expired (a DCP expiration); sinks treat it as a deletion.
    Expiration,
}

impl Op {
    /// Every op, in the order of [`Op::index`].
    pub const ALL: [Op; 3] = [Op::Mutation, Op::Deletion, Op::Expiration];

    /// 0 for a mutation, 1 for a deletion, 2 for an expiration: an index into per-op counts.
    pub fn index(self) -> usize {
        match self {
            Op::Mutation => 0,
            Op::Deletion => 1,
            Op::Expiration => 2,
        }
    }

    /// `mutations`, `deletions`, `expirations`: how a summary names them.
    pub fn plural(self) -> &'static str {
        match self {
            Op::Mutation => "mutations",
            Op::Deletion => "deletions",
            Op::Expiration => "expirations",
        }
    }
}

/// One change. Keys, values and metadata are `Bytes` slices of the buffer they were read into.
///
/// A meta2 row travels as a Message too: `vbucket` is the table id, `key` the row's primary
/// key and `value` its columns (see the meta2 kinds for the encoding).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub op: Op,
    pub vbucket: u16,
    pub key: Bytes,
    pub value: Bytes,
    pub flags: u32,
    pub expiry: u32,
    pub cas: u64,
    /// by_seqno: the change's position in its vbucket's history.
    pub seqno: u64,
    pub rev_seqno: u64,
    pub datatype: u8,
    /// Extended metadata (DCP nmeta bytes, the backup format's `meta`).
    pub meta: Bytes,
    pub conflict_res: u8,
}

impl Message {
    /// A mutation of `key` to `value`, everything else zero.
    pub fn mutation(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Message {
        Message {
            key: key.into(),
            value: value.into(),
            ..Message::default()
        }
    }

    /// A deletion of `key`.
    pub fn deletion(key: impl Into<Bytes>) -> Message {
        Message {
            op: Op::Deletion,
            key: key.into(),
            ..Message::default()
        }
    }

    /// Payload bytes: key + value + meta. Batches are sized with this.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + self.meta.len()
    }

    /// True for deletions and expirations.
    pub fn is_removal(&self) -> bool {
        !matches!(self.op, Op::Mutation)
    }

    /// The key for messages and logs: UTF-8 where it is, escaped bytes otherwise.
    pub fn key_display(&self) -> String {
        key_display(&self.key)
    }
}

/// Shows a key as text where it is UTF-8, with escapes otherwise.
pub fn key_display(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.to_string(),
        Err(_) => key.escape_ascii().to_string(),
    }
}
