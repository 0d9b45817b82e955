//! A bucket: N vbuckets, each behind its own lock, with items, seqnos and a failover log.
//!
//! ```text
//! Bucket { vbuckets: [Mutex<Vbucket>; N] }
//! Vbucket { state, items: key -> Item, by_seqno: seqno -> key, high_seqno, failover (newest first) }
//! ```
//!
//! Every change gets the vbucket's next seqno; a deletion keeps a tombstone so DCP can stream it.
//! An active vbucket may forward each change to a replica bucket (the in-process replication of
//! the local cluster).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pump_protocol::dcp::FailoverEntry;
use pump_protocol::meta::ConflictResolution;
use pump_protocol::{Status, VbucketState};

/// Relative expirations above this many seconds are absolute unix times (memcached's rule).
const RELATIVE_EXPIRY_MAX: u32 = 30 * 24 * 3600;

/// A fast non-cryptographic hasher for keys (multiply-rotate over 8-byte words). The node is a
/// reference server, not exposed to untrusted clients, so hash flooding is not a concern.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

const HASH_K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z ^= z >> 33;
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(HASH_K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b) ^ rest.len() as u64).wrapping_mul(HASH_K);
        }
        self.0 = h;
    }
}

/// The items of a vbucket.
pub type ItemMap = HashMap<Bytes, Item, BuildHasherDefault<KeyHasher>>;

/// One stored item (or a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    pub flags: u32,
    /// Absolute unix time, 0 = never.
    pub expiry: u32,
    pub cas: u64,
    pub by_seqno: u64,
    pub rev_seqno: u64,
    pub datatype: u8,
    pub deleted: bool,
}

impl Item {
    /// True when the item has an expiry in the past.
    pub fn expired(&self, now: u32) -> bool {
        self.expiry != 0 && self.expiry <= now
    }
}

/// What a write does when the key exists or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Set,
    Add,
    Replace,
}

/// A change to apply, as a client or a replication stream sends it.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: Bytes,
    pub value: Bytes,
    pub flags: u32,
    /// As sent: relative (<= 30 days) or absolute.
    pub expiry: u32,
    pub datatype: u8,
    /// 0 = any; otherwise the item's cas must match.
    pub cas: u64,
    pub mode: WriteMode,
}

/// What a stored change got: its cas, its seqno and the vbucket's uuid (a mutation token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mutation {
    pub cas: u64,
    pub seqno: u64,
    pub vbucket_uuid: u64,
}

/// How a with-meta write treats an existing copy of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaMode {
    /// SET_WITH_META: revision-based conflict resolution unless `force`.
    Set { force: bool },
    /// ADD_WITH_META: only where no live item is.
    Add,
    /// DEL_WITH_META: a tombstone, conflict resolution unless `force`.
    Delete { force: bool },
}

/// One vbucket.
#[derive(Debug)]
pub struct Vbucket {
    pub state: VbucketState,
    pub items: ItemMap,
    pub by_seqno: BTreeMap<u64, Bytes>,
    pub high_seqno: u64,
    /// Newest first.
    pub failover: Vec<FailoverEntry>,
    /// Where changes are forwarded (the replica copy of this vbucket), if anywhere.
    pub replica: Option<Arc<Bucket>>,
}

impl Vbucket {
    fn new(state: VbucketState) -> Vbucket {
        Vbucket {
            state,
            items: ItemMap::default(),
            by_seqno: BTreeMap::new(),
            high_seqno: 0,
            failover: vec![FailoverEntry {
                uuid: new_uuid(),
                seqno: 0,
            }],
            replica: None,
        }
    }

    /// The live item under `key` (not deleted, not expired).
    pub fn live(&self, key: &[u8], now: u32) -> Option<&Item> {
        self.items
            .get(key)
            .filter(|i| !i.deleted && !i.expired(now))
    }

    /// The current uuid (of the newest failover entry).
    pub fn uuid(&self) -> u64 {
        self.failover.first().map(|e| e.uuid).unwrap_or(0)
    }

    /// Stores `item` under `key` at the next seqno.
    fn put(&mut self, key: Bytes, mut item: Item) -> Mutation {
        self.high_seqno += 1;
        item.by_seqno = self.high_seqno;
        let m = Mutation {
            cas: item.cas,
            seqno: item.by_seqno,
            vbucket_uuid: self.uuid(),
        };
        self.place(key, item);
        m
    }

