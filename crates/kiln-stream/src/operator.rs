//! The keyed window operator of one aggregated view: events in, changed online rows out.
//!
//! Each key's state is a [`KeyState`]. A key's row changes when one of its events arrives and
//! again whenever one of its events leaves a window; the second kind is driven by event time,
//! not the wall clock: after each batch the operator is advanced to the stream's time (the
//! greatest event time seen), and timers, bucketed by second, wake the keys whose next change
//! is due. Rows are collected per batch, one per changed key, so a key that saw a thousand
//! events in a batch is written once.
//!
//! Applied events wait in a queue until the batch is advanced or drained, and are then folded
//! in order, a group of keys at a time: the group's keys are looked up, and the states of each
//! phase's keys (new events, timers due, rows to write) read, in tight loops ahead of the work
//! on them. With a million keys most lookups and states miss the cache; loops of independent
//! reads let the processor overlap those waits instead of taking them one by one.
//!
//! A row is stored as of its `as_of` time with the key's greatest log offset as its created
//! time; both only grow, so the online store's newer-wins writes make replays after a restart
//! harmless.

use hashbrown::HashTable;

use kiln_core::key::put_entity_key;
use kiln_core::time::{MICROS_PER_SECOND, Micros};
use kiln_core::{Value, spec::ViewVersion};
use kiln_store::online::{StoredRow, ViewTable};

use crate::event::EventSchema;
use crate::timers::Timers;
use crate::window::{Event, KeyState, Plan, Scratch, Stamp};

/// The hash of an encoded entity key: XXH3 (std's SipHash is built for untrusted keys; this
/// is the operator's hot path), 32 bits of it, kept beside the key's id in the index.
fn key_hash(key: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(key) as u32
}

/// The index's 64-bit hash of a key hash: the table takes buckets from its low bits and a tag
/// from its top ones, so both come from the 32 bits kept.
fn widen(h: u32) -> u64 {
    u64::from(h) << 32 | u64::from(h)
}

/// How many keys' states are read ahead of the work on them ([`ViewOperator::warm`]): enough
/// to overlap the waits, few enough that they are still in cache when their turn comes.
const GROUP: usize = 16;

fn bucket(t: Micros) -> i64 {
    t.div_euclid(MICROS_PER_SECOND)
}

/// Bytes an entity key keeps inline: one number (9 bytes encoded) or a short string.
const INLINE_KEY: usize = 15;

/// [`Key::len`] of a key too long to keep inline.
const LONG: u8 = u8::MAX;

/// An entity key in 16 bytes: inline when short (most are one number), so that finding a
/// key's state and writing its row read no other memory; otherwise the index of the key in
/// the operator's list of long keys.
#[derive(Clone, Copy)]
struct Key {
    len: u8,
    bytes: [u8; INLINE_KEY],
}

impl Key {
    fn new(b: &[u8], long: &mut Vec<Box<[u8]>>) -> Key {
        let mut bytes = [0; INLINE_KEY];
        if b.len() <= INLINE_KEY {
            bytes[..b.len()].copy_from_slice(b);
            return Key {
                len: b.len() as u8,
                bytes,
            };
        }
        bytes[..4].copy_from_slice(&(long.len() as u32).to_le_bytes());
        long.push(b.into());
        Key { len: LONG, bytes }
    }

    fn as_slice<'a>(&'a self, long: &'a [Box<[u8]>]) -> &'a [u8] {
        if self.len == LONG {
            let [a, b, c, d, ..] = self.bytes;
            &long[u32::from_le_bytes([a, b, c, d]) as usize]
        } else {
            &self.bytes[..usize::from(self.len)]
        }
    }
}

/// Events applied and not yet folded into their keys' states. Folding many at a time lets the
/// operator look up a group's keys in a loop of independent lookups, and read their states in
/// another, so the waits on memory overlap.
#[derive(Default)]
struct Pending {
    /// The events' encoded keys, back to back, and where each ends.
    keys: Vec<u8>,
    ends: Vec<usize>,
    stamps: Vec<Stamp>,
    /// `plan.stride()` inputs per event.
    inputs: Vec<Value>,
}

