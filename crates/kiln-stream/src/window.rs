//! One key's windowed state and the exact value of every aggregation as of a time `T`.
//!
//! The contract is the batch side's (`kiln_features::window`): the value as of `T` covers the
//! events with `horizon(T) < event_ts <= T` (`horizon` is `T - w` for a sliding window, the
//! instant before `T`'s bucket for a tumbling one; [`kiln_core::spec::Window`]). Exactness at an arbitrary `T` needs the events near the
//! window's edges one by one, so a key keeps its raw events for the longest window; what it
//! does not do is rescan them. A window holding up to 64 events is folded from them directly;
//! past that, each window of 16 s or more has a tile size (about a sixteenth of it, from a fixed
//! ladder), and the key keeps per tile the pre-aggregate of its events (built the first time a
//! window needs them, then updated per event). Such a window's value is the raw events of the
//! partial tile at its tail, then the full tiles, then the raw events of the partial tile at its
//! head, combined in time order: a busy 24 h window reads about 16 tiles and two tiles' worth
//! of events.
//!
//! Everything is a left fold in (event time, created time, log offset) order over a fixed
//! split, so the answer depends only on the events, never on how they were batched, when
//! timers fired or whether the state was restored from a checkpoint: that is what lets a
//! restarted stream end in exactly the state of an uninterrupted one. (`count_distinct`,
//! `approx_count_distinct` and `last` read their window's raw events directly; the first two
//! scan their window: per-tile HyperLogLog registers, merged by max, are not built yet.)

use std::collections::{HashSet, VecDeque};

use kiln_core::Value;
use kiln_core::spec::{AggFunction, ViewVersion, Window, WindowKind};
use kiln_core::time::{MICROS_PER_SECOND, Micros};
use kiln_core::value::ValueWriter;
use kiln_features::window::hll::Sketch;
use kiln_features::window::swag::{Moments, Monoid, SumF};

use crate::StreamError;
use crate::event::EventSchema;

/// Tile sizes in seconds; a window gets the largest that fits 16 times.
const TILE_LADDER: [i64; 15] = [
    1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];
const TILES_PER_WINDOW: i64 = 16;
/// A window holding at most this many events is folded from them directly; beyond it, from
/// tiles (built for the key the first time one of its windows needs them).
const RAW_MAX: usize = 64;

/// One aggregated feature of the view.
#[derive(Debug, Clone)]
struct Feature {
    function: AggFunction,
    /// Index into the plan's slots.
    slot: usize,
    window: Window,
    /// Index into the plan's tile sizes; `None` for windows too short to tile.
    tile: Option<usize>,
    /// Whether the input is a float column (integers sum exactly).
    float: bool,
}

/// How a view's aggregations read an event, computed once per view.
#[derive(Debug, Clone)]
pub struct Plan {
    pub view: ViewVersion,
    /// Event columns of the join keys, in the view's key order.
    pub keys: Vec<usize>,
    /// The inputs: slot 0 is "the event" (for counts of events), the others event columns.
    slots: Vec<Option<usize>>,
    features: Vec<Feature>,
    tiles: Vec<Micros>,
    windows: Vec<Window>,
    /// How late an event may still arrive (the stream's allowed lateness): how long a session
    /// window keeps sessions that a late event could join. Unlimited until set.
    pub lateness: Micros,
}

impl Plan {
    pub fn new(view: &ViewVersion, schema: &EventSchema) -> Result<Plan, StreamError> {
        let col = |name: &str| {
            schema.index(name).ok_or_else(|| {
                StreamError::Setup(format!(
                    "feature view {:?} reads column {name:?}, which source {:?} does not have",
                    view.name, schema.source
                ))
            })
        };
        let keys = view
            .join_keys
            .iter()
            .map(|k| col(&k.name))
            .collect::<Result<_, _>>()?;
        let mut slots: Vec<Option<usize>> = vec![None];
        let mut tiles: Vec<Micros> = Vec::new();
        let mut windows: Vec<Window> = Vec::new();
        let mut features = Vec::new();
        for a in &view.aggregations {
            let slot = match &a.column {
                None => 0,
                Some(c) => {
                    let i = col(&c.name)?;
                    match slots.iter().position(|s| *s == Some(i)) {
                        Some(s) => s,
                        None => {
                            slots.push(Some(i));
                            slots.len() - 1
                        }
                    }
                }
            };
            let window = a.window();
            let tile = TILE_LADDER
                .iter()
                .rev()
                .map(|s| s * MICROS_PER_SECOND)
                .find(|t| t.saturating_mul(TILES_PER_WINDOW) <= window.micros)
                .map(|t| match tiles.iter().position(|x| *x == t) {
                    Some(i) => i,
                    None => {
                        tiles.push(t);
                        tiles.len() - 1
                    }
                });
            if !windows.contains(&window) {
                windows.push(window);
            }
            features.push(Feature {
                function: a.function,
                slot,
                window,
                tile,
                float: a
                    .column
                    .as_ref()
                    .is_some_and(|c| c.dtype == kiln_core::ValueType::Float64),
            });
        }
        Ok(Plan {
            view: view.clone(),
            keys,
            slots,
            features,
            tiles,
            windows,
            lateness: Micros::MAX / 4,
        })
    }

