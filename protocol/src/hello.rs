//! HELLO (0x1f): the features a connection negotiates.
//!
//! ```text
//! request:  key = user agent (text, or JSON {"a": agent, "i": connection id}), no extras,
//!           value = the requested features, u16 each (big-endian)
//! response: value = the features the server agreed to, u16 each, a subset of the request
//! ```
//!
//! Feature codes are kv_engine's (`include/mcbp/protocol/feature.h`). A feature either side
//! did not agree to is never used on that connection. [`FeatureSet`] holds the codes below 64
//! (every code defined so far); a code above is kept out of the set and so never agreed to.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::opcode::Opcode;
use crate::packet::Packet;

/// Declares the feature codes with their names.
macro_rules! features {
    ($($(#[$m:meta])* $variant:ident = $val:expr, $name:expr;)*) => {
        /// A HELLO feature code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Feature {
            $($(#[$m])* $variant,)*
            /// A code this crate has no name for.
            Other(u16),
        }
        impl Feature {
            /// The wire value.
            pub fn value(self) -> u16 {
                match self { $(Feature::$variant => $val,)* Feature::Other(v) => v }
            }
            /// The name kv_engine's logs use.
            pub fn name(self) -> String {
                match self {
                    $(Feature::$variant => $name.to_string(),)*
                    Feature::Other(v) => format!("0x{v:04x}"),
                }
            }
        }
        impl From<u16> for Feature {
            fn from(v: u16) -> Self {
                match v { $($val => Feature::$variant,)* other => Feature::Other(other) }
            }
        }
    };
}

features! {
    /// Informational: the server always sets TCP_NODELAY.
    TcpNoDelay = 0x03, "TCP nodelay";
    /// Mutation answers carry the vbucket uuid and seqno (16 bytes of extras).
    MutationSeqno = 0x04, "Mutation seqno";
    /// Xattrs where they make sense (with-meta commands, DCP with INCLUDE_XATTRS).
    Xattr = 0x06, "XATTR";
    /// Extended error codes and GET_ERROR_MAP instead of disconnecting.
    Xerror = 0x07, "XERROR";
    /// Informational: SELECT_BUCKET is allowed.
    SelectBucket = 0x08, "Select bucket";
    /// Values may travel snappy-compressed, the SNAPPY datatype bit set.
    Snappy = 0x0a, "Snappy";
    /// The JSON datatype bit is set on JSON values.
    Json = 0x0b, "JSON";
    /// The server may send requests to the client.
    Duplex = 0x0c, "Duplex";
    /// The server pushes new cluster maps.
    ClustermapChangeNotification = 0x0d, "Clustermap change notification";
    /// Commands may be executed out of order.
    UnorderedExecution = 0x0e, "Unordered execution";
    /// Responses carry the server's duration.
    Tracing = 0x0f, "Tracing";
    /// Requests may use flexible framing (magic 0x08).
    AltRequestSupport = 0x10, "AltRequestSupport";
    /// Durable writes.
    SyncReplication = 0x11, "SyncReplication";
    /// Keys carry a LEB128 collection id.
    Collections = 0x12, "Collections";
    /// The SNAPPY bit is honoured on every response.
    SnappyEverywhere = 0x13, "SnappyEverywhere";
    /// PreserveTtl frame info.
    PreserveTtl = 0x14, "PreserveTtl";
    /// Virtual xattrs.
    VAttr = 0x15, "VAttr";
    /// Subdoc CreateAsDeleted.
    SubdocCreateAsDeleted = 0x17, "SubdocCreateAsDeleted";
    /// Subdoc $document macros.
    SubdocDocumentMacroSupport = 0x18, "SubdocDocumentMacroSupport";
    /// SubdocReplaceBodyWithXattr.
    SubdocReplaceBodyWithXattr = 0x19, "SubdocReplaceBodyWithXattr";
    /// Read/write units in responses.
    ReportUnitUsage = 0x1a, "ReportUnitUsage";
    /// Throttling answered instead of waited.
    NonBlockingThrottlingMode = 0x1b, "NonBlockingThrottlingMode";
    /// Subdoc reads from replicas.
    SubdocReplicaRead = 0x1c, "SubdocReplicaRead";
    /// GET_CLUSTER_CONFIG with the client's known version.
    GetClusterConfigWithKnownVersion = 0x1d, "GetClusterConfigWithKnownVersion";
    /// NOT_MY_VBUCKET answers without a map the client already has.
    DedupeNotMyVbucketClustermap = 0x1e, "DedupeNotMyVbucketClustermap";
    /// Brief cluster map notifications.
    ClustermapChangeNotificationBrief = 0x1f, "ClustermapChangeNotificationBrief";
    /// Binary xattr values in subdoc.
    SubdocBinaryXattr = 0x20, "SubdocBinaryXattr";
}

/// A set of features, as negotiated on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FeatureSet(u64);

impl FeatureSet {
    /// No feature.
    pub const EMPTY: FeatureSet = FeatureSet(0);

    /// The set of `features`.
    pub fn of(features: &[Feature]) -> FeatureSet {
        let mut s = FeatureSet::EMPTY;
        for f in features {
            s.insert(*f);
        }
        s
    }

    /// Adds `f` (a code of 64 or more is not kept).
    pub fn insert(&mut self, f: Feature) {
        if let Some(bit) = Self::bit(f) {
            self.0 |= bit;
        }
    }

    /// True when `f` is in the set.
    pub fn contains(self, f: Feature) -> bool {
        Self::bit(f).is_some_and(|bit| self.0 & bit != 0)
    }

    /// True when nothing is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The features, lowest code first.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        (0..64u16)
            .filter(move |c| self.0 & (1u64 << c) != 0)
            .map(Feature::from)
    }

    fn bit(f: Feature) -> Option<u64> {
        let v = f.value();
        (v < 64).then(|| 1u64 << v)
    }
}

impl std::fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.iter().map(Feature::name).collect();
        write!(f, "[{}]", names.join(", "))
    }
}

