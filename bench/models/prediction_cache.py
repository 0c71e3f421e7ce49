#!/usr/bin/env python3
"""What the prediction cache does to predict-by-entity at a given hit rate: same model, same
request bodies, same load generator, same machine, same run.

    python3 bench/models/prediction_cache.py [--kiln target/release/kiln] [--duration 5s] [--rounds 2]

One project (`kiln init --drivers 100000 --hours 1`, materialized, the XGBoost ranker of
bench/models/fixtures registered with the driver_activity service), served without a
prediction cache ("off") and with one ("on": `prediction_cache = { values = 1000000, ttl =
"1h" }`), a fresh server each time. Requests are predict-by-entity for one driver, sent in turn
from a file of bodies (`kiln bench http --bodies`, 8 connections, 2 s warm-up discarded): a
share h of them name one of 100 hot drivers, the others drivers not asked before (each once:
the file is longer than a run), for h = 0, 0.5, 0.9 and 0.99. The cache's own hit rate is read
back from /metrics. Reports the median throughput, p50 and p99 over the rounds per h and
configuration, and writes bench/results/prediction_cache.json. Not part of CI.
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_compare import FIXTURES, ROOT, free_port, log, wait_ready  # noqa: E402

DRIVERS = 100_000
HOT = 100
HIT_RATES = [0.0, 0.5, 0.9, 0.99]
CONFIGS = {
    "off": "",
    "on": "[serve.models.ranker.resilience]\nprediction_cache = { values = 1000000, ttl = \"1h\" }\n",
}


def project(kiln, work, name, settings):
    path = os.path.join(work, name)
    run = lambda *a: subprocess.run([kiln, "--project", path, *a], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([kiln, "init", path, "--drivers", str(DRIVERS), "--hours", "1"], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(path, "kiln.toml"), "a") as f:
        f.write("\n" + settings)
    run("apply")
    run("materialize", "--start", "2000-01-01")
    run("models", "register", "ranker", "--path", os.path.join(FIXTURES, "driver_ranker.json"),
        "--format", "xgboost", "--feature-service", "driver_activity")
    run("models", "promote", "ranker", "--version", "1")
    return path


def bodies(work, hit_rate):
    """Hot drivers with probability `hit_rate`, else the next driver never asked before."""
    rng = random.Random(7)
    cold = iter(range(1001 + HOT, 1001 + DRIVERS))
    path = os.path.join(work, f"bodies_{hit_rate}.jsonl")
    with open(path, "w") as f:
        for _ in range(DRIVERS - HOT):
            driver = 1001 + rng.randrange(HOT) if rng.random() < hit_rate else next(cold, None)
            if driver is None:
                break
            f.write(json.dumps({"entities": {"driver_id": [driver]}}, separators=(",", ":")) + "\n")
    return path


def cache_counts(base):
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    counts = {"hit": 0.0, "miss": 0.0}
    for result in counts:
        m = re.search(r'kiln_prediction_cache_total\{[^}]*result="%s"\} (\S+)' % result, text)
        if m:
            counts[result] = float(m.group(1))
    return counts


def measure(kiln, path, body_file, duration):
    port = free_port()
    server = subprocess.Popen([kiln, "--project", path, "serve", "--addr", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/ready")
        out = subprocess.run([kiln, "--output", "json", "bench", "http", "--url",
                              f"{base}/v1/models/ranker/predict", "--bodies", body_file,
                              "--connections", "8", "--warmup", "2s", "--duration", duration],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        r = json.loads(out)[0]
        counts = cache_counts(base)
        seen = counts["hit"] + counts["miss"]
        r["cache_hit_rate"] = counts["hit"] / seen if seen else None
        log(f"  {r['requests_per_second']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
            f"{r['errors']} errors, cache hit rate {r['cache_hit_rate']}")
        if r["errors"]:
            raise SystemExit(f"{r['errors']} failed requests")
        return r
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    runs = {(h, c): [] for h in HIT_RATES for c in CONFIGS}
    with tempfile.TemporaryDirectory() as work:
        paths = {name: project(a.kiln, work, name, s) for name, s in CONFIGS.items()}
        files = {h: bodies(work, h) for h in HIT_RATES}
        for r in range(a.rounds):
            for h in HIT_RATES:
                order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
                for c in order:
                    log(f"round {r + 1}: hit rate {h}, cache {c}")
                    runs[(h, c)].append(measure(a.kiln, paths[c], files[h], a.duration))
    summary = []
    for h in HIT_RATES:
        row = {"hit_rate": h}
        for c in CONFIGS:
            rs = runs[(h, c)]
            row[c] = {k: statistics.median(x[k] for x in rs)
                      for k in ("requests_per_second", "p50_ms", "p99_ms")}
            if c == "on":
                row[c]["measured_hit_rate"] = statistics.median(x["cache_hit_rate"] for x in rs)
        row["p50_on_vs_off"] = row["on"]["p50_ms"] / row["off"]["p50_ms"]
        row["throughput_on_vs_off"] = row["on"]["requests_per_second"] / row["off"]["requests_per_second"]
        summary.append(row)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "prediction_cache.json"), "w") as f:
        json.dump({"duration": a.duration, "rounds": a.rounds, "drivers": DRIVERS, "hot": HOT,
                   "summary": summary,
                   "runs": {f"{h}/{c}": rs for (h, c), rs in runs.items()}}, f, indent=1)
    for row in summary:
        off, on = row["off"], row["on"]
        print(f"h={row['hit_rate']:<5} off {off['requests_per_second']:7.0f} req/s p50 {off['p50_ms']:.3f} "
              f"p99 {off['p99_ms']:.3f} | on {on['requests_per_second']:7.0f} req/s p50 {on['p50_ms']:.3f} "
              f"p99 {on['p99_ms']:.3f} (measured hits {on['measured_hit_rate']:.3f}) | "
              f"p50 {row['p50_on_vs_off']:.2f}x, throughput {row['throughput_on_vs_off']:.2f}x")


if __name__ == "__main__":
    main()
