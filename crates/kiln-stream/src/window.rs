//! One key's windowed state and the exact value of every aggregation as of a time `T`.
//!
//! The contract is the batch side's (`kiln_features::window`): the value as of `T` covers the
//! events with `horizon(T) < event_ts <= T` (`horizon` is `T - w` for a sliding window, the
//! instant before `T`'s bucket for a tumbling one; [`kiln_core::spec::Window`]). Exactness at an
//! arbitrary `T` needs the events near the window's edges one by one, so a key keeps its raw
//! events for the longest window; what it does not do is rescan them. A window holding up to
//! 64 events is folded from them directly; past that, each window of 16 s or more has a tile
//! size (about a sixteenth of it, from a fixed ladder), and the key keeps per tile the
//! pre-aggregate of its events (built the first time a window needs them, then updated per
//! event). Such a window's value is the raw events of the partial tile at its tail, then the
//! full tiles, then the raw events of the partial tile at its head, combined in time order: a
//! busy 24 h window reads about 16 tiles and two tiles' worth of events.
//!
//! Everything is a left fold in (event time, created time, log offset) order over a fixed
//! split, so the answer depends only on the events, never on how they were batched, when
//! timers fired or whether the state was restored from a checkpoint: that is what lets a
//! restarted stream end in exactly the state of an uninterrupted one.
//!
//! `approx_count_distinct` tiles too: a tile keeps the HyperLogLog registers its values set
//! (sparse), and since registers merge by max in any order, the window's registers are its
//! edge events' and whole tiles' merged, estimated bit-for-bit as the batch side does.
//! `last` reads its window's latest events, and exact `count_distinct` scans its window (a
//! set of every value in it; per-tile sets would merge no faster).
//!
//! A key keeps its events in one list (each event's stamp and first input together: most
//! views read one column) and any further inputs in a second in step, boxed with the tiles
//! (most keys of most views need neither). The list holds its first two events in the key's
//! state itself: with a million keys most have a few events, and those then cost no
//! allocation and no second place in memory to reach; applying an event to a key allocates
//! nothing once its list has grown, and reading a key's events touches one buffer.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;

use kiln_core::Value;
use kiln_core::spec::{AggFunction, Window, WindowKind};
use kiln_core::time::Micros;
use kiln_core::value::ValueWriter;
use kiln_features::window::hll;
use smallvec::SmallVec;

mod acc;
mod plan;

use acc::Acc;
pub use plan::Plan;

/// A window holding at most this many events is folded from them directly; beyond it, from
/// tiles (built for the key the first time one of its windows needs them).
const RAW_MAX: usize = 64;

/// A window read from at most this many events is folded on its own; longer ones of the same
/// input share one fold (they nest), which saves work but copies each window's accumulator out.
const FOLD_APART: usize = 8;

/// One event as checkpoints keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: Micros,
    pub created: Micros,
    pub seq: u64,
    /// Per slot of the plan (the first, "the event", is `true`).
    pub values: Box<[Value]>,
}

/// When an event happened and where it was logged: its place in the fold order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub ts: Micros,
    pub created: Micros,
    pub seq: u64,
}

impl Stamp {
    fn order(&self) -> (Micros, Micros, u64) {
        (self.ts, self.created, self.seq)
    }
}

/// One tile: the pre-aggregates of a key's events in one interval.
#[derive(Debug, Clone)]
struct Tile {
    /// The interval's start / the tile size.
    idx: i64,
    /// Per slot of the plan.
    accs: Box<[Acc]>,
    /// Per sketched slot of the plan, the HyperLogLog registers its values set, as
    /// (register, rank) sorted by register ([`hll::add_sparse`]): registers merge by max, so
    /// a window's sketch is its tiles' and edge events' merged.
    sketches: Box<[Vec<(u16, u8)>]>,
}

/// One event as a key keeps it: its stamp and the value of the plan's second slot (the first
/// input; null if the plan reads no column).
#[derive(Debug, Clone)]
struct Kept {
    ts: Micros,
    created: Micros,
    seq: u64,
    first: Value,
}

