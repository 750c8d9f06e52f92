#!/usr/bin/env bash
# Set up and start the workbench on this host with its embedded defaults.
# Usage: scripts/standalone.sh [cdsw standalone options, e.g. --port 8080 --bind 0.0.0.0]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${CDSW_VENV:-$ROOT/.venv}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v git >/dev/null; then
  echo "==> installing git"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq git >/dev/null
fi
if [ ! -x "$VENV/bin/cdsw" ]; then
  echo "==> creating virtualenv $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
fi
echo "==> installing cdsw_agent"
"$VENV/bin/pip" install -q -e "$ROOT"
exec "$VENV/bin/cdsw" standalone "$@"
