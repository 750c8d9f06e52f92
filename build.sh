#!/usr/bin/env bash
# Build the cluster packages into dist/: the CSD jar, the parcels + manifest.json and the Ambari
# mpack, all from the version in cdsw_agent/__init__.py, each validated (exit 1 with the reason).
#   ./build.sh [--out DIR] [--cache DIR] [--only csd|parcels|mpack]...
# PYTHON picks the interpreter (3.9+ with pip); downloads are cached in build/cache.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" "$ROOT/scripts/packaging/build_packages.py" "$@"
