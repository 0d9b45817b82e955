//! The item commands.
//!
//! ```text
//! GET/GETQ/GETK/GETKQ  -> extras u32 flags, the value as the connection negotiated it
//! GAT/GATQ             extras u32 expiry -> as GET, the item touched
//! TOUCH                extras u32 expiry -> cas
//! SET/ADD/REPLACE(Q)   extras u32 flags | u32 expiry -> cas [+ token]
//! DELETE(Q)            -> cas of the tombstone [+ token]
//! INCR/DECR(Q)         extras u64 delta | u64 initial | u32 expiry -> u64 value [+ token]
//! APPEND/PREPEND(Q)    -> cas [+ token]
//! SET/ADD/DEL_WITH_META(Q)  extras see pump_protocol::meta -> cas [+ token]; a lost conflict
//!                      answers KEY_EEXISTS (seqno or lww, as the bucket's conflictResolutionType;
//!                      lww needs FORCE_ACCEPT_WITH_META_OPS, seqno refuses it);
//!                      FORCE_WITH_META_OP skips conflict resolution and
//!                      also writes into replica and pending vbuckets (as Server 7 does)
//! token (MUTATION_SEQNO negotiated): extras u64 vbucket uuid | u64 seqno
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use pump_protocol::datatype::{self, JSON, SNAPPY, XATTR};
use pump_protocol::meta::{mutation_token, options, ConflictResolution, WithMeta};
use pump_protocol::{Opcode, Packet, Status};

use super::{put_response_dt, Connection, Counters, KvStream, Next, MAX_KEY};
use crate::store::{
    Item, MetaMode, Mutation, Write, WriteMode, CLIENT_STATES, WITH_META_FORCED_STATES,
};
use crate::value;

impl<S: KvStream> Connection<S> {
    /// Answers a write: silent on success when quiet; the mutation token when negotiated.
    fn answer(&mut self, p: &Packet, r: Result<Mutation, Status>) -> Next {
        match r {
            Ok(_) if p.opcode.is_quiet() => Next::Continue,
            Ok(m) => {
                let token = mutation_token(m.vbucket_uuid, m.seqno);
                let extras: &[u8] = if self.session.tokens() { &token } else { &[] };
                self.reply(p, Status::Success, m.cas, extras, &[], &[]);
                Next::Continue
            }
            Err(s) => self.fail(p, s),
        }
    }

    fn key_ok(&self, p: &Packet) -> bool {
        !p.key.is_empty() && p.key.len() <= MAX_KEY
    }

    pub(super) fn get(&mut self, p: &Packet) -> Next {
        let op = p.opcode;
        let gat = matches!(op, Opcode::Gat | Opcode::GatQ);
        let extras_ok = if gat {
            p.extras.len() == 4
        } else {
            p.extras.is_empty()
        };
        if !extras_ok || !self.key_ok(p) || !p.value.is_empty() {
            return self.fail(p, Status::Einval);
        }
        let bucket = self.ctx.bucket.clone();
        let vb = p.vbucket();
        let found = if gat {
            let exp = u32::from_be_bytes([p.extras[0], p.extras[1], p.extras[2], p.extras[3]]);
            bucket.touch(vb, &p.key, exp, CLIENT_STATES).map(|(i, _)| i)
        } else {
            bucket.get(vb, &p.key, CLIENT_STATES)
        };
        let with_key = matches!(op, Opcode::GetK | Opcode::GetKQ);
        match found {
            Ok(i) => {
                let key = if with_key { &p.key[..] } else { &[] };
                let snappy = self.session.datatypes() & SNAPPY != 0;
                let (dt, v) = value::present(i.datatype, &i.value, snappy, false);
                if dt & SNAPPY != 0 {
                    Counters::bump(&self.ctx.counters.snappy_out);
                }
                let dt = dt & (self.session.datatypes() | SNAPPY);
                put_response_dt(
                    &mut self.wbuf,
                    op.value(),
                    p.opaque,
                    Status::Success,
                    i.cas,
                    dt,
                    &i.flags.to_be_bytes(),
                    key,
                    &v,
                );
                Next::Continue
            }
            Err(Status::KeyEnoent) if op.is_quiet() => Next::Continue,
            Err(Status::NotMyVbucket) => self.fail(p, Status::NotMyVbucket),
            Err(s) => {
                let key = if with_key { &p.key[..] } else { &[] };
                let text = super::status_text(s);
                self.reply(p, s, 0, &[], key, text);
                Next::Continue
            }
        }
    }

    pub(super) fn touch(&mut self, p: &Packet) -> Next {
        if p.extras.len() != 4 || !self.key_ok(p) || !p.value.is_empty() {
            return self.fail(p, Status::Einval);
        }
        let exp = u32::from_be_bytes([p.extras[0], p.extras[1], p.extras[2], p.extras[3]]);
        match self
            .ctx
            .bucket
            .touch(p.vbucket(), &p.key, exp, CLIENT_STATES)
        {
            Ok((_, m)) => {
                self.reply(p, Status::Success, m.cas, &[], &[], &[]);
                Next::Continue
            }
            Err(s) => self.fail(p, s),
        }
    }

