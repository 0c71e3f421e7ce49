"""Batch backfill of windowed features: 1M training rows over 50M events.

Writes a project with one aggregated view (count, sum and max of the amount over 10m, 1h and
24h: 3 windows x 3 aggregations) over a synthetic card-transactions source, and times
`kiln dataset build` on it. numpy/pyarrow generate the data (deterministic, seeded); run with
any Python that has them, e.g. the Feast venv `bench/feast/setup.sh` builds:

    python bench/stream/backfill.py --kiln target/release/kiln --workdir /tmp/kiln-backfill

Prints one JSON object; `--events` and `--rows` scale it down for a quick check.
"""

import argparse
import json
import os
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFS = """
[[entity]]
name = "card"
join_keys = [{ name = "card_id", dtype = "int64" }]

[[source]]
name = "transactions"
path = "data/transactions"
timestamp_field = "ts"

[[feature_view]]
name = "card_activity"
entities = ["card"]
source = "transactions"

[[feature_view.aggregations]]
function = "count"
windows = ["10m", "1h", "24h"]

[[feature_view.aggregations]]
column = "amount"
function = "sum"
windows = ["10m", "1h", "24h"]

[[feature_view.aggregations]]
column = "amount"
function = "max"
windows = ["10m", "1h", "24h"]
"""

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
DAY = 86_400_000_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--events", type=int, default=50_000_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()

    proj = os.path.join(a.workdir, "proj")
    if not os.path.exists(proj):
        subprocess.run([a.kiln, "init", proj], check=True, stdout=subprocess.DEVNULL)
    src = os.path.join(proj, "data", "transactions")
    os.makedirs(src, exist_ok=True)
    rng = np.random.default_rng(7)
    span = a.days * DAY
    started = time.time()
    chunk = 5_000_000
    for i, lo in enumerate(range(0, a.events, chunk)):
        n = min(chunk, a.events - lo)
        path = os.path.join(src, f"part-{i:04}.parquet")
        if os.path.exists(path):
            continue
        ts = np.sort(rng.integers(T0, T0 + span, n))
        table = pa.table({
            "card_id": pa.array(rng.integers(0, a.keys, n), pa.int64()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "amount": pa.array(np.round(rng.random(n) * 500, 2), pa.float64()),
        })
        pq.write_table(table, path, row_group_size=1_000_000)
    entities = os.path.join(proj, "data", "entities.parquet")
    if not os.path.exists(entities):
        table = pa.table({
            "card_id": pa.array(rng.integers(0, a.keys, a.rows), pa.int64()),
            "event_timestamp": pa.array(rng.integers(T0 + DAY, T0 + span, a.rows), pa.timestamp("us", tz="UTC")),
        })
        pq.write_table(table, entities)
    gen_seconds = time.time() - started
    with open(os.path.join(proj, "features", "cards.toml"), "w") as f:
        f.write(DEFS)
    subprocess.run([a.kiln, "-p", proj, "apply"], check=True, stdout=subprocess.DEVNULL)

    features = ",".join(
        f"card_activity:{name}"
        for name in [f"count_{w}" for w in ("10m", "1h", "24h")]
        + [f"amount_{f}_{w}" for f in ("sum", "max") for w in ("10m", "1h", "24h")]
    )
    times = []
    for _ in range(a.runs):
        out = os.path.join(a.workdir, "train.parquet")
        started = time.time()
        subprocess.run(
            [a.kiln, "-p", proj, "-q", "dataset", "build", "--entities", entities,
             "--features", features, "--out", out],
            check=True, stdout=subprocess.DEVNULL,
        )
        times.append(time.time() - started)
    if not times:
        return
    print(json.dumps({
        "events": a.events, "training_rows": a.rows, "keys": a.keys, "days": a.days,
        "features": "3 windows x 3 aggregations", "generate_seconds": round(gen_seconds, 1),
        "build_seconds": [round(t, 2) for t in times],
        "median_seconds": round(sorted(times)[len(times) // 2], 2),
        "events_per_second": round(a.events / sorted(times)[len(times) // 2]),
    }))


if __name__ == "__main__":
    main()