    /// Stores an item that already carries its seqno (replication); keeps high_seqno monotonic.
    fn place(&mut self, key: Bytes, item: Item) {
        let seqno = item.by_seqno;
        self.high_seqno = self.high_seqno.max(seqno);
        self.by_seqno.insert(seqno, key.clone());
        match self.items.entry(key) {
            Entry::Occupied(mut o) => {
                let old = o.insert(item);
                if old.by_seqno != seqno {
                    self.by_seqno.remove(&old.by_seqno);
                }
            }
            Entry::Vacant(v) => {
                v.insert(item);
            }
        }
    }

    /// Up to `max` items with seqno in `(after, upto]`, in seqno order.
    pub fn range(&self, after: u64, upto: u64, max: usize) -> Vec<(Bytes, Item)> {
        if after >= upto {
            return Vec::new();
        }
        self.by_seqno
            .range(after + 1..=upto)
            .take(max)
            .filter_map(|(_, k)| self.items.get(k).map(|i| (k.clone(), i.clone())))
            .collect()
    }

    /// Visits the items with seqno in `(after, upto]` in seqno order, without copying them,
    /// while `f` returns true. Returns true when the whole range was visited.
    ///
    /// Keys, items and values lie all over the heap: they are looked up sixteen at a time,
    /// each fetch started before the first is used, so the cache misses overlap.
    pub fn visit(&self, after: u64, upto: u64, mut f: impl FnMut(&Bytes, &Item) -> bool) -> bool {
        if after >= upto {
            return true;
        }
        const AHEAD: usize = 16;
        let mut range = self.by_seqno.range(after + 1..=upto);
        let mut keys: Vec<&Bytes> = Vec::with_capacity(AHEAD);
        let mut found: Vec<(&Bytes, &Item)> = Vec::with_capacity(AHEAD);
        loop {
            keys.clear();
            keys.extend(range.by_ref().take(AHEAD).map(|(_, k)| k));
            if keys.is_empty() {
                return true;
            }
            for k in &keys {
                prefetch(k.as_ptr());
            }
            found.clear();
            for k in &keys {
                if let Some(i) = self.items.get(*k) {
                    prefetch(i.value.as_ptr());
                    found.push((k, i));
                }
            }
            for (k, i) in &found {
                if !f(k, i) {
                    return false;
                }
            }
        }
    }

    /// Test hook: the vbucket rolls back to `seqno`, as a node restarted from a snapshot taken
    /// there would: the changes after it are lost, and a new failover branch starts at it
    /// (entries of the lost history leave the failover log). This node keeps no older version
    /// of a key: a key changed after `seqno` is gone, so the hook suits keys written after it.
    pub fn roll_back(&mut self, seqno: u64) {
        let lost = self.by_seqno.split_off(&(seqno + 1));
        for key in lost.values() {
            self.items.remove(key);
        }
        self.high_seqno = self.high_seqno.min(seqno);
        self.failover.retain(|e| e.seqno <= seqno);
        self.failover.insert(
            0,
            FailoverEntry {
                uuid: new_uuid(),
                seqno,
            },
        );
    }

    /// Starts a new failover branch at the current high seqno (on promotion to active).
    pub fn new_branch(&mut self) {
        self.failover.insert(
            0,
            FailoverEntry {
                uuid: new_uuid(),
                seqno: self.high_seqno,
            },
        );
    }
}

/// A bucket of vbuckets.
#[derive(Debug)]
pub struct Bucket {
    pub name: String,
    vbuckets: Vec<Mutex<Vbucket>>,
    cas: AtomicU64,
    dirty: AtomicBool,
    /// How with-meta writes are resolved against the copy here.
    conflict_resolution: ConflictResolution,
}

/// Asks the CPU to start loading the cache line at `p` (a hint: nothing happens elsewhere).
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: SSE is part of every x86_64 CPU, and a prefetch reads nothing the program sees:
    // it is a hint that cannot fault, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Seconds since the epoch.
pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn new_uuid() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of time and a counter: distinct per call, never 0.
    let mut z = t ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn absolute_expiry(e: u32) -> u32 {
    if e == 0 || e > RELATIVE_EXPIRY_MAX {
        e
    } else {
        now().saturating_add(e)
    }
}

