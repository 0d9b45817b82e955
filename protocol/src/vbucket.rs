//! The vbucket hash and vbucket states.

/// `((crc32(key) >> 16) & 0x7fff) % num_vbuckets`, zlib/IEEE CRC32.
pub fn vbucket_of(key: &[u8], num_vbuckets: u16) -> u16 {
    let crc = crc32fast::hash(key);
    (((crc >> 16) & 0x7fff) % u32::from(num_vbuckets.max(1))) as u16
}

/// The state of one vbucket on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VbucketState {
    Active = 1,
    Replica = 2,
    Pending = 3,
    Dead = 4,
}

impl VbucketState {
    /// Parses the wire value (1..=4).
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(VbucketState::Active),
            2 => Some(VbucketState::Replica),
            3 => Some(VbucketState::Pending),
            4 => Some(VbucketState::Dead),
            _ => None,
        }
    }

    /// Parses the name used by REST and the command line.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "active" => Some(VbucketState::Active),
            "replica" => Some(VbucketState::Replica),
            "pending" => Some(VbucketState::Pending),
            "dead" => Some(VbucketState::Dead),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            VbucketState::Active => "active",
            VbucketState::Replica => "replica",
            VbucketState::Pending => "pending",
            VbucketState::Dead => "dead",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_reference_vectors() {
        assert_eq!(vbucket_of(b"hello", 1024), 528);
        assert_eq!(vbucket_of(b"foo", 1024), 115);
        assert_eq!(vbucket_of(b"a", 1024), 183);
        assert_eq!(vbucket_of(b"", 1024), 0);
        assert_eq!(vbucket_of(b"hello", 64), 16);
    }

    #[test]
    fn states_parse_from_wire_and_name() {
        for s in [
            VbucketState::Active,
            VbucketState::Replica,
            VbucketState::Pending,
            VbucketState::Dead,
        ] {
            assert_eq!(VbucketState::from_u32(s as u32), Some(s));
            assert_eq!(VbucketState::from_name(s.name()), Some(s));
        }
        assert_eq!(VbucketState::from_u32(0), None);
    }
}
