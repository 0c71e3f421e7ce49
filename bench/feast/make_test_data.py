#!/usr/bin/env python3
"""Make benchmark test data with the same schema as Kiln's generator.

Writes into --out DIR:

driver_stats.parquet   10,000 drivers (driver_id 1001..11000) x 24 hourly rows
                       = 240,000 rows, columns
                         driver_id        int64
                         event_timestamp  timestamp[us, tz=UTC]  (exact hours)
                         created          timestamp[us, tz=UTC]  (event + 0..600 s)
                         conv_rate        float32
                         acc_rate         float32
                         avg_daily_trips  int64
                         avg_rating       float64
entities_100k.parquet  100,000 rows: driver_id int64 (about 5% ids that do not
                       exist), event_timestamp timestamp[us, tz=UTC] spread from
                       2 h before the first data hour to 6 h after the last one;
                       about 1% of them fall exactly on a data hour (to exercise
                       the inclusive "feature_ts <= entity_ts" bound).

Deterministic for a given --seed. Needs numpy and pyarrow (the Feast venv has
both). Usage: python make_test_data.py --out /tmp/kiln-bench-data
"""
import argparse
import os
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

US = 1_000_000
HOUR_US = 3600 * US


def make(out: str, n_drivers: int, hours: int, n_entities: int, seed: int,
         start: datetime, missing_frac: float, exact_frac: float) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    start_us = int(start.timestamp()) * US
    ids = np.arange(1001, 1001 + n_drivers, dtype=np.int64)

    # Rows ordered by hour, then driver id.
    driver_id = np.tile(ids, hours)
    hour_idx = np.repeat(np.arange(hours, dtype=np.int64), n_drivers)
    event_us = start_us + hour_idx * HOUR_US
    created_us = event_us + rng.integers(0, 600 * US, size=event_us.size)
    n = driver_id.size
    ts_type = pa.timestamp("us", tz="UTC")
    stats = pa.table(
        {
            "driver_id": pa.array(driver_id, pa.int64()),
            "event_timestamp": pa.array(event_us, pa.int64()).cast(ts_type),
            "created": pa.array(created_us, pa.int64()).cast(ts_type),
            "conv_rate": pa.array(rng.random(n, dtype=np.float32), pa.float32()),
            "acc_rate": pa.array(rng.random(n, dtype=np.float32), pa.float32()),
            "avg_daily_trips": pa.array(rng.integers(0, 1000, n), pa.int64()),
            "avg_rating": pa.array(1.0 + 4.0 * rng.random(n), pa.float64()),
        }
    )
    pq.write_table(stats, os.path.join(out, "driver_stats.parquet"))

    # Entity rows: ids mostly existing, some not; timestamps over the range
    # [first hour - 2 h, last hour + 6 h] at microsecond resolution.
    e_ids = rng.choice(ids, size=n_entities)
    missing = rng.random(n_entities) < missing_frac
    e_ids[missing] = rng.integers(
        1001 + n_drivers, 1001 + 2 * n_drivers, size=int(missing.sum()))
    lo = start_us - 2 * HOUR_US
    hi = start_us + (hours - 1) * HOUR_US + 6 * HOUR_US
    e_us = rng.integers(lo, hi, size=n_entities)
    exact = rng.random(n_entities) < exact_frac
    e_us[exact] = start_us + rng.integers(0, hours, size=int(exact.sum())) * HOUR_US
    entities = pa.table(
        {
            "driver_id": pa.array(e_ids, pa.int64()),
            "event_timestamp": pa.array(e_us, pa.int64()).cast(ts_type),
        }
    )
    pq.write_table(entities, os.path.join(out, "entities_100k.parquet"))
    print(f"wrote {stats.num_rows} stats rows and {entities.num_rows} entity rows "
          f"({int(missing.sum())} unknown ids, {int(exact.sum())} on an exact hour) to {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--drivers", type=int, default=10_000)
    p.add_argument("--hours", type=int, default=24)
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start", default="2025-01-01T00:00:00+00:00",
                   help="first event hour (ISO 8601)")
    p.add_argument("--missing-frac", type=float, default=0.05)
    p.add_argument("--exact-frac", type=float, default=0.01)
    a = p.parse_args()
    start = datetime.fromisoformat(a.start)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    make(a.out, a.drivers, a.hours, a.entities, a.seed, start,
         a.missing_frac, a.exact_frac)


if __name__ == "__main__":
    main()
