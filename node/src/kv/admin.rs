//! STAT, the vbucket commands and the TAP consumer.
//!
//! ```text
//! STAT ""                   pid, uptime, time, version, curr_items, ep_num_vbuckets and the
//!                           node's counters (snappy values in and out, logins per mechanism)
//! STAT "vbucket-seqno [N]"  vb_N:high_seqno, vb_N:abs_high_seqno, vb_N:uuid of each vbucket
//!                           not dead; NOT_MY_VBUCKET for one dead vbucket N
//! SET_VBUCKET               extras (or value) u32 state
//! GET_VBUCKET / DEL_VBUCKET
//! TAP_MUTATION / TAP_DELETE / TAP_VBUCKET_SET ...  into replica or pending vbuckets (the
//!                           default collection: TAP has no other); answers every message that
//!                           carries the ACK flag, and every failure
//! ```

use std::sync::atomic::Ordering;

use bytes::Bytes;
use pump_protocol::datatype::ALL;
use pump_protocol::tap::{TapKind, TapMessage};
use pump_protocol::{Packet, Status, VbucketState};

use super::{Connection, KvStream, Next, VERSION};
use crate::store::{self, Item, REPLICATION_STATES};
use crate::value;

impl<S: KvStream> Connection<S> {
    pub(super) fn stats(&mut self, p: &Packet) -> Next {
        if let Some(group) = p.key.strip_prefix(b"vbucket-seqno") {
            if !self.session.bucket {
                return self.fail(p, Status::NoBucket);
            }
            return self.vbucket_seqno_stats(p, group);
        }
        let b = &self.ctx.bucket;
        let c = &self.ctx.counters;
        let mut stats: Vec<(String, String)> = vec![
            ("pid".into(), std::process::id().to_string()),
            (
                "uptime".into(),
                self.ctx.started.elapsed().as_secs().to_string(),
            ),
            ("time".into(), store::now().to_string()),
            ("version".into(), VERSION.into()),
            ("curr_items".into(), b.item_count().to_string()),
            ("ep_num_vbuckets".into(), b.num_vbuckets().to_string()),
            (
                "pump_snappy_values_in".into(),
                c.snappy_in.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pump_snappy_values_out".into(),
                c.snappy_out.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pump_hellos".into(),
                c.hellos.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (i, m) in pump_protocol::sasl::Mechanism::ALL.iter().enumerate() {
            stats.push((
                format!("pump_auth_{}", m.name().to_lowercase().replace('-', "_")),
                c.auth[i].load(Ordering::Relaxed).to_string(),
            ));
        }
        if p.key.is_empty() {
            for (k, v) in &stats {
                self.reply(p, Status::Success, 0, &[], k.as_bytes(), v.as_bytes());
            }
        } else if let Some((k, v)) = stats.iter().find(|(k, _)| k.as_bytes() == &p.key[..]) {
            self.reply(p, Status::Success, 0, &[], k.as_bytes(), v.as_bytes());
        } else {
            return self.fail(p, Status::KeyEnoent);
        }
        self.reply(p, Status::Success, 0, &[], &[], &[]);
        Next::Continue
    }

    /// `STAT vbucket-seqno [N]`: `vb_N:high_seqno` and `vb_N:uuid` of every vbucket that is not
    /// dead (or of vbucket N), what a DCP client reads to know where each stream ends.
    fn vbucket_seqno_stats(&mut self, p: &Packet, group: &[u8]) -> Next {
        let b = self.ctx.bucket.clone();
        let only = std::str::from_utf8(group)
            .ok()
            .map(str::trim)
            .filter(|g| !g.is_empty());
        let vbs: Vec<u16> = match only.map(str::parse::<u16>) {
            None => (0..b.num_vbuckets()).collect(),
            // One dead vbucket is not this node's, as the whole list leaves it out: a client
            // must not take it for one it can stream.
            Some(Ok(vb)) if b.state(vb) == Some(VbucketState::Dead) => {
                return self.fail(p, Status::NotMyVbucket)
            }
            Some(Ok(vb)) if vb < b.num_vbuckets() => vec![vb],
            Some(_) => return self.fail(p, Status::Einval),
        };
        for vb in vbs {
            let Some((high, uuid)) = b
                .vb(vb)
                .filter(|v| v.state != VbucketState::Dead)
                .map(|v| (v.high_seqno, v.uuid()))
            else {
                continue;
            };
            for (field, value) in [
                ("high_seqno", high),
                ("abs_high_seqno", high),
                ("uuid", uuid),
            ] {
                let k = format!("vb_{vb}:{field}");
                self.reply(
                    p,
                    Status::Success,
                    0,
                    &[],
                    k.as_bytes(),
                    value.to_string().as_bytes(),
                );
            }
        }
        self.reply(p, Status::Success, 0, &[], &[], &[]);
        Next::Continue
    }

    pub(super) fn set_vbucket(&mut self, p: &Packet) -> Next {
        let raw = if p.extras.len() >= 4 {
            Some(u32::from_be_bytes([
                p.extras[0],
                p.extras[1],
                p.extras[2],
                p.extras[3],
            ]))
        } else if p.value.len() == 4 {
            Some(u32::from_be_bytes([
                p.value[0], p.value[1], p.value[2], p.value[3],
            ]))
        } else {
            None
        };
        match raw.and_then(VbucketState::from_u32) {
            Some(s) if self.ctx.bucket.set_state(p.vbucket(), s) => {
                self.reply(p, Status::Success, 0, &[], &[], &[]);
                Next::Continue
            }
            Some(_) => self.fail(p, Status::NotMyVbucket),
            None => self.fail(p, Status::Einval),
        }
    }

    pub(super) fn get_vbucket(&mut self, p: &Packet) -> Next {
        match self.ctx.bucket.state(p.vbucket()) {
            Some(s) => {
                let v = (s as u32).to_be_bytes();
                self.reply(p, Status::Success, 0, &[], &[], &v);
                Next::Continue
            }
            None => self.fail(p, Status::NotMyVbucket),
        }
    }

    pub(super) fn del_vbucket(&mut self, p: &Packet) -> Next {
        let found = match self.ctx.bucket.vb(p.vbucket()) {
            Some(mut v) => {
                v.items.clear();
                v.by_seqno.clear();
                v.state = VbucketState::Dead;
                true
            }
            None => false,
        };
        if found {
            self.reply(p, Status::Success, 0, &[], &[], &[]);
            Next::Continue
        } else {
            self.fail(p, Status::NotMyVbucket)
        }
    }

    /// The TAP consumer: writes TAP messages into replica or pending vbuckets; answers every
    /// message that carries the ACK flag, and every failure. Values are checked as any client
    /// value is (a snappy one must decompress), every datatype bit allowed. Keys are read as
    /// any request's (`doc_key`): with COLLECTIONS negotiated, LEB128 collection id first.
    pub(super) fn tap_consume(&mut self, p: &Packet) -> Next {
        let m = match TapMessage::from_packet(p) {
            Ok(m) => m,
            Err(_) => return self.fail(p, Status::Einval),
        };
        let bucket = self.ctx.bucket.clone();
        let r: Result<(), Status> = match m.kind() {
            TapKind::Mutation => match value::accept(m.datatype, &m.value, ALL, ALL)
                .map_err(|e| e.status)
                .and_then(|ok| Ok((ok, self.doc_key(&m.key)?)))
            {
                Err(e) => Err(e),
                Ok(((datatype, v), key)) => bucket
                    .apply(
                        m.vbucket,
                        key,
                        Item {
                            value: v,
                            flags: m.fixed_item_flags(),
                            expiry: m.item_expiry,
                            cas: m.cas,
                            by_seqno: 0,
                            rev_seqno: 0,
                            datatype,
                            deleted: false,
                        },
                        REPLICATION_STATES,
                    )
                    .map(|_| ()),
            },
            TapKind::Delete => self.doc_key(&m.key).and_then(|key| {
                bucket
                    .apply(
                        m.vbucket,
                        key,
                        Item {
                            value: Bytes::new(),
                            flags: 0,
                            expiry: 0,
                            cas: m.cas,
                            by_seqno: 0,
                            rev_seqno: 0,
                            datatype: 0,
                            deleted: true,
                        },
                        REPLICATION_STATES,
                    )
                    .map(|_| ())
            }),
            TapKind::VbucketSet => match m.vbucket_state() {
                Ok(s) if bucket.set_state(m.vbucket, s) => Ok(()),
                Ok(_) => Err(Status::NotMyVbucket),
                Err(_) => Err(Status::Einval),
            },
            _ => Ok(()),
        };
        match r {
            Ok(()) if m.wants_ack() => m.ack_reply().encode(&mut self.wbuf),
            Ok(()) => {}
            Err(s) => {
                let mut ack = m.ack_reply();
                ack.vbucket_or_status = s.value();
                ack.encode(&mut self.wbuf);
            }
        }
        Next::Continue
    }
}
