#!/usr/bin/env bash
# Throwaway harness: create a Python venv with Feast 0.67 for benchmarking Kiln
# against it. Idempotent: does nothing if the venv already has the pinned Feast.
#
#   FEAST_VENV   venv location (default /tmp/kiln-feast-venv)
#   PYTHON       interpreter used to create it (default python3; needs >= 3.10)
#
# Installs what is needed for: local provider, file offline store (dask/pandas),
# DuckDB offline store (ibis + duckdb), sqlite online store (stdlib sqlite3) and
# the Python feature server (`feast serve`: fastapi, uvicorn, gunicorn, all core
# dependencies of Feast 0.67). Uses the default package index of pip.
set -euo pipefail

FEAST_VENV="${FEAST_VENV:-/tmp/kiln-feast-venv}"
PYTHON="${PYTHON:-python3}"
FEAST_VERSION="0.67.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ -x "$FEAST_VENV/bin/python" ] && \
   "$FEAST_VENV/bin/python" - "$FEAST_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("feast") == sys.argv[1]
import feast, duckdb, ibis, fastapi, uvicorn, gunicorn, dask.dataframe  # noqa
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore  # noqa
from feast.infra.online_stores.sqlite import SqliteOnlineStore  # noqa
EOF
then
    echo "feast $FEAST_VERSION already installed in $FEAST_VENV"
    exit 0
fi

echo "creating venv $FEAST_VENV"
"$PYTHON" -m venv "$FEAST_VENV"
"$FEAST_VENV/bin/python" -m pip install -q --upgrade pip
# The constraints file pins the versions that were verified to work together.
"$FEAST_VENV/bin/python" -m pip install -q \
    -c "$HERE/constraints.txt" \
    "feast[duckdb]==$FEAST_VERSION"

"$FEAST_VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import feast, duckdb, ibis, fastapi, uvicorn, gunicorn, dask.dataframe  # noqa
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore  # noqa
from feast.infra.online_stores.sqlite import SqliteOnlineStore  # noqa
print("ok:", ", ".join(f"{p} {version(p)}" for p in
      ["feast", "pandas", "numpy", "pyarrow", "duckdb", "ibis-framework",
       "dask", "fastapi", "uvicorn", "gunicorn"]))
EOF
echo "feast CLI: $FEAST_VENV/bin/feast"
