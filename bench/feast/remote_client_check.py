#!/usr/bin/env python3
"""Feast's own client against `kiln serve`: proves the wire compatibility Kiln claims.

Run with the Feast venv's python (bench/feast/setup.sh):

    $FEAST_VENV/bin/python bench/feast/remote_client_check.py --kiln target/debug/kiln --workdir /tmp/x

1. `kiln init` a project (driver example), `kiln apply`, `kiln materialize` everything.
2. `kiln serve` on a free loopback port.
3. A Feast 0.67 repo with the same definitions whose online store is
   `{type: remote, path: http://127.0.0.1:PORT}`; `feast apply` (client side registry only).
4. `FeatureStore.get_online_features` through Feast's RemoteOnlineStore, by feature list and by
   feature service, with full feature names, for a fresh driver, an unknown one and one whose
   value is past the ttl: the values must equal what `kiln features get --output json` returns,
   and the statuses must parse in Feast (PRESENT / NOT_FOUND / OUTSIDE_MAX_AGE).
5. A request the server refuses must surface in Feast as the matching Feast exception.

Exit status 0 when everything matches; the first mismatch is printed otherwise.
"""
import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating"]
REFS = [f"driver_hourly_stats:{f}" for f in FEATURES]
IDS = [1001, 1002, 99999, 1050]  # fresh, fresh, unknown, stopped 30 h ago (ttl 1d)

DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="driver_stats", path={path!r}, timestamp_field="event_timestamp",
                    created_timestamp_column="created")
driver_hourly_stats = FeatureView(
    name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1), online=True, source=source,
    schema=[Field(name="driver_id", dtype=Int64), Field(name="conv_rate", dtype=Float32),
            Field(name="acc_rate", dtype=Float32), Field(name="avg_daily_trips", dtype=Int64),
            Field(name="avg_rating", dtype=Float64)],
)
driver_activity = FeatureService(name="driver_activity", features=[
    driver_hourly_stats[["conv_rate", "acc_rate", "avg_daily_trips"]]])
"""

STORE_YAML = """project: kiln_compat
provider: local
registry: data/registry.db
online_store:
    type: remote
    path: http://127.0.0.1:{port}
offline_store:
    type: file
entity_key_serialization_version: 3
auth:
    type: no_auth
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", required=True)
    p.add_argument("--workdir", required=True)
    a = p.parse_args()
    kiln = os.path.abspath(a.kiln)
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    proj = os.path.join(a.workdir, "kiln")
    run = lambda *args: subprocess.run([kiln, "-q", "-p", proj, *args], check=True, capture_output=True, text=True).stdout
    subprocess.run([kiln, "-q", "init", proj], check=True, capture_output=True)
    run("apply")
    run("materialize", "--start", "2000-01-01")

    port = free_port()
    server = subprocess.Popen([kiln, "-q", "-p", proj, "serve", "--addr", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        repo = os.path.join(a.workdir, "feast")
        os.makedirs(os.path.join(repo, "data"))
        with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
            f.write(STORE_YAML.format(port=port))
        with open(os.path.join(repo, "definitions.py"), "w") as f:
            f.write(DEFINITIONS.format(path=os.path.join(proj, "data", "driver_stats.parquet")))
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "feast"), "-c", repo, "apply"], check=True, capture_output=True)

        from feast import FeatureStore
        import feast.errors

        store = FeatureStore(repo_path=repo)
        rows = [{"driver_id": i} for i in IDS]
        ids_arg = "driver_id=" + ",".join(str(i) for i in IDS)
        checks = 0
        for kind, feats, full in [("features", REFS, False), ("features", REFS, True), ("service", "driver_activity", False)]:
            if kind == "service":
                got = store.get_online_features(features=store.get_feature_service(feats), entity_rows=rows).to_dict()
                want = json.loads(run("features", "get", "--service", feats, "--entity", ids_arg, "--output", "json"))
            else:
                got = store.get_online_features(features=feats, entity_rows=rows, full_feature_names=full).to_dict()
                args = ["features", "get", "--features", ",".join(feats), "--entity", ids_arg, "--output", "json"]
                want = json.loads(run(*(args + (["--full-feature-names"] if full else []))))
            names = want["metadata"]["feature_names"]
            for name, col in zip(names, want["results"]):
                if name not in got:
                    sys.exit(f"{kind}: Feast's result has no column {name!r}: {sorted(got)}")
                for row, (g, w) in enumerate(zip(got[name], col["values"])):
                    if not same(g, w):
                        sys.exit(f"{kind} full={full}: {name}[{row}]: Feast client {g!r}, kiln {w!r}")
                    checks += 1
            statuses = want["results"][1]["statuses"]
            if statuses != ["PRESENT", "PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"]:
                sys.exit(f"unexpected statuses from kiln: {statuses}")

        # An error answered by the server comes back as the matching Feast exception.
        try:
            store.get_online_features(features=REFS, entity_rows=[{"driver_id": "not a number"}]).to_dict()
            sys.exit("a driver_id that is not a number was accepted")
        except feast.errors.FeastError as e:
            if "driver_id" not in str(e):
                sys.exit(f"the error does not name the entity column: {e}")
        except Exception as e:  # Feast may refuse the value on the client side first; also fine
            print(f"note: refused before reaching the server: {type(e).__name__}: {e}")
        print(f"OK: Feast {feast.__version__} remote online store against kiln serve: {checks} values equal")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