impl Bucket {
    /// A bucket of `n` vbuckets, all in `state`.
    pub fn new(name: &str, n: u16, state: VbucketState) -> Bucket {
        Bucket {
            name: name.to_string(),
            vbuckets: (0..n).map(|_| Mutex::new(Vbucket::new(state))).collect(),
            cas: AtomicU64::new(now() as u64 * 1_000_000),
            dirty: AtomicBool::new(false),
            conflict_resolution: ConflictResolution::Seqno,
        }
    }

    /// The same bucket resolving with-meta conflicts by `mode` (seqno unless told).
    pub fn with_conflict_resolution(mut self, mode: ConflictResolution) -> Bucket {
        self.conflict_resolution = mode;
        self
    }

    /// How with-meta writes are resolved here.
    pub fn conflict_resolution(&self) -> ConflictResolution {
        self.conflict_resolution
    }

    /// Rebuilds a bucket from loaded vbuckets.
    pub fn from_vbuckets(name: &str, vbs: Vec<Vbucket>) -> Bucket {
        let max_cas = vbs
            .iter()
            .flat_map(|v| v.items.values().map(|i| i.cas))
            .max()
            .unwrap_or(0);
        Bucket {
            name: name.to_string(),
            vbuckets: vbs.into_iter().map(Mutex::new).collect(),
            cas: AtomicU64::new(max_cas.max(now() as u64 * 1_000_000)),
            dirty: AtomicBool::new(false),
            conflict_resolution: ConflictResolution::Seqno,
        }
    }

    /// Number of vbuckets.
    pub fn num_vbuckets(&self) -> u16 {
        self.vbuckets.len() as u16
    }

