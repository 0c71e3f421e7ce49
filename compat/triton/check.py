#!/usr/bin/env python3
"""The unmodified Python `tritonclient` (HTTP and gRPC) against `kiln serve`.

    python check.py --kiln PATH/TO/kiln [--workdir DIR]

Makes a Kiln project (`kiln init`, `apply`), registers the committed XGBoost fixture
`driver_ranker.json` as model `ranker`, starts `kiln serve` on a free port, and drives it with
tritonclient exactly as a Triton user would:

* HTTP: health, server/model metadata, model readiness; inference with JSON tensors, with binary
  tensors in and out (the binary tensor data extension), and with no requested outputs (the
  client then asks for binary output for all); the model repository extension (index, unload,
  load); a clear error for an unknown model.
* gRPC: the same calls; inference with raw tensor contents (what tritonclient sends).

Every score is compared with xgboost's own predictions stored next to the fixture (max abs
difference <= 1e-6). Exits non-zero on the first mismatch. Run from .ci/run on every submission.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates", "kiln-models", "tests", "fixtures")
MODEL = "ranker"


def log(msg):
    print(f"[triton-compat] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kiln(binary, project, *args):
    subprocess.run([binary, "--project", project, *args], check=True, stdout=subprocess.DEVNULL)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    log(f"ok  {what}")


def close(got, expected, what):
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    diff = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    check(got.shape == expected.shape and diff <= 1e-6, f"{what} (max abs diff {diff:.2e})")


def raises(fn, needle, what):
    try:
        fn()
    except InferenceServerException as e:
        check(needle in str(e), f"{what}: {e}")
        return
    raise SystemExit(f"FAILED: {what}: no error")


def check_http(url, rows, expected):
    c = httpclient.InferenceServerClient(url=url)
    check(c.is_server_live(), "http: server live")
    check(c.is_server_ready(), "http: server ready")
    meta = c.get_server_metadata()
    check(meta["name"] == "kiln" and "binary_tensor_data" in meta["extensions"], "http: server metadata")
    mm = c.get_model_metadata(MODEL)
    check(mm["inputs"][0]["shape"] == [-1, 3] and mm["outputs"][0]["name"] == "predict", "http: model metadata")
    check(c.is_model_ready(MODEL) and c.is_model_ready(MODEL, "1"), "http: model ready (with and without version)")

    n = len(rows)
    # JSON cannot carry NaN: JSON inputs use the rows without missing values.
    full = ~np.isnan(rows).any(axis=1)
    for binary_in, binary_out in [(True, True), (False, False), (True, False), (False, True)]:
        data, want = (rows, expected) if binary_in else (rows[full], expected[full])
        inp = httpclient.InferInput("input", list(data.shape), "FP64")
        inp.set_data_from_numpy(data, binary_data=binary_in)
        out = httpclient.InferRequestedOutput("predict", binary_data=binary_out)
        r = c.infer(MODEL, [inp], outputs=[out], request_id="http-1")
        close(r.as_numpy("predict"), want, f"http: scores (binary in={binary_in}, out={binary_out})")
        check(r.get_response()["id"] == "http-1", "http: request id echoed")
    # No outputs named: the client asks for every output in binary.
    inp = httpclient.InferInput("input", [n, 3], "FP64")
    inp.set_data_from_numpy(rows)
    close(c.infer(MODEL, [inp]).as_numpy("predict"), expected, "http: scores with default outputs")
    # FP32 inputs, as most clients send them.
    inp = httpclient.InferInput("input", [n, 3], "FP32")
    inp.set_data_from_numpy(rows.astype(np.float32))
    got32 = c.infer(MODEL, [inp], model_version="1").as_numpy("predict")
    check(got32.shape == (n, 1) and np.all(np.isfinite(got32)), "http: FP32 input, explicit version")

    # Errors.
    raises(lambda: c.infer("nope", [inp]), "nope", "http: unknown model is an error naming it")
    bad = httpclient.InferInput("input", [n, 4], "FP32")
    bad.set_data_from_numpy(np.zeros((n, 4), dtype=np.float32))
    raises(lambda: c.infer(MODEL, [bad]), "[N, 3]", "http: wrong shape is an error naming the expected shape")

    # Model repository extension.
    index = c.get_model_repository_index()
    check(any(m["name"] == MODEL and m["state"] == "READY" for m in index), f"http: repository index {index}")
    c.unload_model(MODEL)
    check(not c.is_model_ready(MODEL), "http: unloaded model is not ready")
    raises(lambda: c.infer(MODEL, [inp]), "unloaded", "http: inference on an unloaded model is refused")
    c.load_model(MODEL)
    check(c.is_model_ready(MODEL), "http: loaded again")
    c.close()


def check_grpc(url, rows, expected):
    c = grpcclient.InferenceServerClient(url=url)
    check(c.is_server_live(), "grpc: server live")
    check(c.is_server_ready(), "grpc: server ready")
    meta = c.get_server_metadata()
    check(meta.name == "kiln" and "model_repository" in meta.extensions, "grpc: server metadata")
    mm = c.get_model_metadata(MODEL)
    check(list(mm.inputs[0].shape) == [-1, 3], "grpc: model metadata")
    check(c.is_model_ready(MODEL) and c.is_model_ready(MODEL, "1"), "grpc: model ready")

    n = len(rows)
    inp = grpcclient.InferInput("input", [n, 3], "FP64")
    inp.set_data_from_numpy(rows)
    r = c.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("predict")], request_id="grpc-1")
    close(r.as_numpy("predict"), expected, "grpc: scores (raw contents)")
    check(r.get_response().id == "grpc-1", "grpc: request id echoed")
    close(c.infer(MODEL, [inp]).as_numpy("predict"), expected, "grpc: scores with default outputs")

    raises(lambda: c.infer("nope", [inp]), "nope", "grpc: unknown model is an error naming it")

    index = c.get_model_repository_index()
    check(any(m.name == MODEL and m.state == "READY" for m in index.models), "grpc: repository index")
    c.unload_model(MODEL)
    check(not c.is_model_ready(MODEL), "grpc: unloaded model is not ready")
    c.load_model(MODEL)
    check(c.is_model_ready(MODEL), "grpc: loaded again")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="kiln-triton-")
    project = os.path.join(work, "project")
    os.makedirs(work, exist_ok=True)

    cases = json.load(open(os.path.join(FIXTURES, "driver_ranker.cases.json")))
    rows = np.array([[np.nan if x is None else x for x in r] for r in cases["inputs"]], dtype=np.float64)
    expected = np.array([e[0] for e in cases["expected"]], dtype=np.float64)

    subprocess.run([a.kiln, "init", project], check=True, stdout=subprocess.DEVNULL)
    kiln(a.kiln, project, "apply")
    kiln(a.kiln, project, "models", "register", MODEL, "--path",
         os.path.join(FIXTURES, "driver_ranker.json"), "--format", "xgboost",
         "--feature-service", "driver_activity")
    kiln(a.kiln, project, "models", "promote", MODEL, "--version", "1")

    port = free_port()
    addr = f"127.0.0.1:{port}"
    server = subprocess.Popen([a.kiln, "--project", project, "serve", "--addr", addr],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        check_http(addr, rows, expected)
        check_grpc(addr, rows, expected)
    finally:
        server.terminate()
        server.wait(timeout=10)
    log("tritonclient (HTTP and gRPC) works against kiln serve")


if __name__ == "__main__":
    sys.exit(main())
