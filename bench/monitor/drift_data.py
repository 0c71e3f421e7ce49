"""Benchmark data for `kiln drift` (issue #4): a reference and a current Parquet file of
1,000,000 rows x 30 columns, mixed like real model features:

* 20 float64 columns: 14 continuous (normal, log-normal, uniform, exponential, some with
  missing values) and 6 with few distinct values (prices rounded to a grid, ratings, flags
  stored as doubles);
* 6 int64 columns: 3 with at most 10 distinct values (Evidently types them categorical)
  and 3 with many (numerical);
* 4 string columns (plain Utf8 in the Arrow schema, as `df.to_parquet` writes an object
  column; Parquet dictionary-encodes their pages), 2 to 40 labels each (categorical).

The current file shifts 8 of the 30 columns (mean, scale or label mix) so the report has
drifted and undrifted columns of every kind. Deterministic (fixed seed).

    python bench/monitor/drift_data.py --out /tmp/kiln-drift-bench [--rows 1000000]

Needs numpy and pyarrow (the Evidently venv of drift_compare.py has both).
"""

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COUNTRIES = [f"C{i:02d}" for i in range(40)]
DEVICES = ["ios", "android", "web"]
CHANNELS = ["organic", "paid", "referral", "email", "social"]
PLANS = ["free", "pro"]


def table(rows: int, seed: int, shifted: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    s = 1.0 if shifted else 0.0
    cols = {}

    def with_missing(v, share):
        v = v.copy()
        v[rng.random(rows) < share] = np.nan
        return v

    # 14 continuous floats; f_amount, f_latency, f_score_a, f_ratio move in the current file.
    cols["f_amount"] = rng.lognormal(3.0 + 0.15 * s, 1.0, rows)
    cols["f_balance"] = rng.lognormal(7.0, 1.5, rows)
    cols["f_latency"] = rng.exponential(120.0 * (1 + 0.3 * s), rows)
    cols["f_score_a"] = rng.normal(0.2 * s, 1.0, rows)
    cols["f_score_b"] = rng.normal(0.0, 1.0, rows)
    cols["f_score_c"] = rng.normal(5.0, 2.0, rows)
    cols["f_ratio"] = rng.beta(2.0, 5.0 + 2.0 * s, rows)
    cols["f_uniform"] = rng.uniform(-1.0, 1.0, rows)
    cols["f_distance"] = with_missing(rng.gamma(2.0, 3.0, rows), 0.02)
    cols["f_velocity"] = with_missing(rng.normal(50.0, 15.0, rows), 0.05)
    cols["f_temp"] = rng.normal(20.0, 8.0, rows)
    cols["f_pct"] = rng.uniform(0.0, 100.0, rows)
    cols["f_log_odds"] = rng.logistic(0.0, 1.0, rows)
    cols["f_tenure_days"] = with_missing(rng.exponential(400.0, rows), 0.01)
    # 6 floats with few distinct values; f_price_grid moves.
    cols["f_price_grid"] = np.round(rng.normal(20.0 + 2.0 * s, 5.0, rows) * 2) / 2  # ~100 values
    cols["f_rating"] = rng.integers(1, 6, rows).astype(np.float64)  # 5 values
    cols["f_flag"] = (rng.random(rows) < 0.1).astype(np.float64)  # 2 values
    cols["f_bucket"] = rng.integers(0, 20, rows).astype(np.float64)  # 20 values
    cols["f_discount"] = rng.choice([0.0, 0.05, 0.1, 0.15, 0.25], rows, p=[0.6, 0.2, 0.1, 0.06, 0.04])
    cols["f_stars"] = with_missing(np.round(rng.uniform(0, 5, rows) * 2) / 2, 0.03)  # 11 values
    # 6 ints: 3 categorical (<= 10 values), 3 numerical; i_weekday and i_age move.
    wd_p = [0.1, 0.1, 0.1, 0.1, 0.1, 0.25, 0.25] if shifted else [1 / 7] * 7
    cols["i_weekday"] = rng.choice(7, rows, p=wd_p).astype(np.int64)
    cols["i_hour_bucket"] = rng.integers(0, 6, rows, dtype=np.int64)
    cols["i_segment"] = rng.integers(0, 10, rows, dtype=np.int64)
    cols["i_age"] = rng.integers(18 + int(3 * s), 90, rows, dtype=np.int64)
    cols["i_txn_count"] = rng.poisson(12.0, rows).astype(np.int64)
    cols["i_zip_prefix"] = rng.integers(100, 1000, rows, dtype=np.int64)
    # 4 strings; s_channel moves.
    cols["s_country"] = np.array(COUNTRIES, dtype=object)[rng.zipf(1.6, rows) % len(COUNTRIES)]
    cols["s_device"] = np.array(DEVICES, dtype=object)[rng.choice(3, rows, p=[0.4, 0.4, 0.2])]
    ch_p = [0.2, 0.2, 0.2, 0.2, 0.2] if shifted else [0.4, 0.25, 0.15, 0.1, 0.1]
    cols["s_channel"] = np.array(CHANNELS, dtype=object)[rng.choice(5, rows, p=ch_p)]
    cols["s_plan"] = np.array(PLANS, dtype=object)[(rng.random(rows) < 0.3).astype(int)]
    return pa.table({k: pa.array(v) for k, v in cols.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/kiln-drift-bench"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name, seed, shifted in (("reference", 1, False), ("current", 2, True)):
        t = table(a.rows, seed, shifted)
        # pyarrow's defaults, as `df.to_parquet` would write them (snappy, dictionary pages,
        # row groups of up to 1Mi rows).
        pq.write_table(t, a.out / f"{name}.parquet")
        print(f"{a.out / name}.parquet: {t.num_rows} rows x {t.num_columns} columns")


if __name__ == "__main__":
    main()