    /// The slot values of an event row.
    pub fn slot_values(&self, row: &[Value]) -> Box<[Value]> {
        self.slots
            .iter()
            .map(|s| match s {
                None => Value::Bool(true),
                Some(i) => row[*i].clone(),
            })
            .collect()
    }
}

/// The pre-aggregate of some values of one input: everything every function needs.
#[derive(Debug, Clone, Copy)]
struct Acc {
    n: i64,
    sum_i: i128,
    sum_f: SumF,
    min_i: i64,
    max_i: i64,
    min_f: f64,
    max_f: f64,
    moments: Moments,
}

impl Acc {
    const EMPTY: Acc = Acc {
        n: 0,
        sum_i: 0,
        sum_f: SumF::IDENTITY,
        min_i: i64::MAX,
        max_i: i64::MIN,
        min_f: f64::INFINITY,
        max_f: f64::NEG_INFINITY,
        moments: Moments::IDENTITY,
    };

    fn of(v: &Value) -> Acc {
        match v {
            Value::Null => Acc::EMPTY,
            Value::Int64(x) => Acc {
                n: 1,
                sum_i: i128::from(*x),
                min_i: *x,
                max_i: *x,
                moments: Moments::of(*x as f64),
                ..Acc::EMPTY
            },
            // NaN and infinities are skipped like nulls, as on the batch side.
            Value::Float64(x) if !x.is_finite() => Acc::EMPTY,
            Value::Float64(x) => Acc {
                n: 1,
                sum_f: SumF::of(*x),
                min_f: *x,
                max_f: *x,
                moments: Moments::of(*x),
                ..Acc::EMPTY
            },
            _ => Acc { n: 1, ..Acc::EMPTY },
        }
    }

    fn combine(self, b: Acc) -> Acc {
        if b.n == 0 {
            return self;
        }
        Acc {
            n: self.n + b.n,
            sum_i: self.sum_i + b.sum_i,
            sum_f: self.sum_f.combine(b.sum_f),
            min_i: self.min_i.min(b.min_i),
            max_i: self.max_i.max(b.max_i),
            min_f: self.min_f.min(b.min_f),
            max_f: self.max_f.max(b.max_f),
            moments: self.moments.combine(b.moments),
        }
    }

    fn finish(&self, f: AggFunction, float: bool) -> Value {
        use AggFunction as F;
        if self.n == 0 {
            return match f {
                F::Count | F::CountDistinct | F::ApproxCountDistinct => Value::Int64(0),
                _ => Value::Null,
            };
        }
        match (f, float) {
            (F::Count, _) => Value::Int64(self.n),
            (F::Sum, false) => {
                Value::Int64(self.sum_i.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
            }
            (F::Sum, true) => Value::Float64(self.sum_f.value()),
            (F::Mean, false) => Value::Float64(self.sum_i as f64 / self.n as f64),
            (F::Mean, true) => Value::Float64(self.sum_f.value() / self.n as f64),
            (F::Min, false) => Value::Int64(self.min_i),
            (F::Max, false) => Value::Int64(self.max_i),
            (F::Min, true) => Value::Float64(self.min_f),
            (F::Max, true) => Value::Float64(self.max_f),
            (F::Stddev, _) => self.moments.stddev().map_or(Value::Null, Value::Float64),
            // Computed from raw events, never from an accumulator.
            (F::Last | F::CountDistinct | F::ApproxCountDistinct, _) => Value::Null,
        }
    }
}

/// One event as a key keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: Micros,
    pub created: Micros,
    pub seq: u64,
    /// Per slot of the plan.
    pub values: Box<[Value]>,
}

impl Event {
    fn order(&self) -> (Micros, Micros, u64) {
        (self.ts, self.created, self.seq)
    }
}

/// One tile: its index (start / size) and an accumulator per slot.
type Tile = (i64, Box<[Acc]>);

/// A key's state.
#[derive(Debug)]
pub struct KeyState {
    pub key: Vec<u8>,
    events: VecDeque<Event>,
    /// Per tile size of the plan, the tiles holding events, in order; `None` until a window
    /// of the key holds more than [`RAW_MAX`] events.
    tiles: Vec<Option<VecDeque<Tile>>>,
    /// The time the key's values are as of: its latest event, or a later moment when an event
    /// left a window.
    pub as_of: Micros,
    /// The greatest log offset applied to the key (the stored row's created time, so that a
    /// late correction as of the same time replaces the earlier value).
    pub seq: u64,
}

