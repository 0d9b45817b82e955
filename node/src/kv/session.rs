//! What one connection negotiated, and the commands that negotiate it.
//!
//! ```text
//! HELLO               key: agent (at most 250 bytes), value: u16 features -> the subset the node
//!                     implements, in the order asked; a new HELLO starts over
//! SASL_LIST_MECHS     "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN" (PLAIN alone without users)
//! SASL_AUTH / STEP    see crate::auth; AUTH_ERROR for a wrong password, proof or nonce
//! SELECT_BUCKET       key: bucket -> SUCCESS | KEY_ENOENT; "@no bucket@" unselects
//! GET_CLUSTER_CONFIG  extras 0 or 16 (i64 epoch, i64 rev): the bucket's config when one is
//!                     selected, the global config otherwise (the node's user holds every
//!                     privilege); an empty value when the client's version is current
//! GET_ERROR_MAP       value: u16 version (>= 1) -> the error map JSON
//! GET_COLLECTIONS_MANIFEST                 -> the bucket's manifest (JSON)
//! GET_COLLECTION_ID   value "scope.collection" -> extras u64 manifest uid | u32 collection id;
//!                     UNKNOWN_SCOPE / UNKNOWN_COLLECTION with {"manifest_uid"}
//! GET_SCOPE_ID        value "scope[.collection]" -> extras u64 manifest uid | u32 scope id
//! ```

use pump_protocol::datatype::{JSON, SNAPPY, XATTR};
use pump_protocol::hello::{decode_features, encode_features, Feature, FeatureSet};
use pump_protocol::sasl::Mechanism;
use pump_protocol::{Opcode, Packet, Status};

use super::{put_response_dt, Connection, Counters, KvContext, KvStream, Next, MAX_KEY};
use crate::auth::{self, Answer, Exchange};

/// The features the node agrees to.
pub const SUPPORTED: &[Feature] = &[
    Feature::TcpNoDelay,
    Feature::MutationSeqno,
    Feature::Xattr,
    Feature::Xerror,
    Feature::SelectBucket,
    Feature::Snappy,
    Feature::Json,
    Feature::Collections,
];

/// What a connection negotiated.
#[derive(Debug)]
pub struct Session {
    pub features: FeatureSet,
    pub authed: bool,
    /// A bucket is selected.
    pub bucket: bool,
    pub exchange: Exchange,
    /// The client sent HELLO: it speaks Couchbase's protocol, not memcached's.
    pub helloed: bool,
}

impl Session {
    /// A new connection: authenticated and bound to the bucket when the node needs no login.
    pub fn new(ctx: &KvContext) -> Session {
        let open = ctx.users.is_none();
        Session {
            features: FeatureSet::EMPTY,
            authed: open,
            bucket: open,
            exchange: Exchange::None,
            helloed: false,
        }
    }

    /// XERROR negotiated.
    pub fn xerror(&self) -> bool {
        self.features.contains(Feature::Xerror)
    }

    /// The datatype bits this connection may send and receive.
    pub fn datatypes(&self) -> u8 {
        let mut d = 0;
        if self.features.contains(Feature::Json) {
            d |= JSON;
        }
        if self.features.contains(Feature::Snappy) {
            d |= SNAPPY;
        }
        if self.features.contains(Feature::Xattr) {
            d |= XATTR;
        }
        d
    }

    /// The JSON bit, when this connection takes it.
    pub fn json_bit(&self) -> u8 {
        self.datatypes() & JSON
    }

    /// MUTATION_SEQNO negotiated.
    pub fn tokens(&self) -> bool {
        self.features.contains(Feature::MutationSeqno)
    }

    /// COLLECTIONS negotiated: keys carry their collection id.
    pub fn collections(&self) -> bool {
        self.features.contains(Feature::Collections)
    }
}

/// The commands a connection may send before it authenticates.
pub fn before_auth(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::SaslListMechs
            | Opcode::SaslAuth
            | Opcode::SaslStep
            | Opcode::Version
            | Opcode::Noop
            | Opcode::Hello
            | Opcode::Quit
            | Opcode::QuitQ
            | Opcode::GetErrorMap
    )
}

