#!/usr/bin/env bash
# Run the whole test suite: installs every package and service it needs first.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash scripts/ci/setup_host.sh
VENV="${CDSW_VENV:-$ROOT/.venv}"
mkdir -p "$ROOT/test-artifacts"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
