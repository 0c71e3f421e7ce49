#!/usr/bin/env bash
# A throwaway venv with MLServer 1.7.1 and its XGBoost runtime, the peer of
# bench/models/serve_compare.py. Idempotent.
#
#   MLSERVER_VENV  venv location (default /tmp/kiln-mlserver-venv)
#   PYTHON         interpreter used to create it (default python3)
#
# uvloop is held below 0.22: MLServer 1.7.1 fails to start with 0.22.
set -euo pipefail

MLSERVER_VENV="${MLSERVER_VENV:-/tmp/kiln-mlserver-venv}"
PYTHON="${PYTHON:-python3}"
VERSION="1.7.1"

probe() {
    "$MLSERVER_VENV/bin/python" - "$VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("mlserver") == sys.argv[1] and version("mlserver-xgboost") == sys.argv[1]
import mlserver_xgboost  # noqa
PY
}

if [ -x "$MLSERVER_VENV/bin/python" ] && probe; then
    echo "mlserver $VERSION already installed in $MLSERVER_VENV"
    exit 0
fi
echo "creating venv $MLSERVER_VENV"
"$PYTHON" -m venv "$MLSERVER_VENV"
"$MLSERVER_VENV/bin/python" -m pip install -q "mlserver==$VERSION" "mlserver-xgboost==$VERSION" "uvloop<0.22"
probe
"$MLSERVER_VENV/bin/python" -c 'from importlib.metadata import version as v; print("ok:", ", ".join(f"{p} {v(p)}" for p in ["mlserver", "mlserver-xgboost", "xgboost", "uvloop", "numpy"]))'
