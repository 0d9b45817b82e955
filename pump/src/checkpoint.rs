//! Per-vbucket checkpoints that advance only over contiguous confirmed seqnos.
//!
//! A source calls [`Checkpoint::track`] for each batch it sends (in the order it sends them)
//! and [`Checkpoint::confirm`] when that batch's ack arrives, in any order. A vbucket's
//! committed seqno is the highest seqno of the longest prefix of its batches that are all
//! confirmed: a batch confirmed ahead of an older one waits for it, so a checkpoint never
//! skips a gap.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::message::Message;

/// Identifies a tracked batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug, Default, Clone)]
struct VbProgress {
    committed: u64,
    /// (ticket, highest seqno of this vbucket in that batch, confirmed?)
    inflight: VecDeque<(Ticket, u64, bool)>,
}

/// Committed seqnos of every vbucket a source streams.
#[derive(Debug, Default, Clone)]
pub struct Checkpoint {
    vbs: BTreeMap<u16, VbProgress>,
    tickets: HashMap<Ticket, Vec<u16>>,
    next: u64,
}

impl Checkpoint {
    /// Starts from committed seqnos (a resumed run).
    pub fn from_committed(committed: impl IntoIterator<Item = (u16, u64)>) -> Self {
        let mut c = Checkpoint::default();
        for (vb, seqno) in committed {
            c.vbs.entry(vb).or_default().committed = seqno;
        }
        c
    }

    /// Records a batch about to be sent: for each vbucket in it, its highest seqno.
    pub fn track(&mut self, messages: &[Message]) -> Ticket {
        let mut highest: BTreeMap<u16, u64> = BTreeMap::new();
        for m in messages {
            let e = highest.entry(m.vbucket).or_insert(0);
            *e = (*e).max(m.seqno);
        }
        self.track_seqnos(highest)
    }

    /// Records a batch by (vbucket, highest seqno) pairs.
    pub fn track_seqnos(&mut self, highest: impl IntoIterator<Item = (u16, u64)>) -> Ticket {
        let t = Ticket(self.next);
        self.next += 1;
        let mut vbs = Vec::new();
        for (vb, seqno) in highest {
            self.vbs
                .entry(vb)
                .or_default()
                .inflight
                .push_back((t, seqno, false));
            vbs.push(vb);
        }
        self.tickets.insert(t, vbs);
        t
    }

    /// Marks a batch confirmed; returns the vbuckets whose committed seqno moved, with the new
    /// value.
    pub fn confirm(&mut self, ticket: Ticket) -> Vec<(u16, u64)> {
        let mut advanced = Vec::new();
        let Some(vbs) = self.tickets.remove(&ticket) else {
            return advanced;
        };
        for vb in vbs {
            let Some(p) = self.vbs.get_mut(&vb) else {
                continue;
            };
            if let Some(entry) = p.inflight.iter_mut().find(|e| e.0 == ticket) {
                entry.2 = true;
            }
            let before = p.committed;
            while let Some(&(_, seqno, true)) = p.inflight.front() {
                p.committed = p.committed.max(seqno);
                p.inflight.pop_front();
            }
            if p.committed != before {
                advanced.push((vb, p.committed));
            }
        }
        advanced
    }

    /// The committed seqno of a vbucket (0 if never seen).
    pub fn committed(&self, vb: u16) -> u64 {
        self.vbs.get(&vb).map_or(0, |p| p.committed)
    }

    /// Every vbucket's committed seqno.
    pub fn all_committed(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.vbs.iter().map(|(vb, p)| (*vb, p.committed))
    }

    /// True when no tracked batch is waiting for confirmation.
    pub fn is_settled(&self) -> bool {
        self.tickets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(vb: u16, seqno: u64) -> Message {
        Message {
            vbucket: vb,
            seqno,
            ..Message::mutation("k", "v")
        }
    }

    #[test]
    fn a_later_batch_confirmed_first_waits_for_the_gap() {
        let mut c = Checkpoint::default();
        let a = c.track(&[msg(5, 1), msg(5, 2)]);
        let b = c.track(&[msg(5, 3), msg(5, 4)]);
        assert_eq!(c.confirm(b), vec![]);
        assert_eq!(c.committed(5), 0);
        assert_eq!(c.confirm(a), vec![(5, 4)]);
        assert_eq!(c.committed(5), 4);
        assert!(c.is_settled());
    }

    #[test]
    fn vbuckets_advance_independently_within_one_batch() {
        let mut c = Checkpoint::from_committed([(1, 10)]);
        let a = c.track(&[msg(1, 11), msg(2, 7)]);
        let b = c.track(&[msg(2, 9)]);
        assert_eq!(c.confirm(b), vec![]);
        let mut adv = c.confirm(a);
        adv.sort();
        assert_eq!(adv, vec![(1, 11), (2, 9)]);
    }

    #[test]
    fn confirming_an_unknown_ticket_changes_nothing() {
        let mut c = Checkpoint::default();
        c.track(&[msg(0, 1)]);
        assert!(c.confirm(Ticket(99)).is_empty());
        assert_eq!(c.committed(0), 0);
    }
}