    /// Checks a client value against what the connection negotiated; counts snappy input.
    fn accept(&mut self, p: &Packet, allowed: u8) -> Result<(u8, Bytes), Status> {
        match value::accept(p.datatype, &p.value, allowed, self.session.datatypes()) {
            Ok(v) => {
                if p.datatype & SNAPPY != 0 {
                    Counters::bump(&self.ctx.counters.snappy_in);
                }
                Ok(v)
            }
            Err(r) => {
                tracing::debug!(
                    "{:?} of {:?} refused: {}",
                    p.opcode,
                    String::from_utf8_lossy(&p.key),
                    r.reason
                );
                Err(r.status)
            }
        }
    }

    pub(super) fn store(&mut self, p: &Packet) -> Next {
        let op = p.opcode;
        if p.extras.len() != 8 || !self.key_ok(p) {
            return self.fail(p, Status::Einval);
        }
        let (datatype, v) = match self.accept(p, JSON | SNAPPY) {
            Ok(x) => x,
            Err(s) => return self.fail(p, s),
        };
        let mode = match op {
            Opcode::Set | Opcode::SetQ => WriteMode::Set,
            Opcode::Add | Opcode::AddQ => WriteMode::Add,
            _ => WriteMode::Replace,
        };
        if mode == WriteMode::Add && p.cas != 0 {
            return self.fail(p, Status::Einval);
        }
        let e = &p.extras;
        let w = Write {
            key: p.key.clone(),
            value: v,
            flags: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            expiry: u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
            datatype,
            cas: p.cas,
            mode,
        };
        let r = self.ctx.bucket.write(p.vbucket(), w, CLIENT_STATES);
        self.answer(p, r)
    }

    pub(super) fn delete(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || !p.value.is_empty() || !self.key_ok(p) {
            return self.fail(p, Status::Einval);
        }
        let r = self
            .ctx
            .bucket
            .delete(p.vbucket(), p.key.clone(), p.cas, CLIENT_STATES);
        // Couchbase answers the tombstone's cas; memcached (and memccapable) expect 0 from a
        // client that never said HELLO.
        let helloed = self.session.helloed;
        self.answer(
            p,
            r.map(|m| if helloed { m } else { Mutation { cas: 0, ..m } }),
        )
    }

