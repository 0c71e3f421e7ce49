#!/usr/bin/env python3
"""Model serving: Kiln against MLServer 1.7.1 (mlserver-xgboost), same model, same request bytes,
same load generator, same machine, same run.

    python3 bench/models/serve_compare.py [--kiln target/release/kiln] [--duration 10s] [--out DIR]

1. makes a Kiln project (`kiln init`, `apply`, `materialize`), registers the committed XGBoost
   fixture `driver_ranker.json` as model `ranker` on feature service `driver_activity`;
2. serves it with `kiln serve`, then with MLServer (its own venv, made by setup_mlserver.sh:
   mlserver 1.7.1 + mlserver-xgboost, uvloop<0.22, OMP_NUM_THREADS=1, default settings);
3. loads each with Kiln's closed-loop load generator (`kiln bench http`): OIP JSON inference of
   1 row at 1 and 8 connections and of 64 rows at 8 connections, with byte-identical request
   bodies for both servers; Kiln's predict-by-entity (online features + model) beside them;
4. measures the server's CPU time (user + system, the process and its children, from /proc)
   over each measured window, divided by the requests answered in it;
5. writes DIR/serving.json and prints a summary with the ratios.

Only the standard library runs here; MLServer runs in its venv. Not part of CI.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates", "kiln-models", "tests", "fixtures")
MLSERVER_VENV = os.environ.get("MLSERVER_VENV", "/tmp/kiln-mlserver-venv")
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(root_pid):
    """User + system CPU seconds of a process and all its descendants (live ones)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        p = frontier.pop()
        for pid, (ppid, _) in parents.items():
            if ppid == p and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(parents[p][1] for p in tree if p in parents) / TICK


def wait_ready(url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} never became ready")


def load(kiln, url, body, connections, duration, server_pid):
    """One warm-up run (discarded), then a measured run with the server's CPU around it."""
    base = [kiln, "--output", "json", "bench", "http", "--url", url, "--body", body, "--warmup", "0"]
    subprocess.run(base + ["--connections", str(connections), "--duration", "2s"],
                   check=True, stdout=subprocess.DEVNULL)
    cpu0 = cpu_seconds(server_pid)
    out = subprocess.run(base + ["--connections", str(connections), "--duration", duration],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    cpu = cpu_seconds(server_pid) - cpu0
    r = json.loads(out)[0]
    r["server_cpu_ms_per_request"] = 1000 * cpu / max(r["requests"], 1)
    log(f"  {connections} conn: {r['requests_per_second']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
        f"p99 {r['p99_ms']:.3f} ms, {r['errors']} errors, server CPU {r['server_cpu_ms_per_request']:.3f} ms/req")
    if r["errors"]:
        raise SystemExit(f"{url}: {r['errors']} failed requests")
    return r


def bodies(work):
    """Byte-identical OIP request bodies for both servers."""
    cases = json.load(open(os.path.join(FIXTURES, "driver_ranker.cases.json")))
    rows = [r for r in cases["inputs"] if None not in r]
    one = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [rows[0]]}]}
    many = [rows[i % len(rows)] for i in range(64)]
    sixty_four = {"inputs": [{"name": "input-0", "shape": [64, 3], "datatype": "FP32", "data": many}]}
    by_entity = {"entities": {"driver_id": [1001]}}
    paths = {}
    for name, b in [("infer_1.json", one), ("infer_64.json", sixty_four), ("by_entity.json", by_entity)]:
        paths[name] = os.path.join(work, name)
        with open(paths[name], "w") as f:
            json.dump(b, f, separators=(",", ":"))
    return paths


def run_kiln(kiln, work, b, duration):
    project = os.path.join(work, "kiln")
    run = lambda *a: subprocess.run([kiln, "--project", project, *a], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([kiln, "init", project], check=True, stdout=subprocess.DEVNULL)
    run("apply")
    run("materialize", "--start", "2000-01-01")
    run("models", "register", "ranker", "--path", os.path.join(FIXTURES, "driver_ranker.json"),
        "--format", "xgboost", "--feature-service", "driver_activity")
    run("models", "promote", "ranker", "--version", "1")
    port = free_port()
    server = subprocess.Popen([kiln, "--project", project, "serve", "--addr", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/ranker/ready")
        infer = f"{base}/v2/models/ranker/infer"
        log("kiln serve")
        return {
            "infer_1row": {c: load(kiln, infer, b["infer_1.json"], c, duration, server.pid) for c in (1, 8)},
            "infer_64rows": {8: load(kiln, infer, b["infer_64.json"], 8, duration, server.pid)},
            "predict_by_entity": {c: load(kiln, f"{base}/v1/models/ranker/predict", b["by_entity.json"], c,
                                          duration, server.pid) for c in (1, 8)},
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_mlserver(kiln, work, b, duration):
    models = os.path.join(work, "mlserver")
    model_dir = os.path.join(models, "ranker")
    os.makedirs(model_dir, exist_ok=True)
    shutil.copy(os.path.join(FIXTURES, "driver_ranker.json"), os.path.join(model_dir, "model.json"))
    with open(os.path.join(model_dir, "model-settings.json"), "w") as f:
        json.dump({"name": "ranker", "implementation": "mlserver_xgboost.XGBoostModel",
                   "parameters": {"uri": "./model.json", "version": "1"}}, f)
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    with open(os.path.join(models, "settings.json"), "w") as f:
        json.dump({"http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port}, f)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen([os.path.join(MLSERVER_VENV, "bin", "mlserver"), "start", models],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=models)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/ranker/ready")
        infer = f"{base}/v2/models/ranker/infer"
        log("MLServer 1.7.1 (mlserver-xgboost)")
        return {
            "infer_1row": {c: load(kiln, infer, b["infer_1.json"], c, duration, server.pid) for c in (1, 8)},
            "infer_64rows": {8: load(kiln, infer, b["infer_64.json"], 8, duration, server.pid)},
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--skip-mlserver", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="kiln-serve-bench-")
    b = bodies(work)
    results = {"machine": f"{os.cpu_count()} cores", "duration": a.duration,
               "kiln": run_kiln(a.kiln, work, b, a.duration)}
    if not a.skip_mlserver:
        subprocess.run(["bash", os.path.join(ROOT, "bench", "models", "setup_mlserver.sh")], check=True,
                       env=dict(os.environ, MLSERVER_VENV=MLSERVER_VENV))
        results["mlserver"] = run_mlserver(a.kiln, work, b, a.duration)
        k, m = results["kiln"], results["mlserver"]
        results["ratios"] = {
            "infer_1row_8conn_req_per_s": k["infer_1row"][8]["requests_per_second"]
            / m["infer_1row"][8]["requests_per_second"],
            "infer_1row_1conn_req_per_s": k["infer_1row"][1]["requests_per_second"]
            / m["infer_1row"][1]["requests_per_second"],
            "infer_64rows_8conn_rows_per_s": k["infer_64rows"][8]["requests_per_second"]
            / m["infer_64rows"][8]["requests_per_second"],
            "server_cpu_per_request_1row_8conn": m["infer_1row"][8]["server_cpu_ms_per_request"]
            / k["infer_1row"][8]["server_cpu_ms_per_request"],
        }
        log("ratios (Kiln / MLServer): " + ", ".join(f"{k} {v:.1f}x" for k, v in results["ratios"].items()))
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "serving.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
