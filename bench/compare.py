#!/usr/bin/env python3
"""Kiln against Feast 0.67 on the same data, on the same machine, in the same run.

    python3 bench/compare.py [--out DIR] [--runs 3] [--skip-feast] [--duration 10s]

1. builds Kiln (release) and generates the data with `kiln bench gen-data` (10,000 drivers x 24
   hourly rows, 4 features; 100,000 entity rows), which both sides read;
2. runs the Feast harness (bench/feast/feast_bench.py, in the venv made by
   bench/feast/setup.sh), with Kiln's load generator measuring `feast serve`;
3. measures Kiln the same way: CLI wall time of `kiln apply` and `kiln materialize` on fresh
   projects, `kiln serve` under the same load generator and request bodies, and the
   point-in-time join of the 100,000 entity rows (`kiln dataset build`, CLI wall time);
4. cross-checks Kiln's training set against Feast's DuckDB result, value by value;
5. writes DIR/results.json and prints a summary.

Only the standard library is used here; the Feast side runs in its own venv. Not part of CI.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEAST_VENV = os.environ.get("FEAST_VENV", "/tmp/kiln-feast-venv")
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating"]
REFS = ",".join(f"driver_hourly_stats:{f}" for f in FEATURES)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, cwd=None):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(kiln, path, data, ttl="2d"):
    """A Kiln project equivalent to the Feast repo of feast_bench.py."""
    os.makedirs(os.path.join(path, "features"), exist_ok=True)
    with open(os.path.join(path, "kiln.toml"), "w") as f:
        f.write('project = "kiln_bench"\n')
    with open(os.path.join(path, "features", "driver.toml"), "w") as f:
        f.write(f"""
[[entity]]
name = "driver"
join_keys = [{{ name = "driver_id", dtype = "int64" }}]

[[source]]
name = "driver_stats"
path = "{os.path.join(data, 'driver_stats.parquet')}"
timestamp_field = "event_timestamp"
created_timestamp_column = "created"

[[feature_view]]
name = "driver_hourly_stats"
entities = ["driver"]
source = "driver_stats"
ttl = "{ttl}"
schema = [
    {{ name = "conv_rate", dtype = "float32" }},
    {{ name = "acc_rate", dtype = "float32" }},
    {{ name = "avg_daily_trips", dtype = "int64" }},
    {{ name = "avg_rating", dtype = "float64" }},
]

