#!/usr/bin/env bash
# Set up and start the workbench on this host with its embedded defaults: Debian packages
# (Docker engine, debootstrap, git), a virtualenv with the cdsw command, then `cdsw standalone`
# (the CDSW_DOCKER role, the engine image, the master on Docker Swarm).
# Usage: scripts/standalone.sh [cdsw standalone options, e.g. --port 8080 --bind 0.0.0.0]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${CDSW_VENV:-$ROOT/.venv}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

missing=()
for pkg in git docker.io debootstrap debian-archive-keyring iptables; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # the workbench runs its own dockerd (the CDSW_DOCKER role): keep the package from starting one
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    $SUDO rm -f /usr/sbin/policy-rc.d
    echo "!!! could not install ${missing[*]}; the workbench will run engines as local processes" >&2
  }
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
if [ ! -x "$VENV/bin/cdsw" ]; then
  echo "==> creating virtualenv $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
fi
echo "==> installing cdsw_agent"
"$VENV/bin/pip" install -q -e "$ROOT"
# the web UI's browser libraries (code editor); without them the pages still work and say so
if command -v npm >/dev/null 2>&1 || $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; then
  echo "==> installing the web UI's browser libraries (npm ci)"
  (cd "$ROOT/cdsw_agent/web" && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "!!! npm ci failed in cdsw_agent/web; the file editor falls back to plain text" >&2
else
  echo "!!! npm is not available; the file editor falls back to plain text" >&2
fi
exec "$VENV/bin/cdsw" standalone "$@"
