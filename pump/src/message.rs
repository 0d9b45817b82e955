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
    /// Not an item: a marker of the stream's own structure, in a payload a kind defines (a
    /// meta2 base's header, a table's schema or its end: `pump_meta2::codec::control`); the
    /// number says which marker, in that kind's own codes. Filters (`-l`, `-k`) and rehash
    /// pass it untouched; a sink of items never receives one (`Registry::pair` refuses the
    /// pairing), and one that does skips it.
    Control(u8),
}

impl Op {
    /// Every op, in the order of [`Op::index`].
    pub const ALL: [Op; 3] = [Op::Mutation, Op::Deletion, Op::Expiration];

    /// 0 for a mutation, 1 for a deletion, 2 for an expiration: an index into per-op counts.
    /// A control message counts with the mutations (a meta2 base's markers travel with its
    /// rows, which are mutations).
    pub fn index(self) -> usize {
        match self {
            Op::Mutation | Op::Control(_) => 0,
            Op::Deletion => 1,
            Op::Expiration => 2,
        }
    }

    /// `mutations`, `deletions`, `expirations`: how a summary names them.
    pub fn plural(self) -> &'static str {
        match self {
            Op::Mutation | Op::Control(_) => "mutations",
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
    /// The collection id (0: the default collection); its name is in the run's
    /// [`crate::RunCollections`].
    pub collection: u32,
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

    /// A control message `code` (see [`Op::Control`]) with its key and value.
    pub fn control(code: u8, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Message {
        Message {
            op: Op::Control(code),
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
        matches!(self.op, Op::Deletion | Op::Expiration)
    }

    /// True for a control message ([`Op::Control`]): not an item.
    pub fn is_control(&self) -> bool {
        matches!(self.op, Op::Control(_))
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
