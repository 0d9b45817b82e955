//! How one message is written into a cluster's node: with its metadata, as cbrestore does.
//!
//! ```text
//! mutation  SETQ_WITH_META (ADDQ_WITH_META with -a)   extras 24 or 28:
//!             u32 flags | u32 expiry (absolute) | u64 rev_seqno (1 when none) | u64 cas
//!             [| u32 options: FORCE_ACCEPT_WITH_META_OPS into a lww bucket]
//!           value as the node agreed to take it: snappy kept where it agreed to SNAPPY,
//!           xattrs kept where it agreed to XATTR (the body alone elsewhere), JSON bit kept
//! removal   DELQ_WITH_META, the same extras, no value
//! plain     -x conflict_resolve=0, or a message without a cas (gen:, a csv: without one):
//!           SETQ/ADDQ (extras u32 flags | u32 expiry), DELETEQ; xattrs left out
//! ```
//! A with-meta write the node's copy wins (conflict resolution: revision seqno or last write
//! wins, as the bucket says) answers KEY_EEXISTS: the newer copy stays, the message is counted
//! as skipped.

use bytes::Bytes;
use pump::Message;
use pump_protocol::datatype::{SNAPPY, XATTR};
use pump_protocol::meta::{options, ConflictResolution, WithMeta};
use pump_protocol::Opcode;

use crate::values::{shaped, Takes};

/// How a sink writes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// SET/ADD/DEL_WITH_META for messages that have a cas (`-x conflict_resolve`, default 1).
    pub with_meta: bool,
    /// ADD instead of SET (`-a`).
    pub add: bool,
    /// The destination bucket's conflict resolution (lww needs FORCE_ACCEPT_WITH_META_OPS).
    pub resolution: ConflictResolution,
}

/// One request: everything but the key, vbucket and request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub opcode: Opcode,
    pub datatype: u8,
    extras: [u8; 28],
    extras_len: usize,
    pub value: Bytes,
}

impl Write {
    /// The request's extras.
    pub fn extras(&self) -> &[u8] {
        &self.extras[..self.extras_len]
    }
}

impl Plan {
    /// True when `m` is written with its metadata.
    pub fn keeps_meta(&self, m: &Message) -> bool {
        self.with_meta && m.cas != 0
    }

    /// The request that writes `m` to a node that takes the datatype bits `takes` (its
    /// `xattrs` is whether the node agreed to XATTR).
    pub fn write_of(&self, m: &Message, takes: Takes) -> Write {
        let mut extras = [0u8; 28];
        if self.keeps_meta(m) {
            let meta = WithMeta {
                flags: m.flags,
                expiry: m.expiry,
                rev_seqno: m.rev_seqno.max(1),
                cas: m.cas,
                options: match self.resolution {
                    ConflictResolution::Lww => options::FORCE_ACCEPT_WITH_META_OPS,
                    ConflictResolution::Seqno => 0,
                },
                nmeta: 0,
            };
            let (e, n) = meta.to_array();
            extras.copy_from_slice(&e);
            if m.is_removal() {
                return Write {
                    opcode: Opcode::DelqWithMeta,
                    datatype: 0,
                    extras,
                    extras_len: n,
                    value: Bytes::new(),
                };
            }
            let (datatype, value) = value_for(m, takes);
            return Write {
                opcode: if self.add {
                    Opcode::AddqWithMeta
                } else {
                    Opcode::SetqWithMeta
                },
                datatype,
                extras,
                extras_len: n,
                value,
            };
        }
        if m.is_removal() {
            return Write {
                opcode: Opcode::DeleteQ,
                datatype: 0,
                extras,
                extras_len: 0,
                value: Bytes::new(),
            };
        }
        extras[..4].copy_from_slice(&m.flags.to_be_bytes());
        extras[4..8].copy_from_slice(&m.expiry.to_be_bytes());
        // A plain SET cannot carry xattrs: the document body is written.
        let (datatype, value) = value_for(
            m,
            Takes {
                xattrs: false,
                ..takes
            },
        );
        Write {
            opcode: if self.add { Opcode::AddQ } else { Opcode::SetQ },
            datatype,
            extras,
            extras_len: 8,
            value,
        }
    }
}