/// The commands that work on the bucket, and so need one selected: all but those allowed
/// before authentication, SELECT_BUCKET itself, GET_CLUSTER_CONFIG and STAT.
pub fn needs_bucket(op: Opcode) -> bool {
    !(before_auth(op)
        || matches!(
            op,
            Opcode::SelectBucket | Opcode::GetClusterConfig | Opcode::Stat
        ))
}

impl<S: KvStream> Connection<S> {
    pub(super) fn hello(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || p.key.len() > MAX_KEY {
            tracing::debug!(
                "HELLO refused: {} bytes of extras, a key of {} bytes",
                p.extras.len(),
                p.key.len()
            );
            return self.fail(p, Status::Einval);
        }
        let asked = match decode_features(&p.value) {
            Ok(f) => f,
            Err(_) => return self.fail(p, Status::Einval),
        };
        let mut agreed = FeatureSet::EMPTY;
        let mut order = Vec::new();
        for f in asked {
            if SUPPORTED.contains(&f) && !agreed.contains(f) {
                agreed.insert(f);
                order.push(f);
            }
        }
        tracing::debug!(
            "HELLO from {:?}: agreed {agreed}",
            String::from_utf8_lossy(&p.key)
        );
        self.session.features = agreed;
        self.session.helloed = true;
        Counters::bump(&self.ctx.counters.hellos);
        let v = encode_features(order);
        self.reply(p, Status::Success, 0, &[], &[], &v);
        Next::Continue
    }

    pub(super) fn sasl_list_mechs(&mut self, p: &Packet) -> Next {
        let mechs = if self.ctx.users.is_some() {
            auth::MECHANISMS
        } else {
            "PLAIN"
        };
        self.reply(p, Status::Success, 0, &[], &[], mechs.as_bytes());
        Next::Continue
    }

    pub(super) fn sasl(&mut self, p: &Packet) -> Next {
        if p.key.is_empty() || !p.extras.is_empty() {
            return self.fail(p, Status::Einval);
        }
        let Some(users) = &self.ctx.users else {
            // No credentials to check: any PLAIN login is welcome, SCRAM cannot be proven.
            if &p.key[..] == b"PLAIN" && p.opcode == Opcode::SaslAuth {
                self.session.authed = true;
                self.reply(p, Status::Success, 0, &[], &[], b"Authenticated");
                return Next::Continue;
            }
            return self.fail(p, Status::AuthError);
        };
        let answer = if p.opcode == Opcode::SaslAuth {
            auth::auth(users, &mut self.session.exchange, &p.key, &p.value)
        } else {
            auth::step(users, &mut self.session.exchange, &p.key, &p.value)
        };
        match answer {
            Answer::Continue(v) => {
                self.reply(p, Status::AuthContinue, 0, &[], &[], &v);
            }
            Answer::Done(user, v) => {
                let i = std::str::from_utf8(&p.key)
                    .ok()
                    .and_then(Mechanism::from_name)
                    .and_then(|m| Mechanism::ALL.iter().position(|x| *x == m))
                    .unwrap_or(3);
                Counters::bump(&self.ctx.counters.auth[i]);
                self.session.authed = true;
                // A user named after the bucket is bound to it (Couchbase's legacy rule).
                if user == self.ctx.bucket.name {
                    self.session.bucket = true;
                }
                self.reply(p, Status::Success, 0, &[], &[], &v);
            }
            Answer::Refused(status, why) => {
                tracing::debug!("SASL refused: {why}");
                self.session.authed = false;
                self.session.bucket = false;
                return self.fail(p, status);
            }
        }
        Next::Continue
    }

    pub(super) fn select_bucket(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || !p.value.is_empty() || p.key.len() > MAX_KEY {
            return self.fail(p, Status::Einval);
        }
        if &p.key[..] == b"@no bucket@" {
            self.session.bucket = false;
        } else if p.key[..] == *self.ctx.bucket.name.as_bytes() {
            self.session.bucket = true;
        } else {
            return self.fail(p, Status::KeyEnoent);
        }
        self.reply(p, Status::Success, 0, &[], &[], &[]);
        Next::Continue
    }