impl Kept {
    fn order(&self) -> (Micros, Micros, u64) {
        (self.ts, self.created, self.seq)
    }
}

/// Events a key keeps without allocating.
const INLINE: usize = 2;

/// A key's events in fold order (read as a slice).
#[derive(Debug, Default)]
#[repr(C)]
struct Events {
    kept: SmallVec<[Kept; INLINE]>,
    /// How many events at the front were dropped but not yet removed: they are removed once
    /// they are half the list, so dropping costs no more than appending.
    head: u32,
}

impl std::ops::Deref for Events {
    type Target = [Kept];
    fn deref(&self) -> &[Kept] {
        &self.kept[self.head as usize..]
    }
}

/// What a key keeps beyond its events' stamps and first inputs, boxed: most keys of most views
/// need neither, and without them a key's state and the operator's bookkeeping of it fit in
/// three cache lines.
#[derive(Debug, Default)]
struct Extra {
    /// The inputs after the first, `plan.stride() - 1` per event, in step with the events'
    /// list (dropped events not yet removed included).
    more: Vec<Value>,
    /// Per tile size of the plan, the tiles holding events, in order; empty until a window of
    /// the key first holds more than [`RAW_MAX`] events, then `None` for each size not built.
    tiles: Vec<Option<VecDeque<Tile>>>,
}

/// A key's state, without an allocation per event.
#[derive(Debug)]
#[repr(C)]
pub struct KeyState {
    events: Events,
    /// `None` while the key has no further inputs and no tiles.
    extra: Option<Box<Extra>>,
    /// The time the key's values are as of: its latest event, or a later moment when an event
    /// left a window.
    pub as_of: Micros,
    /// The greatest log offset applied to the key (the stored row's created time, so that a
    /// late correction as of the same time replaces the earlier value).
    pub seq: u64,
}

/// Reused between rows: the accumulators and HyperLogLog registers of one row.
#[derive(Debug, Default)]
pub struct Scratch {
    accs: Vec<Acc>,
    sketch: hll::Merge,
    /// Per window of the plan, its horizon and events.
    spans: Vec<(Micros, Range<usize>)>,
    /// The accumulators to fold from events: (slot, first event, index into `accs`).
    raw: Vec<(usize, usize, usize)>,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState::new()
    }
}

impl KeyState {
    pub fn new() -> KeyState {
        KeyState {
            events: Events::default(),
            extra: None,
            as_of: Micros::MIN,
            seq: 0,
        }
    }

    /// The inputs after the first of the `i`-th event (`rest` of them).
    fn more(&self, i: usize, rest: usize) -> &[Value] {
        let at = (self.events.head as usize + i) * rest;
        match &self.extra {
            Some(x) => &x.more[at..at + rest],
            None => &[],
        }
    }

    /// Inserts an event at position `pos`, with its inputs after the first (`rest` of them).
    fn insert_event(
        &mut self,
        pos: usize,
        kept: Kept,
        more: impl Iterator<Item = Value>,
        rest: usize,
    ) {
        let at = self.events.head as usize + pos;
        self.events.kept.insert(at, kept);
        if rest == 0 {
            return;
        }
        let list = &mut self.extra.get_or_insert_default().more;
        if at + 1 == self.events.kept.len() {
            list.extend(more);
        } else {
            list.splice(at * rest..at * rest, more);
        }
    }

    /// Drops the first `n` events (each with `rest` further inputs). Dropping them all leaves
    /// the further inputs to [`KeyState::collect_garbage`], which then drops the box.
    fn drop_front(&mut self, n: usize, rest: usize) {
        let e = &mut self.events;
        e.head += n as u32;
        let head = e.head as usize;
        if head == e.kept.len() {
            // Nothing left: give back what a busy past took.
            *e = Events::default();
        } else if head * 2 >= e.kept.len() {
            e.kept.drain(..head);
            if let Some(x) = &mut self.extra {
                x.more.drain(..head * rest);
            }
            e.head = 0;
        }
    }

    /// Per tile size of the plan, the key's tiles (see [`Extra::tiles`]).
    fn tile_lists(&self) -> &[Option<VecDeque<Tile>>] {
        self.extra.as_ref().map_or(&[], |x| &x.tiles)
    }