    pub(super) fn arith(&mut self, p: &Packet) -> Next {
        let op = p.opcode;
        if p.extras.len() != 20 || !self.key_ok(p) {
            return self.fail(p, Status::Einval);
        }
        let e = &p.extras[..];
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&e[..8]);
        let delta = u64::from_be_bytes(b8);
        b8.copy_from_slice(&e[8..16]);
        let initial = u64::from_be_bytes(b8);
        let exp = u32::from_be_bytes([e[16], e[17], e[18], e[19]]);
        let incr = matches!(op, Opcode::Increment | Opcode::IncrementQ);
        let bucket = self.ctx.bucket.clone();
        let vb = p.vbucket();
        let (value, flags, mode) = match bucket.get(vb, &p.key, CLIENT_STATES) {
            Ok(i) => {
                if p.cas != 0 && p.cas != i.cas {
                    return self.fail(p, Status::KeyEexists);
                }
                let (_, body) = value::present(i.datatype, &i.value, false, false);
                let cur = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let Some(cur) = cur else {
                    return self.fail(p, Status::DeltaBadval);
                };
                let n = if incr {
                    cur.wrapping_add(delta)
                } else {
                    cur.saturating_sub(delta)
                };
                (n, i.flags, WriteMode::Replace)
            }
            Err(Status::KeyEnoent) if exp != u32::MAX => (initial, 0, WriteMode::Add),
            Err(s) => return self.fail(p, s),
        };
        let w = Write {
            key: p.key.clone(),
            value: Bytes::from(value.to_string()),
            flags,
            expiry: if mode == WriteMode::Add { exp } else { 0 },
            datatype: JSON,
            cas: p.cas,
            mode,
        };
        match bucket.write(vb, w, CLIENT_STATES) {
            Ok(_) if op.is_quiet() => Next::Continue,
            Ok(m) => {
                let token = mutation_token(m.vbucket_uuid, m.seqno);
                let extras: &[u8] = if self.session.tokens() { &token } else { &[] };
                self.reply(p, Status::Success, m.cas, extras, &[], &value.to_be_bytes());
                Next::Continue
            }
            Err(s) => self.fail(p, s),
        }
    }

    pub(super) fn concat(&mut self, p: &Packet) -> Next {
        if !p.extras.is_empty() || !self.key_ok(p) {
            return self.fail(p, Status::Einval);
        }
        let (in_dt, add) = match self.accept(p, JSON | SNAPPY) {
            Ok(x) => x,
            Err(s) => return self.fail(p, s),
        };
        let add = match datatype::inflate(in_dt, &add, value::MAX_ITEM) {
            Ok((_, a)) => a,
            Err(_) => return self.fail(p, Status::Einval),
        };
        let bucket = self.ctx.bucket.clone();
        let vb = p.vbucket();
        let i = match bucket.get(vb, &p.key, CLIENT_STATES) {
            Ok(i) => i,
            Err(Status::KeyEnoent) => return self.fail(p, Status::NotStored),
            Err(s) => return self.fail(p, s),
        };
        if p.cas != 0 && p.cas != i.cas {
            return self.fail(p, Status::KeyEexists);
        }
        let Ok((old_dt, old)) = datatype::inflate(i.datatype, &i.value, value::MAX_ITEM) else {
            return self.fail(p, Status::Einternal);
        };
        let (section, body) = if old_dt & XATTR != 0 {
            match datatype::split_xattrs(&old) {
                Ok(x) => x,
                Err(_) => return self.fail(p, Status::Einternal),
            }
        } else {
            (Bytes::new(), old)
        };
        let mut v = BytesMut::with_capacity(section.len() + body.len() + add.len());
        v.put_slice(&section);
        if matches!(p.opcode, Opcode::Append | Opcode::AppendQ) {
            v.put_slice(&body);
            v.put_slice(&add);
        } else {
            v.put_slice(&add);
            v.put_slice(&body);
        }
        let new_body = &v[section.len()..];
        let json = if value::is_json(new_body) { JSON } else { 0 };
        // A full-body write keeps the xattrs itself: send only the body.
        let body_only = v.freeze().slice(section.len()..);
        let w = Write {
            key: p.key.clone(),
            value: body_only,
            flags: i.flags,
            expiry: i.expiry,
            datatype: json,
            cas: i.cas,
            mode: WriteMode::Replace,
        };
        let r = bucket.write(vb, w, CLIENT_STATES);
        self.answer(p, r)
    }

    pub(super) fn with_meta(&mut self, p: &Packet) -> Next {
        let Ok(meta) = WithMeta::parse(&p.extras) else {
            return self.fail(p, Status::Einval);
        };
        if !self.key_ok(p) || usize::from(meta.nmeta) > p.value.len() {
            return self.fail(p, Status::Einval);
        }
        // A last-write-wins bucket takes with-meta writes only with FORCE_ACCEPT_WITH_META_OPS,
        // a revision seqno bucket never with it (kv_engine's rule).
        let lww = self.ctx.bucket.conflict_resolution() == ConflictResolution::Lww;
        if (meta.options & options::FORCE_ACCEPT_WITH_META_OPS != 0) != lww {
            return self.fail(p, Status::Einval);
        }
        let force =
            meta.options & (options::SKIP_CONFLICT_RESOLUTION | options::FORCE_WITH_META_OP) != 0;
        let regenerate = meta.options & options::REGENERATE_CAS != 0;
        if regenerate && !force {
            return self.fail(p, Status::Einval);
        }
        let delete = matches!(p.opcode, Opcode::DelWithMeta | Opcode::DelqWithMeta);
        // Extended meta after the value is accepted and ignored, as servers since 4.6 do.
        let body = p.value.slice(..p.value.len() - usize::from(meta.nmeta));
        let (datatype, v) = if delete {
            (0, Bytes::new())
        } else {
            let q = Packet {
                value: body,
                ..p.clone()
            };
            match self.accept(&q, JSON | SNAPPY | XATTR) {
                Ok(x) => x,
                Err(s) => return self.fail(p, s),
            }
        };
        let mode = match p.opcode {
            Opcode::AddWithMeta | Opcode::AddqWithMeta => MetaMode::Add,
            Opcode::DelWithMeta | Opcode::DelqWithMeta => MetaMode::Delete { force },
            _ => MetaMode::Set { force },
        };
        let item = Item {
            value: v,
            flags: meta.flags,
            expiry: meta.expiry,
            cas: meta.cas,
            by_seqno: 0,
            rev_seqno: meta.rev_seqno.max(1),
            datatype,
            deleted: delete,
        };
        // FORCE_WITH_META_OP also writes into replica and pending vbuckets, as Couchbase Server
        // 7 allows (cbrecovery fills the vbuckets startRecovery made replicas this way).
        let states = if meta.options & options::FORCE_WITH_META_OP != 0 {
            WITH_META_FORCED_STATES
        } else {
            CLIENT_STATES
        };
        let r = self.ctx.bucket.write_with_meta(
            p.vbucket(),
            p.key.clone(),
            item,
            mode,
            p.cas,
            regenerate,
            states,
        );
        self.answer(p, r)
    }
}