impl KeyState {
    pub fn new(key: Vec<u8>, plan: &Plan) -> KeyState {
        KeyState {
            key,
            events: VecDeque::new(),
            tiles: vec![None; plan.tiles.len()],
            as_of: Micros::MIN,
            seq: 0,
        }
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Adds an event (in any order: a late one goes where it belongs).
    pub fn insert(&mut self, plan: &Plan, ev: Event) {
        let pos = self.events.partition_point(|e| e.order() <= ev.order());
        let (ts, seq) = (ev.ts, ev.seq);
        self.events.insert(pos, ev);
        for (j, &size) in plan.tiles.iter().enumerate() {
            let idx = ts.div_euclid(size);
            let Some(tiles) = &mut self.tiles[j] else {
                continue;
            };
            let at = tiles.partition_point(|t| t.0 < idx);
            let newest_in_tile = self
                .events
                .get(pos + 1)
                .is_none_or(|next| next.ts.div_euclid(size) != idx);
            match tiles.get_mut(at) {
                Some(t) if t.0 == idx && newest_in_tile => {
                    for (acc, v) in t.1.iter_mut().zip(self.events[pos].values.iter()) {
                        *acc = acc.combine(Acc::of(v));
                    }
                }
                Some(t) if t.0 == idx => {
                    t.1 = fold(
                        self.events.range(range(
                            &self.events,
                            idx * size - 1,
                            (idx + 1) * size - 1,
                        )),
                        plan.slots.len(),
                    );
                }
                _ => tiles.insert(
                    at,
                    (idx, self.events[pos].values.iter().map(Acc::of).collect()),
                ),
            }
        }
        self.as_of = self.as_of.max(ts);
        self.seq = self.seq.max(seq);
    }

    /// The window's horizon as of `t` over this key's events (events at or before it are
    /// outside the window).
    fn horizon(&self, w: &Window, t: Micros) -> Micros {
        w.horizon(t).unwrap_or_else(|| {
            let upto = self.events.partition_point(|e| e.ts <= t);
            w.session_horizon(t, upto, |i| self.events[i].ts)
        })
    }

    /// The earliest moment after `after` at which an event leaves one of the windows.
    pub fn next_change(&self, plan: &Plan, after: Micros) -> Option<Micros> {
        plan.windows
            .iter()
            .filter_map(|w| match w.kind {
                // A session ends a gap after its latest event.
                WindowKind::Session => self
                    .events
                    .back()
                    .map(|e| w.leaves(e.ts))
                    .filter(|t| *t > after),
                _ => {
                    let i = self
                        .events
                        .partition_point(|e| e.ts <= self.horizon(w, after));
                    self.events.get(i).map(|e| w.leaves(e.ts))
                }
            })
            .min()
    }

    /// Moves `as_of` to the latest moment up to `now` at which an event left a window; returns
    /// whether it moved.
    pub fn advance(&mut self, plan: &Plan, now: Micros) -> bool {
        let latest = plan
            .windows
            .iter()
            .filter_map(|w| {
                let i = self
                    .events
                    .partition_point(|e| e.ts <= self.horizon(w, now));
                i.checked_sub(1).map(|i| w.leaves(self.events[i].ts))
            })
            .max();
        match latest {
            Some(t) if t > self.as_of => {
                self.as_of = t;
                true
            }
            _ => false,
        }
    }

    /// Drops what no window as of `as_of` or later can see. A session window keeps every
    /// session a late event could still join to the current one: those whose latest event is
    /// within the allowed lateness and a gap of `as_of`.
    pub fn collect_garbage(&mut self, plan: &Plan) {
        let horizon = plan
            .windows
            .iter()
            .map(|w| match w.kind {
                WindowKind::Session => {
                    let reach = self
                        .as_of
                        .saturating_sub(plan.lateness)
                        .saturating_sub(w.micros);
                    let mut i = self.events.partition_point(|e| e.ts <= reach);
                    if i == self.events.len() {
                        return reach;
                    }
                    // Back to the first event of that event's session.
                    while i > 0
                        && self.events[i].ts.saturating_sub(self.events[i - 1].ts) < w.micros
                    {
                        i -= 1;
                    }
                    self.events[i].ts.saturating_sub(1)
                }
                _ => self.horizon(w, self.as_of),
            })
            .min()
            .unwrap_or(self.as_of);
        while self.events.front().is_some_and(|e| e.ts <= horizon) {
            self.events.pop_front();
        }
        for (j, &size) in plan.tiles.iter().enumerate() {
            let Some(tiles) = &mut self.tiles[j] else {
                continue;
            };
            while tiles
                .front()
                .is_some_and(|t| (t.0 + 1).saturating_mul(size) - 1 <= horizon)
            {
                tiles.pop_front();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every feature's value as of `t`, in the view's feature order.
    pub fn values(&mut self, plan: &Plan, t: Micros) -> Vec<Value> {
        // count, sum and max of one column over one window share one accumulator.
        let mut accs: Vec<(usize, Window, Acc)> = Vec::new();
        plan.features
            .iter()
            .map(|f| {
                let lo = self.horizon(&f.window, t);
                match f.function {
                    AggFunction::Last => self
                        .events
                        .range(range(&self.events, lo, t))
                        .rev()
                        .map(|e| &e.values[f.slot])
                        .find(|v| Acc::of(v).n > 0)
                        .cloned()
                        .unwrap_or(Value::Null),
                    AggFunction::CountDistinct => {
                        let mut seen = HashSet::new();
                        for e in self.events.range(range(&self.events, lo, t)) {
                            let v = &e.values[f.slot];
                            if !v.is_null() {
                                let mut b = Vec::new();
                                ValueWriter::new(&mut b).put(v);
                                seen.insert(b);
                            }
                        }
                        Value::Int64(seen.len() as i64)
                    }
                    AggFunction::ApproxCountDistinct => {
                        let mut sketch = Sketch::default();
                        for e in self.events.range(range(&self.events, lo, t)) {
                            let v = &e.values[f.slot];
                            if !v.is_null() {
                                sketch.add(v);
                            }
                        }
                        Value::Int64(sketch.estimate())
                    }
                    function => {
                        let acc = match accs.iter().find(|a| a.0 == f.slot && a.1 == f.window) {
                            Some(a) => a.2,
                            None => {
                                let acc = self.window_acc(plan, f, lo, t);
                                accs.push((f.slot, f.window, acc));
                                acc
                            }
                        };
                        acc.finish(function, f.float)
                    }
                }
            })
            .collect()
    }

    fn window_acc(&mut self, plan: &Plan, f: &Feature, lo: Micros, t: Micros) -> Acc {
        let raw = |events: &VecDeque<Event>, a: Micros, b: Micros| {
            events
                .range(range(events, a, b))
                .fold(Acc::EMPTY, |acc, e| acc.combine(Acc::of(&e.values[f.slot])))
        };
        let Some(j) = f.tile else {
            return raw(&self.events, lo, t);
        };
        if range(&self.events, lo, t).len() <= RAW_MAX {
            return raw(&self.events, lo, t);
        }
        let size = plan.tiles[j];
        let first = lo.div_euclid(size) + 1;
        let last = t.saturating_add(1).div_euclid(size) - 1;
        if first > last {
            return raw(&self.events, lo, t);
        }
        let events = &self.events;
        let tiles =
            self.tiles[j].get_or_insert_with(|| build_tiles(events, size, plan.slots.len()));
        let from = tiles.partition_point(|x| x.0 < first);
        let to = tiles.partition_point(|x| x.0 <= last);
        let mut acc = raw(events, lo, first.saturating_mul(size) - 1);
        for tile in tiles.range(from..to) {
            acc = acc.combine(tile.1[f.slot]);
        }
        acc.combine(raw(events, (last + 1).saturating_mul(size) - 1, t))
    }
}

/// The tiles of size `size` over `events`: each a fold of its events in order, as the
/// incremental updates in [`KeyState::insert`] build them.
fn build_tiles(events: &VecDeque<Event>, size: Micros, slots: usize) -> VecDeque<Tile> {
    let mut tiles: VecDeque<Tile> = VecDeque::new();
    let mut i = 0;
    while i < events.len() {
        let idx = events[i].ts.div_euclid(size);
        let end = i + events
            .range(i..)
            .take_while(|e| e.ts.div_euclid(size) == idx)
            .count();
        tiles.push_back((idx, fold(events.range(i..end), slots)));
        i = end;
    }
    tiles
}

/// The positions of the events with `after < ts <= upto`.
fn range(events: &VecDeque<Event>, after: Micros, upto: Micros) -> std::ops::Range<usize> {
    let a = events.partition_point(|e| e.ts <= after);
    let b = events.partition_point(|e| e.ts <= upto);
    a..b.max(a)
}

fn fold<'a>(events: impl Iterator<Item = &'a Event>, slots: usize) -> Box<[Acc]> {
    let mut accs = vec![Acc::EMPTY; slots];
    for e in events {
        for (acc, v) in accs.iter_mut().zip(e.values.iter()) {
            *acc = acc.combine(Acc::of(v));
        }
    }
    accs.into_boxed_slice()
}
