//! The keyed window operator of one aggregated view: events in, changed online rows out.
//!
//! Each key's state is a [`KeyState`]. A key's row changes when one of its events arrives and
//! again whenever one of its events leaves a window; the second kind is driven by event time,
//! not the wall clock: after each batch the operator is advanced to the stream's time (the
//! greatest event time seen), and timers, bucketed by second, wake the keys whose next change
//! is due. Rows are collected per batch, one per changed key, so a key that saw a thousand
//! events in a batch is written once.
//!
//! A row is stored as of its `as_of` time with the key's greatest log offset as its created
//! time; both only grow, so the online store's newer-wins writes make replays after a restart
//! harmless.

use std::collections::{BTreeMap, HashMap};

use kiln_core::key::entity_key;
use kiln_core::time::{MICROS_PER_SECOND, Micros};
use kiln_core::{Value, spec::ViewVersion};
use kiln_store::online::{StoredRow, ViewTable};

use crate::event::{EventSchema, Row};
use crate::window::{Event, KeyState, Plan};

/// Hashes encoded entity keys with XXH3 (std's SipHash is built for untrusted keys; these are
/// the operator's own hot path, and a few short byte strings per event).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHash;

#[derive(Debug, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

fn bucket(t: Micros) -> i64 {
    t.div_euclid(MICROS_PER_SECOND)
}

/// The operator of one view.
pub struct ViewOperator {
    plan: Plan,
    table: ViewTable,
    ids: HashMap<Vec<u8>, u32, KeyHash>,
    keys: Vec<KeyState>,
    /// The timer bucket each key is scheduled in, if any.
    scheduled: Vec<Option<i64>>,
    timers: BTreeMap<i64, Vec<u32>>,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// The stream's time: the greatest event time applied or advanced to.
    now: Micros,
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
            ids: HashMap::default(),
            keys: Vec::new(),
            scheduled: Vec::new(),
            timers: BTreeMap::new(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            now: Micros::MIN,
        }
    }

    pub fn view(&self) -> &ViewVersion {
        &self.plan.view
    }

    pub fn table(&self) -> &ViewTable {
        &self.table
    }

    /// How many keys have state.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn id(&mut self, key: Vec<u8>) -> u32 {
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(KeyState::new(key.clone(), &self.plan));
        self.scheduled.push(None);
        self.is_dirty.push(false);
        self.ids.insert(key, id);
        id
    }

    /// Applies one event (already checked against the source's schema) logged at `seq`.
    pub fn apply(&mut self, schema: &EventSchema, row: &Row, seq: u64) {
        let key_values: Vec<Value> = self.plan.keys.iter().map(|&i| row[i].clone()).collect();
        if key_values.iter().any(Value::is_null) {
            // The push API refuses these; a log written by an older schema could hold one.
            return;
        }
        let event = Event {
            ts: schema.event_ts(row),
            created: schema.created_ts(row),
            seq,
            values: self.plan.slot_values(row),
        };
        let id = self.id(entity_key(&key_values));
        // A late event can undo a change its key was due for by the stream's time (it joins a
        // session that had ended): first let the key reach that time, as if the stream were
        // advanced after every event, so that the key's time never depends on the batching.
        if event.ts < self.now && self.scheduled[id as usize].is_some_and(|b| b <= bucket(self.now))
        {
            self.keys[id as usize].advance(&self.plan, self.now);
        }
        self.now = self.now.max(event.ts);
        self.keys[id as usize].insert(&self.plan, event);
        self.touch(id);
    }

    /// Restores one key's state from a checkpoint.
    pub fn restore(&mut self, key: Vec<u8>, as_of: Micros, seq: u64, events: Vec<Event>) {
        let id = self.id(key);
        let k = &mut self.keys[id as usize];
        for e in events {
            k.insert(&self.plan, e);
        }
        k.as_of = as_of;
        k.seq = seq;
        self.schedule(id);
    }

    fn touch(&mut self, id: u32) {
        if !self.is_dirty[id as usize] {
            self.is_dirty[id as usize] = true;
            self.dirty.push(id);
        }
        self.schedule(id);
    }

    fn schedule(&mut self, id: u32) {
        let k = &self.keys[id as usize];
        let Some(next) = k.next_change(&self.plan, k.as_of) else {
            return;
        };
        let b = bucket(next);
        // An earlier timer re-schedules the key when it fires.
        if self.scheduled[id as usize].is_some_and(|s| s <= b) {
            return;
        }
        self.scheduled[id as usize] = Some(b);
        self.timers.entry(b).or_default().push(id);
    }

    /// Lets events leave their windows up to the stream time `now` (after restoring a
    /// checkpoint: its stream time).
    pub fn advance(&mut self, now: Micros) {
        self.now = self.now.max(now);
        let later = self.timers.split_off(&(bucket(now) + 1));
        let due = std::mem::replace(&mut self.timers, later);
        for (b, ids) in due {
            for id in ids {
                if self.scheduled[id as usize] != Some(b) {
                    continue;
                }
                self.scheduled[id as usize] = None;
                if self.keys[id as usize].advance(&self.plan, now) {
                    self.touch(id);
                } else {
                    self.schedule(id);
                }
            }
        }
    }

    /// The rows of the keys that changed since the last call, and drops what no window needs.
    pub fn drain(&mut self) -> Vec<(Vec<u8>, StoredRow)> {
        let version = self.plan.view.version;
        let mut out = Vec::with_capacity(self.dirty.len());
        for id in std::mem::take(&mut self.dirty) {
            self.is_dirty[id as usize] = false;
            let k = &mut self.keys[id as usize];
            let values = k.values(&self.plan, k.as_of);
            out.push((
                k.key.clone(),
                StoredRow {
                    event_ts: k.as_of,
                    // Offsets fit: a log beyond 2^63 bytes is not a concern.
                    created_ts: k.seq as i64,
                    payload: StoredRow::encode_payload(version, &values),
                },
            ));
            k.collect_garbage(&self.plan);
        }
        out
    }

    /// Every key's state, for a checkpoint.
    pub fn states(&self) -> impl Iterator<Item = &KeyState> {
        self.keys.iter()
    }

    /// The current values of one key, as of its `as_of` (for tests and `kiln consistency`).
    pub fn current(&mut self, key: &[u8]) -> Option<(Micros, Vec<Value>)> {
        let k = &mut self.keys[*self.ids.get(key)? as usize];
        Some((k.as_of, k.values(&self.plan, k.as_of)))
    }
}