    fn tile_lists_mut(&mut self) -> &mut [Option<VecDeque<Tile>>] {
        match &mut self.extra {
            Some(x) => &mut x.tiles,
            None => &mut [],
        }
    }

    /// The events, as checkpoints keep them.
    pub fn events<'a>(&'a self, plan: &'a Plan) -> impl Iterator<Item = Event> + 'a {
        let rest = plan.stride().saturating_sub(1);
        self.events.iter().enumerate().map(move |(i, e)| Event {
            ts: e.ts,
            created: e.created,
            seq: e.seq,
            values: std::iter::once(Value::Bool(true))
                .chain((plan.stride() > 0).then(|| e.first.clone()))
                .chain(self.more(i, rest).iter().cloned())
                .collect(),
        })
    }

    /// The value of slot `slot` (not the first) of the `i`-th event.
    fn input(&self, plan: &Plan, i: usize, slot: usize) -> &Value {
        if slot == 1 {
            &self.events[i].first
        } else {
            &self.more(i, plan.stride() - 1)[slot - 2]
        }
    }

    /// Adds the `i`-th event's slot to `acc`, as [`KeyState::fold_slot`] does.
    fn push(&self, plan: &Plan, acc: &mut Acc, i: usize, slot: usize) {
        if slot == 0 {
            acc.n += 1;
        } else {
            acc.push(self.input(plan, i, slot), plan.moments[slot]);
        }
    }

    /// Folds one slot over the events at positions `r`, in order.
    fn fold_slot(&self, plan: &Plan, slot: usize, r: Range<usize>) -> Acc {
        let mut acc = Acc::EMPTY;
        self.fold_into(plan, slot, r, &mut acc, false);
        acc
    }

    /// Adds one slot of the events at positions `r` to `acc`, oldest first or (`newest_first`)
    /// the other way round. Always inlined: the callers' accumulators then stay in registers
    /// through the fold, rather than being stored here and read back by the caller at once
    /// (a load that waits for the stores it overlaps).
    #[inline(always)]
    fn fold_into(
        &self,
        plan: &Plan,
        slot: usize,
        r: Range<usize>,
        acc: &mut Acc,
        newest_first: bool,
    ) {
        if slot == 0 {
            acc.n += r.len() as i64;
            return;
        }
        let moments = plan.moments[slot];
        if slot == 1 {
            let events = self.events[r].iter().map(|e| &e.first);
            if newest_first {
                events.rev().for_each(|v| acc.push(v, moments));
            } else {
                events.for_each(|v| acc.push(v, moments));
            }
        } else {
            let rest = plan.stride() - 1;
            let value = |i: usize| &self.more(i, rest)[slot - 2];
            if newest_first {
                r.rev().for_each(|i| acc.push(value(i), moments));
            } else {
                r.for_each(|i| acc.push(value(i), moments));
            }
        }
    }

    /// The HyperLogLog register and rank of one event's slot; `None` for a null.
    fn hll_slot(&self, plan: &Plan, i: usize, slot: usize) -> Option<(u16, u8)> {
        let v = self.input(plan, i, slot);
        (!v.is_null()).then(|| hll::slot(v))
    }

    /// The tile of index `idx` over the events at positions `r`: every slot folded in order.
    fn tile(&self, plan: &Plan, idx: i64, r: Range<usize>) -> Tile {
        Tile {
            idx,
            accs: (0..plan.slots.len())
                .map(|s| self.fold_slot(plan, s, r.clone()))
                .collect(),
            sketches: plan
                .sketched
                .iter()
                .map(|&s| {
                    let mut set = Vec::new();
                    for i in r.clone() {
                        if let Some(x) = self.hll_slot(plan, i, s) {
                            hll::add_sparse(&mut set, x);
                        }
                    }
                    set
                })
                .collect(),
        }
    }

