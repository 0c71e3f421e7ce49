//! An operator's event-time timers: which keys to wake as the stream's time passes each
//! second.
//!
//! Most timers fall due within the hour: an event leaves a sliding window one window after it
//! happened, and most windows are minutes to hours long. So the buckets of the next
//! [`RING`] seconds are a ring indexed by the second itself, and scheduling a key is an index
//! and a push rather than a search of an ordered map (which cost a few percent of the
//! operator's time). Timers later than the ring, or already past when scheduled, wait in an
//! ordered map. Either way they come due in order of their second.

use std::collections::BTreeMap;

/// Seconds the ring covers: a little over an hour.
const RING: i64 = 4096;

/// Keys (as operator ids) scheduled by the second.
#[derive(Default)]
pub(crate) struct Timers {
    /// The ids of the seconds `base..base + RING`, the second `b` at `b mod RING` (empty until
    /// the first timer).
    ring: Vec<Vec<u32>>,
    /// The first second not yet taken; `None` before the first timer.
    base: Option<i64>,
    /// The ids of seconds outside the ring when they were scheduled.
    far: BTreeMap<i64, Vec<u32>>,
}

impl Timers {
    /// Schedules `id` in second `b`.
    pub(crate) fn push(&mut self, b: i64, id: u32) {
        let base = *self.base.get_or_insert(b);
        if (base..base.saturating_add(RING)).contains(&b) {
            if self.ring.is_empty() {
                self.ring.resize_with(RING as usize, Vec::new);
            }
            self.ring[b.rem_euclid(RING) as usize].push(id);
        } else {
            self.far.entry(b).or_default().push(id);
        }
    }

    /// Takes the timers of every second up to `upto`, in order of their seconds (within one,
    /// in the order they were scheduled).
    pub(crate) fn take_due(&mut self, upto: i64) -> Vec<(i64, Vec<u32>)> {
        let later = self.far.split_off(&upto.saturating_add(1));
        let far = std::mem::replace(&mut self.far, later);
        let Some(base) = self.base.filter(|&b| b <= upto) else {
            return far.into_iter().collect();
        };
        let mut due: Vec<(i64, Vec<u32>)> = Vec::new();
        let mut far = far.into_iter().peekable();
        if !self.ring.is_empty() {
            for b in base..=upto.min(base.saturating_add(RING - 1)) {
                while let Some(f) = far.next_if(|f| f.0 <= b) {
                    due.push(f);
                }
                let ids = std::mem::take(&mut self.ring[b.rem_euclid(RING) as usize]);
                if ids.is_empty() {
                    continue;
                }
                match due.last_mut() {
                    Some((last, earlier)) if *last == b => earlier.extend(ids),
                    _ => due.push((b, ids)),
                }
            }
        }
        due.extend(far);
        self.base = Some(upto.saturating_add(1));
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against an ordered map of every timer: the same ids come due at the same takes, in
        /// the same order, whether their seconds were in the ring, past it or already passed.
        #[test]
        fn timers_come_due_as_an_ordered_map_of_them_all_says(
            steps in prop::collection::vec(
                prop_oneof![
                    (-5_000i64..20_000).prop_map(Some),
                    Just(None),
                ],
                1..400,
            ),
            jumps in prop::collection::vec(-100i64..9_000, 1..50),
        ) {
            let (mut timers, mut model) = (Timers::default(), BTreeMap::<i64, Vec<u32>>::new());
            let mut now = -6_000;
            let mut jumps = jumps.iter().cycle();
            for (id, step) in steps.iter().enumerate() {
                match step {
                    Some(b) => {
                        timers.push(*b, id as u32);
                        model.entry(*b).or_default().push(id as u32);
                    }
                    None => {
                        now = now.max(now + jumps.next().expect("a cycle never ends"));
                        let later = model.split_off(&(now + 1));
                        let expected: Vec<_> = std::mem::replace(&mut model, later)
                            .into_iter()
                            .collect();
                        prop_assert_eq!(timers.take_due(now), expected);
                    }
                }
            }
            let expected: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(timers.take_due(i64::MAX), expected);
        }
    }
}