/// [`Keyed::scheduled`] of a key with no timer.
const UNSCHEDULED: i64 = i64::MIN;

/// A key's state and the operator's bookkeeping of it, together and aligned so that one key
/// is three whole cache lines (a test holds it to that): with a million keys every key an
/// event or a timer reaches is a few misses, and [`Keyed::probe`] takes them all at once.
#[repr(C, align(64))]
struct Keyed {
    key: Key,
    state: KeyState,
    /// The timer bucket the key is scheduled in, or [`UNSCHEDULED`].
    scheduled: i64,
    /// Whether the key's row is waiting to be drained.
    dirty: bool,
}

impl Keyed {
    /// Whether the key has a timer in bucket `b` or earlier.
    fn scheduled_by(&self, b: i64) -> bool {
        self.scheduled != UNSCHEDULED && self.scheduled <= b
    }

    /// A value read from each of the key's cache lines in use.
    fn probe(&self) -> i64 {
        self.state.probe() ^ self.scheduled ^ i64::from(self.key.len) ^ i64::from(self.dirty)
    }
}

/// The operator of one view.
pub struct ViewOperator {
    plan: Plan,
    table: ViewTable,
    /// Each key's id (its place in `keys`) and hash: 8 bytes a key, so that the index of a
    /// million keys stays small enough to be mostly in cache; the key itself is compared in
    /// `keys`.
    ids: HashTable<(u32, u32)>,
    keys: Vec<Keyed>,
    /// The keys longer than [`INLINE_KEY`] bytes.
    long: Vec<Box<[u8]>>,
    timers: Timers,
    dirty: Vec<u32>,
    /// The stream's time: the greatest event time applied or advanced to.
    now: Micros,
    /// Events applied but not yet folded into their keys' states.
    pending: Pending,
    /// Reused per row.
    values: Vec<Value>,
    scratch: Scratch,
}

