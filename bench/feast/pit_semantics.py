#!/usr/bin/env python3
"""Probe Feast's point-in-time join semantics on a tiny hand-made data set.

Runs the same entity frame through the DuckDB and the file (dask) offline
stores and prints each result as-is (row order as returned), plus dtypes, so
the edge cases Kiln must match (or knowingly differ on) are visible:

  case                       entity row                     feature rows
  exact_ts                   d1 @ 10:00                     d1 10:00 (created 10:05 -> A, 10:10 -> B)
  before_first               d1 @ 09:59                     none at or before
  null_created_tie           d1 @ 13:00                     d1 12:00 created NULL (C) / 12:01 (D)
  ttl_edge                   d2 @ 08:00 + ttl               d2 08:00 (E)
  ttl_edge_plus_1us          d2 @ 08:00 + ttl + 1 us        d2 08:00 (E)
  exact_ts_dup               same as exact_ts (duplicate entity row)
  missing_entity             d9 @ 10:00                     none
  full_tie                   d3 @ 11:00                     d3 10:00 created 10:00 twice (F / G)
  null_values                d4 @ 12:00                     d4 11:00 with null trips/rating

Usage: $FEAST_VENV/bin/python pit_semantics.py --workdir /tmp/kiln-pit-semantics
"""
import argparse
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TTL = timedelta(hours=1)
UTC = timezone.utc


def ts(h, m=0, us=0):
    return datetime(2025, 1, 1, h, m, tzinfo=UTC) + timedelta(microseconds=us)


def write_data(path):
    rows = [
        # driver, event_ts, created, conv, acc, trips, rating, label
        (1, ts(10), ts(10, 5), 0.1, 0.1, 1, 1.0),     # A
        (1, ts(10), ts(10, 10), 0.2, 0.2, 2, 2.0),    # B (same event ts, later created)
        (1, ts(12), None, 0.3, 0.3, 3, 3.0),          # C (null created)
        (1, ts(12), ts(12, 1), 0.4, 0.4, 4, 4.0),     # D (same event ts, created set)
        (2, ts(8), ts(8), 0.5, 0.5, 5, 5.0),          # E
        (3, ts(10), ts(10), 0.6, 0.6, 6, 6.0),        # F
        (3, ts(10), ts(10), 0.7, 0.7, 7, 7.0),        # G (full tie with F)
        (4, ts(11), ts(11), 0.8, 0.8, None, None),    # null values
    ]
    t = pa.table({
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "created": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array([r[3] for r in rows], pa.float32()),
        "acc_rate": pa.array([r[4] for r in rows], pa.float32()),
        "avg_daily_trips": pa.array([r[5] for r in rows], pa.int64()),
        "avg_rating": pa.array([r[6] for r in rows], pa.float64()),
    })
    pq.write_table(t, path)


def entity_df(naive=False):
    cases = [
        ("exact_ts", 1, ts(10)),
        ("before_first", 1, ts(9, 59)),
        ("null_created_tie", 1, ts(13)),
        ("ttl_edge", 2, ts(8) + TTL),
        ("ttl_edge_plus_1us", 2, ts(8) + TTL + timedelta(microseconds=1)),
        ("exact_ts_dup", 1, ts(10)),
        ("missing_entity", 9, ts(10)),
        ("full_tie", 3, ts(11)),
        ("null_values", 4, ts(12)),
    ]
    df = pd.DataFrame({
        "case": [c[0] for c in cases],
        "event_timestamp": pd.to_datetime([c[2] for c in cases], utc=True).astype("datetime64[us, UTC]"),
        "driver_id": np.array([c[1] for c in cases], dtype=np.int64),
    })
    if naive:
        df["event_timestamp"] = df["event_timestamp"].dt.tz_localize(None)
    return df


DEFS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64
driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
src = FileSource(name="src", path={path!r}, timestamp_field="event_timestamp",
                 created_timestamp_column="created")
driver_hourly_stats = FeatureView(name="driver_hourly_stats", entities=[driver],
    ttl=timedelta(seconds={ttl}), source=src, online=True, schema=[
    Field(name="driver_id", dtype=Int64),
    Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32),
    Field(name="avg_daily_trips", dtype=Int64), Field(name="avg_rating", dtype=Float64)])
'''

YAML = """project: pit_semantics
provider: local
registry: data/registry.db
online_store:
    type: sqlite
    path: data/online_store.db
offline_store:
    type: {offline}
entity_key_serialization_version: 3
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    data = os.path.join(os.path.abspath(a.workdir), "tiny_stats.parquet")
    write_data(data)
    from feast import FeatureStore

    refs = [f"driver_hourly_stats:{f}" for f in
            ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating"]]
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    for offline in ["duckdb", "file"]:
        repo = os.path.join(os.path.abspath(a.workdir), f"repo_{offline}")
        subprocess.run(["rm", "-rf", "--", repo], check=True)
        os.makedirs(os.path.join(repo, "data"))
        with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
            f.write(YAML.format(offline=offline))
        with open(os.path.join(repo, "defs.py"), "w") as f:
            f.write(DEFS.format(path=data, ttl=int(TTL.total_seconds())))
        subprocess.run([feast, "-c", repo, "apply"], check=True,
                       stdout=subprocess.DEVNULL)
        store = FeatureStore(repo_path=repo)
        for label, kwargs, naive in [
            ("default", {}, False),
            ("full_feature_names", {"full_feature_names": True}, False),
            ("naive entity timestamps", {}, True),
        ]:
            df = store.get_historical_features(entity_df=entity_df(naive), features=refs,
                                               **kwargs).to_df()
            print(f"\n===== {offline}: {label} ({len(df)} rows of {len(entity_df())})")
            print(df.to_string())
            print("dtypes:", {c: str(t) for c, t in df.dtypes.items()})
        # Repeat the default run to see whether row order / full ties are stable.
        orders, ties = set(), set()
        for _ in range(5):
            df = store.get_historical_features(entity_df=entity_df(), features=refs).to_df()
            orders.add(tuple(df["case"]))
            ties.add(tuple(df.loc[df["case"] == "full_tie", "avg_daily_trips"].tolist()))
        print(f"{offline}: distinct row orders over 5 runs: {len(orders)}; "
              f"full_tie picks: {sorted(ties)}")


if __name__ == "__main__":
    main()