    /// Adds an event (in any order: a late one goes where it belongs) whose values for the
    /// plan's slots after the first are `inputs`.
    pub fn insert(
        &mut self,
        plan: &Plan,
        stamp: Stamp,
        mut inputs: impl ExactSizeIterator<Item = Value>,
    ) {
        let pos = self.events.partition_point(|e| e.order() <= stamp.order());
        let rest = plan.stride().saturating_sub(1);
        debug_assert_eq!(inputs.len(), plan.stride());
        let kept = Kept {
            ts: stamp.ts,
            created: stamp.created,
            seq: stamp.seq,
            first: inputs.next().unwrap_or(Value::Null),
        };
        self.insert_event(pos, kept, inputs, rest);
        let ts = stamp.ts;
        for (j, &size) in plan.tiles.iter().enumerate() {
            let Some(Some(tiles)) = self.tile_lists().get(j) else {
                continue;
            };
            let idx = ts.div_euclid(size);
            let at = tiles.partition_point(|t| t.idx < idx);
            let newest_in_tile = self
                .events
                .get(pos + 1)
                .is_none_or(|next| next.ts.div_euclid(size) != idx);
            // Accumulators fold in order: appended to, or (an event before others of its
            // tile) folded again. Registers merge by max in any order.
            let accs: Option<Box<[Acc]>> = match tiles.get(at) {
                Some(t) if t.idx == idx && newest_in_tile => Some(
                    (0..plan.slots.len())
                        .map(|s| {
                            let mut acc = t.accs[s];
                            self.push(plan, &mut acc, pos, s);
                            acc
                        })
                        .collect(),
                ),
                Some(t) if t.idx == idx => Some(
                    self.tile(
                        plan,
                        idx,
                        range(&self.events, idx * size - 1, (idx + 1) * size - 1),
                    )
                    .accs,
                ),
                _ => None,
            };
            let fresh = accs.is_none().then(|| self.tile(plan, idx, pos..pos + 1));
            let sketch: Vec<Option<(u16, u8)>> = plan
                .sketched
                .iter()
                .map(|&s| self.hll_slot(plan, pos, s))
                .collect();
            let Some(Some(tiles)) = self.tile_lists_mut().get_mut(j) else {
                continue;
            };
            match (accs, fresh) {
                (Some(accs), _) => {
                    let t = &mut tiles[at];
                    t.accs = accs;
                    for (set, x) in t.sketches.iter_mut().zip(sketch) {
                        if let Some(x) = x {
                            hll::add_sparse(set, x);
                        }
                    }
                }
                (None, Some(tile)) => tiles.insert(at, tile),
                (None, None) => {}
            }
        }
        self.as_of = self.as_of.max(ts);
        self.seq = self.seq.max(stamp.seq);
    }

    /// The window's horizon as of `t` over this key's events (events at or before it are
    /// outside the window).
    fn horizon(&self, w: &Window, t: Micros) -> Micros {
        w.horizon(t).unwrap_or_else(|| {
            let upto = self.events.partition_point(|e| e.ts <= t);
            w.session_horizon(t, upto, |i| self.events[i].ts)
        })
    }

    /// The window's horizon as of `t` and the positions of its events, given `upto`, the
    /// number of events at or before `t`.
    fn span(&self, w: &Window, t: Micros, upto: usize) -> (Micros, Range<usize>) {
        let lo = w
            .horizon(t)
            .unwrap_or_else(|| w.session_horizon(t, upto, |i| self.events[i].ts));
        let a = self.events.partition_point(|e| e.ts <= lo);
        (lo, a..upto.max(a))
    }

