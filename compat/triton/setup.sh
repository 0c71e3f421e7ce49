#!/usr/bin/env bash
# A throwaway venv with the unmodified tritonclient (HTTP and gRPC) from the package index, for
# compat/triton/check.py. Idempotent: does nothing when the venv already has the pinned client.
#
#   TRITON_VENV  venv location (default $HOME/.cache/kiln-triton-venv)
#   PYTHON       interpreter used to create it (default python3)
set -euo pipefail

TRITON_VENV="${TRITON_VENV:-$HOME/.cache/kiln-triton-venv}"
PYTHON="${PYTHON:-python3}"
VERSION="2.73.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

probe() {
    "$TRITON_VENV/bin/python" - "$VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("tritonclient") == sys.argv[1]
import numpy, tritonclient.http, tritonclient.grpc  # noqa
PY
}

if [ -x "$TRITON_VENV/bin/python" ] && probe; then
    echo "tritonclient $VERSION already installed in $TRITON_VENV"
    exit 0
fi
echo "creating venv $TRITON_VENV"
"$PYTHON" -m venv "$TRITON_VENV"
"$TRITON_VENV/bin/python" -m pip install -q -c "$HERE/constraints.txt" "tritonclient[http,grpc]==$VERSION"
probe
echo "tritonclient $VERSION installed in $TRITON_VENV"
