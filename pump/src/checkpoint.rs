//! Per-vbucket checkpoints that advance only over contiguous confirmed seqnos.
//!
//! A source calls [`Checkpoint::track`] for each batch it sends (in the order it sends them)
//! and [`Checkpoint::settle`] with the batch's [`Delivery`] when its ack arrives, in any order.
//! A vbucket's committed seqno is the highest seqno of the longest prefix of its batches that
//! are all delivered: a batch settled ahead of an older one waits for it, so a checkpoint
//! never skips a gap. A batch with a failed message of a vbucket holds that vbucket where it
//! stood before the batch, for the rest of the run: a rerun from the checkpoint reads the
//! failed message (and what followed it) again.
//!
//! ```text
//! vbucket 5:  committed 10 | batch A: 11..20 | batch B: 21..30 (failed key at 24) | batch C: 31..40
//! settle C, settle A  -> 20        settle B (failed) -> 20, held: C never moves it
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::batch::Delivery;
use crate::message::Message;

/// Identifies a tracked batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Where a tracked batch of a vbucket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Waiting,
    Delivered,
    /// A message of this vbucket in the batch failed.
    Failed,
}

#[derive(Debug, Default, Clone)]
struct VbProgress {
    committed: u64,
    /// (ticket, highest seqno of this vbucket in that batch, how it settled)
    inflight: VecDeque<(Ticket, u64, Settled)>,
    /// A failed message holds the vbucket at `committed` for the rest of the run.
    held: bool,
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
            let p = self.vbs.entry(vb).or_default();
            if !p.held {
                p.inflight.push_back((t, seqno, Settled::Waiting));
            }
            vbs.push(vb);
        }
        self.tickets.insert(t, vbs);
        t
    }

    /// Marks a batch delivered in full; returns the vbuckets whose committed seqno moved, with
    /// the new value.
    pub fn confirm(&mut self, ticket: Ticket) -> Vec<(u16, u64)> {
        self.settle(ticket, &Delivery::default())
    }

    /// Settles a batch with its delivery: each vbucket with a failed message in it is held
    /// where it stands (see the module docs). Returns the vbuckets whose committed seqno
    /// moved, with the new value.
    pub fn settle(&mut self, ticket: Ticket, delivery: &Delivery) -> Vec<(u16, u64)> {
        let mut advanced = Vec::new();
        let Some(vbs) = self.tickets.remove(&ticket) else {
            return advanced;
        };
        let failed = delivery.failed_vbuckets();
        for vb in vbs {
            let Some(p) = self.vbs.get_mut(&vb) else {
                continue;
            };
            if let Some(entry) = p.inflight.iter_mut().find(|e| e.0 == ticket) {
                entry.2 = if failed.binary_search(&vb).is_ok() {
                    Settled::Failed
                } else {
                    Settled::Delivered
                };
            }
            let before = p.committed;
            while let Some(&(_, seqno, state)) = p.inflight.front() {
                match state {
                    Settled::Waiting => break,
                    Settled::Delivered => {
                        p.committed = p.committed.max(seqno);
                        p.inflight.pop_front();
                    }
                    Settled::Failed => {
                        p.held = true;
                        p.inflight.clear();
                    }
                }
            }
            if p.committed != before {
                advanced.push((vb, p.committed));
            }
        }
        advanced
    }

    /// True when a failed message holds `vb` back for the rest of the run.
    pub fn is_held(&self, vb: u16) -> bool {
        self.vbs.get(&vb).is_some_and(|p| p.held)
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
    use crate::batch::KeyFailure;

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
    fn a_failed_key_holds_its_vbucket_behind_it_for_the_rest_of_the_run() {
        let mut c = Checkpoint::from_committed([(5, 10)]);
        let a = c.track(&[msg(5, 11), msg(5, 20), msg(6, 3)]);
        let b = c.track(&[msg(5, 21), msg(5, 30), msg(6, 4)]);
        let later = c.track(&[msg(5, 31), msg(5, 40), msg(6, 9)]);
        let mut failed = Delivery::default();
        failed.failed.push(KeyFailure::of(&msg(5, 24), "E2BIG"));
        assert_eq!(c.confirm(later), vec![]);
        let mut adv = c.confirm(a);
        adv.sort();
        assert_eq!(adv, vec![(5, 20), (6, 3)]);
        // B's failure holds vbucket 5 at 20; vbucket 6 moves on through B and the later batch.
        assert_eq!(c.settle(b, &failed), vec![(6, 9)]);
        assert_eq!(c.committed(5), 20);
        assert!(c.is_held(5) && !c.is_held(6));
        // Nothing tracked afterwards moves it either.
        let after = c.track(&[msg(5, 41)]);
        assert_eq!(c.confirm(after), vec![]);
        assert_eq!(c.committed(5), 20);
        assert!(c.is_settled());
    }

    #[test]
    fn confirming_an_unknown_ticket_changes_nothing() {
        let mut c = Checkpoint::default();
        c.track(&[msg(0, 1)]);
        assert!(c.confirm(Ticket(99)).is_empty());
        assert_eq!(c.committed(0), 0);
    }
}