/// Encodes features as a HELLO value: u16 each, in the order given.
pub fn encode_features(features: impl IntoIterator<Item = Feature>) -> Bytes {
    let mut b = BytesMut::new();
    for f in features {
        b.put_u16(f.value());
    }
    b.freeze()
}

/// Decodes a HELLO value into feature codes, in wire order; an odd length is malformed.
pub fn decode_features(value: &[u8]) -> Result<Vec<Feature>, ProtocolError> {
    if !value.len().is_multiple_of(2) {
        return Err(ProtocolError::malformed(
            "HELLO",
            format!(
                "a value of {} bytes is not a list of u16 features",
                value.len()
            ),
        ));
    }
    Ok(value
        .chunks_exact(2)
        .map(|c| Feature::from(u16::from_be_bytes([c[0], c[1]])))
        .collect())
}

/// The HELLO request of a client naming itself `agent` and asking for `features`.
pub fn hello_request(agent: &str, features: &[Feature]) -> Packet {
    Packet::request(Opcode::Hello)
        .with_key(Bytes::copy_from_slice(agent.as_bytes()))
        .with_value(encode_features(features.iter().copied()))
}

/// The features a HELLO answer agreed to, keeping only those that were asked for (a server
/// that answers more than it was asked is not trusted with the rest).
pub fn agreed(asked: &[Feature], answer: &[u8]) -> Result<FeatureSet, ProtocolError> {
    let asked = FeatureSet::of(asked);
    let mut out = FeatureSet::EMPTY;
    for f in decode_features(answer)? {
        if asked.contains(f) {
            out.insert(f);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_codes_match_kv_engine() {
        assert_eq!(Feature::TcpNoDelay.value(), 0x03);
        assert_eq!(Feature::MutationSeqno.value(), 0x04);
        assert_eq!(Feature::Xattr.value(), 0x06);
        assert_eq!(Feature::Xerror.value(), 0x07);
        assert_eq!(Feature::SelectBucket.value(), 0x08);
        assert_eq!(Feature::Snappy.value(), 0x0a);
        assert_eq!(Feature::Json.value(), 0x0b);
        assert_eq!(Feature::Collections.value(), 0x12);
        for v in 0..0x40u16 {
            assert_eq!(Feature::from(v).value(), v);
        }
    }

    #[test]
    fn a_hello_request_carries_the_agent_and_every_feature_in_order() {
        let p = hello_request("pump/1.0", &[Feature::Xerror, Feature::Json]);
        assert_eq!(&p.key[..], b"pump/1.0");
        assert_eq!(&p.value[..], &[0, 7, 0, 0x0b]);
        assert!(p.extras.is_empty());
        assert_eq!(
            decode_features(&p.value).unwrap(),
            vec![Feature::Xerror, Feature::Json]
        );
    }

    #[test]
    fn only_what_was_asked_is_agreed_and_an_odd_value_is_malformed() {
        let asked = [Feature::Xerror, Feature::Snappy];
        let s = agreed(&asked, &[0, 0x0a, 0, 0x12, 0, 7]).unwrap();
        assert!(s.contains(Feature::Snappy) && s.contains(Feature::Xerror));
        assert!(!s.contains(Feature::Collections));
        assert_eq!(s.to_string(), "[XERROR, Snappy]");
        assert!(agreed(&asked, &[0, 7, 0]).is_err());
        // A code past 63 is never in a set.
        let mut big = FeatureSet::EMPTY;
        big.insert(Feature::Other(200));
        assert!(big.is_empty());
    }
}