    /// Locks vbucket `vb`; None when out of range.
    pub fn vb(&self, vb: u16) -> Option<MutexGuard<'_, Vbucket>> {
        self.vbuckets
            .get(vb as usize)
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes and clears the "changed since last snapshot" flag.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    fn mark_dirty(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    fn next_cas(&self) -> u64 {
        self.cas.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The state of vbucket `vb` (None when out of range).
    pub fn state(&self, vb: u16) -> Option<VbucketState> {
        self.vb(vb).map(|v| v.state)
    }

    /// Sets the state of `vb`; a promotion to active opens a new failover branch.
    pub fn set_state(&self, vb: u16, state: VbucketState) -> bool {
        let Some(mut v) = self.vb(vb) else {
            return false;
        };
        if state == VbucketState::Active && v.state != VbucketState::Active {
            v.new_branch();
        }
        v.state = state;
        self.mark_dirty();
        true
    }

    /// Sets where vbucket `vb` forwards its changes.
    pub fn set_replica(&self, vb: u16, to: Option<Arc<Bucket>>) {
        if let Some(mut v) = self.vb(vb) {
            v.replica = to;
        }
    }

    /// A client write into `vb`; `allowed` are the states that accept it. A live item's
    /// xattrs are kept in front of the new body. Returns the mutation, or the status to answer.
    pub fn write(&self, vb: u16, w: Write, allowed: &[VbucketState]) -> Result<Mutation, Status> {
        let mut v = self.vb(vb).ok_or(Status::NotMyVbucket)?;
        if !allowed.contains(&v.state) {
            return Err(Status::NotMyVbucket);
        }
        let t = now();
        let mut kept: Option<(u8, Bytes)> = None;
        let (existing_cas, rev) = match v.items.get(&w.key) {
            Some(i) if !i.deleted && !i.expired(t) => {
                if i.datatype & pump_protocol::datatype::XATTR != 0 {
                    kept = Some(crate::value::keep_xattrs(
                        i.datatype, &i.value, w.datatype, &w.value,
                    ));
                }
                (Some(i.cas), i.rev_seqno + 1)
            }
            Some(i) => (None, i.rev_seqno + 1),
            None => (None, 1),
        };
        match (w.mode, existing_cas) {
            (WriteMode::Add, Some(_)) => return Err(Status::KeyEexists),
            (WriteMode::Replace, None) => return Err(Status::KeyEnoent),
            _ => {}
        }
        if w.cas != 0 {
            match existing_cas {
                None => return Err(Status::KeyEnoent),
                Some(c) if c != w.cas => return Err(Status::KeyEexists),
                _ => {}
            }
        }
        let (datatype, value) = kept.unwrap_or((w.datatype, w.value));
        let item = Item {
            value,
            flags: w.flags,
            expiry: absolute_expiry(w.expiry),
            cas: self.next_cas(),
            by_seqno: 0,
            rev_seqno: rev,
            datatype,
            deleted: false,
        };
        let m = v.put(w.key.clone(), item);
        self.forward(vb, &v, w.key);
        self.mark_dirty();
        Ok(m)
    }

    /// TOUCH / GAT: a new expiry (relative or absolute) for a live item, as a new revision.
    /// Returns the item after the change and the mutation.
    pub fn touch(
        &self,
        vb: u16,
        key: &Bytes,
        expiry: u32,
        allowed: &[VbucketState],
    ) -> Result<(Item, Mutation), Status> {
        let mut v = self.vb(vb).ok_or(Status::NotMyVbucket)?;
        if !allowed.contains(&v.state) {
            return Err(Status::NotMyVbucket);
        }
        let mut item = v.live(key, now()).cloned().ok_or(Status::KeyEnoent)?;
        item.expiry = absolute_expiry(expiry);
        item.cas = self.next_cas();
        item.rev_seqno += 1;
        let m = v.put(key.clone(), item);
        let stored = v.items.get(key).cloned().ok_or(Status::Einternal)?;
        self.forward(vb, &v, key.clone());
        self.mark_dirty();
        Ok((stored, m))
    }

    /// SET/ADD/DEL_WITH_META: stores `item` with its own cas, rev seqno, flags and expiry
    /// (absolute), unless the copy here wins conflict resolution (the bucket's: revision
    /// seqno or last write wins; KEY_EEXISTS, as a lost conflict answers). `cas` non-zero must match the copy here. Into a vbucket in
    /// one of the `allowed` states.
    #[allow(clippy::too_many_arguments)]
    pub fn write_with_meta(
        &self,
        vb: u16,
        key: Bytes,
        mut item: Item,
        mode: MetaMode,
        cas: u64,
        regenerate_cas: bool,
        allowed: &[VbucketState],
    ) -> Result<Mutation, Status> {
        use pump_protocol::meta::Revision;
        let mut v = self.vb(vb).ok_or(Status::NotMyVbucket)?;
        if !allowed.contains(&v.state) {
            return Err(Status::NotMyVbucket);
        }
        let t = now();
        if let Some(old) = v.items.get(&key) {
            let live = !old.deleted && !old.expired(t);
            if cas != 0 && old.cas != cas {
                return Err(Status::KeyEexists);
            }
            let mine = Revision {
                rev_seqno: old.rev_seqno,
                cas: old.cas,
                expiry: old.expiry,
                flags: old.flags,
            };
            let theirs = Revision {
                rev_seqno: item.rev_seqno,
                cas: item.cas,
                expiry: item.expiry,
                flags: item.flags,
            };
            let wins = match mode {
                MetaMode::Add => !live,
                MetaMode::Set { force: true } | MetaMode::Delete { force: true } => true,
                MetaMode::Set { force: false } => {
                    self.conflict_resolution.wins(theirs, mine, false)
                }
                MetaMode::Delete { force: false } => {
                    self.conflict_resolution.wins(theirs, mine, true)
                }
            };
            if !wins {
                return Err(Status::KeyEexists);
            }
        } else if cas != 0 {
            return Err(Status::KeyEnoent);
        }
        if regenerate_cas || item.cas == 0 {
            item.cas = self.next_cas();
        }
        if matches!(mode, MetaMode::Delete { .. }) {
            item.deleted = true;
            item.value = Bytes::new();
            item.datatype = 0;
        }
        let m = v.put(key.clone(), item);
        self.forward(vb, &v, key);
        self.mark_dirty();
        Ok(m)
    }

    /// Deletes `key` (a tombstone with a new seqno); `cas` 0 = any.
    pub fn delete(
        &self,
        vb: u16,
        key: Bytes,
        cas: u64,
        allowed: &[VbucketState],
    ) -> Result<Mutation, Status> {
        let mut v = self.vb(vb).ok_or(Status::NotMyVbucket)?;
        if !allowed.contains(&v.state) {
            return Err(Status::NotMyVbucket);
        }
        let Some(old) = v.live(&key, now()).cloned() else {
            return Err(Status::KeyEnoent);
        };
        if cas != 0 && old.cas != cas {
            return Err(Status::KeyEexists);
        }
        let item = Item {
            value: Bytes::new(),
            flags: 0,
            expiry: 0,
            cas: self.next_cas(),
            by_seqno: 0,
            rev_seqno: old.rev_seqno + 1,
            datatype: 0,
            deleted: true,
        };
        let m = v.put(key.clone(), item);
        self.forward(vb, &v, key);
        self.mark_dirty();
        Ok(m)
    }

    /// Applies an item as a replication stream carries it (a new seqno here, flags and expiry
    /// kept as given, expiry absolute). Only in `allowed` states.
    pub fn apply(
        &self,
        vb: u16,
        key: Bytes,
        mut item: Item,
        allowed: &[VbucketState],
    ) -> Result<Mutation, Status> {
        let mut v = self.vb(vb).ok_or(Status::NotMyVbucket)?;
        if !allowed.contains(&v.state) {
            return Err(Status::NotMyVbucket);
        }
        if item.cas == 0 {
            item.cas = self.next_cas();
        }
        if item.rev_seqno == 0 {
            item.rev_seqno = v.items.get(&key).map(|i| i.rev_seqno + 1).unwrap_or(1);
        }
        let m = v.put(key.clone(), item);
        self.forward(vb, &v, key);
        self.mark_dirty();
        Ok(m)
    }

    /// Forwards a change to the replica copy, same seqno.
    fn forward(&self, vb: u16, v: &Vbucket, key: Bytes) {
        if let Some(r) = &v.replica {
            let Some(item) = v.items.get(&key).cloned() else {
                return;
            };
            if let Some(mut rv) = r.vb(vb) {
                rv.place(key, item);
                r.mark_dirty();
            }
        }
    }

    /// The live item under `key` in `vb`, if `vb` is in an allowed state.
    pub fn get(&self, vb: u16, key: &[u8], allowed: &[VbucketState]) -> Result<Item, Status> {
        let v = self.vb(vb).ok_or(Status::NotMyVbucket)?;
        if !allowed.contains(&v.state) {
            return Err(Status::NotMyVbucket);
        }
        v.live(key, now()).cloned().ok_or(Status::KeyEnoent)
    }

    /// Deletes every item of every vbucket in an allowed state (FLUSH).
    pub fn flush(&self, allowed: &[VbucketState]) {
        for vb in 0..self.num_vbuckets() {
            let keys: Vec<Bytes> = match self.vb(vb) {
                Some(v) if allowed.contains(&v.state) => v
                    .items
                    .iter()
                    .filter(|(_, i)| !i.deleted)
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => continue,
            };
            for k in keys {
                let _ = self.delete(vb, k, 0, allowed);
            }
        }
    }

    /// Live items in the active vbuckets.
    pub fn active_item_count(&self) -> usize {
        let t = now();
        (0..self.num_vbuckets())
            .filter_map(|vb| self.vb(vb))
            .filter(|v| v.state == VbucketState::Active)
            .map(|v| {
                v.items
                    .values()
                    .filter(|i| !i.deleted && !i.expired(t))
                    .count()
            })
            .sum()
    }

    /// Live items in all vbuckets.
    pub fn item_count(&self) -> usize {
        let t = now();
        (0..self.num_vbuckets())
            .filter_map(|vb| self.vb(vb))
            .map(|v| {
                v.items
                    .values()
                    .filter(|i| !i.deleted && !i.expired(t))
                    .count()
            })
            .sum()
    }
}

/// The states a client's reads and writes are served from.
pub const CLIENT_STATES: &[VbucketState] = &[VbucketState::Active];
/// The states a with-meta write with FORCE_WITH_META_OP may write into (Couchbase Server 7:
/// a recovery writes into replica vbucket before activating them).
pub const WITH_META_FORCED_STATES: &[VbucketState] = &[
    VbucketState::Active,
    VbucketState::Replica,
    VbucketState::Pending,
];
/// The states a replication stream (TAP/DCP consumer) may write into.
pub const REPLICATION_STATES: &[VbucketState] = &[VbucketState::Replica, VbucketState::Pending];

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Write {
        Write {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            flags: 7,
            expiry: 0,
            datatype: 0,
            cas: 0,
            mode: WriteMode::Set,
        }
    }

    #[test]
    fn every_change_gets_the_next_seqno_and_an_update_moves_the_key() {
        let b = Bucket::new("default", 4, VbucketState::Active);
        b.write(1, set("a", "1"), CLIENT_STATES).unwrap();
        b.write(1, set("b", "2"), CLIENT_STATES).unwrap();
        b.write(1, set("a", "3"), CLIENT_STATES).unwrap();
        let v = b.vb(1).unwrap();
        assert_eq!(v.high_seqno, 3);
        let r = v.range(0, 3, 10);
        assert_eq!(r.len(), 2);
        assert_eq!(&r[0].0[..], b"b");
        assert_eq!(r[1].1.by_seqno, 3);
        assert_eq!(r[1].1.rev_seqno, 2);
    }

    #[test]
    fn a_delete_leaves_a_tombstone_and_add_replace_cas_follow_memcached() {
        let b = Bucket::new("default", 4, VbucketState::Active);
        let cas = b.write(0, set("k", "v"), CLIENT_STATES).unwrap().cas;
        let mut add = set("k", "x");
        add.mode = WriteMode::Add;
        assert_eq!(b.write(0, add, CLIENT_STATES), Err(Status::KeyEexists));
        let mut bad = set("k", "x");
        bad.cas = cas + 100;
        assert_eq!(b.write(0, bad, CLIENT_STATES), Err(Status::KeyEexists));
        b.delete(0, Bytes::from_static(b"k"), 0, CLIENT_STATES)
            .unwrap();
        assert_eq!(b.get(0, b"k", CLIENT_STATES), Err(Status::KeyEnoent));
        let mut rep = set("k", "x");
        rep.mode = WriteMode::Replace;
        assert_eq!(b.write(0, rep, CLIENT_STATES), Err(Status::KeyEnoent));
        let v = b.vb(0).unwrap();
        assert!(v.items[&b"k"[..]].deleted);
        assert_eq!(v.high_seqno, 2);
    }

    #[test]
    fn a_replica_vbucket_refuses_client_writes_and_takes_replication() {
        let b = Bucket::new("default", 4, VbucketState::Replica);
        assert_eq!(
            b.write(2, set("k", "v"), CLIENT_STATES),
            Err(Status::NotMyVbucket)
        );
        b.write(2, set("k", "v"), REPLICATION_STATES).unwrap();
        assert_eq!(b.vb(2).unwrap().high_seqno, 1);
    }

    #[test]
    fn an_active_vbucket_forwards_changes_to_its_replica_with_the_same_seqno() {
        let a = Bucket::new("default", 4, VbucketState::Active);
        let r = Arc::new(Bucket::new("default", 4, VbucketState::Replica));
        a.set_replica(3, Some(r.clone()));
        a.write(3, set("k", "v"), CLIENT_STATES).unwrap();
        a.write(3, set("k2", "v"), CLIENT_STATES).unwrap();
        let rv = r.vb(3).unwrap();
        assert_eq!(rv.high_seqno, 2);
        assert_eq!(rv.items[&b"k2"[..]].by_seqno, 2);
    }

    #[test]
    fn a_rollback_loses_the_changes_after_its_seqno_and_opens_a_branch_there() {
        let b = Bucket::new("b", 4, VbucketState::Active);
        for k in ["a", "b", "c", "d"] {
            b.write(0, set(k, "v"), CLIENT_STATES).unwrap();
        }
        let old = b.vb(0).unwrap().uuid();
        let mut v = b.vb(0).unwrap();
        v.roll_back(2);
        assert_eq!(v.high_seqno, 2);
        assert!(v.items.contains_key(&b"b"[..]) && !v.items.contains_key(&b"c"[..]));
        assert_eq!(v.by_seqno.len(), 2);
        assert_eq!(v.failover.len(), 2);
        assert_eq!((v.failover[1].uuid, v.failover[0].seqno), (old, 2));
        // The node answers a stream from past the rollback under the old uuid with ROLLBACK 2.
        assert_eq!(
            crate::dcp::check_request(&v.failover, v.high_seqno, 4, old),
            Err(2)
        );
        assert_eq!(
            crate::dcp::check_request(&v.failover, v.high_seqno, 2, old),
            Ok(())
        );
    }

    #[test]
    fn a_with_meta_write_keeps_the_newer_revision_and_its_own_cas() {
        let b = Bucket::new("default", 2, VbucketState::Active);
        let item = |rev: u64, cas: u64, v: &'static str| Item {
            value: Bytes::from_static(v.as_bytes()),
            flags: 1,
            expiry: 0,
            cas,
            by_seqno: 0,
            rev_seqno: rev,
            datatype: 0,
            deleted: false,
        };
        let k = || Bytes::from_static(b"k");
        let set = MetaMode::Set { force: false };
        let m = b
            .write_with_meta(0, k(), item(5, 500, "v5"), set, 0, false, CLIENT_STATES)
            .unwrap();
        assert_eq!(m.cas, 500);
        assert_eq!(m.vbucket_uuid, b.vb(0).unwrap().uuid());
        assert_eq!(
            b.write_with_meta(0, k(), item(4, 900, "v4"), set, 0, false, CLIENT_STATES),
            Err(Status::KeyEexists)
        );
        assert_eq!(&b.get(0, b"k", CLIENT_STATES).unwrap().value[..], b"v5");
        b.write_with_meta(0, k(), item(6, 1, "v6"), set, 0, false, CLIENT_STATES)
            .unwrap();
        assert_eq!(b.get(0, b"k", CLIENT_STATES).unwrap().rev_seqno, 6);
        assert_eq!(
            b.write_with_meta(
                0,
                k(),
                item(9, 1, ""),
                MetaMode::Add,
                0,
                false,
                CLIENT_STATES
            ),
            Err(Status::KeyEexists)
        );
        let del = MetaMode::Delete { force: false };
        assert_eq!(
            b.write_with_meta(0, k(), item(6, 0, ""), del, 0, false, CLIENT_STATES),
            Err(Status::KeyEexists)
        );
        b.write_with_meta(0, k(), item(7, 2, ""), del, 0, false, CLIENT_STATES)
            .unwrap();
        assert_eq!(b.get(0, b"k", CLIENT_STATES), Err(Status::KeyEnoent));
        // A tombstone's revision still takes part.
        assert_eq!(
            b.write_with_meta(0, k(), item(7, 1, "old"), set, 0, false, CLIENT_STATES),
            Err(Status::KeyEexists)
        );
        b.write_with_meta(
            0,
            k(),
            item(1, 1, "forced"),
            MetaMode::Set { force: true },
            0,
            true,
            CLIENT_STATES,
        )
        .unwrap();
        assert_eq!(&b.get(0, b"k", CLIENT_STATES).unwrap().value[..], b"forced");
        b.set_state(1, VbucketState::Replica);
        assert_eq!(
            b.write_with_meta(1, k(), item(1, 1, "x"), set, 0, false, CLIENT_STATES),
            Err(Status::NotMyVbucket)
        );
        // FORCE_WITH_META_OP writes into a replica (what cbrecovery relies on).
        let forced = MetaMode::Set { force: true };
        b.write_with_meta(
            1,
            k(),
            item(1, 1, "x"),
            forced,
            0,
            false,
            WITH_META_FORCED_STATES,
        )
        .unwrap();
    }

