//! SET_WITH_META / ADD_WITH_META / DEL_WITH_META (0xa2 / 0xa4 / 0xa8, quiet 0xa3 / 0xa5 /
//! 0xa9), revision-based conflict resolution, and the mutation token of a write's answer.
//!
//! ```text
//! extras 24: u32 flags | u32 expiration (absolute) | u64 rev_seqno | u64 cas
//!        26: ... | u16 nmeta                     (extended meta after the value)
//!        28: ... | u32 options
//!        30: ... | u32 options | u16 nmeta
//! options: 0x01 FORCE_WITH_META_OP, 0x02 FORCE_ACCEPT_WITH_META_OPS, 0x04 REGENERATE_CAS,
//!          0x08 SKIP_CONFLICT_RESOLUTION
//!
//! conflict_resolution_mode=seqno: the incoming item wins when
//!   rev_seqno > existing, or equal and cas >, or equal and expiry >, or equal and flags <
//!   (DEL_WITH_META: rev_seqno, then cas); FORCE_ACCEPT_WITH_META_OPS is refused (EINVAL)
//! conflict_resolution_mode=lww: cas first, then rev_seqno, expiry, flags
//!   (DEL_WITH_META: cas, then rev_seqno); every write must carry FORCE_ACCEPT_WITH_META_OPS
//! the bucket's mode is its REST "conflictResolutionType": "seqno" or "lww"
//!
//! mutation token (MUTATION_SEQNO negotiated): a write's answer carries extras 16:
//!   u64 vbucket_uuid | u64 seqno
//! ```

use bytes::BufMut;

use crate::error::ProtocolError;

/// with-meta options.
pub mod options {
    pub const FORCE_WITH_META_OP: u32 = 0x01;
    pub const FORCE_ACCEPT_WITH_META_OPS: u32 = 0x02;
    pub const REGENERATE_CAS: u32 = 0x04;
    pub const SKIP_CONFLICT_RESOLUTION: u32 = 0x08;
}

/// The extras of a with-meta write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WithMeta {
    pub flags: u32,
    /// Absolute unix time, 0 = never.
    pub expiry: u32,
    pub rev_seqno: u64,
    pub cas: u64,
    pub options: u32,
    /// Length of the extended meta at the end of the value.
    pub nmeta: u16,
}

impl WithMeta {
    /// Parses the extras (24, 26, 28 or 30 bytes).
    pub fn parse(extras: &[u8]) -> Result<WithMeta, ProtocolError> {
        let u32_at =
            |i: usize| u32::from_be_bytes([extras[i], extras[i + 1], extras[i + 2], extras[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&extras[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let u16_at = |i: usize| u16::from_be_bytes([extras[i], extras[i + 1]]);
        let (options, nmeta) = match extras.len() {
            24 => (0, 0),
            26 => (0, u16_at(24)),
            28 => (u32_at(24), 0),
            30 => (u32_at(24), u16_at(28)),
            n => {
                return Err(ProtocolError::malformed(
                    "with-meta extras",
                    format!("{n} bytes; expected 24, 26, 28 or 30"),
                ))
            }
        };
        Ok(WithMeta {
            flags: u32_at(0),
            expiry: u32_at(4),
            rev_seqno: u64_at(8),
            cas: u64_at(16),
            options,
            nmeta,
        })
    }

    /// Writes the extras: 24 bytes, or 28 with options (never nmeta: no extended meta sent).
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32(self.flags);
        out.put_u32(self.expiry);
        out.put_u64(self.rev_seqno);
        out.put_u64(self.cas);
        if self.options != 0 {
            out.put_u32(self.options);
        }
    }

    /// The extras as an array and its used length.
    pub fn to_array(&self) -> ([u8; 28], usize) {
        let mut b = [0u8; 28];
        let mut w = &mut b[..];
        self.encode(&mut w);
        (b, if self.options != 0 { 28 } else { 24 })
    }
}

/// How a bucket resolves conflicts between a with-meta write and the copy it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictResolution {
    /// Revision seqno ("most writes wins"), Couchbase's default.
    #[default]
    Seqno,
    /// Last write wins: the higher cas (a hybrid logical clock) wins.
    Lww,
}

impl ConflictResolution {
    /// The bucket's `conflictResolutionType`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictResolution::Seqno => "seqno",
            ConflictResolution::Lww => "lww",
        }
    }

    /// Reads a `conflictResolutionType` ("seqno", "lww"); anything else is `None`.
    pub fn parse(s: &str) -> Option<ConflictResolution> {
        match s {
            "seqno" => Some(ConflictResolution::Seqno),
            "lww" => Some(ConflictResolution::Lww),
            _ => None,
        }
    }

    /// True when an incoming set (or, with `delete`, deletion) wins over `existing`.
    pub fn wins(self, incoming: Revision, existing: Revision, delete: bool) -> bool {
        match (self, delete) {
            (ConflictResolution::Seqno, false) => set_wins(incoming, existing),
            (ConflictResolution::Seqno, true) => delete_wins(incoming, existing),
            (ConflictResolution::Lww, false) => lww_set_wins(incoming, existing),
            (ConflictResolution::Lww, true) => {
                (incoming.cas, incoming.rev_seqno) > (existing.cas, existing.rev_seqno)
            }
        }
    }
}