    /// The earliest moment after `after` at which an event leaves one of the windows.
    pub fn next_change(&self, plan: &Plan, after: Micros) -> Option<Micros> {
        plan.windows
            .iter()
            .filter_map(|w| match w.kind {
                // A session ends a gap after its latest event.
                WindowKind::Session => self
                    .events
                    .last()
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
        let gone = self.events.partition_point(|e| e.ts <= horizon);
        if gone > 0 {
            self.drop_front(gone, plan.stride().saturating_sub(1));
        }
        for (j, &size) in plan.tiles.iter().enumerate() {
            let Some(Some(tiles)) = self.tile_lists_mut().get_mut(j) else {
                continue;
            };
            while tiles
                .front()
                .is_some_and(|t| (t.idx + 1).saturating_mul(size) - 1 <= horizon)
            {
                tiles.pop_front();
            }
        }
        if self.events.is_empty() {
            // No events, so no tiles either: nothing to keep beyond the times.
            self.extra = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// A value read from every cache line of the state that holds something (its times, its
    /// first and last events), for an operator to bring them into cache ahead of using them.
    pub fn probe(&self) -> Micros {
        let ts = |e: Option<&Kept>| e.map_or(0, |e| e.ts);
        self.as_of ^ ts(self.events.first()) ^ ts(self.events.last())
    }

    /// Every feature's value as of `t`, in the view's feature order.
    pub fn values(&mut self, plan: &Plan, t: Micros) -> Vec<Value> {
        let mut out = Vec::with_capacity(plan.features.len());
        self.values_into(plan, t, &mut Scratch::default(), &mut out);
        out
    }

    /// [`KeyState::values`] into `out` (cleared first), reusing `scratch`.
    pub fn values_into(
        &mut self,
        plan: &Plan,
        t: Micros,
        scratch: &mut Scratch,
        out: &mut Vec<Value>,
    ) {
        // Each window's events, found once for all that read it.
        let upto = self.events.partition_point(|e| e.ts <= t);
        scratch.spans.clear();
        for w in &plan.windows {
            let span = self.span(w, t, upto);
            scratch.spans.push(span);
        }
        scratch.accs.clear();
        scratch.raw.clear();
        for (i, a) in plan.accs.iter().enumerate() {
            let (lo, events) = scratch.spans[a.window].clone();
            let split = match a.tile {
                Some(j) => self.split(plan, j, lo, t, events),
                None => Split::Raw(events),
            };
            let acc = match split {
                // A few events: folded where the accumulator is kept, so nothing is copied.
                Split::Raw(r) if r.len() <= FOLD_APART => {
                    scratch.accs.push(Acc::EMPTY);
                    let acc = scratch.accs.last_mut().expect("just pushed");
                    self.fold_into(plan, a.slot, r, acc, false);
                    continue;
                }
                // Folded below, with the input's other long windows read from events.
                Split::Raw(r) => {
                    scratch.raw.push((a.slot, r.start, i));
                    Acc::EMPTY
                }
                Split::Tiled { head, tiles, tail } => {
                    let mut acc = self.fold_slot(plan, a.slot, head);
                    for tile in self.tiles(a.tile.unwrap_or_default()).range(tiles) {
                        acc = acc.combine(tile.accs[a.slot]);
                    }
                    acc.combine(self.fold_slot(plan, a.slot, tail))
                }
            };
            scratch.accs.push(acc);
        }
        // Longer windows read from events all end at the latest event up to `t`, so they nest:
        // fold each input once, newest first, taking each window's value as the fold passes
        // its oldest event (a fixed order, so the value still depends on the events alone).
        scratch
            .raw
            .sort_unstable_by_key(|&(slot, start, _)| (slot, std::cmp::Reverse(start)));
        let mut k = 0;
        while k < scratch.raw.len() {
            let slot = scratch.raw[k].0;
            let (mut acc, mut at) = (Acc::EMPTY, upto);
            while let Some(&(s, start, i)) = scratch.raw.get(k).filter(|x| x.0 == slot) {
                debug_assert_eq!(s, slot);
                self.fold_into(plan, slot, start..at, &mut acc, true);
                at = start;
                scratch.accs[i] = acc;
                k += 1;
            }
        }
        out.clear();
        for f in &plan.features {
            if let Some(a) = f.acc {
                out.push(scratch.accs[a].finish(f.function, f.float));
                continue;
            }
            let (lo, events) = scratch.spans[f.window].clone();
            out.push(match f.function {
                AggFunction::Last => events
                    .rev()
                    .map(|i| self.input(plan, i, f.slot))
                    .find(|v| Acc::counts(v))
                    .cloned()
                    .unwrap_or(Value::Null),
                AggFunction::CountDistinct => {
                    let mut seen = HashSet::new();
                    for i in events {
                        let v = self.input(plan, i, f.slot);
                        if !v.is_null() {
                            let mut b = Vec::new();
                            ValueWriter::new(&mut b).put(v);
                            seen.insert(b);
                        }
                    }
                    Value::Int64(seen.len() as i64)
                }
                _ => {
                    let (j, at) = f.sketch.unwrap_or_default();
                    let parts = match f.sketch {
                        Some(_) => self.split(plan, j, lo, t, events),
                        None => Split::Raw(events),
                    };
                    let merge = &mut scratch.sketch;
                    let raw = |merge: &mut hll::Merge, r: Range<usize>| {
                        for i in r {
                            if let Some(x) = self.hll_slot(plan, i, f.slot) {
                                merge.add(x);
                            }
                        }
                    };
                    match parts {
                        Split::Raw(r) => raw(merge, r),
                        Split::Tiled { head, tiles, tail } => {
                            raw(merge, head);
                            for tile in self.tiles(j).range(tiles) {
                                for &x in &tile.sketches[at] {
                                    merge.add(x);
                                }
                            }
                            raw(merge, tail);
                        }
                    }
                    Value::Int64(merge.take_estimate())
                }
            });
        }
    }

    /// How to read the window `lo < ts <= t`, whose events are at `all`, with tiles of the
    /// plan's `j`-th size: a window of few events, or one not covering a whole tile, from its
    /// events alone; otherwise the events of the partial tile at its tail, the whole tiles, and
    /// the events of the partial tile at its head (building the key's tiles of that size if it
    /// has none yet).
    fn split(&mut self, plan: &Plan, j: usize, lo: Micros, t: Micros, all: Range<usize>) -> Split {
        if all.len() <= RAW_MAX {
            return Split::Raw(all);
        }
        let size = plan.tiles[j];
        let first = lo.div_euclid(size) + 1;
        let last = t.saturating_add(1).div_euclid(size) - 1;
        if first > last {
            return Split::Raw(all);
        }
        if self.tile_lists().get(j).is_none_or(Option::is_none) {
            let built = self.build_tiles(plan, size);
            let lists = &mut self.extra.get_or_insert_default().tiles;
            if lists.is_empty() {
                *lists = vec![None; plan.tiles.len()];
            }
            lists[j] = Some(built);
        }
        let tiles = self.tiles(j);
        Split::Tiled {
            head: range(&self.events, lo, first.saturating_mul(size) - 1),
            tiles: tiles.partition_point(|x| x.idx < first)
                ..tiles.partition_point(|x| x.idx <= last),
            tail: range(&self.events, (last + 1).saturating_mul(size) - 1, t),
        }
    }

    /// The key's tiles of the plan's `j`-th size (empty if not built).
    fn tiles(&self, j: usize) -> &VecDeque<Tile> {
        static NONE: VecDeque<Tile> = VecDeque::new();
        match self.tile_lists().get(j) {
            Some(Some(t)) => t,
            _ => &NONE,
        }
    }

    /// The tiles of size `size` over the key's events, as the incremental updates in
    /// [`KeyState::insert`] build them.
    fn build_tiles(&self, plan: &Plan, size: Micros) -> VecDeque<Tile> {
        let mut tiles: VecDeque<Tile> = VecDeque::new();
        let mut i = 0;
        while i < self.events.len() {
            let idx = self.events[i].ts.div_euclid(size);
            let end = i + self.events[i..]
                .iter()
                .take_while(|e| e.ts.div_euclid(size) == idx)
                .count();
            tiles.push_back(self.tile(plan, idx, i..end));
            i = end;
        }
        tiles
    }
}

/// A window's events, positions in a key's events and tiles.
enum Split {
    Raw(Range<usize>),
    Tiled {
        head: Range<usize>,
        tiles: Range<usize>,
        tail: Range<usize>,
    },
}

/// The positions of the events with `after < ts <= upto`.
fn range(events: &[Kept], after: Micros, upto: Micros) -> Range<usize> {
    let a = events.partition_point(|e| e.ts <= after);
    let b = events.partition_point(|e| e.ts <= upto);
    a..b.max(a)
}
