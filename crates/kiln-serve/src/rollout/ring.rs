//! A consistent-hash ring with virtual nodes: how a sticky deployment places callers on arms.
//!
//! Each arm owns one point on the ring per basis point of its weight, at XXH3 (fixed seed) of
//! its version and the point's index; a caller's key hashes (same seed) to a position, and the
//! first point at or after it names the caller's arm. Everything is a pure function of the
//! deployment and the key, so a caller keeps their arm across restarts and replicas. An arm's
//! points are its first `weight` indices, so growing one arm's weight (a canary step) adds
//! points only to it: no caller leaves the growing arm, and between a canary and its baseline
//! callers only ever move onto the canary.

use kiln_core::deploy::Arm;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Fixed forever: changing it would move every caller.
const SEED: u64 = 0x6b69_6c6e_7269_6e67;

/// The ring of one deployment's arms.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (position, version), sorted.
    points: Vec<(u64, u32)>,
}

fn point(version: u32, index: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&version.to_le_bytes());
    b[4..].copy_from_slice(&index.to_le_bytes());
    xxh3_64_with_seed(&b, SEED)
}

impl Ring {
    /// The ring of `arms` (weights in basis points; at least one arm with a weight).
    pub fn new(arms: &[Arm]) -> Ring {
        let mut points: Vec<(u64, u32)> = arms
            .iter()
            .flat_map(|a| (0..a.weight).map(move |i| (point(a.version, i), a.version)))
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// The version that answers the caller with `key`.
    pub fn arm(&self, key: &[u8]) -> u32 {
        let at = xxh3_64_with_seed(key, SEED);
        let i = self.points.partition_point(|p| p.0 < at);
        self.points[i % self.points.len()].1
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn arms(w: &[(u32, u32)]) -> Vec<Arm> {
        w.iter()
            .map(|&(version, weight)| Arm { version, weight })
            .collect()
    }

    fn key(i: u32) -> Vec<u8> {
        format!("user-{i}").into_bytes()
    }

    #[test]
    fn callers_split_by_weight() {
        let ring = Ring::new(&arms(&[(1, 9_000), (2, 500), (3, 500)]));
        let mut counts: HashMap<u32, u32> = HashMap::new();
        let n = 200_000;
        for i in 0..n {
            *counts.entry(ring.arm(&key(i))).or_default() += 1;
        }
        // 10,000 virtual nodes: each share within a tenth of its weight.
        for (v, w) in [(1, 0.90), (2, 0.05), (3, 0.05)] {
            let share = f64::from(counts[&v]) / f64::from(n);
            assert!((share - w).abs() < w / 10.0, "v{v}: {share} for {w}");
        }
    }

    #[test]
    fn the_same_key_gets_the_same_arm_from_a_new_ring() {
        // Pinned positions: a change to the hashing would move every caller of every replica.
        let ring = Ring::new(&arms(&[(1, 5_000), (2, 5_000)]));
        let picks: Vec<u32> = (0..12).map(|i| ring.arm(&key(i))).collect();
        assert_eq!(picks, [1, 1, 1, 2, 2, 2, 1, 2, 2, 1, 2, 2]);
        let again = Ring::new(&arms(&[(2, 5_000), (1, 5_000)]));
        assert_eq!(
            picks,
            (0..12).map(|i| again.arm(&key(i))).collect::<Vec<_>>()
        );
        assert_eq!(
            point(1, 0),
            xxh3_64_with_seed(&[1, 0, 0, 0, 0, 0, 0, 0], SEED)
        );
    }

    proptest! {
        /// A canary step: the canary (v2) grows from `from` to `to` basis points, the others
        /// shrink. No caller leaves the canary; with one baseline, whoever moves moves onto
        /// the canary. (With two, a caller of a shrinking arm may land on the other.)
        #[test]
        fn growing_an_arm_only_moves_callers_onto_it(
            from in 1u32..9_000,
            grow in 1u32..1_000,
            third in 0u32..2,
        ) {
            let to = from + grow;
            let rest = |canary: u32| {
                let others = 10_000 - canary;
                if third == 1 {
                    vec![(1, others - others / 3), (3, others / 3), (2, canary)]
                } else {
                    vec![(1, others), (2, canary)]
                }
            };
            let before = Ring::new(&arms(&rest(from)));
            let after = Ring::new(&arms(&rest(to)));
            for i in 0..2_000 {
                let (a, b) = (before.arm(&key(i)), after.arm(&key(i)));
                prop_assert!(a != 2 || b == 2, "user-{i} left the canary for v{b}");
                prop_assert!(third == 1 || a == b || b == 2, "user-{i} moved from v{a} to v{b}");
            }
        }
    }
}
