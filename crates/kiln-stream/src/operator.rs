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
//! in order: the keys of the whole batch are looked up first, and the states of each phase's
//! keys (new events, timers due, rows to write) are read a group at a time in a tight loop
//! ahead of the work on them. With a million keys most lookups and states miss the cache; loops of independent
//! reads let the processor overlap those waits instead of taking them one by one.
//!
//! A row is stored as of its `as_of` time with the key's greatest log offset as its created
//! time; both only grow, so the online store's newer-wins writes make replays after a restart
//! harmless.

use std::collections::BTreeMap;

use hashbrown::HashTable;

use kiln_core::key::put_entity_key;
use kiln_core::time::{MICROS_PER_SECOND, Micros};
use kiln_core::{Value, spec::ViewVersion};
use kiln_store::online::{StoredRow, ViewTable};

use crate::event::EventSchema;
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

/// Bytes an entity key keeps inline: one or two numbers, or a short string.
const INLINE_KEY: usize = 22;

/// An entity key, kept inline when short (most are one number: 9 bytes), so that finding a
/// key's state and writing its row read no other allocation.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(b: &[u8]) -> Key {
        if b.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..b.len()].copy_from_slice(b);
            Key::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(b.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

/// Events applied and not yet folded into their keys' states. Folding a batch at a time lets
/// the operator find all of its keys first, in a loop of independent lookups, and read their
/// states in another, so the waits on memory overlap.
#[derive(Default)]
struct Pending {
    /// The events' encoded keys, back to back, and where each ends.
    keys: Vec<u8>,
    ends: Vec<usize>,
    stamps: Vec<Stamp>,
    /// `plan.stride()` inputs per event.
    inputs: Vec<Value>,
    /// Each event's key id, while folding.
    ids: Vec<u32>,
}

/// A key's state and the operator's bookkeeping of it, together so that one key is one
/// place in memory.
struct Keyed {
    key: Key,
    state: KeyState,
    /// The timer bucket the key is scheduled in, if any.
    scheduled: Option<i64>,
    /// Whether the key's row is waiting to be drained.
    dirty: bool,
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
    timers: BTreeMap<i64, Vec<u32>>,
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
            timers: BTreeMap::new(),
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

    /// The id of `key`, if it has state.
    fn find(&self, key: &[u8], h: u32) -> Option<u32> {
        let keys = &self.keys;
        self.ids
            .find(widen(h), |&(id, hh)| {
                hh == h && keys[id as usize].key.as_slice() == key
            })
            .map(|&(id, _)| id)
    }

    /// The id of `key`, given one if it is new.
    fn id(&mut self, key: &[u8]) -> u32 {
        let h = key_hash(key);
        if let Some(id) = self.find(key, h) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(Keyed {
            key: Key::new(key),
            state: KeyState::new(),
            scheduled: None,
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

    /// Folds the pending events into their keys' states, in the order they were applied.
    fn fold_pending(&mut self) {
        let mut p = std::mem::take(&mut self.pending);
        // Every key of the batch first, in a loop of lookups the processor overlaps.
        p.ids.clear();
        let mut start = 0;
        for &end in &p.ends {
            let id = self.id(&p.keys[start..end]);
            p.ids.push(id);
            start = end;
        }
        let stride = self.plan.stride();
        let mut inputs = p.inputs.drain(..);
        for (i, (&id, &stamp)) in p.ids.iter().zip(&p.stamps).enumerate() {
            self.warm(&p.ids, i);
            let k = &mut self.keys[id as usize];
            // A late event can undo a change its key was due for by the stream's time (it
            // joins a session that had ended): first let the key reach that time, as if the
            // stream were advanced after every event, so that the key's time never depends on
            // the batching.
            if stamp.ts < self.now && k.scheduled.is_some_and(|b| b <= bucket(self.now)) {
                k.state.advance(&self.plan, self.now);
            }
            self.now = self.now.max(stamp.ts);
            k.state
                .insert(&self.plan, stamp, inputs.by_ref().take(stride));
            self.touch(id);
        }
        drop(inputs);
        p.keys.clear();
        p.ends.clear();
        p.stamps.clear();
        self.pending = p;
    }

    /// At the start of each group of `ids` (the `i`-th begins one), reads the group's states in
    /// a loop of independent loads, so that the processor waits for their memory all at once
    /// rather than key after key in the work that follows (with a million keys, most are not
    /// in cache).
    fn warm(&self, ids: &[u32], i: usize) {
        if !i.is_multiple_of(GROUP) {
            return;
        }
        let mut x = 0;
        for &id in &ids[i..(i + GROUP).min(ids.len())] {
            x ^= self.keys[id as usize].state.probe();
        }
        std::hint::black_box(x);
    }

    /// Restores one key's state from a checkpoint.
    pub fn restore(&mut self, key: Vec<u8>, as_of: Micros, seq: u64, events: Vec<Event>) {
        self.fold_pending();
        let id = self.id(&key);
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
        if k.scheduled.is_some_and(|s| s <= b) {
            return;
        }
        k.scheduled = Some(b);
        self.timers.entry(b).or_default().push(id);
    }

    /// Lets events leave their windows up to the stream time `now` (after restoring a
    /// checkpoint: its stream time).
    pub fn advance(&mut self, now: Micros) {
        self.fold_pending();
        self.now = self.now.max(now);
        let later = self.timers.split_off(&(bucket(now) + 1));
        let due = std::mem::replace(&mut self.timers, later);
        for (b, ids) in due {
            for (i, &id) in ids.iter().enumerate() {
                self.warm(&ids, i);
                let k = &mut self.keys[id as usize];
                if k.scheduled != Some(b) {
                    continue;
                }
                k.scheduled = None;
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
                k.key.as_slice().to_vec(),
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
        self.keys.iter().map(|k| (k.key.as_slice(), &k.state))
    }

    /// The current values of one key, as of its `as_of` (for tests and `kiln consistency`).
    pub fn current(&mut self, key: &[u8]) -> Option<(Micros, Vec<Value>)> {
        self.fold_pending();
        let id = self.find(key, key_hash(key))?;
        let k = &mut self.keys[id as usize].state;
        Some((k.as_of, k.values(&self.plan, k.as_of)))
    }
}