/// What conflict resolution compares of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub rev_seqno: u64,
    pub cas: u64,
    pub expiry: u32,
    pub flags: u32,
}

/// Revision-seqno conflict resolution ("most writes wins") of a set: true when `incoming`
/// wins over `existing`.
pub fn set_wins(incoming: Revision, existing: Revision) -> bool {
    use std::cmp::Ordering::*;
    match incoming.rev_seqno.cmp(&existing.rev_seqno) {
        Greater => true,
        Less => false,
        Equal => match incoming.cas.cmp(&existing.cas) {
            Greater => true,
            Less => false,
            Equal => match incoming.expiry.cmp(&existing.expiry) {
                Greater => true,
                Less => false,
                Equal => incoming.flags < existing.flags,
            },
        },
    }
}

/// Last-write-wins of a set: cas, then rev_seqno, expiry, and the lower flags.
pub fn lww_set_wins(incoming: Revision, existing: Revision) -> bool {
    let swapped = |r: Revision| Revision {
        rev_seqno: r.cas,
        cas: r.rev_seqno,
        ..r
    };
    set_wins(swapped(incoming), swapped(existing))
}

/// The same for a deletion: rev_seqno, then cas.
pub fn delete_wins(incoming: Revision, existing: Revision) -> bool {
    (incoming.rev_seqno, incoming.cas) > (existing.rev_seqno, existing.cas)
}

/// The 16 bytes of a mutation token.
pub fn mutation_token(vbucket_uuid: u64, seqno: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&vbucket_uuid.to_be_bytes());
    b[8..].copy_from_slice(&seqno.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_of_every_allowed_length_parse_and_others_are_refused() {
        let m = WithMeta {
            flags: 7,
            expiry: 10,
            rev_seqno: 20,
            cas: 30,
            options: options::SKIP_CONFLICT_RESOLUTION,
            nmeta: 0,
        };
        let (b, n) = m.to_array();
        assert_eq!(n, 28);
        assert_eq!(WithMeta::parse(&b[..n]).unwrap(), m);
        let plain = WithMeta { options: 0, ..m };
        let (b, n) = plain.to_array();
        assert_eq!(n, 24);
        assert_eq!(WithMeta::parse(&b[..n]).unwrap(), plain);
        let mut thirty = b[..24].to_vec();
        thirty.extend_from_slice(&[0, 0, 0, 2, 0, 5]);
        let t = WithMeta::parse(&thirty).unwrap();
        assert_eq!((t.options, t.nmeta), (2, 5));
        for n in [0, 8, 23, 25, 27, 29, 31] {
            assert!(WithMeta::parse(&vec![0; n]).is_err(), "{n}");
        }
    }

    #[test]
    fn the_higher_revision_wins_then_cas_expiry_and_lower_flags() {
        let r = |rev, cas, expiry, flags| Revision {
            rev_seqno: rev,
            cas,
            expiry,
            flags,
        };
        assert!(set_wins(r(2, 1, 0, 0), r(1, 9, 9, 0)));
        assert!(!set_wins(r(1, 9, 9, 0), r(2, 1, 0, 0)));
        assert!(set_wins(r(1, 2, 0, 0), r(1, 1, 0, 0)));
        assert!(set_wins(r(1, 1, 5, 0), r(1, 1, 4, 0)));
        assert!(set_wins(r(1, 1, 5, 1), r(1, 1, 5, 2)));
        assert!(!set_wins(r(1, 1, 5, 2), r(1, 1, 5, 2)));
        assert!(delete_wins(r(3, 0, 0, 0), r(2, 9, 0, 0)));
        assert!(!delete_wins(r(2, 9, 0, 0), r(2, 9, 0, 0)));
        // Last write wins: the cas first, then the revision.
        let lww = ConflictResolution::Lww;
        assert!(lww.wins(r(1, 9, 0, 0), r(5, 8, 0, 0), false));
        assert!(!lww.wins(r(5, 8, 0, 0), r(1, 9, 0, 0), false));
        assert!(lww.wins(r(2, 9, 0, 0), r(1, 9, 0, 0), false));
        assert!(lww.wins(r(1, 9, 5, 0), r(1, 9, 4, 0), false));
        assert!(lww.wins(r(1, 9, 0, 0), r(5, 8, 0, 0), true));
        assert!(!lww.wins(r(9, 8, 0, 0), r(1, 9, 0, 0), true));
        assert!(!ConflictResolution::Seqno.wins(r(1, 9, 0, 0), r(5, 8, 0, 0), false));
        assert_eq!(ConflictResolution::parse("lww"), Some(lww));
        assert_eq!(ConflictResolution::parse(lww.as_str()), Some(lww));
        assert_eq!(ConflictResolution::parse("custom"), None);
        assert_eq!(
            &mutation_token(1, 2)[..],
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
        );
    }
}