impl ViewOperator {
    pub fn new(plan: Plan) -> ViewOperator {
        let table = ViewTable {
            name: plan.view.name.clone(),
            ttl_seconds: 0,
        };
        ViewOperator {
            plan,
            table,
            ids: HashTable::new(),
            keys: Vec::new(),
            long: Vec::new(),
            timers: Timers::default(),
            dirty: Vec::new(),
            now: Micros::MIN,
            pending: Pending::default(),
            values: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    pub fn view(&self) -> &ViewVersion {
        &self.plan.view
    }

    pub fn table(&self) -> &ViewTable {
        &self.table
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// How many keys have state (as of the last advance or drain).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The id of `key` (whose [`key_hash`] is `h`), if it has state.
    fn find(&self, key: &[u8], h: u32) -> Option<u32> {
        let (keys, long) = (&self.keys, &self.long);
        self.ids
            .find(widen(h), |&(id, hh)| {
                hh == h && keys[id as usize].key.as_slice(long) == key
            })
            .map(|&(id, _)| id)
    }

    /// The id of `key` (whose [`key_hash`] is `h`), given one if it is new.
    fn id(&mut self, key: &[u8], h: u32) -> u32 {
        if let Some(id) = self.find(key, h) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(Keyed {
            key: Key::new(key, &mut self.long),
            state: KeyState::new(),
            scheduled: UNSCHEDULED,
            dirty: false,
        });
        self.ids
            .insert_unique(widen(h), (id, h), |&(_, hh)| widen(hh));
        id
    }

    /// Applies one event (already checked against the source's schema) logged at `seq`: it
    /// is folded into its key's state, with the others applied since, before anything reads
    /// the state.
    pub fn apply(&mut self, schema: &EventSchema, row: &[Value], seq: u64) {
        if self.plan.keys.iter().any(|&i| row[i].is_null()) {
            // The push API refuses these; a log written by an older schema could hold one.
            return;
        }
        let p = &mut self.pending;
        put_entity_key(&mut p.keys, self.plan.keys.iter().map(|&i| &row[i]));
        p.ends.push(p.keys.len());
        p.stamps.push(Stamp {
            ts: schema.event_ts(row),
            created: schema.created_ts(row),
            seq,
        });
        p.inputs.extend(self.plan.inputs(row));
    }

    /// Folds the pending events into their keys' states, in the order they were applied, a
    /// group at a time: the group's keys are looked up by hash alone (the index's memory), the
    /// candidates' states read (their memory), and only then each key found exactly, from
    /// cache, and its events folded. Each stage is a loop of independent reads, so the
    /// processor overlaps their misses instead of taking a lookup's three one after another.
    fn fold_pending(&mut self) {
        let mut p = std::mem::take(&mut self.pending);
        let stride = self.plan.stride();
        let mut inputs = p.inputs.drain(..);
        let (mut hashes, mut candidates) = ([0u32; GROUP], [0u32; GROUP]);
        let n = p.stamps.len();
        let mut first = 0;
        while first < n {
            let group = first..(first + GROUP).min(n);
            let key = |i: usize| &p.keys[i.checked_sub(1).map_or(0, |j| p.ends[j])..p.ends[i]];
            for ((i, h), c) in group.clone().zip(&mut hashes).zip(&mut candidates) {
                *h = key_hash(key(i));
                let candidate = self.ids.find(widen(*h), |&(_, hh)| hh == *h);
                *c = candidate.map_or(u32::MAX, |&(id, _)| id);
            }
            self.read_ahead(&candidates[..group.len()]);
            for (i, &h) in group.zip(&hashes) {
                let id = self.id(key(i), h);
                let stamp = p.stamps[i];
                let k = &mut self.keys[id as usize];
                // A late event can undo a change its key was due for by the stream's time (it
                // joins a session that had ended): first let the key reach that time, as if
                // the stream were advanced after every event, so that the key's time never
                // depends on the batching.
                if stamp.ts < self.now && k.scheduled_by(bucket(self.now)) {
                    k.state.advance(&self.plan, self.now);
                }
                self.now = self.now.max(stamp.ts);
                k.state
                    .insert(&self.plan, stamp, inputs.by_ref().take(stride));
                self.touch(id);
            }
            first += GROUP;
        }
        drop(inputs);
        p.keys.clear();
        p.ends.clear();
        p.stamps.clear();
        self.pending = p;
    }

    /// At the start of each group of `ids` (the `i`-th begins one), reads the group's states
    /// ahead of the work on them ([`ViewOperator::read_ahead`]).
    fn warm(&self, ids: &[u32], i: usize) {
        if i.is_multiple_of(GROUP) {
            self.read_ahead(&ids[i..(i + GROUP).min(ids.len())]);
        }
    }

    /// Reads the states of `ids` (skipping ids no key has) in a loop of independent loads, so
    /// that the processor waits for their memory all at once rather than key after key in the
    /// work that follows (with a million keys, most are not in cache).
    fn read_ahead(&self, ids: &[u32]) {
        let mut x = 0;
        for &id in ids {
            if let Some(k) = self.keys.get(id as usize) {
                x ^= k.probe();
            }
        }
        std::hint::black_box(x);
    }

    /// Restores one key's state from a checkpoint.
    pub fn restore(&mut self, key: Vec<u8>, as_of: Micros, seq: u64, events: Vec<Event>) {
        self.fold_pending();
        let id = self.id(&key, key_hash(&key));
        let k = &mut self.keys[id as usize].state;
        for e in events {
            let stamp = Stamp {
                ts: e.ts,
                created: e.created,
                seq: e.seq,
            };
            k.insert(&self.plan, stamp, e.values.into_vec().into_iter().skip(1));
        }
        k.as_of = as_of;
        k.seq = seq;
        self.schedule(id);
    }

    fn touch(&mut self, id: u32) {
        let k = &mut self.keys[id as usize];
        if !k.dirty {
            k.dirty = true;
            self.dirty.push(id);
        }
        self.schedule(id);
    }

    fn schedule(&mut self, id: u32) {
        let k = &mut self.keys[id as usize];
        let Some(next) = k.state.next_change(&self.plan, k.state.as_of) else {
            return;
        };
        let b = bucket(next);
        // An earlier timer re-schedules the key when it fires.
        if k.scheduled_by(b) {
            return;
        }
        k.scheduled = b;
        self.timers.push(b, id);
    }

    /// Lets events leave their windows up to the stream time `now` (after restoring a
    /// checkpoint: its stream time).
    pub fn advance(&mut self, now: Micros) {
        self.fold_pending();
        self.now = self.now.max(now);
        for (b, ids) in self.timers.take_due(bucket(now)) {
            for (i, &id) in ids.iter().enumerate() {
                self.warm(&ids, i);
                let k = &mut self.keys[id as usize];
                if k.scheduled != b {
                    continue;
                }
                k.scheduled = UNSCHEDULED;
                if k.state.advance(&self.plan, now) {
                    self.touch(id);
                } else {
                    self.schedule(id);
                }
            }
        }
    }

    /// The rows of the keys that changed since the last call, and drops what no window needs.
    pub fn drain(&mut self) -> Vec<(Vec<u8>, StoredRow)> {
        self.fold_pending();
        let version = self.plan.view.version;
        let mut out = Vec::with_capacity(self.dirty.len());
        let dirty = std::mem::take(&mut self.dirty);
        for (i, &id) in dirty.iter().enumerate() {
            self.warm(&dirty, i);
            let k = &mut self.keys[id as usize];
            k.dirty = false;
            let s = &mut k.state;
            s.values_into(&self.plan, s.as_of, &mut self.scratch, &mut self.values);
            out.push((
                k.key.as_slice(&self.long).to_vec(),
                StoredRow {
                    event_ts: s.as_of,
                    // Offsets fit: a log beyond 2^63 bytes is not a concern.
                    created_ts: s.seq as i64,
                    payload: StoredRow::encode_payload(version, &self.values),
                },
            ));
            s.collect_garbage(&self.plan);
        }
        out
    }

    /// Every key's entity key and state, for a checkpoint (after [`ViewOperator::drain`]).
    pub fn states(&self) -> impl Iterator<Item = (&[u8], &KeyState)> {
        debug_assert!(self.pending.stamps.is_empty(), "events not yet folded");
        self.keys
            .iter()
            .map(|k| (k.key.as_slice(&self.long), &k.state))
    }

    /// The current values of one key, as of its `as_of` (for tests and `kiln consistency`).
    pub fn current(&mut self, key: &[u8]) -> Option<(Micros, Vec<Value>)> {
        self.fold_pending();
        let id = self.find(key, key_hash(key))?;
        let k = &mut self.keys[id as usize].state;
        Some((k.as_of, k.values(&self.plan, k.as_of)))
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_three_cache_lines() {
        assert_eq!(std::mem::size_of::<Keyed>(), 192);
    }

    #[test]
    fn keys_too_long_to_keep_inline_are_kept_aside_and_read_back() {
        let mut long = Vec::new();
        let keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"card-1".to_vec(),
            vec![7; INLINE_KEY],
            vec![1; INLINE_KEY + 1],
            vec![2; 300],
        ];
        let kept: Vec<Key> = keys.iter().map(|k| Key::new(k, &mut long)).collect();
        assert_eq!(long.len(), 2);
        for (k, b) in kept.iter().zip(&keys) {
            assert_eq!(k.as_slice(&long), &b[..]);
        }
    }
}
