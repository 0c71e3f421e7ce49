#!/usr/bin/env python3
"""Peer latency benchmark for tree-model inference: XGBoost (Python API) and
ONNX Runtime (model converted with onnxmltools), single thread per request.

    python3 bench/models/peer_bench.py                 # sets up its venv, trains, measures
    python3 bench/models/peer_bench.py --quick         # fewer timed calls
    python3 bench/models/peer_bench.py --no-venv       # use the current interpreter as is

Setup: unless --no-venv is given (or the packages already import), the script
creates a virtualenv outside the repository ($KILN_BENCH_VENV, default
/tmp/kiln-bench-venv), installs the pinned requirements.txt next to this file
and re-runs itself there.

What it does (all deterministic, fixed seeds):
  1. trains a 100-tree, depth-6 binary:logistic XGBoost model on synthetic data
     with 20 features (a few with missing values) and saves it as JSON
     (--out-model, default /tmp/kiln-bench-xgb100.json);
  2. writes 1000 test rows with XGBoost's probabilities and margins
     (--out-inputs), so Kiln's evaluator can be checked on the bench model;
  3. times prediction at batch 1, 64 and 1024:
       xgb_inplace     booster.inplace_predict(x)
       xgb_dmatrix     booster.predict(xgb.DMatrix(x))  (DMatrix build included)
       ort             InferenceSession.run on the onnxmltools conversion
     with OMP_NUM_THREADS=1, nthread=1 and intra/inter_op_num_threads=1.
     Each measurement is the median over many calls of one call's wall time;
     results are reported as microseconds per call and per row;
  4. prints the results as JSON on stdout and writes them to --out-results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
N_FEATURES = 20
N_TREES = 100
DEPTH = 6
BATCHES = (1, 64, 1024)


# ---------------------------------------------------------------- setup

def ensure_venv() -> Path:
    root = Path(os.environ.get("KILN_BENCH_VENV", "/tmp/kiln-bench-venv")).resolve()
    repo = HERE
    while repo != repo.parent and not (repo / ".git").exists():
        repo = repo.parent
    if (repo / ".git").exists() and (root == repo or repo in root.parents):
        sys.exit(f"refusing to create the venv inside the repository ({root}); set KILN_BENCH_VENV")
    req = HERE / "requirements.txt"
    py = root / "bin" / "python"
    stamp = root / ".kiln-requirements.sha256"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    if not (py.exists() and stamp.exists() and stamp.read_text().strip() == digest):
        print(f"setting up {root}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(req)], check=True)
        stamp.write_text(digest + "\n")
    return py


def have_packages() -> bool:
    try:
        import numpy, xgboost, onnxruntime, onnxmltools  # noqa: F401
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------- data / model

def make_data(n: int, seed: int):
    import numpy as np
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    for c in (1, 7, 13):
        X[rng.random(n) < 0.05, c] = np.nan
    Z = np.nan_to_num(X, nan=1.5)
    logit = (1.2 * Z[:, 0] - 0.8 * Z[:, 1] + 0.6 * Z[:, 2] * Z[:, 3] + np.sin(2 * Z[:, 4])
             + 0.5 * np.abs(Z[:, 5]) - 0.4 * Z[:, 6] ** 2 + 0.3 * Z[:, 7] * Z[:, 8]
             + 0.2 * Z[:, 9:20].sum(axis=1) - 0.3)
    y = (logit + rng.logistic(size=n) > 0).astype(np.float64)
    return X.astype(np.float32), y


def train(out_model: Path):
    import xgboost as xgb
    X, y = make_data(20_000, seed=42)
    params = {"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.1, "tree_method": "hist",
              "nthread": 1, "seed": 0}
    t0 = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(X, y), num_boost_round=N_TREES)
    train_s = time.perf_counter() - t0
    out_model.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out_model))
    booster = xgb.Booster(model_file=str(out_model))      # benchmark exactly what was saved
    booster.set_param({"nthread": 1})
    return booster, train_s


def write_inputs(booster, path: Path, model_path: Path):
    import numpy as np
    import xgboost as xgb
    X, _ = make_data(1000, seed=7)
    X[0, :] = np.nan                       # an all-missing row
    X[1, ::2] = 1e30                       # far outside the training range
    X[2, 1::2] = -1e30
    prob = booster.inplace_predict(X)
    margin = booster.predict(xgb.DMatrix(X), output_margin=True)
    assert np.array_equal(prob, booster.predict(xgb.DMatrix(X)))
    doc = {
        "format": "xgboost",
        "library_version": xgb.__version__,
        "model": str(model_path),
        "objective": "binary:logistic",
        "n_features": N_FEATURES,
        "n_outputs": 1,
        "notes": "inputs are float32 values widened to float64 (null = NaN/missing); expected are "
                 "XGBoost's float32 probabilities, expected_margin its output_margin=True values",
        "inputs": [[None if v != v else float(v) for v in row] for row in X],
        "expected": [[float(p)] for p in prob],
        "expected_margin": [[float(m)] for m in margin],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
    return X, prob


def to_onnx(booster):
    import onnxruntime as ort
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    model = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, N_FEATURES]))])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, len(model.SerializeToString())


# ---------------------------------------------------------------- timing

def time_calls(fn, batches, n_calls: int, warmup: int):
    """fn(batch) is timed; batches is a list of inputs cycled through."""
    import numpy as np
    for i in range(warmup):
        fn(batches[i % len(batches)])
    ts = np.empty(n_calls, dtype=np.int64)
    pc = time.perf_counter_ns
    for i in range(n_calls):
        b = batches[i % len(batches)]
        t0 = pc()
        fn(b)
        ts[i] = pc() - t0
    return ts


def summarize(ts, batch: int) -> dict:
    import numpy as np
    us = ts / 1e3
    med = float(np.median(us))
    return {
        "batch": batch,
        "calls": int(len(us)),
        "median_us_per_call": round(med, 3),
        "median_us_per_row": round(med / batch, 4),
        "p10_us_per_call": round(float(np.percentile(us, 10)), 3),
        "p90_us_per_call": round(float(np.percentile(us, 90)), 3),
        "p99_us_per_call": round(float(np.percentile(us, 99)), 3),
        "rows_per_s_at_median": round(batch / med * 1e6, 1),
    }


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def run(args) -> int:
    import numpy as np
    import onnx
    import onnxmltools
    import onnxruntime as ort
    import xgboost as xgb

    info = machine_info()
    out_model = Path(args.out_model)
    booster, train_s = train(out_model)
    X_test, prob = write_inputs(booster, Path(args.out_inputs), out_model)
    sess, onnx_bytes = to_onnx(booster)
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    prob_out = "probabilities" if "probabilities" in out_names else out_names[-1]
    ort_prob = sess.run([prob_out], {in_name: X_test})[0]
    ort_prob = ort_prob[:, 1] if ort_prob.ndim == 2 else ort_prob
    ort_maxdiff = float(np.abs(ort_prob - prob).max())

    pool, _ = make_data(8192, seed=99)          # rows cycled through by the timed calls
    scale = 0.2 if args.quick else 1.0
    plan = {1: (int(5000 * scale), 500), 64: (int(1500 * scale), 100), 1024: (int(300 * scale), 20)}

    engines = {
        "xgb_inplace": lambda x: booster.inplace_predict(x),
        "xgb_dmatrix": lambda x: booster.predict(xgb.DMatrix(x, nthread=1)),
        "ort": lambda x: sess.run([prob_out], {in_name: x}),
    }
    results = {name: [] for name in engines}
    for batch in BATCHES:
        nb = len(pool) // batch
        batches = [np.ascontiguousarray(pool[i * batch:(i + 1) * batch]) for i in range(nb)]
        n_calls, warmup = plan[batch]
        # interleave engines in rounds so that noise from the shared box hits all of them
        rounds = 5
        per = {name: [] for name in engines}
        for _ in range(rounds):
            for name, fn in engines.items():
                per[name].append(time_calls(fn, batches, max(1, n_calls // rounds), warmup // rounds))
        for name in engines:
            results[name].append(summarize(np.concatenate(per[name]), batch))

    doc = {
        "model": {"path": str(out_model), "trees": N_TREES, "max_depth": DEPTH, "features": N_FEATURES,
                  "objective": "binary:logistic", "train_rows": 20_000, "train_seconds": round(train_s, 2),
                  "json_bytes": out_model.stat().st_size, "onnx_bytes": onnx_bytes},
        "inputs_file": str(Path(args.out_inputs)),
        "versions": {"xgboost": xgb.__version__, "onnxruntime": ort.__version__,
                     "onnxmltools": onnxmltools.__version__, "onnx": onnx.__version__,
                     "numpy": np.__version__},
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "xgb_nthread": 1,
                    "ort_intra_op": 1, "ort_inter_op": 1},
        "machine": info,
        "check": {"ort_vs_xgb_max_abs_prob_diff_1000_rows": ort_maxdiff},
        "unit": "microseconds; median over calls of one call's wall time (per_row = per_call / batch)",
        "results": results,
        "summary_median_us_per_row": {name: {str(r["batch"]): r["median_us_per_row"] for r in rs}
                                      for name, rs in results.items()},
    }
    text = json.dumps(doc, indent=2)
    print(text)
    Path(args.out_results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_results).write_text(text + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-model", default="/tmp/kiln-bench-xgb100.json")
    ap.add_argument("--out-inputs", default="/tmp/kiln-bench-xgb100-inputs.json")
    ap.add_argument("--out-results", default="/tmp/kiln-bench-peer-results.json")
    ap.add_argument("--quick", action="store_true", help="fewer timed calls (about 5x faster)")
    ap.add_argument("--no-venv", action="store_true", help="run in the current interpreter")
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.no_venv and not args.in_venv:
        py = ensure_venv()
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        return subprocess.run([str(py), str(Path(__file__).resolve()), "--in-venv", *sys.argv[1:]],
                              env=env).returncode
    if not have_packages():
        sys.exit("numpy, xgboost, onnxruntime and onnxmltools are needed (drop --no-venv to set them up)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
