//! Sorting a million doubles quickly. Each value is mapped to a u64 whose unsigned order is
//! the numeric order (negative: all bits flipped; positive: sign bit set), and the u64s are
//! sorted with the standard unstable sort. Integer comparisons make that about 1.6x faster
//! than sorting the doubles with `total_cmp`, and on these machines faster than an LSD radix
//! sort (whose scatter passes are memory-bound); see `benches/drift.rs`.

/// Sorts finite doubles ascending (-0.0 before +0.0; NaN is not expected).
pub fn sort_f64(values: &mut [f64]) {
    let mut keys: Vec<u64> = values.iter().map(|&v| to_key(v)).collect();
    keys.sort_unstable();
    for (v, k) in values.iter_mut().zip(keys) {
        *v = from_key(k);
    }
}

/// Monotone map from doubles to u64.
pub fn to_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

pub fn from_key(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn key_sort_matches_comparison_sort(
            v in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL, 0..2000)
        ) {
            let mut a = v.clone();
            let mut b = v;
            sort_f64(&mut a);
            b.sort_unstable_by(f64::total_cmp);
            prop_assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }

        #[test]
        fn keys_keep_order(a in proptest::num::f64::ANY, b in proptest::num::f64::ANY) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            prop_assert_eq!(a.total_cmp(&b), to_key(a).cmp(&to_key(b)));
        }
    }
}