    #[test]
    fn touch_sets_a_new_expiry_cas_and_seqno() {
        let b = Bucket::new("default", 1, VbucketState::Active);
        let first = b.write(0, set("k", "v"), CLIENT_STATES).unwrap();
        let (item, m) = b
            .touch(0, &Bytes::from_static(b"k"), 100, CLIENT_STATES)
            .unwrap();
        assert!(item.expiry >= now() + 99 && item.expiry <= now() + 101);
        assert!(m.cas > first.cas && m.seqno == first.seqno + 1);
        assert_eq!(&item.value[..], b"v");
        assert_eq!(
            b.touch(0, &Bytes::from_static(b"nope"), 1, CLIENT_STATES)
                .unwrap_err(),
            Status::KeyEnoent
        );
    }

    #[test]
    fn a_promotion_opens_a_new_failover_branch_at_the_high_seqno() {
        let b = Bucket::new("default", 2, VbucketState::Replica);
        b.write(0, set("k", "v"), REPLICATION_STATES).unwrap();
        let old = b.vb(0).unwrap().uuid();
        b.set_state(0, VbucketState::Active);
        let v = b.vb(0).unwrap();
        assert_eq!(v.failover.len(), 2);
        assert_ne!(v.failover[0].uuid, old);
        assert_eq!(v.failover[0].seqno, 1);
    }
}
