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

use kiln_core::key::put_entity_key;
use kiln_core::time::{MICROS_PER_SECOND, Micros};
use kiln_core::{Value, spec::ViewVersion};
use kiln_store::online::{StoredRow, ViewTable};

use crate::event::EventSchema;
use crate::window::{Event, KeyState, Plan, Scratch, Stamp};

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

/// Bytes an entity key keeps inline: one or two numbers, or a short string.
const INLINE_KEY: usize = 22;

/// An entity key, kept inline when short (most are one number: 9 bytes), so that finding a
/// key's state and writing its row read no other allocation.
#[derive(Clone)]
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

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    // As `[u8]` hashes, so that lookups by slice find it.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h);
    }
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
    ids: HashMap<Key, u32, KeyHash>,
    keys: Vec<Keyed>,
    timers: BTreeMap<i64, Vec<u32>>,
    dirty: Vec<u32>,
    /// The stream's time: the greatest event time applied or advanced to.
    now: Micros,
    /// Reused per event and per row.
    key: Vec<u8>,
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
            ids: HashMap::default(),
            keys: Vec::new(),
            timers: BTreeMap::new(),
            dirty: Vec::new(),
            now: Micros::MIN,
            key: Vec::new(),
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

    /// How many keys have state.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The id of the key in `self.key`, given one if it is new.
    fn id(&mut self) -> u32 {
        if let Some(id) = self.ids.get(self.key.as_slice()) {
            return *id;
        }
        let id = self.keys.len() as u32;
        let key = Key::new(&self.key);
        self.keys.push(Keyed {
            key: key.clone(),
            state: KeyState::new(),
            scheduled: None,
            dirty: false,
        });
        self.ids.insert(key, id);
        id
    }

    /// Applies one event (already checked against the source's schema) logged at `seq`.
    pub fn apply(&mut self, schema: &EventSchema, row: &[Value], seq: u64) {
        if self.plan.keys.iter().any(|&i| row[i].is_null()) {
            // The push API refuses these; a log written by an older schema could hold one.
            return;
        }
        self.key.clear();
        put_entity_key(&mut self.key, self.plan.keys.iter().map(|&i| &row[i]));
        let stamp = Stamp {
            ts: schema.event_ts(row),
            created: schema.created_ts(row),
            seq,
        };
        let id = self.id();
        let k = &mut self.keys[id as usize];
        // A late event can undo a change its key was due for by the stream's time (it joins a
        // session that had ended): first let the key reach that time, as if the stream were
        // advanced after every event, so that the key's time never depends on the batching.
        if stamp.ts < self.now && k.scheduled.is_some_and(|b| b <= bucket(self.now)) {
            k.state.advance(&self.plan, self.now);
        }
        self.now = self.now.max(stamp.ts);
        k.state.insert(&self.plan, stamp, self.plan.inputs(row));
        self.touch(id);
    }

    /// Restores one key's state from a checkpoint.
    pub fn restore(&mut self, key: Vec<u8>, as_of: Micros, seq: u64, events: Vec<Event>) {
        self.key = key;
        let id = self.id();
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
        self.now = self.now.max(now);
        let later = self.timers.split_off(&(bucket(now) + 1));
        let due = std::mem::replace(&mut self.timers, later);
        for (b, ids) in due {
            for id in ids {
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
        let version = self.plan.view.version;
        let mut out = Vec::with_capacity(self.dirty.len());
        for id in std::mem::take(&mut self.dirty) {
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

    /// Every key's entity key and state, for a checkpoint.
    pub fn states(&self) -> impl Iterator<Item = (&[u8], &KeyState)> {
        self.keys.iter().map(|k| (k.key.as_slice(), &k.state))
    }

    /// The current values of one key, as of its `as_of` (for tests and `kiln consistency`).
    pub fn current(&mut self, key: &[u8]) -> Option<(Micros, Vec<Value>)> {
        let k = &mut self.keys[*self.ids.get(key)? as usize].state;
        Some((k.as_of, k.values(&self.plan, k.as_of)))
    }
}