[[feature_service]]
name = "driver_activity"
features = ["driver_hourly_stats"]
""")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/kiln-compare")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", default="10s")
    p.add_argument("--skip-feast", action="store_true")
    p.add_argument("--skip-build", action="store_true")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    data = os.path.join(a.out, "data")
    kiln = os.path.join(ROOT, "target", "release", "kiln")
    if not a.skip_build:
        run(["cargo", "build", "--release", "-q", "-p", "kiln"], cwd=ROOT)
    gen = json.loads(subprocess.run([kiln, "bench", "gen-data", "--out", data, "-o", "json"], check=True, capture_output=True, text=True).stdout)
    results = {"data": gen, "machine": machine()}
    loadgen = f"{kiln} bench http --url {{url}} --body {{body}} --connections 1,8 --duration {a.duration} -o json"

    feast_work = os.path.join(a.out, "feast")
    if not a.skip_feast:
        run(["bash", os.path.join(ROOT, "bench/feast/setup.sh")])
        shutil.rmtree(feast_work, ignore_errors=True)
        run([os.path.join(FEAST_VENV, "bin/python"), os.path.join(ROOT, "bench/feast/feast_bench.py"),
             "--data", data, "--workdir", feast_work, "--out", os.path.join(a.out, "feast.json"),
             "--runs", str(a.runs), "--loadgen", loadgen])
        with open(os.path.join(a.out, "feast.json")) as f:
            results["feast"] = json.load(f)

    # Kiln: apply and materialize on fresh projects, the same window as the Feast harness.
    hour = 3_600
    lo = gen["first_hour"] // 1_000_000 - hour
    hi = gen["anchor"] // 1_000_000 + hour
    applies, mats = [], []
    for i in range(a.runs):
        proj = os.path.join(a.out, f"kiln_project_{i}")
        shutil.rmtree(proj, ignore_errors=True)
        make_project(kiln, proj, data)
        applies.append(timed([kiln, "-q", "-p", proj, "apply"]))
        mats.append(timed([kiln, "-q", "-p", proj, "materialize", "--start", str(lo), "--end", str(hi)]))
    results["kiln_apply_s"] = {"median": statistics.median(applies), "samples": applies}
    results["kiln_materialize_s"] = {"median": statistics.median(mats), "samples": mats}
    log(f"kiln apply {statistics.median(applies):.3f} s, materialize {statistics.median(mats):.3f} s")

    # Kiln online: the same request bodies as the Feast harness.
    proj = os.path.join(a.out, "kiln_project_0")
    port = free_port()
    srv = subprocess.Popen([kiln, "-q", "-p", proj, "serve", "--addr", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        online = {}
        bodies = {"1_entity": [1001], "100_entities": list(range(1001, 11001, 100))}
        for name, ids in bodies.items():
            body = os.path.join(a.out, f"kiln_body_{name}.json")
            feast_body = os.path.join(feast_work, f"body_{name}.json")
            if os.path.exists(feast_body):
                shutil.copy(feast_body, body)
            else:
                with open(body, "w") as f:
                    json.dump({"features": REFS.split(","), "entities": {"driver_id": ids}}, f)
            cmd = loadgen.replace("{url}", f"http://127.0.0.1:{port}/get-online-features").replace("{body}", body)
            out = subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout
            online[name] = json.loads(out)
            log(f"kiln {name}: {[round(r['requests_per_second']) for r in online[name]]} req/s at 1 and 8 connections")
        results["kiln_online"] = online
    finally:
        srv.terminate()
        srv.wait()

    # Kiln point-in-time join of the 100k entity rows (CLI wall time; first run is warm-up).
    pit = []
    out_path = os.path.join(a.out, "kiln_pit.parquet")
    for i in range(a.runs + 1):
        t = timed([kiln, "-q", "-p", proj, "dataset", "build", "--entities", os.path.join(data, "entities_100k.parquet"),
                   "--features", REFS, "--out", out_path])
        if i > 0:
            pit.append(t)
    results["kiln_pit_s"] = {"median": statistics.median(pit), "samples": pit}
    log(f"kiln PIT join {statistics.median(pit):.3f} s")

    feast_pit = os.path.join(feast_work, "feast_pit_result.parquet")
    if os.path.exists(feast_pit):
        check = subprocess.run([os.path.join(FEAST_VENV, "bin/python"), "-c", CROSS_CHECK, out_path, feast_pit],
                               capture_output=True, text=True)
        results["pit_cross_check"] = check.stdout.strip() or check.stderr.strip()
        log(f"PIT cross-check against Feast: {results['pit_cross_check']}")

    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    summary(results)


CROSS_CHECK = r"""
import sys, pyarrow.parquet as pq, numpy as np
k = pq.read_table(sys.argv[1]).to_pandas()
f = pq.read_table(sys.argv[2]).to_pandas()
keys = ["driver_id", "event_timestamp"]
feats = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating"]
k = k.sort_values(keys + feats, kind="mergesort", na_position="last").reset_index(drop=True)
f = f.sort_values(keys + feats, kind="mergesort", na_position="last").reset_index(drop=True)
assert len(k) == len(f), f"rows differ: kiln {len(k)} feast {len(f)}"
assert (k.driver_id.values == f.driver_id.values).all(), "driver ids differ"
bad = 0
for c in feats:
    a = k[c].astype("float64").values; b = f[c].astype("float64").values
    same = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= 1e-6 * np.maximum(1, np.abs(b)))
    bad += int((~same).sum())
print(f"{len(k)} rows x {len(feats)} features compared, {bad} differences, {int(k.conv_rate.isna().sum())} rows without a match")
"""


def machine():
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    except OSError:
        cpu = []
    return {"cpus": os.cpu_count(), "cpu": cpu[0] if cpu else "?", "load": os.getloadavg()}


def summary(r):
    def q(case, i, key):
        try:
            return r["kiln_online"][case][i][key]
        except (KeyError, IndexError, TypeError):
            return None

    def fq(case, i, key):
        try:
            return r["feast"]["online"]["cases"][case]["loadgen"]["stdout_json"][i][key]
        except (KeyError, IndexError, TypeError):
            return None

    print("\n| measure | Feast 0.67 | Kiln | ratio |")
    print("| --- | --- | --- | --- |")
    fa = r.get("feast", {}).get("apply", {}).get("median_s")
    fm = r.get("feast", {}).get("materialize", {}).get("median_s")
    rows = [
        ("apply (CLI wall, s)", fa, r["kiln_apply_s"]["median"]),
        ("materialize (CLI wall, s)", fm, r["kiln_materialize_s"]["median"]),
    ]
    for case in ["1_entity", "100_entities"]:
        rows.append((f"{case} c=1 p50 (ms)", fq(case, 0, "p50_ms"), q(case, 0, "p50_ms")))
        rows.append((f"{case} c=1 p99 (ms)", fq(case, 0, "p99_ms"), q(case, 0, "p99_ms")))
        rows.append((f"{case} c=8 req/s", fq(case, 1, "requests_per_second"), q(case, 1, "requests_per_second")))
    fp = None
    try:
        fp = r["feast"]["pit"]["duckdb"]["median_s"]
    except (KeyError, TypeError):
        pass
    rows.append(("PIT join 100k rows (s)", fp, r["kiln_pit_s"]["median"]))
    for name, f, k in rows:
        ratio = ""
        if f and k:
            ratio = f"{(k / f if 'req/s' in name else f / k):.1f}x"
        fmt = lambda v: "-" if v is None else (f"{v:.0f}" if v > 100 else f"{v:.3f}")
        print(f"| {name} | {fmt(f)} | {fmt(k)} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
