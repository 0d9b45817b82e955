//! Opcodes and response statuses.

/// Declares a `#[repr(u8)]`/`u16` enum with an `Other` catch-all and conversions both ways.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident : $ty:ty { $($(#[$vm:meta])* $variant:ident = $val:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A value this crate has no name for.
            Other($ty),
        }
        impl $name {
            /// The wire value.
            pub fn value(self) -> $ty {
                match self { $($name::$variant => $val,)* $name::Other(v) => v }
            }
        }
        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v { $($val => $name::$variant,)* other => $name::Other(other) }
            }
        }
    };
}

wire_enum! {
    /// Every opcode of REFERENCE.md: the memcached core, TAP (0x40..), DCP (0x50..), the
    /// with-meta writes (0xa2..), GET_CLUSTER_CONFIG and GET_ERROR_MAP.
    Opcode: u8 {
        Get = 0x00, Set = 0x01, Add = 0x02, Replace = 0x03, Delete = 0x04, Increment = 0x05,
        Decrement = 0x06, Quit = 0x07, Flush = 0x08, GetQ = 0x09, Noop = 0x0a, Version = 0x0b,
        GetK = 0x0c, GetKQ = 0x0d, Append = 0x0e, Prepend = 0x0f, Stat = 0x10, SetQ = 0x11,
        AddQ = 0x12, ReplaceQ = 0x13, DeleteQ = 0x14, IncrementQ = 0x15, DecrementQ = 0x16,
        QuitQ = 0x17, FlushQ = 0x18, AppendQ = 0x19, PrependQ = 0x1a, Touch = 0x1c, Gat = 0x1d,
        GatQ = 0x1e, Hello = 0x1f,
        SaslListMechs = 0x20, SaslAuth = 0x21, SaslStep = 0x22,
        SetVbucket = 0x3d, GetVbucket = 0x3e, DelVbucket = 0x3f,
        TapConnect = 0x40, TapMutation = 0x41, TapDelete = 0x42, TapFlush = 0x43,
        TapOpaque = 0x44, TapVbucketSet = 0x45, TapCheckpointStart = 0x46,
        TapCheckpointEnd = 0x47,
        DcpOpen = 0x50, DcpAddStream = 0x51, DcpCloseStream = 0x52, DcpStreamReq = 0x53,
        DcpGetFailoverLog = 0x54, DcpStreamEnd = 0x55, DcpSnapshotMarker = 0x56,
        DcpMutation = 0x57, DcpDeletion = 0x58, DcpExpiration = 0x59,
        DcpSetVbucketState = 0x5b, DcpNoop = 0x5c, DcpBufferAck = 0x5d, DcpControl = 0x5e,
        SelectBucket = 0x89,
        SetWithMeta = 0xa2, SetqWithMeta = 0xa3, AddWithMeta = 0xa4, AddqWithMeta = 0xa5,
        DelWithMeta = 0xa8, DelqWithMeta = 0xa9,
        GetClusterConfig = 0xb5, GetErrorMap = 0xfe,
    }
}

impl Opcode {
    /// True for the quiet opcodes, which answer only on failure (mutations) or on a hit (gets).
    pub fn is_quiet(self) -> bool {
        matches!(
            self,
            Opcode::GetQ
                | Opcode::GetKQ
                | Opcode::SetQ
                | Opcode::AddQ
                | Opcode::ReplaceQ
                | Opcode::DeleteQ
                | Opcode::IncrementQ
                | Opcode::DecrementQ
                | Opcode::QuitQ
                | Opcode::FlushQ
                | Opcode::AppendQ
                | Opcode::PrependQ
                | Opcode::GatQ
                | Opcode::SetqWithMeta
                | Opcode::AddqWithMeta
                | Opcode::DelqWithMeta
        )
    }
}

wire_enum! {
    /// Response statuses.
    Status: u16 {
        Success = 0x00, KeyEnoent = 0x01, KeyEexists = 0x02, E2big = 0x03, Einval = 0x04,
        NotStored = 0x05, DeltaBadval = 0x06, NotMyVbucket = 0x07, NoBucket = 0x08,
        Locked = 0x09, AuthStale = 0x1f, AuthError = 0x20, AuthContinue = 0x21, Erange = 0x22, Rollback = 0x23, Eaccess = 0x24,
        UnknownCommand = 0x81, Enomem = 0x82, NotSupported = 0x83, Einternal = 0x84,
        Ebusy = 0x85, Etmpfail = 0x86, XattrEinval = 0x87, UnknownCollection = 0x88,
    }
}

impl Status {
    /// Reads a status from its wire value.
    pub fn from_u16(v: u16) -> Status {
        Status::from(v)
    }

    /// True for the statuses a client should retry after a pause: EBUSY, ETMPFAIL, ENOMEM.
    pub fn is_temporary(self) -> bool {
        matches!(self, Status::Ebusy | Status::Etmpfail | Status::Enomem)
    }

    /// A short name as the docs spell it, for error messages.
    pub fn name(self) -> String {
        match self {
            Status::Other(v) => format!("status 0x{v:04x}"),
            s => format!("{s:?}").to_uppercase(),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_through_their_wire_value() {
        for v in 0..=255u8 {
            assert_eq!(Opcode::from(v).value(), v);
        }
        assert_eq!(Opcode::from(0x57), Opcode::DcpMutation);
        assert_eq!(Opcode::from(0x40), Opcode::TapConnect);
        assert_eq!(Opcode::from(0xb5), Opcode::GetClusterConfig);
    }

    #[test]
    fn temporary_statuses_are_exactly_ebusy_etmpfail_enomem() {
        let temporary: Vec<u16> = (0..=0xffu16)
            .filter(|v| Status::from(*v).is_temporary())
            .collect();
        assert_eq!(temporary, vec![0x82, 0x85, 0x86]);
        assert_eq!(Status::E2big.to_string(), "E2BIG (0x03)");
    }
}
