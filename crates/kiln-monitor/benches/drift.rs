//! Drift on the shape: reference and current of N rows x 30 columns (24 float columns,
//! 3 integer columns with a handful of values, 2 string columns, 1 boolean), current shifted
//! in a third of the columns. Two measures:
//!
//! * `one_off`: prepare the reference and compare (what `kiln drift` does after reading);
//! * `prepared`: compare with a reference prepared beforehand (live drift, every window).
//!
//! Run: `cargo bench -p kiln-monitor --bench drift` (`DRIFT_BENCH_ROWS=100000` for a quick
//! one; default 1,000,000).

use kiln_monitor::drift::{
    ColumnData, Dataset, DriftOptions, PreparedReference, Strings, drift, drift_datasets,
};

fn main() {
    divan::main();
}

fn rows() -> usize {
    std::env::var("DRIFT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub fn table(n: usize, seed: u64, shift: f64) -> Dataset {
    let mut rng = Rng(seed);
    let mut ds = Dataset::new();
    let mut push = |name: String, data| ds.push(name, data).expect("unique names");
    for c in 0..24 {
        let s = if c % 3 == 0 { shift } else { 0.0 };
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let x = rng.normal() + s;
                if c % 5 == 0 {
                    (x * 100.0).round() / 100.0
                } else {
                    x
                }
            })
            .collect();
        push(format!("f{c:02}"), ColumnData::Float(v));
    }
    for c in 0..3 {
        let k = 3 + 2 * c as u64;
        push(
            format!("i{c}"),
            ColumnData::Int((0..n).map(|_| (rng.next() % k) as i64).collect()),
        );
    }
    for c in 0..2 {
        let labels = ["retail", "smb", "enterprise", "public", "other"];
        let s: Strings = (0..n)
            .map(|_| Some(labels[(rng.next() % (3 + c as u64)) as usize]))
            .collect();
        push(format!("s{c}"), ColumnData::Str(s));
    }
    push(
        "b0".into(),
        ColumnData::Bool((0..n).map(|_| rng.uniform() < 0.3 + shift * 0.05).collect()),
    );
    ds
}

#[divan::bench(sample_count = 5)]
fn one_off(bencher: divan::Bencher) {
    let n = rows();
    let (reference, current) = (table(n, 1, 0.0), table(n, 2, 0.2));
    let opts = DriftOptions::default();
    bencher.bench_local(|| drift_datasets(&reference, &current, &opts).expect("report"));
}

#[divan::bench(sample_count = 5)]
fn prepared(bencher: divan::Bencher) {
    let n = rows();
    let prepared = PreparedReference::new(&table(n, 1, 0.0));
    let current = table(n, 2, 0.2);
    let opts = DriftOptions::default();
    bencher.bench_local(|| drift(&prepared, &current, &opts).expect("report"));
}

/// Live drift's usual shape: a big reference, a window of 10,000 logged rows.
#[divan::bench(sample_count = 10)]
fn prepared_window_10k(bencher: divan::Bencher) {
    let prepared = PreparedReference::new(&table(rows(), 1, 0.0));
    let current = table(10_000, 3, 0.2);
    let opts = DriftOptions::default();
    bencher.bench_local(|| drift(&prepared, &current, &opts).expect("report"));
}

mod parts {
    use kiln_monitor::drift::merge::merge_stats;
    use kiln_monitor::drift::sample::NumericSample;
    use kiln_monitor::drift::sort::sort_f64;

    fn normal(n: usize, seed: u64) -> Vec<f64> {
        let mut r = super::Rng(seed);
        (0..n).map(|_| r.normal()).collect()
    }

    #[divan::bench(sample_count = 10)]
    fn key_sort_1m(bencher: divan::Bencher) {
        let v = normal(1_000_000, 7);
        bencher
            .with_inputs(|| v.clone())
            .bench_local_values(|mut v| sort_f64(&mut v));
    }

    /// The comparison sort `sort_f64` avoids.
    #[divan::bench(sample_count = 10)]
    fn total_cmp_sort_1m(bencher: divan::Bencher) {
        let v = normal(1_000_000, 7);
        bencher
            .with_inputs(|| v.clone())
            .bench_local_values(|mut v| v.sort_unstable_by(f64::total_cmp));
    }

    #[divan::bench(sample_count = 10)]
    fn sample_1m(bencher: divan::Bencher) {
        let v = normal(1_000_000, 7);
        bencher.bench_local(|| NumericSample::from_floats(&v));
    }

    #[divan::bench(sample_count = 10)]
    fn merge_1m_vs_1m(bencher: divan::Bencher) {
        let a = NumericSample::from_floats(&normal(1_000_000, 7));
        let b = NumericSample::from_floats(&normal(1_000_000, 8));
        bencher.bench_local(|| merge_stats(&a, &b));
    }
}