/// The value and datatype as `takes` can take them; a plain value is not copied.
fn value_for(m: &Message, takes: Takes) -> (u8, Bytes) {
    if m.datatype & (SNAPPY | XATTR) == 0 {
        let dt = if takes.json { m.datatype } else { 0 };
        (dt, m.value.clone())
    } else {
        shaped(m.datatype, &m.value, takes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump::Op;
    use pump_protocol::datatype::{build_xattrs, compress, JSON};

    const NODE: Takes = Takes {
        snappy: true,
        xattrs: true,
        json: true,
    };

    fn restored(value: Bytes, datatype: u8) -> Message {
        Message {
            flags: 7,
            expiry: 2_000_000_000,
            cas: 0x1234,
            rev_seqno: 9,
            datatype,
            ..Message::mutation(Bytes::from_static(b"k"), value)
        }
    }

    fn plan(with_meta: bool, add: bool, resolution: ConflictResolution) -> Plan {
        Plan {
            with_meta,
            add,
            resolution,
        }
    }

    #[test]
    fn a_mutation_goes_with_its_meta_and_its_value_as_stored() {
        let mut v = build_xattrs(&[(b"_sync", b"{\"rev\":1}")]).to_vec();
        v.extend_from_slice(b"{\"a\":1}");
        let packed = compress(&v);
        let m = restored(packed.clone(), SNAPPY | XATTR | JSON);
        let w = plan(true, false, ConflictResolution::Seqno).write_of(&m, NODE);
        assert_eq!(w.opcode, Opcode::SetqWithMeta);
        assert_eq!((w.datatype, &w.value), (SNAPPY | XATTR | JSON, &packed));
        let meta = WithMeta::parse(w.extras()).unwrap();
        assert_eq!(
            (
                meta.flags,
                meta.expiry,
                meta.rev_seqno,
                meta.cas,
                meta.options
            ),
            (7, 2_000_000_000, 9, 0x1234, 0)
        );
        // A node that did not agree to SNAPPY gets it inflated; without XATTR, the body alone.
        let w = plan(true, false, ConflictResolution::Seqno).write_of(
            &m,
            Takes {
                snappy: false,
                ..NODE
            },
        );
        assert_eq!((w.datatype, &w.value[..]), (XATTR | JSON, &v[..]));
        let w = plan(true, false, ConflictResolution::Seqno).write_of(&m, Takes::BODY);
        assert_eq!((w.datatype, &w.value[..]), (0, &b"{\"a\":1}"[..]));
        // ADD_WITH_META with -a; FORCE_ACCEPT_WITH_META_OPS into a lww bucket.
        let w = plan(true, true, ConflictResolution::Lww).write_of(&m, NODE);
        assert_eq!(w.opcode, Opcode::AddqWithMeta);
        let meta = WithMeta::parse(w.extras()).unwrap();
        assert_eq!(meta.options, options::FORCE_ACCEPT_WITH_META_OPS);
    }

    #[test]
    fn a_removal_is_del_with_meta_and_without_a_revision_rev_1_is_sent() {
        let m = Message {
            op: Op::Deletion,
            cas: 55,
            rev_seqno: 0,
            ..Message::deletion(Bytes::from_static(b"k"))
        };
        let w = plan(true, false, ConflictResolution::Seqno).write_of(&m, NODE);
        assert_eq!(w.opcode, Opcode::DelqWithMeta);
        assert!(w.value.is_empty());
        let meta = WithMeta::parse(w.extras()).unwrap();
        assert_eq!((meta.rev_seqno, meta.cas), (1, 55));
    }

    #[test]
    fn conflict_resolve_0_or_a_message_without_cas_is_a_plain_set_or_delete() {
        let mut v = build_xattrs(&[(b"x", b"1")]).to_vec();
        v.extend_from_slice(b"{}");
        let m = restored(Bytes::from(v), XATTR | JSON);
        let w = plan(false, false, ConflictResolution::Seqno).write_of(&m, NODE);
        assert_eq!(w.opcode, Opcode::SetQ);
        assert_eq!(w.extras(), &[0, 0, 0, 7, 0x77, 0x35, 0x94, 0][..]);
        assert_eq!((w.datatype, &w.value[..]), (JSON, &b"{}"[..]));
        let generated = Message {
            cas: 0,
            ..restored(Bytes::from_static(b"v"), 0)
        };
        let p = plan(true, true, ConflictResolution::Seqno);
        assert!(!p.keeps_meta(&generated));
        assert_eq!(p.write_of(&generated, NODE).opcode, Opcode::AddQ);
        let gone = Message {
            cas: 0,
            ..Message::deletion(Bytes::from_static(b"k"))
        };
        let w = p.write_of(&gone, NODE);
        assert_eq!((w.opcode, w.extras().len()), (Opcode::DeleteQ, 0));
    }
}
