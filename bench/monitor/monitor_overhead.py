#!/usr/bin/env python3
"""What a serving feature costs a served request, same model, same request bytes, same load
generator, same machine, same run:

- `--suite monitor` (default): monitoring off, the prediction log only, and everything on
  (prediction log, label-feedback index, live drift windows: the defaults);
- `--suite resilience`: the model resilience stack off (no timeout, retries or breaker), on
  (the defaults: timeout, retries within a budget, breaker), and full (plus a bulkhead and the
  cache fallback's bookkeeping of every answer).

    python3 bench/monitor/monitor_overhead.py [--suite monitor|resilience] [--kiln target/release/kiln] [--duration 10s] [--rounds 3]

The three servers run one after another, in rotating order, `--rounds` times; each round loads
each server with OIP JSON inference of 1 row and of 64 rows at 8 connections (`kiln bench http`,
2 s warm-up discarded). Reports per configuration the median throughput, p50/p99 and server CPU
per request over the rounds, the ratios of those medians to "off", and the median of the
per-round ratios (each round measures every configuration back to back, so a round's ratio is
paired against the same machine state: on a shared machine it is the steadier figure).
`--configs off,on` runs only some of the suite's configurations. Writes
bench/results/SUITE_overhead.json.
Reuses the helpers of bench/models/serve_compare.py. Not part of CI.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models"))
from serve_compare import FIXTURES, ROOT, bodies, free_port, load, log, wait_ready  # noqa: E402

# Per suite: the kiln.toml table the configurations set, and the configurations ("off" first).
SUITES = {
    "monitor": ("monitor", {
        "off": "prediction_log = false\nfeedback = false\ndrift = false\n",
        "log": "prediction_log = true\nfeedback = false\ndrift = false\n",
        "all": "",  # the defaults: prediction log, feedback index and live drift windows
    }),
    "resilience": ("serve.resilience", {
        "off": "timeout_ms = 0\nretries = 0\nbreaker = { enabled = false }\n",
        "on": "",  # the defaults: timeout, retries within a budget, breaker
        "full": "max_concurrency = 64\nfallback = [\"cache\"]\n",
    }),
}


def project(kiln, work, name, table, settings):
    path = os.path.join(work, name)
    run = lambda *a: subprocess.run([kiln, "--project", path, *a], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([kiln, "init", path], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(path, "kiln.toml"), "a") as f:
        f.write(f"\n[{table}]\n" + settings)
    run("apply")
    run("models", "register", "ranker", "--path", os.path.join(FIXTURES, "driver_ranker.json"),
        "--format", "xgboost", "--feature-service", "driver_activity")
    run("models", "promote", "ranker", "--version", "1")
    return path


def measure(kiln, path, b, duration):
    port = free_port()
    server = subprocess.Popen([kiln, "--project", path, "serve", "--addr", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/ranker/ready")
        infer = f"{base}/v2/models/ranker/infer"
        return {
            "1row": load(kiln, infer, b["infer_1.json"], 8, duration, server.pid),
            "64rows": load(kiln, infer, b["infer_64.json"], 8, duration, server.pid),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=sorted(SUITES), default="monitor")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default="", help="comma-separated subset of the suite's configurations (off is always run)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    table, configs = SUITES[a.suite]
    if a.configs:
        wanted = {"off", *a.configs.split(",")}
        unknown = wanted - set(configs)
        if unknown:
            sys.exit(f"--configs: {', '.join(sorted(unknown))} not in suite {a.suite} ({', '.join(configs)})")
        configs = {k: v for k, v in configs.items() if k in wanted}
    with tempfile.TemporaryDirectory() as work:
        b = bodies(work)
        paths = {name: project(a.kiln, work, name, table, c) for name, c in configs.items()}
        runs = {name: [] for name in configs}
        order = list(configs)
        for r in range(a.rounds):
            k = r % len(order)
            for name in order[k:] + order[:k]:
                log(f"round {r + 1}: {a.suite} {name}")
                runs[name].append(measure(a.kiln, paths[name], b, a.duration))
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            case: {
                key: statistics.median(x[case][key] for x in rs)
                for key in ("requests_per_second", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
            }
            for case in ("1row", "64rows")
        }
    for name in order[1:]:
        for case in ("1row", "64rows"):
            s, off = summary[name][case], summary["off"][case]
            s["throughput_vs_off"] = s["requests_per_second"] / off["requests_per_second"]
            s["cpu_vs_off"] = s["server_cpu_ms_per_request"] / off["server_cpu_ms_per_request"]
            paired = [x[case]["requests_per_second"] / o[case]["requests_per_second"]
                      for x, o in zip(runs[name], runs["off"])]
            s["throughput_vs_off_per_round"] = paired
            s["paired_throughput_vs_off"] = statistics.median(paired)
            cpu = [x[case]["server_cpu_ms_per_request"] / o[case]["server_cpu_ms_per_request"]
                   for x, o in zip(runs[name], runs["off"])]
            s["paired_cpu_vs_off"] = statistics.median(cpu)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"{a.suite}_overhead.json"), "w") as f:
        json.dump({"suite": a.suite, "duration": a.duration, "rounds": a.rounds, "summary": summary, "runs": runs}, f, indent=1)
    for name, cases in summary.items():
        for case, s in cases.items():
            extra = (f", {s['throughput_vs_off']:.3f}x throughput, {s['cpu_vs_off']:.3f}x CPU vs off"
                     f" (paired per round: {s['paired_throughput_vs_off']:.3f}x, {s['paired_cpu_vs_off']:.3f}x)"
                     if "throughput_vs_off" in s else "")
            print(f"{name:4} {case:6} {s['requests_per_second']:9.0f} req/s  p50 {s['p50_ms']:.3f} ms  "
                  f"p99 {s['p99_ms']:.3f} ms  CPU {s['server_cpu_ms_per_request']:.4f} ms/req{extra}")


if __name__ == "__main__":
    main()
