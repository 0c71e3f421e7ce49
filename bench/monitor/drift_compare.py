"""`kiln drift` against Evidently 0.7.23 on the same Parquet files (issue #4).

Both are timed end to end, each run a fresh process: Evidently as `python -c` that imports
evidently, reads both files with `pd.read_parquet` and runs `Report([DataDriftPreset()])`
with its defaults (the snapshot's `dict()` included, which is where its values come out);
Kiln as `kiln drift --reference R --current C -o json --out FILE`, process start to exit.
Evidently's worker also reports its own split (import / read / report), and
`kiln bench drift` gives Kiln's (read / prepare / compare).

It then checks that both agree on every column: same method, same verdict, scores to a
relative 1e-9 (distances with the relative scale floored at 1e-6, as the fixtures do), and
the same dataset verdict. Results go to bench/results/drift.json.

    python bench/monitor/drift_data.py --out /tmp/kiln-drift-bench
    python bench/monitor/drift_compare.py --data /tmp/kiln-drift-bench \
        --kiln $CARGO_TARGET_DIR/release/kiln

Run it with the Evidently venv's python (~/.cache/kiln-evidently-venv: evidently==0.7.23,
'pandas<3', pyarrow); the script re-executes itself there for the Evidently worker.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = Path.home() / ".cache" / "kiln-evidently-venv" / "bin" / "python"
METHOD_NAMES = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
}
P_VALUES = {"ks", "chisquare", "z"}


def worker(ref: str, cur: str, out: str) -> None:
    """One Evidently run in this process; writes its timings and verdicts to `out`."""
    t0 = time.perf_counter()
    import warnings

    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    warnings.filterwarnings("ignore")
    t1 = time.perf_counter()
    r = pd.read_parquet(ref)
    c = pd.read_parquet(cur)
    t2 = time.perf_counter()
    snapshot = Report([DataDriftPreset()], include_tests=True).run(c, r)
    d = snapshot.dict()
    t3 = time.perf_counter()
    columns, count = {}, None
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"] == "evidently:metric_v2:DriftedColumnsCount":
            count = int(m["value"]["count"])
        elif cfg["type"] == "evidently:metric_v2:ValueDrift":
            columns[cfg["column"]] = {
                "method": METHOD_NAMES.get(cfg["method"], cfg["method"]),
                "score": float(m["value"]),
                "threshold": float(cfg["threshold"]),
            }
    status = {t["name"]: t["status"] for t in d["tests"]}
    for name, col in columns.items():
        col["drifted"] = status[f"Value Drift for column {name}"] == "FAIL"
    share = [s for n, s in status.items() if n.startswith("Share of Drifted Columns")]
    Path(out).write_text(json.dumps({
        "import_s": t1 - t0,
        "read_s": t2 - t1,
        "report_s": t3 - t2,
        "columns": columns,
        "number_of_drifted_columns": count,
        "dataset_drift": share == ["FAIL"],
    }))


def timed(cmd, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def agree(kiln: dict, ev: dict) -> list:
    """Disagreements, as sentences (empty: they agree)."""
    bad = []
    kcols = {c["name"]: c for c in kiln["columns"]}
    if set(kcols) != set(ev["columns"]):
        bad.append(f"compared columns differ: kiln {sorted(kcols)}, evidently {sorted(ev['columns'])}")
    for name in sorted(set(kcols) & set(ev["columns"])):
        k, e = kcols[name], ev["columns"][name]
        if k["method"] != e["method"]:
            bad.append(f"{name}: method kiln {k['method']} evidently {e['method']}")
            continue
        if k["drifted"] != e["drifted"]:
            bad.append(f"{name}: verdict kiln {k['drifted']} evidently {e['drifted']}")
        floor = 2.2250738585072014e-308 if k["method"] in P_VALUES else 1e-6
        scale = max(abs(e["score"]), floor)
        if abs(k["score"] - e["score"]) > 1e-9 * scale:
            bad.append(f"{name}: score kiln {k['score']!r} evidently {e['score']!r}")
    if kiln["dataset_drift"] != ev["dataset_drift"]:
        bad.append("dataset verdict differs")
    if kiln["number_of_drifted_columns"] != ev["number_of_drifted_columns"]:
        bad.append("drifted column count differs")
    return bad


def lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description="kiln drift vs Evidently 0.7.23")
    ap.add_argument("--data", type=Path, default=Path("/tmp/kiln-drift-bench"))
    ap.add_argument("--kiln", type=Path, required=True, help="release build of kiln")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each (median)")
    ap.add_argument("--evidently-runs", type=int, default=None, help="default: --runs")
    ap.add_argument("--python", type=Path, default=VENV_PY, help="python with evidently 0.7.23")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    a = ap.parse_args()
    ref, cur = a.data / "reference.parquet", a.data / "current.parquet"
    tmp = Path(tempfile.mkdtemp(prefix="kiln-drift-cmp-"))
    env = dict(os.environ, PYTHONHASHSEED="0")

    # Alternate the two so neither gets the quieter moments of a shared machine.
    kiln_s, ev_s, ev_runs = [], [], []
    kiln_json = tmp / "kiln.json"
    kiln_cmd = [str(a.kiln), "--quiet", "-o", "json", "drift", "--reference", str(ref),
                "--current", str(cur), "--out", str(kiln_json)]
    timed(kiln_cmd)  # warm the page cache for both files
    for i in range(max(a.runs, a.evidently_runs or a.runs)):
        if i < a.runs:
            kiln_s.append(timed(kiln_cmd))
            print(f"kiln run {i + 1}: {kiln_s[-1]:.3f} s", flush=True)
        if i < (a.evidently_runs or a.runs):
            out = tmp / f"ev{i}.json"
            ev_s.append(timed([str(a.python), __file__, "--worker", str(ref), str(cur), str(out)], env))
            ev_runs.append(json.loads(out.read_text()))
            print(f"evidently run {i + 1}: {ev_s[-1]:.3f} s", flush=True)
    kiln = json.loads(kiln_json.read_text())
    stages = json.loads(subprocess.run(
        [str(a.kiln), "bench", "drift", "--reference", str(ref), "--current", str(cur), "--runs", "5"],
        check=True, capture_output=True, text=True).stdout)
    bad = agree(kiln, ev_runs[0])
    med = statistics.median
    result = {
        "issue": 4,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "cpu": lscpu(), "note": "2 shared cores"},
        "data": {"reference": str(ref), "current": str(cur), "rows": kiln["reference_rows"],
                 "columns": kiln["number_of_columns"] + len(kiln["skipped"]),
                 "generator": "bench/monitor/drift_data.py"},
        "kiln": {
            "end_to_end_s": kiln_s,
            "end_to_end_median_s": med(kiln_s),
            "stages": stages,
        },
        "evidently": {
            "version": "0.7.23",
            "end_to_end_s": ev_s,
            "end_to_end_median_s": med(ev_s),
            "import_median_s": med(r["import_s"] for r in ev_runs),
            "read_median_s": med(r["read_s"] for r in ev_runs),
            "report_median_s": med(r["report_s"] for r in ev_runs),
        },
        "ratio_end_to_end": med(ev_s) / med(kiln_s),
        "goal_s": 1.0,
        "goal_met": med(kiln_s) <= 1.0,
        "agreement": {
            "columns": len(kiln["columns"]),
            "drifted": kiln["number_of_drifted_columns"],
            "dataset_drift": kiln["dataset_drift"],
            "methods": sorted({c["method"] for c in kiln["columns"]}),
            "disagreements": bad,
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_end_to_end", "goal_met", "agreement")}, indent=2))
    print(f"kiln median {med(kiln_s):.3f} s, evidently median {med(ev_s):.3f} s -> {a.out}")
    if bad:
        sys.exit("kiln and evidently disagree:\n  " + "\n  ".join(bad))


if __name__ == "__main__":
    main()
