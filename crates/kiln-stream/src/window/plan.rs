//! A view's aggregations compiled once: which event columns they read (slots), which windows
//! and tile sizes they need, and which accumulators a row is computed from.

use kiln_core::Value;
use kiln_core::spec::{AggFunction, ViewVersion, Window};
use kiln_core::time::{MICROS_PER_SECOND, Micros};

use crate::StreamError;
use crate::event::EventSchema;

/// Tile sizes in seconds; a window gets the largest that fits 16 times.
const TILE_LADDER: [i64; 15] = [
    1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];
const TILES_PER_WINDOW: i64 = 16;

/// One aggregated feature of the view.
#[derive(Debug, Clone)]
pub(super) struct Feature {
    pub(super) function: AggFunction,
    /// Index into the plan's slots.
    pub(super) slot: usize,
    /// Index into the plan's windows.
    pub(super) window: usize,
    /// For the functions computed from an accumulator: index into the plan's accumulators.
    pub(super) acc: Option<usize>,
    /// For `approx_count_distinct` over a window long enough to tile: the tile size (index
    /// into the plan's tile sizes) and the input's index among the plan's sketched slots.
    pub(super) sketch: Option<(usize, usize)>,
    /// Whether the input is a float column (integers sum exactly).
    pub(super) float: bool,
}

/// One accumulator a row needs: an input over a window (count, sum and max of one column over
/// one window share it).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AccPlan {
    pub(super) slot: usize,
    /// Index into the plan's windows.
    pub(super) window: usize,
    /// Index into the plan's tile sizes; `None` for windows too short to tile.
    pub(super) tile: Option<usize>,
}

/// How a view's aggregations read an event, computed once per view.
#[derive(Debug, Clone)]
pub struct Plan {
    pub view: ViewVersion,
    /// Event columns of the join keys, in the view's key order.
    pub keys: Vec<usize>,
    /// The inputs: slot 0 is "the event" (for counts of events), the others event columns.
    pub(super) slots: Vec<Option<usize>>,
    /// Per slot, whether a standard deviation reads it (the moments cost two divisions per
    /// value, so they are only kept where needed).
    pub(super) moments: Vec<bool>,
    pub(super) features: Vec<Feature>,
    pub(super) accs: Vec<AccPlan>,
    /// The slots whose tiles keep HyperLogLog registers (inputs of `approx_count_distinct`
    /// over tiled windows).
    pub(super) sketched: Vec<usize>,
    pub(super) tiles: Vec<Micros>,
    pub(super) windows: Vec<Window>,
    /// How late an event may still arrive (the stream's allowed lateness): how long a session
    /// window keeps sessions that a late event could join. Unlimited until set.
    pub lateness: Micros,
}

/// The index of `x` in `list`, appended if it is not there yet.
fn intern<T: PartialEq>(list: &mut Vec<T>, x: T) -> usize {
    match list.iter().position(|y| *y == x) {
        Some(i) => i,
        None => {
            list.push(x);
            list.len() - 1
        }
    }
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
        let mut accs: Vec<AccPlan> = Vec::new();
        let mut sketched: Vec<usize> = Vec::new();
        let mut features = Vec::new();
        for a in &view.aggregations {
            let slot = match &a.column {
                None => 0,
                Some(c) => intern(&mut slots, Some(col(&c.name)?)),
            };
            let spec = a.window();
            let window = intern(&mut windows, spec);
            let tile = TILE_LADDER
                .iter()
                .rev()
                .map(|s| s * MICROS_PER_SECOND)
                .find(|t| t.saturating_mul(TILES_PER_WINDOW) <= spec.micros);
            let mut tile = || tile.map(|t| intern(&mut tiles, t));
            let (acc, sketch) = match a.function {
                AggFunction::Last | AggFunction::CountDistinct => (None, None),
                AggFunction::ApproxCountDistinct => {
                    (None, tile().map(|j| (j, intern(&mut sketched, slot))))
                }
                _ => {
                    let tile = tile();
                    (
                        Some(intern(&mut accs, AccPlan { slot, window, tile })),
                        None,
                    )
                }
            };
            features.push(Feature {
                function: a.function,
                slot,
                window,
                acc,
                sketch,
                float: a
                    .column
                    .as_ref()
                    .is_some_and(|c| c.dtype == kiln_core::ValueType::Float64),
            });
        }
        let moments = (0..slots.len())
            .map(|s| {
                features
                    .iter()
                    .any(|f| f.slot == s && f.function == AggFunction::Stddev)
            })
            .collect();
        Ok(Plan {
            view: view.clone(),
            keys,
            slots,
            moments,
            features,
            accs,
            sketched,
            tiles,
            windows,
            lateness: Micros::MAX / 4,
        })
    }

    /// How many values a key keeps per event: one per slot but the first ("the event").
    pub(crate) fn stride(&self) -> usize {
        self.slots.len() - 1
    }

    /// The inputs an event row gives the plan's slots after the first.
    pub(crate) fn inputs<'a>(
        &'a self,
        row: &'a [Value],
    ) -> impl ExactSizeIterator<Item = Value> + 'a {
        self.slots[1..].iter().map(|s| match s {
            Some(i) => row[*i].clone(),
            None => Value::Null,
        })
    }
}