    pub(super) fn get_cluster_config(&mut self, p: &Packet) -> Next {
        if !p.key.is_empty() || !p.value.is_empty() || !matches!(p.extras.len(), 0 | 16) {
            return self.fail(p, Status::Einval);
        }
        let rendered = if self.session.bucket {
            self.ctx.config.bucket()
        } else {
            self.ctx.config.global()
        };
        let Some(c) = rendered else {
            return self.fail(p, Status::KeyEnoent);
        };
        if p.extras.len() == 16 {
            let mut e = [0u8; 8];
            e.copy_from_slice(&p.extras[..8]);
            let epoch = i64::from_be_bytes(e);
            e.copy_from_slice(&p.extras[8..]);
            let rev = i64::from_be_bytes(e);
            if rev < 1 {
                return self.fail(p, Status::Einval);
            }
            if (epoch, rev) >= (1, c.revision as i64) {
                self.reply(p, Status::Success, 0, &[], &[], &[]);
                return Next::Continue;
            }
        }
        put_response_dt(
            &mut self.wbuf,
            p.opcode.value(),
            p.opaque,
            Status::Success,
            0,
            JSON,
            &[],
            &[],
            &c.json,
        );
        Next::Continue
    }

    pub(super) fn get_error_map(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || !p.key.is_empty() || p.value.len() != 2 {
            return self.fail(p, Status::Einval);
        }
        let version = u16::from_be_bytes([p.value[0], p.value[1]]);
        if version == 0 {
            return self.fail(p, Status::Einval);
        }
        let map = pump_protocol::error_map::json(version);
        put_response_dt(
            &mut self.wbuf,
            p.opcode.value(),
            p.opaque,
            Status::Success,
            0,
            JSON,
            &[],
            &[],
            map.as_bytes(),
        );
        Next::Continue
    }
}

impl<S: KvStream> Connection<S> {
    pub(super) fn get_collections_manifest(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || !p.key.is_empty() || !p.value.is_empty() {
            return self.fail(p, Status::Einval);
        }
        let m = self.ctx.bucket.manifest().to_json().to_string();
        let dt = self.session.json_bit();
        put_response_dt(
            &mut self.wbuf,
            p.opcode.value(),
            p.opaque,
            Status::Success,
            0,
            dt,
            &[],
            &[],
            m.as_bytes(),
        );
        Next::Continue
    }

    /// GET_COLLECTION_ID and GET_SCOPE_ID: the path in the value (or, as older clients sent
    /// it, in the key).
    pub(super) fn get_collection_id(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || (!p.key.is_empty() && !p.value.is_empty()) {
            return self.fail(p, Status::Einval);
        }
        let raw = if p.value.is_empty() { &p.key } else { &p.value };
        let scope_only = p.opcode == Opcode::GetScopeId;
        let text = if scope_only && !raw.contains(&b'.') {
            let mut t = raw.to_vec();
            t.push(b'.');
            t
        } else {
            raw.to_vec()
        };
        let path = match pump_protocol::collections::parse_path(&text) {
            Ok(path) => path,
            Err(e) => {
                tracing::debug!("{:?}: {e}", p.opcode);
                return self.fail(p, Status::Einval);
            }
        };
        let m = self.ctx.bucket.manifest();
        let Some(scope) = m.scope(&path.scope) else {
            return self.fail(p, Status::UnknownScope);
        };
        let id = if scope_only {
            scope.uid
        } else {
            match m.id_of(&path.scope, &path.collection) {
                Some(id) => id,
                None => return self.fail(p, Status::UnknownCollection),
            }
        };
        let mut extras = [0u8; 12];
        extras[..8].copy_from_slice(&m.uid.to_be_bytes());
        extras[8..].copy_from_slice(&id.to_be_bytes());
        self.reply(p, Status::Success, 0, &extras, &[], &[]);
        Next::Continue
    }
}
